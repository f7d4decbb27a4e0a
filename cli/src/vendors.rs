//! `voca vendors`: register, import, show, list and delete vendors through
//! a gateway started with `--registry`, or through voca-registry itself.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Subcommand};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use voca_proto::v1::register_vendor_request::Character;
use voca_proto::v1::vendor_registry_client::VendorRegistryClient;
use voca_proto::v1::{
    BusinessProfile, DeleteVendorRequest, GetVendorRequest, KnowledgeDocument, ListVendorsRequest,
    RegisterVendorRequest, UpdateVendorRequest, Vendor, VendorStatus,
};

use crate::client::DEFAULT_GATEWAY;

/// Largest message exchanged with the registry, as the registry allows.
const MAX_MESSAGE_BYTES: usize = 12 * 1024 * 1024;
/// Requests read ahead of the registry's responses during an import.
const IMPORT_BUFFER: usize = 256;
/// Registrations between two progress lines of an import.
const PROGRESS_EVERY: u64 = 10_000;
/// Largest record line sent, leaving room in the registry's 12 MiB request
/// limit for the request's own encoding.
const MAX_RECORD_BYTES: usize = 11 * 1024 * 1024;
/// Times an import sends again the records that failed with UNAVAILABLE.
const IMPORT_RETRIES: u32 = 3;
/// Wait before the first resend; each later one waits one more of these.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Gateway (started with --registry) or voca-registry address, as host:port.
    #[arg(long, global = true, env = "VOCA_GATEWAY", default_value = DEFAULT_GATEWAY)]
    gateway: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Register one vendor from a JSON file in the import format.
    Register {
        /// JSON file with one vendor record.
        file: PathBuf,
    },
    /// Register every vendor of a JSON Lines file, one record per line, over one stream.
    Import {
        /// JSON Lines file, or - for standard input.
        file: PathBuf,
    },
    /// Show a vendor and its pool node.
    Get { vendor_id: String },
    /// List vendors in id order.
    List {
        /// Only vendors with this status: pending, active, suspended or deleted.
        #[arg(long)]
        status: Option<String>,
        /// Only vendors of this business type.
        #[arg(long = "type")]
        business_type: Option<String>,
        /// Vendors per page, 1 to 1000.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Follow every page instead of printing the first.
        #[arg(long)]
        all: bool,
    },
    /// Erase a vendor: its files, its Redis state and its row.
    Delete { vendor_id: String },
    /// Suspend a vendor: its pool node rejects its messages until it is activated.
    Suspend { vendor_id: String },
    /// Make a suspended vendor active again.
    Activate { vendor_id: String },
}

/// One vendor in the import format: a business profile that a template
/// turns into a character, or a complete ElizaOS character.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorRecord {
    #[serde(default)]
    vendor_id: String,
    /// A complete ElizaOS character; the profile fields must then be absent.
    #[serde(default)]
    character: Option<serde_json::Value>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    business_type: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    opening_hours: Vec<String>,
    #[serde(default)]
    location: String,
    #[serde(default)]
    offerings: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    knowledge: Vec<DocumentRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentRecord {
    name: String,
    text: String,
}

impl VendorRecord {
    /// Turns the record into a request.
    pub fn into_request(self) -> Result<RegisterVendorRequest, String> {
        let knowledge = self
            .knowledge
            .into_iter()
            .map(|d| KnowledgeDocument {
                name: d.name,
                text: d.text,
            })
            .collect();
        let (character, business_type) = match self.character {
            Some(character) => {
                let has_profile = !self.name.is_empty()
                    || !self.description.is_empty()
                    || !self.location.is_empty()
                    || !self.opening_hours.is_empty()
                    || !self.offerings.is_empty()
                    || !self.policies.is_empty();
                if has_profile {
                    return Err("a record has either \"character\" or profile fields (name, description, ...), not both".to_owned());
                }
                let bytes = serde_json::to_vec(&character).expect("a JSON value always serializes");
                (Character::CharacterFile(bytes), self.business_type)
            }
            None => (
                Character::Profile(BusinessProfile {
                    name: self.name,
                    business_type: self.business_type,
                    description: self.description,
                    opening_hours: self.opening_hours,
                    location: self.location,
                    offerings: self.offerings,
                    policies: self.policies,
                }),
                String::new(),
            ),
        };
        Ok(RegisterVendorRequest {
            vendor_id: self.vendor_id,
            character: Some(character),
            knowledge,
            business_type,
        })
    }
}

/// Parses one record of the import format.
pub fn parse_record(text: &str) -> Result<RegisterVendorRequest, String> {
    let record: VendorRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    record.into_request()
}

