//! The BM25 index over a character's passages.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use bm25::{Embedder, EmbedderBuilder, Scorer};

use crate::tokenize::{is_cjk, tokenize, MultilingualTokenizer};

/// Where a passage comes from, which decides how a reply presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Bio,
    Lore,
    /// An inline `knowledge` string.
    Knowledge,
    /// A chunk of a knowledge-base document, with its innermost heading if it has one.
    Document {
        heading: Option<String>,
    },
    /// A message example. The passage text is the user's line and `answer` is the character's
    /// reply to it.
    Example {
        answer: String,
    },
}

/// A searchable unit of text.
#[derive(Debug, Clone)]
pub(crate) struct Passage {
    pub source: Source,
    /// Text shown in a reply (for examples, the user's line).
    pub text: String,
    /// Text indexed for search: `text` plus any document title and headings.
    pub search_text: String,
}

/// A scored passage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub passage: usize,
    pub score: f32,
    /// Share of the query's inverse-document-frequency weight carried by terms the passage
    /// contains, from 0 to 1.
    pub coverage: f32,
}

/// Returns the distinct search terms of a query.
pub(crate) fn query_terms(query: &str) -> HashSet<String> {
    tokenize(query).into_iter().collect()
}

/// Hashes a term for the per-passage term sets. The hash only has to agree
/// within one process, and a collision of two terms' 64-bit hashes at most
/// counts one term as covered.
fn term_hash(term: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    term.hash(&mut hasher);
    hasher.finish()
}

