//! Where vendors' characters live.
//!
//! The layout is the same in every store:
//! `vendors/{vendor_id}/character.json` and
//! `vendors/{vendor_id}/knowledge-base/*`, where every file is knowledge for
//! that vendor.

use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

/// Maximum size of a `character.json`, in bytes.
pub const MAX_CHARACTER_BYTES: u64 = 4 * 1024 * 1024;
/// Maximum size of one knowledge file, in bytes.
pub const MAX_KNOWLEDGE_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Maximum total size of one vendor's knowledge files, in bytes.
pub const MAX_KNOWLEDGE_BYTES: u64 = 64 * 1024 * 1024;

/// A file read from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Path relative to the vendor's `knowledge-base/` folder.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Errors of a character store. Paths are relative to the store's root.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {path} failed: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("knowledge path {0:?} is not a relative path inside the knowledge base")]
    UnsafePath(String),
    #[error("{path} is a symbolic link; the store reads only regular files and folders")]
    SymbolicLink { path: String },
    #[error("{path} is not a regular file")]
    NotARegularFile { path: String },
    #[error("{path} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
}

impl StoreError {
    /// Returns whether the stored data itself is unusable, as opposed to the
    /// store being unreachable; retrying does not help with such an error.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, StoreError::Io { .. })
    }
}

/// Read access to vendors' characters and knowledge files. Vendor ids are
/// checked before they reach a store.
#[async_trait]
pub trait CharacterStore: Send + Sync + 'static {
    /// Returns the vendor's `character.json`, or `None` when it has none.
    async fn character(&self, vendor_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Returns every regular file under the vendor's `knowledge-base/`
    /// folder, or under its subfolder `directory` when given, sorted by name.
    async fn knowledge(
        &self,
        vendor_id: &str,
        directory: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError>;

    /// Returns one file of the vendor's knowledge base, or `None`.
    async fn knowledge_file(
        &self,
        vendor_id: &str,
        path: &str,
    ) -> Result<Option<StoredFile>, StoreError>;

    /// A description for logs, such as the URL.
    fn describe(&self) -> String;
}

/// A store in a local directory, given as a `file://` URL.
///
/// Below the root it follows no symbolic link and reads only regular files,
/// so a vendor's files cannot reach outside its folder and a FIFO or device
/// cannot block a read.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// What a path below the store root is.
enum Entry {
    Missing,
    File(u64),
    Folder,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn vendor_path(vendor_id: &str) -> PathBuf {
        Path::new("vendors").join(vendor_id)
    }

    fn knowledge_path(vendor_id: &str) -> PathBuf {
        Self::vendor_path(vendor_id).join("knowledge-base")
    }

    /// Looks up `relative` below the root without following symbolic links
    /// on the way.
    async fn entry(&self, relative: &Path) -> Result<Entry, StoreError> {
        let mut current = self.root.clone();
        let mut shown = PathBuf::new();
        let mut entry = Entry::Folder;
        for component in relative.components() {
            current.push(component);
            shown.push(component);
            let metadata = match tokio::fs::symlink_metadata(&current).await {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
                Err(source) => {
                    return Err(StoreError::Io {
                        path: shown.display().to_string(),
                        source,
                    })
                }
            };
            let kind = metadata.file_type();
            entry = if kind.is_symlink() {
                return Err(StoreError::SymbolicLink {
                    path: shown.display().to_string(),
                });
            } else if kind.is_dir() {
                Entry::Folder
            } else if kind.is_file() {
                Entry::File(metadata.len())
            } else {
                return Err(StoreError::NotARegularFile {
                    path: shown.display().to_string(),
                });
            };
        }
        Ok(entry)
    }

    /// Reads a regular file of at most `limit` bytes, or returns `None`
    /// when nothing is there.
    async fn read_file(&self, relative: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let shown = relative.display().to_string();
        match self.entry(relative).await? {
            Entry::Missing => Ok(None),
            Entry::Folder => Err(StoreError::NotARegularFile { path: shown }),
            Entry::File(size) if size > limit => Err(StoreError::TooLarge {
                path: shown,
                size,
                limit,
            }),
            Entry::File(_) => match tokio::fs::read(self.root.join(relative)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::Io {
                    path: shown,
                    source,
                }),
            },
        }
    }
}