async fn connect(address: &str) -> anyhow::Result<VendorRegistryClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| crate::client::connect_error(address, &e))?;
    Ok(VendorRegistryClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut client = connect(&args.gateway).await?;
    match args.command {
        Command::Register { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {} failed: {e}", file.display()))?;
            let request = parse_record(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a vendor record: {e}", file.display()))?;
            let response = client
                .register_vendor(request)
                .await
                .map_err(status_error)?
                .into_inner();
            let vendor = response.vendor.unwrap_or_default();
            println!("registered {}", describe(&vendor));
        }
        Command::Import { file } => import(client, file).await?,
        Command::Get { vendor_id } => {
            let vendor = client
                .get_vendor(GetVendorRequest { vendor_id })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", describe(&vendor));
        }
        Command::List {
            status,
            business_type,
            page_size,
            all,
        } => {
            let status = match status.as_deref() {
                None => VendorStatus::Unspecified,
                Some(name) => VendorStatus::from_str_name(&format!(
                    "VENDOR_STATUS_{}",
                    name.to_ascii_uppercase()
                ))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown --status {name:?}; use pending, active, suspended or deleted"
                    )
                })?,
            };
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_vendors(ListVendorsRequest {
                        page_size,
                        page_token: page_token.clone(),
                        status: status as i32,
                        business_type: business_type.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for vendor in &page.vendors {
                    println!("{}", describe(vendor));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                if !all {
                    println!("more: --all lists every page");
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Command::Suspend { vendor_id } => {
            set_status(&mut client, vendor_id, VendorStatus::Suspended).await?
        }
        Command::Activate { vendor_id } => {
            set_status(&mut client, vendor_id, VendorStatus::Active).await?
        }
        Command::Delete { vendor_id } => {
            let response = client
                .delete_vendor(DeleteVendorRequest {
                    vendor_id: vendor_id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let state = if response.existed {
                "erased"
            } else {
                "was not registered; erased what was left of"
            };
            println!(
                "{state} {vendor_id}: {} files and {} Redis keys deleted",
                response.files_deleted, response.redis_keys_deleted
            );
        }
    }
    Ok(())
}

async fn set_status(
    client: &mut VendorRegistryClient<Channel>,
    vendor_id: String,
    status: VendorStatus,
) -> anyhow::Result<()> {
    let vendor = client
        .update_vendor(UpdateVendorRequest {
            vendor_id,
            status: status as i32,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("{}", describe(&vendor));
    Ok(())
}

fn describe(vendor: &Vendor) -> String {
    let status = VendorStatus::try_from(vendor.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("VENDOR_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| vendor.status.to_string());
    let pool = if vendor.pool_id.is_empty() {
        "no pool node".to_owned()
    } else {
        format!("pool {} at {}", vendor.pool_id, vendor.pool_address)
    };
    format!(
        "{} ({:?}, {}, {status}, version {}) -> {pool}",
        vendor.vendor_id, vendor.name, vendor.business_type, vendor.character_version
    )
}

/// Streams every record of a JSON Lines file to ImportVendors and reports
/// each failure with its line number. Records that fail with UNAVAILABLE
/// are sent again in a new stream, up to [`IMPORT_RETRIES`] times, unless
/// they came from standard input, which cannot be read twice.
async fn import(mut client: VendorRegistryClient<Channel>, file: PathBuf) -> anyhow::Result<()> {
    let from_stdin = file.as_os_str() == "-";
    let started = Instant::now();
    let mut totals = ImportRound::default();
    let mut only_lines: Option<HashSet<u64>> = None;
    for attempt in 0..=IMPORT_RETRIES {
        let round =
            import_round(&mut client, &file, only_lines.as_ref(), totals.registered).await?;
        totals.registered += round.registered;
        totals.failed += round.failed;
        if attempt == 0 {
            totals.unreadable = round.unreadable;
        }
        if round.stream_error.is_some() {
            totals.stream_error = round.stream_error;
            break;
        }
        if round.unavailable.is_empty() {
            break;
        }
        if from_stdin || attempt == IMPORT_RETRIES {
            for (line, message) in &round.unavailable {
                eprintln!("line {line}: Unavailable: {message}");
            }
            totals.failed += round.unavailable.len() as u64;
            break;
        }
        let delay = RETRY_DELAY * (attempt + 1);
        eprintln!(
            "retrying {} records that failed with UNAVAILABLE in {} s",
            round.unavailable.len(),
            delay.as_secs()
        );
        tokio::time::sleep(delay).await;
        only_lines = Some(round.unavailable.iter().map(|(line, _)| *line).collect());
    }
    let elapsed = started.elapsed();
    println!(
        "imported {} vendors in {:.1} s ({:.0} vendors/s); failed: {}; unreadable lines: {}",
        totals.registered,
        elapsed.as_secs_f64(),
        totals.registered as f64 / elapsed.as_secs_f64().max(1e-9),
        totals.failed,
        totals.unreadable
    );
    if let Some(error) = totals.stream_error {
        anyhow::bail!("the import stopped early: {error}");
    }
    anyhow::ensure!(
        totals.failed == 0 && totals.unreadable == 0,
        "{} of the records were not registered",
        totals.failed + totals.unreadable
    );
    Ok(())
}

/// Outcome of one import stream.
#[derive(Debug, Default)]
struct ImportRound {
    registered: u64,
    /// Records that failed for good, each reported already.
    failed: u64,
    unreadable: u64,
    /// Line number and message of each record that failed with UNAVAILABLE.
    unavailable: Vec<(u64, String)>,
    /// Reason the stream ended before every record was sent, if it did.
    stream_error: Option<String>,
}

/// Sends the records of `file` (only the lines in `only_lines`, when given)
/// over one ImportVendors stream. `registered_before` keeps the progress
/// count running across rounds.
async fn import_round(
    client: &mut VendorRegistryClient<Channel>,
    file: &Path,
    only_lines: Option<&HashSet<u64>>,
    registered_before: u64,
) -> anyhow::Result<ImportRound> {
    let reader: Box<dyn BufRead + Send> = if file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| anyhow::anyhow!("opening {} failed: {e}", file.display()))?;
        Box::new(std::io::BufReader::new(opened))
    };
    // Line number of each request sent, by its index in the stream.
    let lines: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (sender, receiver) = mpsc::channel(IMPORT_BUFFER);
    let reader_lines = lines.clone();
    let shown = file.display().to_string();
    let only_lines = only_lines.cloned();
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut unreadable = 0;
        for (number, line) in reader.split(b'\n').enumerate() {
            let number = number as u64 + 1;
            if only_lines
                .as_ref()
                .is_some_and(|only| !only.contains(&number))
            {
                continue;
            }
            let line =
                line.map_err(|e| anyhow::anyhow!("reading {shown} failed at line {number}: {e}"))?;
            if line.len() > MAX_RECORD_BYTES {
                unreadable += 1;
                eprintln!(
                    "line {number}: not a vendor record: it is {} bytes, over the limit of {MAX_RECORD_BYTES} for one request",
                    line.len()
                );
                continue;
            }
            let Ok(line) = String::from_utf8(line) else {
                unreadable += 1;
                eprintln!("line {number}: not a vendor record: it is not valid UTF-8");
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            match parse_record(&line) {
                Ok(request) => {
                    reader_lines.lock().expect("line index lock").push(number);
                    if sender.blocking_send(request).is_err() {
                        // The stream ended early; its error is reported.
                        break;
                    }
                }
                Err(error) => {
                    unreadable += 1;
                    eprintln!("line {number}: not a vendor record: {error}");
                }
            }
        }
        Ok(unreadable)
    });

    let started = Instant::now();
    let mut responses = client
        .import_vendors(ReceiverStream::new(receiver))
        .await
        .map_err(status_error)?
        .into_inner();
    let mut round = ImportRound::default();
    while let Some(response) = responses.next().await {
        let response = match response {
            Ok(response) => response,
            Err(status) => {
                round.stream_error = Some(status_error(status).to_string());
                break;
            }
        };
        if response.code == Code::Ok as i32 {
            round.registered += 1;
            let total = registered_before + round.registered;
            if total.is_multiple_of(PROGRESS_EVERY) {
                let rate = round.registered as f64 / started.elapsed().as_secs_f64();
                eprintln!("registered {total} vendors ({rate:.0}/s)");
            }
            continue;
        }
        let line = lines
            .lock()
            .expect("line index lock")
            .get(response.index as usize)
            .copied()
            .unwrap_or_default();
        if response.code == Code::Unavailable as i32 {
            round.unavailable.push((line, response.message));
        } else {
            round.failed += 1;
            eprintln!(
                "line {line} ({}): {:?}: {}",
                response.vendor_id,
                Code::from_i32(response.code),
                response.message
            );
        }
    }
    round.unreadable = reading.await??;
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_requests() {
        let request = parse_record(
            r#"{"vendor_id": "crumb", "name": "Crumb", "business_type": "retail",
                "opening_hours": ["Monday: 8 to 5"], "knowledge": [{"name": "menu.md", "text": "Rye"}]}"#,
        )
        .unwrap();
        assert_eq!(request.vendor_id, "crumb");
        assert_eq!(request.knowledge[0].name, "menu.md");
        match request.character {
            Some(Character::Profile(profile)) => {
                assert_eq!(profile.business_type, "retail");
                assert_eq!(profile.opening_hours, ["Monday: 8 to 5"]);
            }
            other => panic!("{other:?}"),
        }

        let request =
            parse_record(r#"{"character": {"name": "Dobby"}, "business_type": "elf"}"#).unwrap();
        assert_eq!(request.business_type, "elf");
        match request.character {
            Some(Character::CharacterFile(bytes)) => assert_eq!(bytes, br#"{"name":"Dobby"}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_are_explained() {
        let error = parse_record(r#"{"name": "Crumb", "opening_hour": []}"#).unwrap_err();
        assert!(error.contains("unknown field `opening_hour`"), "{error}");
        let error =
            parse_record(r#"{"name": "Crumb", "character": {"name": "Dobby"}}"#).unwrap_err();
        assert!(error.contains("not both"), "{error}");
        assert!(parse_record("not json").is_err());
    }
}