/// Returns the sorted, distinct term hashes of `terms`.
fn term_set<'a>(terms: impl IntoIterator<Item = &'a String>) -> Vec<u64> {
    let mut hashes: Vec<u64> = terms.into_iter().map(|term| term_hash(term)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// Query terms with their coverage weights, computed once per query.
struct WeightedTerms {
    terms: Vec<(u64, f32)>,
    total: f32,
}

/// BM25 index built with the `bm25` crate's embedder and scorer.
pub(crate) struct PassageIndex {
    passages: Vec<Passage>,
    embedder: Embedder<u64, MultilingualTokenizer>,
    scorer: Scorer<usize, u64>,
    /// Number of passages each term occurs in, for the coverage measure.
    document_frequency: HashMap<String, usize>,
    /// Term set of each passage's search text (see [`term_set`]), so that a
    /// query's coverage of a passage needs no tokenizing.
    passage_terms: Vec<Vec<u64>>,
    /// Number of terms over all passages, for the memory estimate.
    term_count: usize,
}

impl PassageIndex {
    pub fn new(passages: Vec<Passage>) -> Self {
        let corpus: Vec<&str> = passages.iter().map(|p| p.search_text.as_str()).collect();
        let embedder: Embedder<u64, MultilingualTokenizer> =
            EmbedderBuilder::with_tokenizer_and_fit_to_corpus(MultilingualTokenizer, &corpus)
                .build();
        let mut scorer = Scorer::new();
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        let mut passage_terms = Vec::with_capacity(passages.len());
        let mut term_count = 0;
        for (id, passage) in passages.iter().enumerate() {
            let terms = tokenize(&passage.search_text);
            term_count += terms.len();
            let unique: HashSet<String> = terms.into_iter().collect();
            passage_terms.push(term_set(&unique));
            for term in unique {
                *document_frequency.entry(term).or_default() += 1;
            }
            scorer.upsert(&id, embedder.embed(&passage.search_text));
        }
        Self {
            passages,
            embedder,
            scorer,
            document_frequency,
            passage_terms,
            term_count,
        }
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    pub fn passage(&self, id: usize) -> Option<&Passage> {
        self.passages.get(id)
    }

    /// Returns up to `limit` passages sharing a term with `query`, best first. Equal scores are
    /// ordered by passage order, because the scorer's own order for ties depends on hashing.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let query_terms = query_terms(query);
        if query_terms.is_empty() {
            return Vec::new();
        }
        let weighted = self.weigh(&query_terms);
        let mut matches = self.scorer.matches(&self.embedder.embed(query));
        matches.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        matches
            .into_iter()
            .take(limit)
            .filter_map(|scored| {
                let terms = self.passage_terms.get(scored.id)?;
                Some(Hit {
                    passage: scored.id,
                    score: scored.score,
                    coverage: covered_share(&weighted, terms),
                })
            })
            .collect()
    }

    /// Computes the share of the query's IDF weight that `text` contains. A query term that no
    /// passage contains is weighted like a term found in one passage, because it is content the
    /// index may not cover. An unknown Han or kana bigram gets half that weight, because
    /// bigrams that span two words are frequent and carry little meaning.
    pub(crate) fn coverage(&self, query_terms: &HashSet<String>, text: &str) -> f32 {
        let terms = tokenize(text);
        covered_share(&self.weigh(query_terms), &term_set(&terms))
    }

    /// Weighs each query term by its IDF, as [`PassageIndex::coverage`] describes.
    fn weigh(&self, query_terms: &HashSet<String>) -> WeightedTerms {
        let terms: Vec<(u64, f32)> = query_terms
            .iter()
            .map(|term| {
                let weight = match self.document_frequency.get(term) {
                    Some(&frequency) => self.idf(frequency),
                    None if term.chars().any(is_cjk) => self.idf(1) / 2.0,
                    None => self.idf(1),
                };
                (term_hash(term), weight)
            })
            .collect();
        let total = terms.iter().map(|(_, weight)| weight).sum();
        WeightedTerms { terms, total }
    }

    /// Computes the BM25 inverse document frequency of a term found in `frequency` passages.
    fn idf(&self, frequency: usize) -> f32 {
        let count = self.passages.len() as f32;
        let frequency = frequency as f32;
        (1.0 + (count - frequency + 0.5) / (frequency + 0.5)).ln()
    }

    /// Estimates the heap bytes of the index. The per-entry overheads of the hash maps are
    /// rough figures for the standard library's SwissTable layout, so this is an estimate.
    pub fn approx_heap_bytes(&self) -> usize {
        const MAP_ENTRY_OVERHEAD: usize = 16;
        let passages: usize = self
            .passages
            .iter()
            .map(|passage| {
                let answer = match &passage.source {
                    Source::Example { answer } => answer.capacity(),
                    Source::Document { heading } => heading.as_ref().map_or(0, String::capacity),
                    Source::Bio | Source::Lore | Source::Knowledge => 0,
                };
                std::mem::size_of::<Passage>()
                    + passage.text.capacity()
                    + passage.search_text.capacity()
                    + answer
            })
            .sum();
        // The scorer keeps each passage's embedding (a u64 term id and an f32 weight per term)
        // and an inverted index with one set entry per distinct term of each passage.
        let embeddings = self.term_count * 16
            + self.passages.len() * (std::mem::size_of::<usize>() + 24 + MAP_ENTRY_OVERHEAD);
        let postings: usize = self.document_frequency.values().sum::<usize>()
            * (std::mem::size_of::<usize>() + MAP_ENTRY_OVERHEAD);
        let inverted = self.document_frequency.len() * (8 + 48 + MAP_ENTRY_OVERHEAD);
        let frequencies: usize = self
            .document_frequency
            .keys()
            .map(|term| term.capacity() + 24 + 8 + MAP_ENTRY_OVERHEAD)
            .sum();
        let term_sets: usize = self
            .passage_terms
            .iter()
            .map(|terms| 24 + terms.capacity() * 8)
            .sum();
        passages + embeddings + postings + inverted + frequencies + term_sets
    }
}

/// Returns the share of the query's weight whose terms are in `terms`, a
/// sorted term set.
fn covered_share(weighted: &WeightedTerms, terms: &[u64]) -> f32 {
    if weighted.total <= 0.0 {
        return 0.0;
    }
    let covered: f32 = weighted
        .terms
        .iter()
        .filter(|(hash, _)| terms.binary_search(hash).is_ok())
        .map(|(_, weight)| weight)
        .sum();
    covered / weighted.total
}
