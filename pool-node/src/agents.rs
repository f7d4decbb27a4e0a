//! Vendors' agents: characters loaded lazily from the store, parsed, indexed
//! and cached under a memory budget.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use voca_character::{
    parse_character, Agent, Character, CharacterError, KnowledgeDocument, KnowledgeEntry,
};

use crate::hot::{HotState, VendorFiles, ERASED_VERSION};
use crate::store::{CharacterStore, StoreError, StoredFile};

/// Default memory budget of the agent cache, in bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Default time a loaded agent is served before its files are read again,
/// so that edits to a character reach the node.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Time a vendor with no character is answered NOT_FOUND without reading
/// the store again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Vendors with no character remembered at most.
const MAX_MISSING: u64 = 100_000;

/// An error loading a vendor's agent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(
        "vendor {vendor_id:?} has no character: register it with RegisterVendor, or write \
         vendors/{vendor_id}/character.json to the character store"
    )]
    NotFound { vendor_id: String },
    #[error("character of vendor {vendor_id:?} is malformed: {error}; fix vendors/{vendor_id}/character.json")]
    Malformed {
        vendor_id: String,
        error: CharacterError,
    },
    #[error("files of vendor {vendor_id:?} cannot be used: {message}")]
    Unusable { vendor_id: String, message: String },
    #[error("character store failed for vendor {vendor_id:?}: {message}")]
    Store { vendor_id: String, message: String },
    #[error("vendor {vendor_id:?} is suspended; set its status to active with UpdateVendor to answer its customers again")]
    Suspended { vendor_id: String },
}

/// Largest `metadata.json` read, in bytes.
const MAX_METADATA_BYTES: u64 = 64 * 1024;

/// Returns whether a vendor's `metadata.json` sets its status to
/// `suspended`. A vendor without metadata, such as one written to the store
/// by hand, is active; unreadable metadata is logged and ignored.
fn is_suspended(vendor_id: &str, metadata: Option<&[u8]>) -> bool {
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        status: Option<String>,
    }
    let Some(bytes) = metadata else {
        return false;
    };
    match serde_json::from_slice::<Metadata>(bytes) {
        Ok(metadata) => metadata.status.as_deref() == Some("suspended"),
        Err(error) => {
            tracing::warn!(vendor_id, %error, "metadata.json is malformed; treating the vendor as active");
            false
        }
    }
}

/// Time between checks of a cached vendor's version, which catch a change
/// whose announcement this node missed.
pub const VERSION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A loaded agent and the version of the vendor's files it was built from.
struct Cached {
    agent: Arc<Agent>,
    version: u64,
    suspended: bool,
    /// When the version was last compared, in milliseconds since
    /// [`Agents::started`].
    checked_millis: AtomicU64,
}

/// The agents of the vendors this node has answered recently.
pub struct Agents {
    store: Arc<dyn CharacterStore>,
    hot: Arc<dyn HotState>,
    /// Id of this pool node, for the shared set of active vendors.
    pool_id: String,
    cache: Cache<String, Arc<Cached>>,
    /// Vendors recently found to have no character.
    missing: Cache<String, ()>,
    started: Instant,
}

impl Agents {
    /// Creates an empty cache that keeps agents up to `budget_bytes` of
    /// estimated heap size, each for at most `ttl`. Misses read the shared
    /// state `hot` first, then the store.
    pub fn new(
        store: Arc<dyn CharacterStore>,
        hot: Arc<dyn HotState>,
        pool_id: &str,
        budget_bytes: u64,
        ttl: Duration,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(budget_bytes)
            .time_to_live(ttl)
            .weigher(|_vendor: &String, cached: &Arc<Cached>| {
                u32::try_from(cached.agent.approx_heap_bytes()).unwrap_or(u32::MAX)
            })
            .build();
        let missing = Cache::builder()
            .max_capacity(MAX_MISSING)
            .time_to_live(NEGATIVE_TTL)
            .build();
        Self {
            store,
            hot,
            pool_id: pool_id.to_owned(),
            cache,
            missing,
            started: Instant::now(),
        }
    }

