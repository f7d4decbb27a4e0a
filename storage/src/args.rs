//! Command-line flags that choose the character store, shared by every
//! binary that opens it.

use crate::store::{self, CharacterStore};

/// Location of vendors' files: the character store and how to reach it.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Character store URL: file:///path for a local directory, or s3://BUCKET
    /// for an S3 bucket (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "VOCA_CHARACTERS")]
    pub characters: String,
    /// S3 endpoint URL, such as http://127.0.0.1:3900 [default: the AWS endpoint of --s3-region].
    #[arg(long, env = "VOCA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region used to sign requests, which must match the server's region.
    #[arg(long, env = "AWS_REGION", default_value = store::S3_DEFAULT_REGION)]
    pub s3_region: String,
    /// Address the bucket in the URL path (http://host/bucket/key), as most
    /// self-hosted S3 servers need, instead of in the host name.
    #[arg(long, env = "VOCA_S3_PATH_STYLE")]
    pub s3_path_style: bool,
}

impl StoreArgs {
    /// Opens the store, taking S3 credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn open(&self) -> Result<Box<dyn CharacterStore>, String> {
        let s3 = store::S3Config {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            access_key_id: env_credential("AWS_ACCESS_KEY_ID")?,
            secret_access_key: env_credential("AWS_SECRET_ACCESS_KEY")?,
            session_token: env_credential("AWS_SESSION_TOKEN")?,
        };
        store::open_store(&self.characters, &s3)
    }
}

/// Reads a credential from the environment. An unset or empty variable means
/// no credential.
fn env_credential(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "{name} is not valid UTF-8; set it to the S3 credential as plain text"
        )),
    }
}
