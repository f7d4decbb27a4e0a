//! The character store in a local directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{
    safe_relative_path, CharacterStore, StoreError, StoredFile, MAX_CHARACTER_BYTES,
    MAX_KNOWLEDGE_BYTES, MAX_KNOWLEDGE_FILE_BYTES,
};

/// Counter that makes each temporary file name unique within the process.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

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
                // Hidden files, such as a write's temporary file, are not
                // knowledge.
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
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

    async fn read_object(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_file(&safe_relative_path(path)?, limit).await
    }

    async fn delete_object(&self, path: &str) -> Result<bool, StoreError> {
        let relative = safe_relative_path(path)?;
        let shown = relative.display().to_string();
        match self.entry(&relative).await? {
            Entry::Missing => Ok(false),
            Entry::Folder => Err(StoreError::NotARegularFile { path: shown }),
            Entry::File(_) => match tokio::fs::remove_file(self.root.join(&relative)).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(StoreError::Io {
                    path: shown,
                    source,
                }),
            },
        }
    }

    async fn write_object(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let relative = safe_relative_path(path)?;
        let shown = relative.display().to_string();
        let io_error = |source| StoreError::Io {
            path: shown.clone(),
            source,
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        // Checks every existing folder on the way, so that a link cannot
        // redirect the write outside the store.
        match self.entry(parent).await? {
            Entry::File(_) => {
                return Err(StoreError::NotARegularFile {
                    path: format!("{} (a folder was expected)", parent.display()),
                })
            }
            Entry::Missing | Entry::Folder => {}
        }
        if let Entry::Folder = self.entry(&relative).await? {
            return Err(StoreError::NotARegularFile { path: shown });
        }
        let full = self.root.join(&relative);
        let folder = self.root.join(parent);
        tokio::fs::create_dir_all(&folder).await.map_err(io_error)?;
        // Written beside the target and renamed over it, so a reader sees
        // the old file or the new one, never a part.
        // The name is unique per process and write, so concurrent writes of
        // one file do not share a temporary file.
        let temporary = folder.join(format!(
            ".{}.tmp-{}-{}",
            full.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            std::process::id(),
            NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::write(&temporary, bytes)
            .await
            .map_err(io_error)?;
        if let Err(source) = tokio::fs::rename(&temporary, &full).await {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(io_error(source));
        }
        Ok(())
    }

    async fn delete_vendor(&self, vendor_id: &str) -> Result<usize, StoreError> {
        let relative = Self::vendor_path(vendor_id);
        match self.entry(&relative).await? {
            Entry::Missing => return Ok(0),
            Entry::File(_) => {
                return Err(StoreError::NotARegularFile {
                    path: format!("{} (a folder was expected)", relative.display()),
                })
            }
            Entry::Folder => {}
        }
        let full = self.root.join(&relative);
        let count = count_files(&full).await;
        // remove_dir_all removes links themselves, never what they point to.
        tokio::fs::remove_dir_all(&full)
            .await
            .map_err(|source| StoreError::Io {
                path: relative.display().to_string(),
                source,
            })?;
        Ok(count)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Counts the entries other than folders below `dir`, without following links.
async fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            match entry.file_type().await {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(_) => count += 1,
                Err(_) => {}
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_and_deletes_vendor_files() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::new(root.path());
        store
            .write_vendor_file("v1", "character.json", b"{}")
            .await
            .unwrap();
        store
            .write_vendor_file("v1", "knowledge-base/faq/hours.md", b"open 9-5")
            .await
            .unwrap();
        store
            .write_vendor_file("v1", "character.json", b"{\"name\": \"V\"}")
            .await
            .unwrap();
        assert_eq!(
            store.character("v1").await.unwrap().unwrap(),
            b"{\"name\": \"V\"}"
        );
        let files = store.knowledge("v1", None).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "faq/hours.md");

        for bad in ["../v2/character.json", "/etc/passwd", ""] {
            let error = store.write_vendor_file("v1", bad, b"x").await.unwrap_err();
            assert!(
                matches!(error, StoreError::UnsafePath(_)),
                "{bad:?}: {error}"
            );
        }
        let leftovers = std::fs::read_dir(root.path().join("vendors/v1"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0, "no temporary file stays behind");

        assert_eq!(store.delete_vendor("v1").await.unwrap(), 2);
        assert!(store.character("v1").await.unwrap().is_none());
        assert!(!root.path().join("vendors/v1").exists());
        assert_eq!(
            store.delete_vendor("v1").await.unwrap(),
            0,
            "deleting again succeeds"
        );
    }

    #[tokio::test]
    async fn concurrent_writes_of_one_file_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FileStore::new(root.path()));
        let writes = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_vendor_file(
                        "v1",
                        "knowledge-base/menu.md",
                        format!("menu {i}").as_bytes(),
                    )
                    .await
            })
        });
        for write in futures::future::join_all(writes).await {
            write.unwrap().unwrap();
        }
        // A hidden file, such as a leftover temporary file, is not knowledge.
        std::fs::write(
            root.path()
                .join("vendors/v1/knowledge-base/.menu.md.tmp-1-2"),
            "x",
        )
        .unwrap();
        let files = store.knowledge("v1", None).await.unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].name, "menu.md");
        assert!(String::from_utf8_lossy(&files[0].bytes).starts_with("menu "));
    }

    #[tokio::test]
    async fn reads_writes_and_deletes_objects_outside_vendors() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::new(root.path());
        assert!(store
            .read_object("templates/retail.json", 100)
            .await
            .unwrap()
            .is_none());
        store
            .write_object("templates/retail.json", b"{}")
            .await
            .unwrap();
        assert_eq!(
            store
                .read_object("templates/retail.json", 100)
                .await
                .unwrap()
                .unwrap(),
            b"{}"
        );
        let error = store
            .read_object("templates/retail.json", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::TooLarge {
                    size: 2,
                    limit: 1,
                    ..
                }
            ),
            "{error}"
        );
        assert!(store.delete_object("templates/retail.json").await.unwrap());
        assert!(!store.delete_object("templates/retail.json").await.unwrap());
        for bad in ["../outside.json", "/etc/passwd"] {
            assert!(matches!(
                store.write_object(bad, b"x").await.unwrap_err(),
                StoreError::UnsafePath(_)
            ));
            assert!(matches!(
                store.delete_object(bad).await.unwrap_err(),
                StoreError::UnsafePath(_)
            ));
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn writes_do_not_follow_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("vendors")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("vendors/v1")).unwrap();
        let store = FileStore::new(root.path());
        let error = store
            .write_vendor_file("v1", "character.json", b"{}")
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::SymbolicLink { .. }), "{error}");
        assert!(!outside.path().join("character.json").exists());
        assert!(matches!(
            store.delete_vendor("v1").await,
            Err(StoreError::SymbolicLink { .. })
        ));
        assert!(outside.path().exists());
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
}
