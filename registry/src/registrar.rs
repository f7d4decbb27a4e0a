//! Registering, changing and erasing vendors across the three stores: the
//! metadata row, the vendor's files in the character store, and the state
//! pool nodes share in Redis.
//!
//! Registration claims the id first with a pending row, so that two
//! registrations of one id never write over each other's files. It writes
//! the files, `character.json` last, and only then makes the row active. A
//! registration that fails removes what it wrote, and only that.
//!
//! Erasure runs in the order that keeps anything from coming back: mark the
//! row deleted, set the vendor's tombstone in Redis (pool nodes stop caching
//! the vendor and saving its conversations), delete its files, erase its
//! Redis keys and tell every pool node to drop it, and last delete the row.
//! Each step is idempotent, so a retry finishes an erasure that failed part
//! way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, Weak};

use futures::future::try_join_all;
use rand::Rng;
use voca_common::input::check_vendor_id;
use voca_common::RingHandle;
use voca_storage::hot::{SharedStateError, VendorChanges};
use voca_storage::store::{CharacterStore, MAX_KNOWLEDGE_BYTES};

use crate::db::{DbError, ListVendors, NewVendor, Vendor, VendorPage, VendorStatus, VendorUpdate};
use crate::error::RegistryError;
use crate::repository::VendorRepository;
use crate::request::{CharacterSource, Document, Registration, Update};
use crate::template::TemplateLibrary;

/// Attempts at a generated id before giving up; each collides with
/// probability about n / 2^32 for n vendors sharing the name's slug.
const GENERATED_ID_ATTEMPTS: usize = 4;
/// Maximum length of the name slug in a generated id, in bytes.
const MAX_SLUG_BYTES: usize = 48;

/// A vendor with the pool node that owns it on the registry's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedVendor {
    pub vendor: Vendor,
    /// `(pool id, address)`, or `None` when the ring is empty.
    pub pool: Option<(String, String)>,
}

/// Counts of what an erasure removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasure {
    /// Whether the vendor had a metadata row.
    pub existed: bool,
    pub files_deleted: usize,
    pub redis_keys_deleted: usize,
}

/// Performs registry operations on the three stores.
pub struct Registrar {
    repository: Arc<dyn VendorRepository>,
    store: Arc<dyn CharacterStore>,
    /// The state shared with the pool nodes, or `None` where there is
    /// none: pool nodes then learn of a change when their cached copy
    /// expires.
    shared: Option<Arc<dyn VendorChanges>>,
    templates: TemplateLibrary,
    ring: RingHandle,
    locks: VendorLocks,
}

/// The parts of `metadata.json` that outlive one update: the profile the
/// character was generated from, and the size in bytes of each knowledge
/// document the registry wrote, by name, so that an update can keep the
/// vendor within what pool nodes load.
#[derive(Debug, Default, serde::Deserialize)]
struct Metadata {
    #[serde(default)]
    profile: Option<serde_json::Value>,
    #[serde(default)]
    knowledge: BTreeMap<String, u64>,
}

/// Largest `metadata.json` read back, in bytes.
const MAX_METADATA_BYTES: u64 = 4 * 1024 * 1024;

/// Times an update writes `metadata.json` while other updates of the same
/// vendor keep changing its row.
const METADATA_ATTEMPTS: usize = 5;

