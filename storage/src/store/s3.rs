//! The character store in an S3 bucket, in the same layout as the file
//! store. An object may be stored zstd-compressed with
//! `Content-Encoding: zstd`, and it is decompressed on reading.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;

use super::encoding::{decode_zstd, encode_zstd, parse_content_encoding, Encoding};
use super::{
    safe_relative_path, CharacterStore, StoreError, StoredFile, MAX_CHARACTER_BYTES,
    MAX_KNOWLEDGE_BYTES, MAX_KNOWLEDGE_FILE_BYTES,
};

/// Region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Time allowed to open a TCP connection to S3.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one S3 operation, retries included, so that an
/// unreachable S3 fails the request instead of holding it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per S3 operation, the first one included.
const MAX_ATTEMPTS: u32 = 3;
/// Knowledge objects of one vendor fetched at the same time.
const CONCURRENT_GETS: usize = 8;
/// Provider name recorded with the static credentials.
const CREDENTIALS_PROVIDER: &str = "voca-pool-node";

/// Settings of the S3 client. The pool node fills them from its flags and
/// the standard `AWS_*` environment variables. The library reads no
/// environment variables.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL, such as `http://127.0.0.1:3900`, or AWS's endpoint for
    /// the region when `None`.
    pub endpoint: Option<String>,
    /// Signing region, which must match the server's region (Garage's
    /// `s3_region`).
    pub region: String,
    /// Addresses the bucket in the URL path instead of the host name, as
    /// most self-hosted S3 servers need.
    pub path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: DEFAULT_REGION.to_owned(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

/// Invalid S3 settings, found before any request is sent.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error(
        "{0} is not set: the s3:// character store needs AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY in the environment"
    )]
    MissingCredential(&'static str),
    #[error(
        "invalid bucket name {0:?}: use 3 to 63 lowercase letters, digits, '.' or '-', \
         starting and ending with a letter or digit"
    )]
    InvalidBucket(String),
    #[error(
        "invalid --s3-endpoint {endpoint:?}: {reason}; use a URL such as http://127.0.0.1:3900"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("--s3-region is empty; give the region the S3 server expects, such as us-east-1")]
    EmptyRegion,
}

/// A store in an S3 bucket, given as an `s3://BUCKET` URL.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// The endpoint as shown in messages.
    endpoint: String,
    description: String,
}

