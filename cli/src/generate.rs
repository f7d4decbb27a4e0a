//! `voca generate-vendors`: writes benchmark vendors into a character store.
//!
//! Vendor `i` is `bench-vendor-{i:07}`. Its character is one of the
//! example vendors' characters, taken in turn, with its own name and
//! username and the example's knowledge-base files folded into the inline
//! `knowledge` list, so that each vendor is one `character.json`. A
//! manifest at `bench-vendors.json` records how many were written; a later
//! run that finds enough skips the work.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::{stream, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use voca_storage::args::StoreArgs;
use voca_storage::store::CharacterStore;

/// Object that records a finished generation.
const MANIFEST: &str = "bench-vendors.json";

/// Maximum writes in flight.
const PARALLEL_WRITES: usize = 64;

/// Returns the id of generated vendor `index`.
pub fn vendor_id(index: u64) -> String {
    format!("bench-vendor-{index:07}")
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Number of vendors to write.
    #[arg(long)]
    count: u64,
    #[command(flatten)]
    store: StoreArgs,
    /// Folder of example vendors, each a folder with character.json and an
    /// optional knowledge-base folder.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vendors"))]
    from: PathBuf,
}

/// Layout of the generated characters; a manifest of another layout is
/// written again.
const LAYOUT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Manifest {
    layout: u32,
    count: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    let store = args
        .store
        .open()
        .map_err(|error| anyhow::anyhow!("opening the character store: {error}"))?;
    if let Some(bytes) = store.read_object(MANIFEST, 1 << 20).await? {
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
            if manifest.layout == LAYOUT && manifest.count >= args.count {
                println!(
                    "{} already holds {} generated vendors; nothing to do",
                    args.store.characters, manifest.count
                );
                return Ok(());
            }
        }
    }
    let templates = templates(&args.from)?;
    let started = Instant::now();
    let store: &dyn CharacterStore = store.as_ref();
    stream::iter(0..args.count)
        .map(|index| {
            let template = &templates[(index % templates.len() as u64) as usize];
            async move {
                let bytes = character(template, index)?;
                let path = format!("vendors/{}/character.json", vendor_id(index));
                store
                    .write_object(&path, &bytes)
                    .await
                    .with_context(|| format!("writing {path}"))?;
                if (index + 1) % 100_000 == 0 {
                    eprintln!("{} vendors written", index + 1);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<()>()
        .await?;
    let manifest = serde_json::to_vec(&Manifest {
        layout: LAYOUT,
        count: args.count,
    })?;
    store.write_object(MANIFEST, &manifest).await?;
    println!(
        "wrote {} vendors to {} in {:.1} s",
        args.count,
        args.store.characters,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads each example vendor's character and folds its knowledge-base
/// files into the character's `knowledge` list.
fn templates(folder: &Path) -> anyhow::Result<Vec<Value>> {
    let mut vendors: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading the example vendors in {}", folder.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    vendors.sort();
    let mut templates = Vec::new();
    for vendor in vendors {
        let path = vendor.join("character.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut character: Value = json5::from_str(&text)
            .with_context(|| format!("{} is not a JSON5 character", path.display()))?;
        anyhow::ensure!(
            character.is_object(),
            "{} is not a character: it holds JSON5 but not an object; give --from a folder of ElizaOS character folders",
            path.display()
        );
        // Entries that name a knowledge-base file (`{"path": ...}`) are
        // replaced by the text of the files.
        let mut knowledge: Vec<Value> = match character.get("knowledge") {
            Some(Value::Array(items)) => items
                .iter()
                .filter(|item| item.is_string())
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let mut files: Vec<PathBuf> = match std::fs::read_dir(vendor.join("knowledge-base")) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            knowledge.extend(
                text.split("\n\n")
                    .map(str::trim)
                    .filter(|paragraph| !paragraph.is_empty() && !paragraph.starts_with('#'))
                    .map(|paragraph| Value::String(paragraph.replace('\n', " "))),
            );
        }
        character["knowledge"] = Value::Array(knowledge);
        templates.push(character);
    }
    anyhow::ensure!(
        !templates.is_empty(),
        "{} holds no vendor folder with a character.json; give --from the examples/vendors folder",
        folder.display()
    );
    Ok(templates)
}

/// Builds the character of generated vendor `index` from `template`.
fn character(template: &Value, index: u64) -> anyhow::Result<Vec<u8>> {
    let mut character = template.clone();
    let name = character
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("Vendor")
        .to_owned();
    character["name"] = Value::String(format!("{name} {index:07}"));
    character["username"] = Value::String(vendor_id(index));
    Ok(serde_json::to_vec(&character)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vendors")
    }

    #[test]
    fn generated_characters_parse_with_their_knowledge_inline() {
        let templates = templates(&examples()).unwrap();
        assert!(templates.len() >= 4, "{} templates", templates.len());
        for index in 0..templates.len() as u64 * 2 {
            let template = &templates[(index % templates.len() as u64) as usize];
            let bytes = character(template, index).unwrap();
            let parsed = voca_character::parse_character(&bytes)
                .unwrap_or_else(|error| panic!("vendor {index}: {error}"));
            assert!(
                parsed.name.ends_with(&format!("{index:07}")),
                "{}",
                parsed.name
            );
            assert!(
                parsed
                    .knowledge
                    .iter()
                    .all(|entry| matches!(entry, voca_character::KnowledgeEntry::Text(_))),
                "vendor {index} still names knowledge files"
            );
            assert!(
                parsed.knowledge.len() > 3,
                "vendor {index}: {} knowledge entries",
                parsed.knowledge.len()
            );
        }
    }

    #[test]
    fn missing_examples_are_reported_by_path() {
        let error = templates(Path::new("/nonexistent/examples")).unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/examples"),
            "{error:#}"
        );
    }
}