    /// Returns the vendor's agent, loading it on a miss. Concurrent misses
    /// for one vendor share one load.
    /// A vendor with no character is remembered for [`NEGATIVE_TTL`], so
    /// that repeated messages to it do not each read the store.
    pub async fn get(&self, vendor_id: &str) -> Result<Arc<Agent>, LoadError> {
        if self.missing.contains_key(vendor_id) {
            return Err(LoadError::NotFound {
                vendor_id: vendor_id.to_owned(),
            });
        }
        let cached = match self.cached(vendor_id).await {
            Ok(cached) => cached,
            Err(error) => {
                if let LoadError::NotFound { .. } = error {
                    self.missing.insert(vendor_id.to_owned(), ()).await;
                }
                return Err(error);
            }
        };
        let cached = if self.is_stale(vendor_id, &cached).await {
            tracing::debug!(
                vendor_id,
                version = cached.version,
                "vendor changed; loading it again"
            );
            self.cache.invalidate(vendor_id).await;
            self.cached(vendor_id).await?
        } else {
            cached
        };
        if cached.suspended {
            return Err(LoadError::Suspended {
                vendor_id: vendor_id.to_owned(),
            });
        }
        Ok(cached.agent.clone())
    }

    async fn cached(&self, vendor_id: &str) -> Result<Arc<Cached>, LoadError> {
        self.cache
            .try_get_with_by_ref(vendor_id, self.load(vendor_id))
            .await
            .map_err(|error| (*error).clone())
    }

    /// Compares the cached version with the shared one, at most once per
    /// [`VERSION_CHECK_INTERVAL`].
    async fn is_stale(&self, vendor_id: &str, cached: &Cached) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = cached.checked_millis.load(Ordering::Relaxed);
        let interval = u64::try_from(VERSION_CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval {
            return false;
        }
        cached.checked_millis.store(now, Ordering::Relaxed);
        self.hot
            .vendor_version(vendor_id)
            .await
            .is_some_and(|current| current != cached.version)
    }

    /// Drops a vendor's agent, so the next message loads it again.
    pub async fn evict(&self, vendor_id: &str) {
        self.cache.invalidate(vendor_id).await;
        self.missing.invalidate(vendor_id).await;
    }

    /// Returns whether the vendor's agent is cached.
    pub fn contains(&self, vendor_id: &str) -> bool {
        self.cache.contains_key(vendor_id)
    }

    /// Drops every cached agent whose vendor `owns` rejects, and returns how
    /// many were dropped.
    pub async fn evict_unowned(&self, owns: impl Fn(&str) -> bool) -> usize {
        let unowned: Vec<Arc<String>> = self
            .cache
            .iter()
            .map(|(vendor, _)| vendor)
            .filter(|vendor| !owns(vendor))
            .collect();
        for vendor in &unowned {
            self.cache.invalidate(vendor.as_str()).await;
        }
        unowned.len()
    }

    /// Number of cached agents and their estimated total size in bytes.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// Loads a vendor's agent: its files from the shared state, or else from
    /// the store (and then into the shared state), parsed and indexed.
    async fn load(&self, vendor_id: &str) -> Result<Arc<Cached>, LoadError> {
        // The version is read before the files, so a change between the two
        // reads leaves an older version with newer files, which the next
        // version check loads again, and never the other way round.
        let version = self.hot.vendor_version(vendor_id).await.unwrap_or(0);
        if version == ERASED_VERSION {
            // The vendor is being erased: whatever the store still holds of
            // it is about to go.
            return Err(LoadError::NotFound {
                vendor_id: vendor_id.to_owned(),
            });
        }
        let shared = self
            .hot
            .vendor_files(vendor_id)
            .await
            .filter(|files| files.version >= version);
        let (character, files) = match shared {
            Some(files) => {
                let source = files.character.clone().into_bytes();
                (parse_blocking(vendor_id, source).await?, files)
            }
            None => {
                let (character, mut files) = self.read_store(vendor_id).await?;
                files.version = version;
                self.hot.store_vendor_files(vendor_id, &files).await;
                (character, files)
            }
        };
        let version = files.version;
        let suspended = files.suspended;
        self.hot.mark_active(&self.pool_id, vendor_id).await;
        let documents: Vec<KnowledgeDocument> = files
            .documents
            .into_iter()
            .map(|(name, text)| KnowledgeDocument::new(name, text))
            .collect();
        tracing::debug!(vendor_id, character = %character.name, documents = documents.len(), "loaded character");

        let agent = tokio::task::spawn_blocking(move || Agent::new(character, documents))
            .await
            .map_err(|e| LoadError::Store {
                vendor_id: vendor_id.to_owned(),
                message: format!("indexing the character failed: {e}"),
            })?;
        let checked_millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(Arc::new(Cached {
            agent: Arc::new(agent),
            version,
            suspended,
            checked_millis: AtomicU64::new(checked_millis),
        }))
    }