impl S3Store {
    /// Builds the client. Nothing is sent until the first read, so an
    /// unreachable S3 shows up on the first message, not at startup.
    pub fn new(bucket: &str, config: &S3Config) -> Result<Self, S3ConfigError> {
        check_bucket_name(bucket)?;
        let access_key_id = required(&config.access_key_id, "AWS_ACCESS_KEY_ID")?;
        let secret_access_key = required(&config.secret_access_key, "AWS_SECRET_ACCESS_KEY")?;
        if config.region.trim().is_empty() {
            return Err(S3ConfigError::EmptyRegion);
        }
        let credentials = Credentials::new(
            access_key_id,
            secret_access_key,
            config.session_token.clone(),
            None,
            CREDENTIALS_PROVIDER,
        );
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        let endpoint = match &config.endpoint {
            Some(endpoint) => {
                check_endpoint(endpoint)?;
                builder = builder.endpoint_url(endpoint);
                endpoint.clone()
            }
            None => format!("the AWS endpoint of {}", config.region),
        };
        let addressing = if config.path_style {
            "path-style"
        } else {
            "virtual-hosted-style"
        };
        let description = format!(
            "s3://{bucket} at {endpoint} (region {}, {addressing} addressing)",
            config.region
        );
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            endpoint,
            description,
        })
    }

    /// Reads an object of at most `limit` bytes, decompressed, or returns
    /// `None` when there is no such key.
    async fn get(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let request = self.client.get_object().bucket(&self.bucket).key(key);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(GetObjectError::is_no_such_key) =>
            {
                return Ok(None)
            }
            Err(error) => return Err(self.sdk_error(key, error)),
        };
        let encoding = parse_content_encoding(response.content_encoding()).map_err(|message| {
            StoreError::Undecodable {
                path: key.to_owned(),
                message,
            }
        })?;
        let stored_size = response
            .content_length()
            .and_then(|length| u64::try_from(length).ok());
        if let Some(size) = stored_size.filter(|size| *size > limit) {
            return Err(StoreError::TooLarge {
                path: key.to_owned(),
                size,
                limit,
            });
        }
        let stored = self.read_body(key, response.body, limit).await?;
        match encoding {
            Encoding::Identity => Ok(Some(stored)),
            Encoding::Zstd => {
                let undecodable = |message: String| StoreError::Undecodable {
                    path: key.to_owned(),
                    message,
                };
                // Decompressing up to 8 MiB takes milliseconds of CPU, so it
                // runs off the async workers.
                tokio::task::spawn_blocking(move || decode_zstd(&stored, limit))
                    .await
                    .map_err(|e| undecodable(format!("decompression stopped: {e}")))?
                    .map(Some)
                    .map_err(|e| undecodable(e.to_string()))
            }
        }
    }

    /// Reads a response body, stopping once it passes `limit` bytes, in
    /// case the server sent no length or a wrong one.
    async fn read_body(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        loop {
            let chunk = body
                .try_next()
                .await
                .map_err(|e| self.unreachable(format!("reading {key} failed: {e}")))?;
            let Some(chunk) = chunk else {
                return Ok(bytes);
            };
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > limit {
                return Err(StoreError::TooLarge {
                    path: key.to_owned(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
        }
    }

    /// Lists the objects under `prefix`, following every page, without the
    /// zero-byte keys ending in `/` that some tools write as folders.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| self.sdk_error(prefix, error))?;
            for object in page.contents() {
                let Some(key) = object.key().filter(|key| !key.ends_with('/')) else {
                    continue;
                };
                let size = object
                    .size()
                    .and_then(|size| u64::try_from(size).ok())
                    .unwrap_or(0);
                objects.push((key.to_owned(), size));
            }
        }
        Ok(objects)
    }

    fn unreachable(&self, message: String) -> StoreError {
        StoreError::S3Unreachable {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            message,
        }
    }

    /// Maps an SDK error. No response at all means that S3 is unreachable.
    /// An error response is named by its S3 code, with a hint for the codes
    /// that a wrong setting causes.
    fn sdk_error<E>(&self, key: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if matches!(
            error,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        ) {
            return self.unreachable(error_chain(&error));
        }
        let status = error
            .raw_response()
            .map(|response| response.status().as_u16());
        let code = error.code().unwrap_or("no error code").to_owned();
        let detail = match error.message() {
            Some(message) => format!("{code}: {message}"),
            None => format!("{code} ({})", error_chain(&error)),
        };
        let hint = match code.as_str() {
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's read \
                 permission on the bucket"
            }
            "AuthorizationHeaderMalformed" => {
                "; check that --s3-region matches the server's region"
            }
            "NoSuchBucket" => "; create the bucket or fix the bucket name in --characters",
            _ => "",
        };
        let status = status.map_or_else(String::new, |status| format!("HTTP {status} "));
        StoreError::S3Failed {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            message: format!("{status}{detail}{hint}"),
        }
    }
}