/// One lock per vendor id being changed, so that this registry's
/// registrations, updates and deletes of one vendor run one at a time and
/// their writes to the store cannot interleave.
#[derive(Default)]
struct VendorLocks {
    locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl VendorLocks {
    async fn lock(&self, vendor_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            // Locks with no holder and no waiter are dropped here, so the map
            // only grows with the number of calls in flight.
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(vendor_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(vendor_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

impl Registrar {
    pub fn new(
        repository: Arc<dyn VendorRepository>,
        store: Arc<dyn CharacterStore>,
        shared: Option<Arc<dyn VendorChanges>>,
        ring: RingHandle,
    ) -> Self {
        Self {
            repository,
            templates: TemplateLibrary::new(store.clone()),
            store,
            shared,
            ring,
            locks: VendorLocks::default(),
        }
    }

    /// Returns the business templates, for seeding the store at start.
    pub fn templates(&self) -> &TemplateLibrary {
        &self.templates
    }

    /// Returns the owner of `vendor_id` on the current ring.
    pub fn place(&self, vendor: Vendor) -> PlacedVendor {
        let pool = self
            .ring
            .load()
            .owner(&vendor.id)
            .map(|member| (member.id.clone(), member.address.clone()));
        PlacedVendor { vendor, pool }
    }

    /// Registers a vendor.
    pub async fn register(
        &self,
        registration: Registration,
    ) -> Result<PlacedVendor, RegistryError> {
        // Everything that can fail on the request alone fails before the id
        // is claimed.
        let character = self
            .character_text(&registration.business_type, &registration.character)
            .await?;
        let _guard;
        let vendor_id = match &registration.vendor_id {
            Some(vendor_id) => {
                _guard = self.locks.lock(vendor_id).await;
                self.refuse_recently_deleted(vendor_id).await?;
                self.claim(vendor_id, &registration).await?;
                vendor_id.clone()
            }
            None => self.claim_generated_id(&registration).await?,
        };
        let written = async {
            self.write_files(&vendor_id, &registration, &character)
                .await?;
            // A generated id is unknown to anyone who could delete it.
            if registration.vendor_id.is_some() {
                self.refuse_deleted_meanwhile(&vendor_id).await?;
            }
            Ok::<_, RegistryError>(())
        };
        let activated = match written.await {
            // Only a row still pending becomes active: a delete that marked
            // it meanwhile wins.
            Ok(()) => {
                self.repository
                    .activate_vendor(&vendor_id)
                    .await
                    .map_err(|error| match error {
                        DbError::NotFound { .. } => {
                            RegistryError::DeletedMeanwhile(vendor_id.clone())
                        }
                        other => other.into(),
                    })
            }
            Err(error) => Err(error),
        };
        let vendor = match activated {
            Ok(vendor) => vendor,
            Err(error) => {
                self.undo_registration(&vendor_id).await;
                return Err(error);
            }
        };
        // A pool node may have cached the id as unknown; the announcement
        // drops that at once instead of after the negative cache's TTL.
        if let Some(shared) = &self.shared {
            if let Err(error) = shared.announce_change(&vendor_id).await {
                tracing::warn!(vendor_id, %error, "announcing a new vendor failed; pool nodes that cached it as unknown answer NOT_FOUND for up to 5 s");
            }
        }
        tracing::info!(vendor_id, business_type = %vendor.business_type, "registered vendor");
        Ok(self.place(vendor))
    }

    /// Returns a vendor.
    pub async fn get(&self, vendor_id: &str) -> Result<PlacedVendor, RegistryError> {
        let vendor = self.repository.get_vendor(vendor_id).await?;
        Ok(self.place(vendor))
    }

    /// Returns one page of vendors.
    pub async fn list(
        &self,
        request: &ListVendors,
    ) -> Result<(Vec<PlacedVendor>, Option<String>), RegistryError> {
        let VendorPage {
            vendors,
            next_page_token,
        } = self.repository.list_vendors(request).await?;
        let ring = self.ring.load();
        let placed = vendors
            .into_iter()
            .map(|vendor| {
                let pool = ring
                    .owner(&vendor.id)
                    .map(|member| (member.id.clone(), member.address.clone()));
                PlacedVendor { vendor, pool }
            })
            .collect();
        Ok((placed, next_page_token))
    }

    /// Writes a new version of a vendor and announces it to the pool nodes.
    pub async fn update(&self, update: Update) -> Result<PlacedVendor, RegistryError> {
        let vendor_id = update.vendor_id.as_str();
        let _guard = self.locks.lock(vendor_id).await;
        let current = self.repository.get_vendor(vendor_id).await?;
        match current.status {
            VendorStatus::Pending => {
                return Err(RegistryError::RegistrationInProgress(vendor_id.to_owned()))
            }
            VendorStatus::Deleted => return Err(RegistryError::NotFound(vendor_id.to_owned())),
            VendorStatus::Active | VendorStatus::Suspended => {}
        }
        let business_type = update
            .business_type
            .clone()
            .unwrap_or_else(|| current.business_type.clone());
        let character = match &update.character {
            Some(source) => Some(self.character_text(&business_type, source).await?),
            None => None,
        };
        let mut metadata = self.read_metadata(vendor_id).await?;
        for name in &update.remove_knowledge {
            metadata.knowledge.remove(name);
        }
        for document in &update.knowledge {
            metadata
                .knowledge
                .insert(document.name.clone(), document.text.len() as u64);
        }
        let total: u64 = metadata.knowledge.values().sum();
        if total > MAX_KNOWLEDGE_BYTES {
            return Err(RegistryError::invalid(
                "knowledge",
                &format!("{total} bytes"),
                format!(
                    "the vendor's documents would total {total} bytes, over the {MAX_KNOWLEDGE_BYTES} bytes a pool node loads; remove some with remove_knowledge"
                ),
            ));
        }
        if let Some(CharacterSource::Template(profile)) = &update.character {
            metadata.profile =
                Some(serde_json::to_value(profile).expect("a profile always serializes"));
        }

        self.write_documents(vendor_id, &update.knowledge).await?;
        let removed: Vec<String> = update
            .remove_knowledge
            .iter()
            .map(|name| format!("vendors/{vendor_id}/knowledge-base/{name}"))
            .collect();
        try_join_all(removed.iter().map(|path| self.store.delete_object(path))).await?;
        if let Some(character) = &character {
            self.store
                .write_vendor_file(vendor_id, "character.json", character.as_bytes())
                .await?;
        }
        if let Err(error) = self.refuse_deleted_meanwhile(vendor_id).await {
            if matches!(error, RegistryError::DeletedMeanwhile(_)) {
                self.store.delete_vendor(vendor_id).await?;
            }
            return Err(error);
        }
        let name = update.character.as_ref().map(|source| match source {
            CharacterSource::Template(profile) => profile.name.clone(),
            CharacterSource::File { name, .. } => name.clone(),
        });
        let status = update.suspend.map(|suspend| {
            if suspend {
                VendorStatus::Suspended
            } else {
                VendorStatus::Active
            }
        });
        self.repository
            .update_vendor(
                vendor_id,
                &VendorUpdate {
                    name,
                    business_type: update.business_type.clone(),
                    status,
                    character_path: None,
                },
            )
            .await?;
        // Another registry may update the vendor at the same time, so the
        // metadata is written again until it matches the latest row.
        let mut vendor = self.repository.get_vendor(vendor_id).await?;
        for _ in 0..METADATA_ATTEMPTS {
            self.write_metadata(&vendor, &metadata).await?;
            let latest = self.repository.get_vendor(vendor_id).await?;
            let settled = latest.character_version == vendor.character_version
                && latest.status == vendor.status;
            vendor = latest;
            if settled {
                break;
            }
        }
        if let Some(shared) = &self.shared {
            shared.announce_change(vendor_id).await.map_err(|error| RegistryError::SharedState {
                error,
                consequence: "the new version is stored but pool nodes were not told; retry UpdateVendor to tell them",
            })?;
        }
        tracing::info!(
            vendor_id,
            version = vendor.character_version,
            "updated vendor"
        );
        Ok(self.place(vendor))
    }

    /// Erases a vendor from every store. Erasing a vendor that does not
    /// exist finishes any erasure left part way and succeeds.
    pub async fn delete(&self, vendor_id: &str) -> Result<Erasure, RegistryError> {
        check_vendor_id(vendor_id)?;
        let _guard = self.locks.lock(vendor_id).await;
        let existed = match self
            .repository
            .set_vendor_status(vendor_id, VendorStatus::Deleted)
            .await
        {
            Ok(_) => true,
            Err(DbError::NotFound { .. }) => false,
            Err(error) => return Err(error.into()),
        };
        let shared_failed = |error: SharedStateError| RegistryError::SharedState {
            error,
            consequence: "the erasure stopped part way; retry DeleteVendor to finish it",
        };
        if let Some(shared) = &self.shared {
            shared
                .set_tombstone(vendor_id)
                .await
                .map_err(shared_failed)?;
        }
        let files_deleted = self.store.delete_vendor(vendor_id).await?;
        let redis_keys_deleted = match &self.shared {
            Some(shared) => shared
                .erase_vendor(vendor_id)
                .await
                .map_err(shared_failed)?,
            None => 0,
        };
        self.repository.delete_vendor(vendor_id).await?;
        tracing::info!(
            vendor_id,
            existed,
            files_deleted,
            redis_keys_deleted,
            "erased vendor"
        );
        Ok(Erasure {
            existed,
            files_deleted,
            redis_keys_deleted,
        })
    }

    /// Returns the character text of a registration or update.
    async fn character_text(
        &self,
        business_type: &str,
        source: &CharacterSource,
    ) -> Result<String, RegistryError> {
        match source {
            CharacterSource::Template(profile) => {
                self.templates.generate(business_type, profile).await
            }
            // Checked to be JSON, hence UTF-8.
            CharacterSource::File { bytes, .. } => Ok(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// Fails when the vendor id was erased so recently that its tombstone
    /// still exists, because pool nodes would not save the new vendor's
    /// conversations.
    async fn refuse_recently_deleted(&self, vendor_id: &str) -> Result<(), RegistryError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.tombstone(vendor_id).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_in)) => Err(RegistryError::RecentlyDeleted {
                vendor_id: vendor_id.to_owned(),
                retry_in,
            }),
            Err(error) => Err(RegistryError::SharedState {
                error,
                consequence: "nothing was registered, since whether the id was just erased is unknown; retry later, or leave vendor_id empty",
            }),
        }
    }

    /// Fails with [`RegistryError::DeletedMeanwhile`] when the vendor was
    /// erased while this call wrote its files. An erasure sets the tombstone
    /// before it deletes files, so a write that finished before this check
    /// either was deleted by the erasure or is found here, and the caller
    /// removes it.
    async fn refuse_deleted_meanwhile(&self, vendor_id: &str) -> Result<(), RegistryError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.tombstone(vendor_id).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(RegistryError::DeletedMeanwhile(vendor_id.to_owned())),
            Err(error) => Err(RegistryError::SharedState {
                error,
                consequence: "whether the vendor was deleted meanwhile is unknown, so this change was not kept; retry later",
            }),
        }
    }

    /// Inserts the pending row that claims `vendor_id`.
    async fn claim(
        &self,
        vendor_id: &str,
        registration: &Registration,
    ) -> Result<(), RegistryError> {
        let row = NewVendor {
            id: vendor_id.to_owned(),
            name: registration.name().to_owned(),
            business_type: registration.business_type.clone(),
            status: VendorStatus::Pending,
            character_path: format!("vendors/{vendor_id}/character.json"),
        };
        match self.repository.insert_vendor(&row).await {
            Ok(_) => Ok(()),
            Err(DbError::AlreadyExists { .. }) => {
                // Tell a registration still running apart from a vendor.
                match self.repository.get_vendor(vendor_id).await {
                    Ok(existing) if existing.status == VendorStatus::Pending => {
                        Err(RegistryError::RegistrationInProgress(vendor_id.to_owned()))
                    }
                    _ => Err(RegistryError::AlreadyExists(vendor_id.to_owned())),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Claims an id generated from the vendor's name.
    async fn claim_generated_id(
        &self,
        registration: &Registration,
    ) -> Result<String, RegistryError> {
        let slug = slug(registration.name());
        for _ in 0..GENERATED_ID_ATTEMPTS {
            let suffix: u32 = rand::rng().random();
            let vendor_id = format!("{slug}-{suffix:08x}");
            match self.claim(&vendor_id, registration).await {
                Ok(()) => return Ok(vendor_id),
                Err(RegistryError::AlreadyExists(_) | RegistryError::RegistrationInProgress(_)) => {
                    continue
                }
                Err(error) => return Err(error),
            }
        }
        Err(RegistryError::Internal(format!(
            "{GENERATED_ID_ATTEMPTS} generated ids for {slug:?} were all taken; choose a vendor_id"
        )))
    }

    /// Writes a new vendor's knowledge documents and metadata, then its
    /// character.
    async fn write_files(
        &self,
        vendor_id: &str,
        registration: &Registration,
        character: &str,
    ) -> Result<(), RegistryError> {
        self.write_documents(vendor_id, &registration.knowledge)
            .await?;
        let metadata = Metadata {
            profile: match &registration.character {
                CharacterSource::Template(profile) => {
                    Some(serde_json::to_value(profile).expect("a profile always serializes"))
                }
                CharacterSource::File { .. } => None,
            },
            knowledge: registration
                .knowledge
                .iter()
                .map(|document| (document.name.clone(), document.text.len() as u64))
                .collect(),
        };
        let now = time::OffsetDateTime::now_utc();
        let vendor = Vendor {
            id: vendor_id.to_owned(),
            name: registration.name().to_owned(),
            business_type: registration.business_type.clone(),
            status: VendorStatus::Active,
            character_path: format!("vendors/{vendor_id}/character.json"),
            character_version: 1,
            created_at: now,
            updated_at: now,
        };
        // Pool nodes load a vendor once its character exists, so the
        // knowledge documents go first. A missing metadata.json reads as
        // active, which a new vendor is, so it is written alongside.
        tokio::try_join!(self.write_metadata(&vendor, &metadata), async {
            self.store
                .write_vendor_file(vendor_id, "character.json", character.as_bytes())
                .await
                .map_err(RegistryError::from)
        })?;
        Ok(())
    }

    async fn write_documents(
        &self,
        vendor_id: &str,
        documents: &[Document],
    ) -> Result<(), RegistryError> {
        let paths: Vec<String> = documents
            .iter()
            .map(|document| format!("knowledge-base/{}", document.name))
            .collect();
        try_join_all(documents.iter().zip(&paths).map(|(document, path)| {
            self.store
                .write_vendor_file(vendor_id, path, document.text.as_bytes())
        }))
        .await?;
        Ok(())
    }

    /// Writes `metadata.json`, which pool nodes read for the vendor's status
    /// and operators read to see what the vendor registered with.
    async fn write_metadata(&self, vendor: &Vendor, extra: &Metadata) -> Result<(), RegistryError> {
        let mut metadata = serde_json::json!({
            "vendor_id": vendor.id,
            "name": vendor.name,
            "business_type": vendor.business_type,
            "status": vendor.status.as_str(),
            "character_version": vendor.character_version,
            "updated_at": vendor.updated_at.unix_timestamp(),
            "knowledge": extra.knowledge,
        });
        if let Some(profile) = &extra.profile {
            metadata["profile"] = profile.clone();
        }
        let text = serde_json::to_vec_pretty(&metadata).expect("metadata always serializes");
        self.store
            .write_vendor_file(&vendor.id, "metadata.json", &text)
            .await?;
        Ok(())
    }

    /// Reads the parts of a vendor's `metadata.json` that an update keeps.
    /// A vendor with no metadata, or metadata that does not parse, has
    /// none, and its documents then count from this update on.
    async fn read_metadata(&self, vendor_id: &str) -> Result<Metadata, RegistryError> {
        let path = format!("vendors/{vendor_id}/metadata.json");
        let Some(bytes) = self.store.read_object(&path, MAX_METADATA_BYTES).await? else {
            return Ok(Metadata::default());
        };
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            tracing::warn!(vendor_id, %error, "metadata.json does not parse; writing it afresh");
            Metadata::default()
        }))
    }

    /// Removes what a failed registration wrote: its files and its pending
    /// row. Failures are logged; the pending row then keeps the id claimed
    /// until DeleteVendor removes it.
    async fn undo_registration(&self, vendor_id: &str) {
        if let Err(error) = self.store.delete_vendor(vendor_id).await {
            tracing::error!(vendor_id, %error, "removing the files of a failed registration failed; DeleteVendor removes them");
        }
        // The row is pending, or marked deleted by a delete that ran
        // meanwhile and may have stopped part way.
        for status in [VendorStatus::Pending, VendorStatus::Deleted] {
            if let Err(error) = self
                .repository
                .delete_vendor_in_status(vendor_id, status)
                .await
            {
                tracing::error!(vendor_id, %error, "removing the row of a failed registration failed; DeleteVendor removes it");
            }
        }
    }
}

/// Returns a lowercase ASCII slug of `name` for a generated id: letters and
/// digits kept, every other run of characters one `-`, at most
/// [`MAX_SLUG_BYTES`] bytes, and `vendor` when nothing is left.
pub fn slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if slug.len() >= MAX_SLUG_BYTES {
                break;
            }
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "vendor".to_owned()
    } else {
        slug.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use voca_common::RingParams;
    use voca_storage::hot::{HotState, MemoryState};
    use voca_storage::store::FileStore;

    use super::*;
    use crate::db::SqliteDatabase;
    use crate::template::BusinessProfile;

    /// Builds a registrar over an in-memory SQLite database, a folder store and
    /// in-process shared state, with an empty ring.
    fn registrar(root: &std::path::Path) -> (Registrar, Arc<MemoryState>, Arc<FileStore>) {
        let shared = Arc::new(MemoryState::new());
        let store = Arc::new(FileStore::new(root));
        let registrar = Registrar::new(
            Arc::new(SqliteDatabase::open_in_memory().unwrap()),
            store.clone(),
            Some(shared.clone()),
            RingHandle::new(RingParams::default()),
        );
        (registrar, shared, store)
    }

    fn registration(vendor_id: Option<&str>, price: &str) -> Registration {
        Registration {
            vendor_id: vendor_id.map(str::to_owned),
            business_type: "retail".to_owned(),
            character: CharacterSource::Template(BusinessProfile {
                name: "Crumb & Co".to_owned(),
                offerings: vec![format!("rye bread at {price}")],
                ..BusinessProfile::default()
            }),
            knowledge: vec![Document {
                name: "menu.md".to_owned(),
                text: "Rye, spelt and sourdough.".to_owned(),
            }],
        }
    }

    fn update(vendor_id: &str, price: &str) -> Update {
        let CharacterSource::Template(profile) = registration(None, price).character else {
            unreachable!("registration() builds a template registration");
        };
        Update {
            vendor_id: vendor_id.to_owned(),
            business_type: None,
            character: Some(CharacterSource::Template(profile)),
            knowledge: Vec::new(),
            remove_knowledge: Vec::new(),
            suspend: None,
        }
    }

    #[tokio::test]
    async fn registration_update_and_erasure() {
        let root = tempfile::tempdir().unwrap();
        let (registrar, shared, store) = registrar(root.path());
        registrar.templates().seed().await.unwrap();

        let placed = registrar
            .register(registration(Some("crumb"), "£3.40"))
            .await
            .unwrap();
        assert_eq!(placed.vendor.status, VendorStatus::Active);
        assert_eq!(placed.pool, None, "the ring is empty");
        let character = store.character("crumb").await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&character).contains("£3.40"));
        assert_eq!(shared.vendor_version("crumb").await, Some(1));

        let error = registrar
            .register(registration(Some("crumb"), "£1"))
            .await
            .unwrap_err();
        assert!(matches!(error, RegistryError::AlreadyExists(_)), "{error}");

        let updated = registrar.update(update("crumb", "£3.90")).await.unwrap();
        assert_eq!(updated.vendor.character_version, 2);
        assert_eq!(shared.vendor_version("crumb").await, Some(2));
        let character = store.character("crumb").await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&character).contains("£3.90"));

        let erasure = registrar.delete("crumb").await.unwrap();
        assert!(erasure.existed);
        assert_eq!(erasure.files_deleted, 3);
        assert!(store.character("crumb").await.unwrap().is_none());
        assert!(matches!(
            registrar.get("crumb").await.unwrap_err(),
            RegistryError::NotFound(_)
        ));
        let error = registrar
            .register(registration(Some("crumb"), "£3.40"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, RegistryError::RecentlyDeleted { .. }),
            "{error}"
        );

        let again = registrar.delete("crumb").await.unwrap();
        assert!(!again.existed);
        assert_eq!(again.files_deleted, 0);
    }

    #[tokio::test]
    async fn update_racing_a_delete_keeps_nothing() {
        let root = tempfile::tempdir().unwrap();
        let (registrar, shared, store) = registrar(root.path());
        registrar.templates().seed().await.unwrap();
        registrar
            .register(registration(Some("crumb"), "£3.40"))
            .await
            .unwrap();

        // An erasure has set the tombstone but not yet reached the files.
        shared.set_tombstone("crumb").await.unwrap();
        let error = registrar
            .update(update("crumb", "£3.90"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, RegistryError::DeletedMeanwhile(_)),
            "{error}"
        );
        assert!(store.character("crumb").await.unwrap().is_none());
        assert!(store.knowledge("crumb", None).await.unwrap().is_empty());
    }

    /// Reads a vendor's `metadata.json` as JSON.
    async fn stored_metadata(store: &FileStore, vendor_id: &str) -> serde_json::Value {
        let bytes = store
            .read_object(&format!("vendors/{vendor_id}/metadata.json"), 1 << 20)
            .await
            .unwrap()
            .expect("the vendor has metadata.json");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn updates_keep_documents_within_the_load_limit() {
        let root = tempfile::tempdir().unwrap();
        let (registrar, _, store) = registrar(root.path());
        registrar.templates().seed().await.unwrap();
        registrar
            .register(registration(Some("crumb"), "£3.40"))
            .await
            .unwrap();
        let metadata = stored_metadata(&store, "crumb").await;
        assert_eq!(metadata["knowledge"]["menu.md"], 25);
        assert!(metadata["profile"]["name"].is_string(), "{metadata}");

        // The documents stored so far already fill the limit.
        let mut full = metadata.clone();
        full["knowledge"]["menu.md"] = serde_json::json!(MAX_KNOWLEDGE_BYTES);
        store
            .write_object("vendors/crumb/metadata.json", full.to_string().as_bytes())
            .await
            .unwrap();
        let add = |remove: Vec<String>| Update {
            vendor_id: "crumb".to_owned(),
            business_type: None,
            character: None,
            knowledge: vec![Document {
                name: "hours.md".to_owned(),
                text: "Open every day.".to_owned(),
            }],
            remove_knowledge: remove,
            suspend: None,
        };
        let error = registrar.update(add(Vec::new())).await.unwrap_err();
        assert!(
            matches!(&error, RegistryError::Invalid { field, .. } if field == "knowledge"),
            "{error}"
        );
        assert!(store
            .knowledge_file("crumb", "hours.md")
            .await
            .unwrap()
            .is_none());

        // Removing the large document makes room, and the profile survives
        // an update that does not change the character.
        registrar
            .update(add(vec!["menu.md".to_owned()]))
            .await
            .unwrap();
        let metadata = stored_metadata(&store, "crumb").await;
        assert_eq!(metadata["knowledge"], serde_json::json!({"hours.md": 15}));
        assert!(metadata["profile"]["name"].is_string(), "{metadata}");
    }

    #[tokio::test]
    async fn generated_ids_follow_the_name() {
        let root = tempfile::tempdir().unwrap();
        let (registrar, _, store) = registrar(root.path());
        registrar.templates().seed().await.unwrap();
        let placed = registrar
            .register(registration(None, "£3.40"))
            .await
            .unwrap();
        let id = placed.vendor.id;
        assert!(id.starts_with("crumb-co-"), "{id}");
        assert_eq!(id.len(), "crumb-co-".len() + 8, "{id}");
        assert!(store.character(&id).await.unwrap().is_some());
    }

    #[test]
    fn slugs_are_valid_id_prefixes() {
        assert_eq!(slug("Rosie's Bakery & Café"), "rosie-s-bakery-caf");
        assert_eq!(slug("  --Bike Fix--  "), "bike-fix");
        assert_eq!(slug("茶屋"), "vendor");
        assert_eq!(slug(&"a".repeat(100)).len(), MAX_SLUG_BYTES);
        for name in ["Rosie's Bakery", "茶屋", "x", "A.B_C"] {
            let id = format!("{}-{:08x}", slug(name), u32::MAX);
            check_vendor_id(&id).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
