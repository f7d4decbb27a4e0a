//! Where vendors' characters live.
//!
//! The layout is the same in every store:
//! `vendors/{vendor_id}/character.json` and
//! `vendors/{vendor_id}/knowledge-base/*`, where every file is knowledge for
//! that vendor.

mod encoding;
mod file;
mod s3;

use std::io;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

pub use file::FileStore;
pub use s3::{S3Config, S3ConfigError, S3Store, DEFAULT_REGION as S3_DEFAULT_REGION};

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

/// Errors of a character store. Paths are relative to the store's root,
/// which for S3 makes them the object keys.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("accessing {path} failed: {source}")]
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
    #[error("{path} cannot be decoded: {message}")]
    Undecodable { path: String, message: String },
    #[error("S3 at {endpoint}, bucket {bucket:?}, is unreachable: {message}")]
    S3Unreachable {
        endpoint: String,
        bucket: String,
        message: String,
    },
    #[error("S3 at {endpoint}, bucket {bucket:?}, failed on {key}: {message}")]
    S3Failed {
        endpoint: String,
        bucket: String,
        key: String,
        message: String,
    },
}

impl StoreError {
    /// Returns whether the stored data itself is unusable, so that retrying
    /// does not help. An unreachable store, or one that rejects this node's
    /// key, is not a permanent failure.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            StoreError::Io { .. } | StoreError::S3Unreachable { .. } | StoreError::S3Failed { .. }
        )
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

    /// Reads the file at `path` relative to the store's root, such as
    /// `templates/retail.json`, or returns `None` when there is none. Files
    /// over `limit` bytes fail with [`StoreError::TooLarge`].
    async fn read_object(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes the file at `path` relative to the store's root, replacing any
    /// file there. Readers see the old file or the new one, never a part.
    async fn write_object(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// Deletes the file at `path` relative to the store's root and returns
    /// whether there was one.
    async fn delete_object(&self, path: &str) -> Result<bool, StoreError>;

    /// Writes one file of a vendor at `path` relative to its folder, such as
    /// `character.json` or `knowledge-base/menu.md`, replacing any file there.
    async fn write_vendor_file(
        &self,
        vendor_id: &str,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let relative = safe_relative_path(path)?;
        let relative = relative.to_string_lossy();
        self.write_object(&format!("vendors/{vendor_id}/{relative}"), bytes)
            .await
    }

    /// Deletes every file of a vendor and returns how many were deleted.
    /// A vendor with no files is deleted already, which is not an error.
    async fn delete_vendor(&self, vendor_id: &str) -> Result<usize, StoreError>;

    /// Returns a description for logs, such as the URL.
    fn describe(&self) -> String;
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

/// Opens the store named by a URL: `file:///path` for a local directory or
/// `s3://BUCKET` for an S3 bucket reached with `s3`.
pub fn open_store(url: &str, s3: &S3Config) -> Result<Box<dyn CharacterStore>, String> {
    const USAGE: &str = "use file:///absolute/path or s3://BUCKET";
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("invalid --characters URL {url:?}: {e}; {USAGE}"))?;
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| {
                format!("invalid --characters URL {url:?}: use file:///absolute/path")
            })?;
            Ok(Box::new(FileStore::new(path)))
        }
        "s3" => {
            let bucket = s3_bucket(&parsed)
                .map_err(|reason| format!("invalid --characters URL {url:?}: {reason}"))?;
            let store = S3Store::new(bucket, s3).map_err(|e| e.to_string())?;
            Ok(Box::new(store))
        }
        other => Err(format!(
            "unsupported --characters scheme {other:?} in {url:?}; {USAGE}"
        )),
    }
}

/// Returns the bucket of an `s3://BUCKET` URL, which names nothing else: no
/// key prefix, port, user or query.
fn s3_bucket(url: &url::Url) -> Result<&str, String> {
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err("the bucket is missing; use s3://BUCKET".to_owned());
    }
    let extra = !matches!(url.path(), "" | "/")
        || url.port().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some();
    if extra {
        return Err("only a bucket is supported; use s3://BUCKET".to_owned());
    }
    Ok(bucket)
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

    /// S3 settings aimed at a closed loopback port, so that no test can
    /// reach a real service.
    fn loopback_s3() -> S3Config {
        S3Config {
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            path_style: true,
            access_key_id: Some("GKtest".to_owned()),
            secret_access_key: Some("secret".to_owned()),
            ..S3Config::default()
        }
    }

    #[test]
    fn open_store_selects_by_scheme() {
        let s3 = loopback_s3();
        let file = open_store("file:///tmp", &s3).unwrap();
        assert_eq!(file.describe(), "file:///tmp");
        let bucket = open_store("s3://voca-characters", &s3).unwrap();
        assert!(
            bucket
                .describe()
                .starts_with("s3://voca-characters at http://127.0.0.1:9"),
            "{}",
            bucket.describe()
        );
        let error = open_store("ftp://host/dir", &s3).err().unwrap();
        assert!(error.contains("unsupported"), "{error}");
        let error = open_store("not a url", &s3).err().unwrap();
        assert!(error.contains("invalid"), "{error}");
    }

    #[test]
    fn open_store_rejects_bad_s3_urls() {
        let s3 = loopback_s3();
        for url in [
            "s3://",
            "s3:///bucket",
            "s3://bucket/prefix",
            "s3://bucket:9000",
            "s3://user@bucket",
            "s3://bucket?x=1",
            "s3://Upper-Case",
            "s3://ab",
        ] {
            let error = open_store(url, &s3).err();
            assert!(error.is_some(), "{url} was accepted");
        }
    }

    #[test]
    fn open_store_names_missing_credential() {
        let mut s3 = loopback_s3();
        s3.secret_access_key = None;
        let error = open_store("s3://voca", &s3).err().unwrap();
        assert!(error.contains("AWS_SECRET_ACCESS_KEY"), "{error}");
        s3.access_key_id = None;
        let error = open_store("s3://voca", &s3).err().unwrap();
        assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
        assert!(
            open_store("file:///tmp", &s3).is_ok(),
            "a file store needs no credentials"
        );
    }

    #[test]
    fn only_store_data_errors_are_permanent() {
        let unreachable = StoreError::S3Unreachable {
            endpoint: "http://127.0.0.1:3900".to_owned(),
            bucket: "voca".to_owned(),
            message: "connection refused".to_owned(),
        };
        assert!(!unreachable.is_permanent());
        assert_eq!(
            unreachable.to_string(),
            "S3 at http://127.0.0.1:3900, bucket \"voca\", is unreachable: connection refused"
        );
        let denied = StoreError::S3Failed {
            endpoint: "http://127.0.0.1:3900".to_owned(),
            bucket: "voca".to_owned(),
            key: "vendors/v1/character.json".to_owned(),
            message: "access denied".to_owned(),
        };
        assert!(!denied.is_permanent());
        let undecodable = StoreError::Undecodable {
            path: "vendors/v1/character.json".to_owned(),
            message: "not zstd".to_owned(),
        };
        assert!(undecodable.is_permanent());
    }
}
