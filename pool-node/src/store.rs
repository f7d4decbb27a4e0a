//! Where vendors' characters live.
//!
//! The layout is the same in every store:
//! `vendors/{vendor_id}/character.json` and
//! `vendors/{vendor_id}/knowledge-base/*`, where every file is knowledge for
//! that vendor.

use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

/// A file read from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Path relative to the vendor's `knowledge-base/` folder.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Errors of a character store.
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
}

/// Read access to vendors' characters and knowledge files. Vendor ids are
/// checked before they reach a store.
#[async_trait]
pub trait CharacterStore: Send + Sync + 'static {
    /// Returns the vendor's `character.json`, or `None` when it has none.
    async fn character(&self, vendor_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Returns every file under the vendor's `knowledge-base/` folder, or
    /// under its subfolder `directory` when given, sorted by name.
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
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn vendor_dir(&self, vendor_id: &str) -> PathBuf {
        self.root.join("vendors").join(vendor_id)
    }

    fn knowledge_dir(&self, vendor_id: &str) -> PathBuf {
        self.vendor_dir(vendor_id).join("knowledge-base")
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

async fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(source) => Err(StoreError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[async_trait]
impl CharacterStore for FileStore {
    async fn character(&self, vendor_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_optional(&self.vendor_dir(vendor_id).join("character.json")).await
    }

    async fn knowledge(
        &self,
        vendor_id: &str,
        directory: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError> {
        let base = self.knowledge_dir(vendor_id);
        let start = match directory {
            Some(directory) => base.join(safe_relative_path(directory)?),
            None => base.clone(),
        };
        let mut files = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        path: dir.display().to_string(),
                        source,
                    })
                }
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|source| StoreError::Io {
                    path: dir.display().to_string(),
                    source,
                })?
            {
                let path = entry.path();
                // Symbolic links are not followed, so a link cannot reach
                // files outside the vendor's folder.
                let Ok(kind) = entry.file_type().await else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file() {
                    if let Some(bytes) = read_optional(&path).await? {
                        let name = path
                            .strip_prefix(&base)
                            .unwrap_or(&path)
                            .to_string_lossy()
                            .into_owned();
                        files.push(StoredFile { name, bytes });
                    }
                }
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
        let full = self.knowledge_dir(vendor_id).join(&relative);
        if tokio::fs::symlink_metadata(&full)
            .await
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Ok(None);
        }
        Ok(read_optional(&full).await?.map(|bytes| StoredFile {
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