    /// Reads and parses a vendor's character and knowledge files from the
    /// store.
    async fn read_store(&self, vendor_id: &str) -> Result<(Character, VendorFiles), LoadError> {
        let store_error = |error: StoreError| {
            let (vendor_id, message) = (vendor_id.to_owned(), error.to_string());
            if error.is_permanent() {
                LoadError::Unusable { vendor_id, message }
            } else {
                LoadError::Store { vendor_id, message }
            }
        };
        let metadata_path = format!("vendors/{vendor_id}/metadata.json");
        let (character, metadata) = tokio::join!(
            self.store.character(vendor_id),
            self.store.read_object(&metadata_path, MAX_METADATA_BYTES)
        );
        let bytes = character
            .map_err(store_error)?
            .ok_or_else(|| LoadError::NotFound {
                vendor_id: vendor_id.to_owned(),
            })?;
        let suspended = is_suspended(vendor_id, metadata.map_err(store_error)?.as_deref());
        let character = parse_blocking(vendor_id, bytes.clone()).await?;

        let mut files: BTreeMap<String, StoredFile> = BTreeMap::new();
        for file in self
            .store
            .knowledge(vendor_id, None)
            .await
            .map_err(store_error)?
        {
            files.insert(file.name.clone(), file);
        }
        for entry in &character.knowledge {
            self.resolve_reference(vendor_id, entry, &mut files)
                .await
                .map_err(store_error)?;
        }
        let files = VendorFiles {
            version: 0,
            character: decode_text(&bytes),
            documents: files
                .into_values()
                .map(|file| (file.name, decode_text(&file.bytes)))
                .collect(),
            suspended,
        };
        Ok((character, files))
    }