/// Checks that a path from a character file stays inside the knowledge base:
/// relative, with no `..`, and no root or drive prefix.
pub fn safe_relative_path(path: &str) -> Result<PathBuf, StoreError> {
    let unsafe_path = || StoreError::UnsafePath(path.to_owned());
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return Err(unsafe_path());
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path())
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(unsafe_path());
    }
    Ok(clean)
}

#[async_trait]
impl CharacterStore for FileStore {
    async fn character(&self, vendor_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = Self::vendor_path(vendor_id).join("character.json");
        self.read_file(&path, MAX_CHARACTER_BYTES).await
    }

    async fn knowledge(
        &self,
        vendor_id: &str,
        directory: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError> {
        let base = Self::knowledge_path(vendor_id);
        let start = match directory {
            Some(directory) => base.join(safe_relative_path(directory)?),
            None => base.clone(),
        };
        match self.entry(&start).await? {
            Entry::Missing => return Ok(Vec::new()),
            Entry::File(_) => {
                return Err(StoreError::NotARegularFile {
                    path: format!("{} (a folder was expected)", start.display()),
                })
            }
            Entry::Folder => {}
        }
        let mut files = Vec::new();
        let mut total: u64 = 0;
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let io_error = |source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            };
            let mut entries = tokio::fs::read_dir(self.root.join(&dir))
                .await
                .map_err(io_error)?;
            while let Some(entry) = entries.next_entry().await.map_err(io_error)? {
                let relative = dir.join(entry.file_name());
                // `file_type` does not follow symbolic links, so links and
                // special files are skipped here.
                let Ok(kind) = entry.file_type().await else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(relative);
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let Some(bytes) = self.read_file(&relative, MAX_KNOWLEDGE_FILE_BYTES).await? else {
                    continue;
                };
                total += bytes.len() as u64;
                if total > MAX_KNOWLEDGE_BYTES {
                    return Err(StoreError::TooLarge {
                        path: base.display().to_string(),
                        size: total,
                        limit: MAX_KNOWLEDGE_BYTES,
                    });
                }
                let name = relative
                    .strip_prefix(&base)
                    .unwrap_or(&relative)
                    .to_string_lossy()
                    .into_owned();
                files.push(StoredFile { name, bytes });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    async fn knowledge_file(
        &self,
        vendor_id: &str,
        path: &str,
    ) -> Result<Option<StoredFile>, StoreError> {
        let relative = safe_relative_path(path)?;
        let full = Self::knowledge_path(vendor_id).join(&relative);
        Ok(self
            .read_file(&full, MAX_KNOWLEDGE_FILE_BYTES)
            .await?
            .map(|bytes| StoredFile {
                name: relative.to_string_lossy().into_owned(),
                bytes,
            }))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Opens the store named by a URL: `file:///path` for a local directory.
pub fn open_store(url: &str) -> Result<Box<dyn CharacterStore>, String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("invalid --characters URL {url:?}: {e}; use file:///absolute/path"))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| {
                format!("invalid --characters URL {url:?}: use file:///absolute/path")
            })?;
            Ok(Box::new(FileStore::new(path)))
        }
        other => Err(format!(
            "unsupported --characters scheme {other:?} in {url:?}; use file:///absolute/path"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(
            safe_relative_path("menu.md").unwrap(),
            PathBuf::from("menu.md")
        );
        assert_eq!(
            safe_relative_path("./a/b.md").unwrap(),
            PathBuf::from("a/b.md")
        );
        for bad in [
            "",
            "../secret",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            ".",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn file_store_reads_layout() {
        let root = tempfile::tempdir().unwrap();
        let kb = root.path().join("vendors/v1/knowledge-base/faq");
        std::fs::create_dir_all(&kb).unwrap();
        std::fs::write(root.path().join("vendors/v1/character.json"), b"{}").unwrap();
        std::fs::write(kb.join("hours.md"), b"open 9-5").unwrap();
        std::fs::write(
            root.path().join("vendors/v1/knowledge-base/menu.md"),
            b"bread",
        )
        .unwrap();
        let store = FileStore::new(root.path());

        assert_eq!(store.character("v1").await.unwrap().unwrap(), b"{}");
        assert!(store.character("v2").await.unwrap().is_none());
        let names: Vec<String> = store
            .knowledge("v1", None)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["faq/hours.md", "menu.md"]);
        let faq = store.knowledge("v1", Some("faq")).await.unwrap();
        assert_eq!(faq.len(), 1);
        assert_eq!(
            store
                .knowledge_file("v1", "menu.md")
                .await
                .unwrap()
                .unwrap()
                .bytes,
            b"bread"
        );
        assert!(store
            .knowledge_file("v1", "missing.md")
            .await
            .unwrap()
            .is_none());
        assert!(store
            .knowledge_file("v1", "../character.json")
            .await
            .is_err());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn links_and_special_files_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.md"), b"vault code 4242").unwrap();
        let kb = root.path().join("vendors/v1/knowledge-base");
        std::fs::create_dir_all(&kb).unwrap();
        std::fs::write(kb.join("menu.md"), b"bread").unwrap();
        std::os::unix::fs::symlink(outside.path(), kb.join("linked")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.md"), kb.join("secret.md")).unwrap();
        let fifo = kb.join("pipe.md");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let store = FileStore::new(root.path());

        let listed = store.knowledge("v1", None).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["menu.md"], "links and the FIFO are skipped");
        for path in ["linked/secret.md", "secret.md"] {
            let error = store.knowledge_file("v1", path).await.unwrap_err();
            assert!(
                matches!(error, StoreError::SymbolicLink { .. }),
                "{path}: {error}"
            );
        }
        let error = store.knowledge("v1", Some("linked")).await.unwrap_err();
        assert!(matches!(error, StoreError::SymbolicLink { .. }), "{error}");
        let error = store.knowledge_file("v1", "pipe.md").await.unwrap_err();
        assert!(
            matches!(error, StoreError::NotARegularFile { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("vendors/v1/knowledge-base/pipe.md"),
            "{error}"
        );

        // A vendor folder that is a link is not followed either.
        std::fs::create_dir_all(outside.path().join("other")).unwrap();
        std::fs::write(outside.path().join("other/character.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("other"), root.path().join("vendors/v2"))
            .unwrap();
        assert!(matches!(
            store.character("v2").await,
            Err(StoreError::SymbolicLink { .. })
        ));
    }

    #[tokio::test]
    async fn oversized_and_misplaced_files_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let vendor = root.path().join("vendors/v1");
        std::fs::create_dir_all(vendor.join("character.json")).unwrap();
        let store = FileStore::new(root.path());
        let error = store.character("v1").await.unwrap_err();
        assert!(
            matches!(error, StoreError::NotARegularFile { .. }),
            "{error}"
        );
        assert!(error.is_permanent());

        std::fs::remove_dir(vendor.join("character.json")).unwrap();
        let big = vec![b' '; usize::try_from(MAX_CHARACTER_BYTES).unwrap() + 1];
        std::fs::write(vendor.join("character.json"), big).unwrap();
        let error = store.character("v1").await.unwrap_err();
        assert!(matches!(error, StoreError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn open_store_rejects_other_schemes() {
        assert!(open_store("file:///tmp").is_ok());
        assert!(open_store("s3://bucket")
            .err()
            .unwrap()
            .contains("unsupported"));
        assert!(open_store("not a url").err().unwrap().contains("invalid"));
    }
}