#[async_trait]
impl CharacterStore for S3Store {
    async fn character(&self, vendor_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&character_key(vendor_id), MAX_CHARACTER_BYTES)
            .await
    }

    async fn knowledge(
        &self,
        vendor_id: &str,
        directory: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError> {
        let base = knowledge_prefix(vendor_id);
        let prefix = match directory {
            Some(directory) => format!("{base}{}/", relative_key(&safe_relative_path(directory)?)),
            None => base.clone(),
        };
        let mut listed = Vec::new();
        let mut listed_bytes: u64 = 0;
        for (key, size) in self.list(&prefix).await? {
            let Some(name) = knowledge_name(&base, &key) else {
                tracing::warn!(bucket = %self.bucket, key, "knowledge key is not a safe relative path; skipping it");
                continue;
            };
            if size > MAX_KNOWLEDGE_FILE_BYTES {
                return Err(StoreError::TooLarge {
                    path: key,
                    size,
                    limit: MAX_KNOWLEDGE_FILE_BYTES,
                });
            }
            listed_bytes += size;
            listed.push((key, name));
        }
        let too_large = |size| StoreError::TooLarge {
            path: prefix.trim_end_matches('/').to_owned(),
            size,
            limit: MAX_KNOWLEDGE_BYTES,
        };
        if listed_bytes > MAX_KNOWLEDGE_BYTES {
            return Err(too_large(listed_bytes));
        }

        let mut fetches = futures::stream::iter(listed)
            .map(|(key, name)| async move {
                let bytes = self.get(&key, MAX_KNOWLEDGE_FILE_BYTES).await?;
                Ok::<_, StoreError>(bytes.map(|bytes| StoredFile { name, bytes }))
            })
            .buffered(CONCURRENT_GETS);
        let mut files = Vec::new();
        let mut total: u64 = 0;
        while let Some(fetched) = fetches.next().await {
            // An object deleted since the listing is skipped, like a file
            // removed during a folder walk.
            let Some(file) = fetched? else {
                continue;
            };
            total += file.bytes.len() as u64;
            if total > MAX_KNOWLEDGE_BYTES {
                return Err(too_large(total));
            }
            files.push(file);
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    async fn knowledge_file(
        &self,
        vendor_id: &str,
        path: &str,
    ) -> Result<Option<StoredFile>, StoreError> {
        let name = relative_key(&safe_relative_path(path)?);
        let key = format!("{}{name}", knowledge_prefix(vendor_id));
        Ok(self
            .get(&key, MAX_KNOWLEDGE_FILE_BYTES)
            .await?
            .map(|bytes| StoredFile { name, bytes }))
    }

    async fn read_object(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&relative_key(&safe_relative_path(path)?), limit)
            .await
    }

    async fn delete_object(&self, path: &str) -> Result<bool, StoreError> {
        let key = relative_key(&safe_relative_path(path)?);
        // DeleteObject succeeds whether or not the key exists, so a HEAD
        // tells which it was.
        let existed = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => true,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => false,
            Err(error) => return Err(self.sdk_error(&key, error)),
        };
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|error| self.sdk_error(&key, error))?;
        Ok(existed)
    }

    async fn write_object(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let key = relative_key(&safe_relative_path(path)?);
        let compressed = encode_zstd(bytes).map_err(|e| StoreError::Undecodable {
            path: key.clone(),
            message: format!("compressing failed: {e}"),
        })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_encoding("zstd")
            .content_type(content_type(&key))
            .body(ByteStream::from(compressed))
            .send()
            .await
            .map_err(|error| self.sdk_error(&key, error))?;
        Ok(())
    }

    async fn delete_vendor(&self, vendor_id: &str) -> Result<usize, StoreError> {
        let prefix = format!("vendors/{vendor_id}/");
        // Folder markers (keys ending in `/`) are deleted too.
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| self.sdk_error(&prefix, error))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        let deleted = keys.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(keys)
            .map(|key| async move {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|error| self.sdk_error(&key, error))
            })
            .buffer_unordered(CONCURRENT_GETS)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), StoreError>>()?;
        Ok(deleted)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Joins the messages of an error and its sources with `: `, leaving out a
/// source whose message the previous one already contains.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut previous = chain.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !previous.contains(&message) {
            chain.push_str(": ");
            chain.push_str(&message);
        }
        previous = message;
        source = cause.source();
    }
    chain
}

fn required(value: &Option<String>, name: &'static str) -> Result<String, S3ConfigError> {
    value
        .as_deref()
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .ok_or(S3ConfigError::MissingCredential(name))
}

/// Checks a bucket name against the S3 naming rules for new buckets.
fn check_bucket_name(bucket: &str) -> Result<(), S3ConfigError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=63).contains(&bucket.len())
        && bucket.chars().all(allowed)
        && edge(bucket.chars().next())
        && edge(bucket.chars().last())
        && !bucket.contains("..");
    if valid {
        Ok(())
    } else {
        Err(S3ConfigError::InvalidBucket(bucket.to_owned()))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), S3ConfigError> {
    let invalid = |reason: &str| S3ConfigError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the host is missing"));
    }
    Ok(())
}

/// Returns the Content-Type to store with a vendor's file.
fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, extension)| extension) {
        Some("json") => "application/json",
        Some("md") => "text/markdown; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn character_key(vendor_id: &str) -> String {
    format!("vendors/{vendor_id}/character.json")
}