    /// Adds the files a `knowledge` path or directory entry names, when they
    /// are not already loaded. A reference to nothing is logged, not fatal.
    async fn resolve_reference(
        &self,
        vendor_id: &str,
        entry: &KnowledgeEntry,
        files: &mut BTreeMap<String, StoredFile>,
    ) -> Result<(), StoreError> {
        match entry {
            KnowledgeEntry::Text(_) => {}
            KnowledgeEntry::Path { path, .. } => {
                let relative = strip_knowledge_prefix(path);
                if files.contains_key(relative) {
                    return Ok(());
                }
                match self.store.knowledge_file(vendor_id, relative).await {
                    Ok(Some(file)) => {
                        files.insert(file.name.clone(), file);
                    }
                    Ok(None) => {
                        tracing::warn!(vendor_id, path = %path, "knowledge path does not exist; skipping it")
                    }
                    Err(error) if error.is_permanent() => {
                        tracing::warn!(vendor_id, path = %path, %error, "knowledge path cannot be used; skipping it")
                    }
                    Err(error) => return Err(error),
                }
            }
            KnowledgeEntry::Directory { directory, .. } => {
                let relative = strip_knowledge_prefix(directory);
                match self.store.knowledge(vendor_id, Some(relative)).await {
                    Ok(found) if found.is_empty() => {
                        tracing::warn!(vendor_id, directory = %directory, "knowledge directory is empty or missing; skipping it")
                    }
                    Ok(found) => {
                        for file in found {
                            files.entry(file.name.clone()).or_insert(file);
                        }
                    }
                    Err(error) if error.is_permanent() => tracing::warn!(
                        vendor_id, directory = %directory, %error, "knowledge directory cannot be used; skipping it"
                    ),
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

/// Parses a character file off the async workers, since a large file takes
/// milliseconds.
async fn parse_blocking(vendor_id: &str, source: Vec<u8>) -> Result<Character, LoadError> {
    tokio::task::spawn_blocking(move || parse_character(&source))
        .await
        .map_err(|e| LoadError::Store {
            vendor_id: vendor_id.to_owned(),
            message: format!("parsing the character failed: {e}"),
        })?
        .map_err(|error| LoadError::Malformed {
            vendor_id: vendor_id.to_owned(),
            error,
        })
}

/// Knowledge paths are relative to the vendor's `knowledge-base/` folder;
/// many files spell that folder out, so a leading `knowledge-base/` is
/// accepted too.
fn strip_knowledge_prefix(path: &str) -> &str {
    let path = path.trim_start_matches("./");
    path.strip_prefix("knowledge-base/").unwrap_or(path)
}

/// Decodes a knowledge file as UTF-8, dropping a byte-order mark and
/// replacing invalid sequences.
fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

    /// Agents over a file store at `root`, with no shared state.
    fn local_agents(root: &std::path::Path) -> Agents {
        Agents::new(
            Arc::new(FileStore::new(root)),
            Arc::new(crate::hot::LocalState),
            "pool-test",
            DEFAULT_CACHE_BYTES,
            DEFAULT_CACHE_TTL,
        )
    }

    fn write(root: &std::path::Path, path: &str, text: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    #[tokio::test]
    async fn loads_and_reports_errors() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "vendors/shop/character.json",
            r#"{"name": "Shopkeeper", "bio": "Runs the shop.",
                "knowledge": [{"path": "knowledge-base/extra/returns.md"}, {"path": "missing.md"}]}"#,
        );
        write(
            root.path(),
            "vendors/shop/knowledge-base/hours.md",
            "# Hours\nOpen 9 to 5 on weekdays.",
        );
        write(
            root.path(),
            "vendors/shop/knowledge-base/extra/returns.md",
            "Returns within 30 days.",
        );
        write(
            root.path(),
            "vendors/broken/character.json",
            "{\"name\": \"B\",\n \"bio\": [1, }",
        );
        let agents = local_agents(root.path());

        let agent = agents.get("shop").await.unwrap();
        assert_eq!(agent.name(), "Shopkeeper");
        assert!(matches!(
            agents.get("nobody").await,
            Err(LoadError::NotFound { .. })
        ));
        let error = agents
            .get("broken")
            .await
            .err()
            .expect("a malformed character fails");
        assert!(matches!(error, LoadError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains("\"broken\""), "{error}");
        agents.cache.run_pending_tasks().await;
        assert_eq!(agents.usage().0, 1);
    }

    #[tokio::test]
    async fn unknown_vendor_is_remembered_briefly() {
        let root = tempfile::tempdir().unwrap();
        let agents = local_agents(root.path());
        assert!(matches!(
            agents.get("late").await,
            Err(LoadError::NotFound { .. })
        ));
        write(
            root.path(),
            "vendors/late/character.json",
            r#"{"name": "Late"}"#,
        );
        assert!(
            matches!(agents.get("late").await, Err(LoadError::NotFound { .. })),
            "within the negative TTL the store is not read again"
        );
        agents.evict("late").await;
        assert_eq!(agents.get("late").await.unwrap().name(), "Late");
    }

    #[tokio::test]
    async fn unowned_vendors_are_evicted() {
        let root = tempfile::tempdir().unwrap();
        for vendor in ["kept", "moved"] {
            write(
                root.path(),
                &format!("vendors/{vendor}/character.json"),
                r#"{"name": "V"}"#,
            );
        }
        let agents = local_agents(root.path());
        agents.get("kept").await.unwrap();
        agents.get("moved").await.unwrap();
        assert_eq!(agents.evict_unowned(|vendor| vendor == "kept").await, 1);
        assert!(agents.contains("kept"));
        assert!(!agents.contains("moved"));
    }

    #[test]
    fn knowledge_prefix_is_optional() {
        assert_eq!(strip_knowledge_prefix("knowledge-base/a.md"), "a.md");
        assert_eq!(strip_knowledge_prefix("./knowledge-base/a.md"), "a.md");
        assert_eq!(strip_knowledge_prefix("a.md"), "a.md");
    }
}