/// Key prefix of a vendor's knowledge base, ending in `/`.
fn knowledge_prefix(vendor_id: &str) -> String {
    format!("vendors/{vendor_id}/knowledge-base/")
}

/// Joins a relative path with `/`, the separator of S3 keys.
fn relative_key(path: &Path) -> String {
    let parts: Vec<_> = path
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

/// Returns the name of a knowledge object relative to the knowledge base,
/// or `None` for a key outside it or one whose path would leave it.
fn knowledge_name(base: &str, key: &str) -> Option<String> {
    let relative = key.strip_prefix(base)?;
    safe_relative_path(relative)
        .ok()
        .map(|path| relative_key(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_layout() {
        assert_eq!(
            character_key("rosies-bakery"),
            "vendors/rosies-bakery/character.json"
        );
        let base = knowledge_prefix("v1");
        assert_eq!(base, "vendors/v1/knowledge-base/");
        assert_eq!(
            relative_key(&safe_relative_path("./faq//hours.md").unwrap()),
            "faq/hours.md"
        );
        assert_eq!(
            knowledge_name(&base, "vendors/v1/knowledge-base/faq/hours.md").as_deref(),
            Some("faq/hours.md")
        );
        assert_eq!(
            knowledge_name(&base, "vendors/v1/knowledge-base/menu.md").as_deref(),
            Some("menu.md")
        );
        for outside in [
            "vendors/v1/character.json",
            "vendors/v10/knowledge-base/menu.md",
            "vendors/v1/knowledge-base/../character.json",
            "vendors/v1/knowledge-base/a\\b.md",
        ] {
            assert_eq!(knowledge_name(&base, outside), None, "{outside}");
        }
    }

    #[test]
    fn error_chain_skips_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer failed")]
        struct Outer(#[source] std::io::Error);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&Outer(refused)), "outer failed: refused");
        let plain = std::io::Error::other("plain");
        assert_eq!(error_chain(&plain), "plain");
    }

    #[test]
    fn bucket_names() {
        for valid in ["voca", "voca-characters", "a.b-c", "123"] {
            assert!(check_bucket_name(valid).is_ok(), "{valid}");
        }
        let long = "a".repeat(64);
        for invalid in [
            "",
            "ab",
            "Voca",
            "voca_x",
            "-voca",
            "voca-",
            "a..b",
            long.as_str(),
        ] {
            assert!(check_bucket_name(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:3900").is_ok());
        assert!(check_endpoint("https://[::1]:3900/").is_ok());
        for invalid in ["127.0.0.1:3900", "ftp://127.0.0.1", "http://", ""] {
            assert!(check_endpoint(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let config = S3Config {
            access_key_id: Some("GK31c2f218a2e44f485b94239e".to_owned()),
            secret_access_key: Some("b892c0665f0ada8a4755dae98baa3b1".to_owned()),
            session_token: Some("token-value".to_owned()),
            ..S3Config::default()
        };
        let debug_output = format!("{config:?}");
        assert!(
            debug_output.contains("GK31c2f218a2e44f485b94239e"),
            "{debug_output}"
        );
        assert!(
            !debug_output.contains("b892c0665f0ada8a4755dae98baa3b1"),
            "{debug_output}"
        );
        assert!(!debug_output.contains("token-value"), "{debug_output}");
    }

    #[tokio::test]
    async fn closed_port_is_unreachable_promptly() {
        // A port that was just bound and released has no listener, so the
        // connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let config = S3Config {
            endpoint: Some(endpoint.clone()),
            path_style: true,
            access_key_id: Some("GKtest".to_owned()),
            secret_access_key: Some("secret".to_owned()),
            ..S3Config::default()
        };
        let store = S3Store::new("voca", &config).unwrap();
        let started = std::time::Instant::now();
        let error = store.character("v1").await.unwrap_err();
        assert!(
            started.elapsed() < OPERATION_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(error, StoreError::S3Unreachable { .. }), "{error}");
        assert!(!error.is_permanent());
        let message = error.to_string();
        let expected = format!("S3 at {endpoint}, bucket \"voca\", is unreachable");
        assert!(message.starts_with(&expected), "{message}");
    }
}
