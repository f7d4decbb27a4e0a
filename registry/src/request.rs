//! Checks of registry requests, turning each into a value that the
//! [`Registrar`](crate::Registrar) can act on without further checks.

use std::collections::HashSet;

use voca_character::parse_character;
use voca_common::input::check_vendor_id;
use voca_proto::v1;
use voca_storage::store::safe_relative_path;

use crate::error::RegistryError;
use crate::template::BusinessProfile;

/// Largest character file accepted, in bytes.
pub const MAX_CHARACTER_FILE_BYTES: usize = 1024 * 1024;
/// Largest knowledge document accepted, in bytes.
pub const MAX_KNOWLEDGE_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most knowledge documents in one request.
pub const MAX_KNOWLEDGE_DOCUMENTS: usize = 32;
/// Largest total size of the knowledge documents of one request, in bytes.
pub const MAX_KNOWLEDGE_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Maximum number of documents one update removes.
pub const MAX_REMOVED_DOCUMENTS: usize = 1000;
/// Maximum length of a knowledge document name, in bytes.
pub const MAX_DOCUMENT_NAME_BYTES: usize = 200;
/// Maximum length of a business name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Maximum length of a business description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Maximum length of a fact (an opening-hours line, the location, an
/// offering or a policy), in bytes.
pub const MAX_FACT_BYTES: usize = 1024;
/// Maximum number of entries in each list of facts.
pub const MAX_FACTS: usize = 100;
/// Maximum length of a business type, in bytes.
pub const MAX_BUSINESS_TYPE_BYTES: usize = 64;
/// Business type recorded for a vendor registered with its own character
/// file and no type.
pub const CUSTOM_BUSINESS_TYPE: &str = "custom";

/// The source of a vendor's character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharacterSource {
    /// Generated from the template named by the business type.
    Template(BusinessProfile),
    /// A complete ElizaOS character file, already checked to parse.
    File { bytes: Vec<u8>, name: String },
}

/// A knowledge document to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Path relative to the vendor's `knowledge-base/` folder.
    pub name: String,
    pub text: String,
}

/// A checked `RegisterVendor` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `None` when the registry generates the id.
    pub vendor_id: Option<String>,
    pub business_type: String,
    pub character: CharacterSource,
    pub knowledge: Vec<Document>,
}

impl Registration {
    /// Returns the vendor's name: the business name, or the character's name.
    pub fn name(&self) -> &str {
        match &self.character {
            CharacterSource::Template(profile) => &profile.name,
            CharacterSource::File { name, .. } => name,
        }
    }
}

/// A checked `UpdateVendor` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub vendor_id: String,
    /// The new business type, when the character changes.
    pub business_type: Option<String>,
    pub character: Option<CharacterSource>,
    pub knowledge: Vec<Document>,
    /// Names of knowledge documents to remove.
    pub remove_knowledge: Vec<String>,
    /// `Some(true)` to suspend, `Some(false)` to make active again.
    pub suspend: Option<bool>,
}

/// Checks a `RegisterVendor` request.
pub fn registration(request: v1::RegisterVendorRequest) -> Result<Registration, RegistryError> {
    let vendor_id = if request.vendor_id.is_empty() {
        None
    } else {
        check_vendor_id(&request.vendor_id)?;
        Some(request.vendor_id)
    };
    let (character, business_type) = match request.character {
        Some(v1::register_vendor_request::Character::Profile(profile)) => {
            let business_type = checked_business_type("profile.business_type", &profile.business_type)?;
            (CharacterSource::Template(profile_of(profile)?), business_type)
        }
        Some(v1::register_vendor_request::Character::CharacterFile(bytes)) => {
            let business_type = if request.business_type.is_empty() {
                CUSTOM_BUSINESS_TYPE.to_owned()
            } else {
                checked_business_type("business_type", &request.business_type)?
            };
            (character_file("character_file", bytes)?, business_type)
        }
        None => {
            return Err(RegistryError::invalid(
                "character",
                "",
                "set profile (a template fills in the character) or character_file (a complete ElizaOS character)",
            ))
        }
    };
    Ok(Registration {
        vendor_id,
        business_type,
        character,
        knowledge: documents(request.knowledge)?,
    })
}

/// Checks an `UpdateVendor` request.
pub fn update(request: v1::UpdateVendorRequest) -> Result<Update, RegistryError> {
    check_vendor_id(&request.vendor_id)?;
    let (character, business_type) = match request.character {
        Some(v1::update_vendor_request::Character::Profile(profile)) => {
            let business_type =
                checked_business_type("profile.business_type", &profile.business_type)?;
            (
                Some(CharacterSource::Template(profile_of(profile)?)),
                Some(business_type),
            )
        }
        Some(v1::update_vendor_request::Character::CharacterFile(bytes)) => {
            (Some(character_file("character_file", bytes)?), None)
        }
        None => (None, None),
    };
    let suspend = match v1::VendorStatus::try_from(request.status) {
        Ok(v1::VendorStatus::Unspecified) => None,
        Ok(v1::VendorStatus::Active) => Some(false),
        Ok(v1::VendorStatus::Suspended) => Some(true),
        other => {
            let shown = other.map_or_else(
                |_| request.status.to_string(),
                |s| s.as_str_name().to_owned(),
            );
            return Err(RegistryError::invalid(
                "status",
                &shown,
                "use VENDOR_STATUS_ACTIVE or VENDOR_STATUS_SUSPENDED, or leave it unspecified",
            ));
        }
    };
    if request.remove_knowledge.len() > MAX_REMOVED_DOCUMENTS {
        return Err(RegistryError::invalid(
            "remove_knowledge",
            &format!("{} names", request.remove_knowledge.len()),
            format!("remove at most {MAX_REMOVED_DOCUMENTS} documents per request"),
        ));
    }
    let mut remove_knowledge = Vec::with_capacity(request.remove_knowledge.len());
    for (index, name) in request.remove_knowledge.into_iter().enumerate() {
        remove_knowledge.push(document_name(&format!("remove_knowledge[{index}]"), &name)?);
    }
    let knowledge = documents(request.knowledge)?;
    if let Some(name) = remove_knowledge
        .iter()
        .find(|name| knowledge.iter().any(|document| &document.name == *name))
    {
        return Err(RegistryError::invalid(
            "remove_knowledge",
            name,
            "the same request also writes this document; either write it or remove it",
        ));
    }
    if character.is_none()
        && knowledge.is_empty()
        && remove_knowledge.is_empty()
        && suspend.is_none()
    {
        return Err(RegistryError::invalid(
            "UpdateVendorRequest",
            &request.vendor_id,
            "the update changes nothing; set profile, character_file, knowledge, remove_knowledge or status",
        ));
    }
    Ok(Update {
        vendor_id: request.vendor_id,
        business_type,
        character,
        knowledge,
        remove_knowledge,
        suspend,
    })
}

/// Checks a business type: 1 to 64 bytes of lowercase ASCII letters,
/// digits, `_` and `-`, starting with a letter or digit. The type names the
/// template `templates/{type}.json`, so it must be safe in a path.
pub fn checked_business_type(field: &str, value: &str) -> Result<String, RegistryError> {
    let valid_start = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid_rest = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid_start || !valid_rest || value.len() > MAX_BUSINESS_TYPE_BYTES {
        return Err(RegistryError::invalid(
            field,
            value,
            "use 1 to 64 lowercase letters, digits, '_' or '-', such as retail, ecommerce or service",
        ));
    }
    Ok(value.to_owned())
}

fn profile_of(profile: v1::BusinessProfile) -> Result<BusinessProfile, RegistryError> {
    let name = profile.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(RegistryError::invalid(
            "profile.name",
            &profile.name,
            format!(
                "give the business's name: 1 to {MAX_NAME_CHARS} characters, no control characters"
            ),
        ));
    }
    if profile.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(RegistryError::invalid(
            "profile.description",
            &profile.description,
            format!(
                "is {} bytes; shorten it to {MAX_DESCRIPTION_BYTES} bytes",
                profile.description.len()
            ),
        ));
    }
    check_fact("profile.location", &profile.location)?;
    for (field, facts) in [
        ("profile.opening_hours", &profile.opening_hours),
        ("profile.offerings", &profile.offerings),
        ("profile.policies", &profile.policies),
    ] {
        if facts.len() > MAX_FACTS {
            return Err(RegistryError::invalid(
                field,
                &format!("{} entries", facts.len()),
                format!(
                    "give at most {MAX_FACTS} entries; put longer lists in a knowledge document"
                ),
            ));
        }
        for (index, fact) in facts.iter().enumerate() {
            check_fact(&format!("{field}[{index}]"), fact)?;
        }
    }
    Ok(BusinessProfile {
        name: name.to_owned(),
        description: profile.description,
        opening_hours: profile.opening_hours,
        location: profile.location,
        offerings: profile.offerings,
        policies: profile.policies,
    })
}

fn check_fact(field: &str, fact: &str) -> Result<(), RegistryError> {
    if fact.len() > MAX_FACT_BYTES {
        return Err(RegistryError::invalid(
            field,
            fact,
            format!("is {} bytes; shorten it to {MAX_FACT_BYTES} bytes, or put it in a knowledge document", fact.len()),
        ));
    }
    Ok(())
}

/// Checks a character file: at most 1 MiB of JSON or JSON5 that parses as
/// an ElizaOS character.
fn character_file(field: &str, bytes: Vec<u8>) -> Result<CharacterSource, RegistryError> {
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    if bytes.len() > MAX_CHARACTER_FILE_BYTES {
        return Err(RegistryError::invalid(
            field,
            &shown(),
            format!(
                "is {} bytes, over the limit of {MAX_CHARACTER_FILE_BYTES}; move long texts into knowledge documents",
                bytes.len()
            ),
        ));
    }
    // ElizaOS reads character files as JSON5, which JSON files are too.
    let character = parse_character(&bytes).map_err(|error| {
        RegistryError::invalid(
            field,
            &shown(),
            format!("is not an ElizaOS character in JSON or JSON5: {error}"),
        )
    })?;
    let name = character.name.trim();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            format!("{field} name"),
            name,
            format!("give the character a name of 1 to {MAX_NAME_CHARS} characters with no control characters"),
        ));
    }
    Ok(CharacterSource::File {
        name: name.to_owned(),
        bytes,
    })
}

fn documents(documents: Vec<v1::KnowledgeDocument>) -> Result<Vec<Document>, RegistryError> {
    if documents.len() > MAX_KNOWLEDGE_DOCUMENTS {
        return Err(RegistryError::invalid(
            "knowledge",
            &format!("{} documents", documents.len()),
            format!("send at most {MAX_KNOWLEDGE_DOCUMENTS} documents per request; add more with UpdateVendor"),
        ));
    }
    let mut total = 0;
    let mut names = HashSet::new();
    let mut checked = Vec::with_capacity(documents.len());
    for (index, document) in documents.into_iter().enumerate() {
        let name = document_name(&format!("knowledge[{index}].name"), &document.name)?;
        if !names.insert(name.clone()) {
            return Err(RegistryError::invalid(
                format!("knowledge[{index}].name"),
                &document.name,
                "another document in this request has the same name; give each a distinct name",
            ));
        }
        // A document cannot also be the folder of another one.
        let nested = names.iter().any(|other| {
            other.starts_with(&format!("{name}/")) || name.starts_with(&format!("{other}/"))
        });
        if nested {
            return Err(RegistryError::invalid(
                format!("knowledge[{index}].name"),
                &document.name,
                "another document in this request uses this name as a folder, or this one uses its name as a folder; rename one of them",
            ));
        }
        if document.text.len() > MAX_KNOWLEDGE_DOCUMENT_BYTES {
            return Err(RegistryError::invalid(
                format!("knowledge[{index}].text"),
                &document.text,
                format!(
                    "is {} bytes, over the limit of {MAX_KNOWLEDGE_DOCUMENT_BYTES}; split it into several documents",
                    document.text.len()
                ),
            ));
        }
        total += document.text.len();
        if total > MAX_KNOWLEDGE_REQUEST_BYTES {
            return Err(RegistryError::invalid(
                "knowledge",
                &format!("{total} bytes"),
                format!("send at most {MAX_KNOWLEDGE_REQUEST_BYTES} bytes of documents per request; add more with UpdateVendor"),
            ));
        }
        checked.push(Document {
            name,
            text: document.text,
        });
    }
    Ok(checked)
}

/// Checks a knowledge document name and returns it in its clean form.
fn document_name(field: &str, name: &str) -> Result<String, RegistryError> {
    let invalid = |reason: &str| RegistryError::invalid(field, name, reason);
    if name.len() > MAX_DOCUMENT_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(invalid(
            "use a relative path of at most 200 bytes with no control characters, such as menu.md",
        ));
    }
    let clean = safe_relative_path(name)
        .map_err(|_| invalid("use a relative path inside the knowledge base, with no '..' and no leading '/', such as menu.md"))?;
    Ok(clean.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, business_type: &str) -> v1::BusinessProfile {
        v1::BusinessProfile {
            name: name.to_owned(),
            business_type: business_type.to_owned(),
            description: "A bakery.".to_owned(),
            opening_hours: vec!["Monday: 8:00 to 17:00".to_owned()],
            location: "1 Main Street".to_owned(),
            offerings: vec!["bread".to_owned()],
            policies: Vec::new(),
        }
    }

    fn register(character: v1::register_vendor_request::Character) -> v1::RegisterVendorRequest {
        v1::RegisterVendorRequest {
            vendor_id: "crumb".to_owned(),
            character: Some(character),
            knowledge: Vec::new(),
            business_type: String::new(),
        }
    }

    fn error_field(result: Result<Registration, RegistryError>) -> String {
        match result {
            Err(RegistryError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn profile_registration_is_checked() {
        let request = register(v1::register_vendor_request::Character::Profile(profile(
            " Crumb ", "retail",
        )));
        let checked = registration(request).unwrap();
        assert_eq!(checked.vendor_id.as_deref(), Some("crumb"));
        assert_eq!(checked.business_type, "retail");
        assert_eq!(checked.name(), "Crumb");

        for (name, business_type, field) in [
            ("", "retail", "profile.name"),
            ("Crumb", "Retail", "profile.business_type"),
            ("Crumb", "../retail", "profile.business_type"),
            ("Crumb", "", "profile.business_type"),
        ] {
            let request = register(v1::register_vendor_request::Character::Profile(profile(
                name,
                business_type,
            )));
            assert_eq!(
                error_field(registration(request)),
                field,
                "{name:?} {business_type:?}"
            );
        }
    }

    #[test]
    fn character_files_must_be_small_json_characters() {
        let ok = register(v1::register_vendor_request::Character::CharacterFile(
            br#"{"name": "Dobby", "bio": "a free elf"}"#.to_vec(),
        ));
        let checked = registration(ok).unwrap();
        assert_eq!(checked.name(), "Dobby");
        assert_eq!(checked.business_type, CUSTOM_BUSINESS_TYPE);

        let json5 = register(v1::register_vendor_request::Character::CharacterFile(
            b"// ElizaOS reads JSON5\n{name: 'Dobby', bio: ['a free elf',],}".to_vec(),
        ));
        assert_eq!(registration(json5).unwrap().name(), "Dobby");

        let cases: [&[u8]; 4] = [
            b"name: 'Dobby'",
            br#"{"bio": "no name"}"#,
            br#"["Dobby"]"#,
            b"\xff\xfe",
        ];
        for bytes in cases {
            let request = register(v1::register_vendor_request::Character::CharacterFile(
                bytes.to_vec(),
            ));
            match registration(request) {
                Err(RegistryError::Invalid { field, reason, .. }) => {
                    assert_eq!(field, "character_file");
                    assert!(
                        reason.starts_with("is not an ElizaOS character"),
                        "{reason}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let mut large = br#"{"name": "Dobby", "bio": ""#.to_vec();
        large.extend(std::iter::repeat_n(b'a', MAX_CHARACTER_FILE_BYTES));
        large.extend(br#""}"#);
        let request = register(v1::register_vendor_request::Character::CharacterFile(large));
        let error = registration(request).unwrap_err().to_string();
        assert!(error.contains("over the limit of 1048576"), "{error}");
    }

    #[test]
    fn knowledge_documents_are_checked() {
        let document = |name: &str, size: usize| v1::KnowledgeDocument {
            name: name.to_owned(),
            text: "x".repeat(size),
        };
        let with = |documents: Vec<v1::KnowledgeDocument>| {
            let mut request = register(v1::register_vendor_request::Character::Profile(profile(
                "Crumb", "retail",
            )));
            request.knowledge = documents;
            registration(request)
        };
        let ok = with(vec![
            document("./menu.md", 10),
            document("faq/returns.txt", 10),
        ])
        .unwrap();
        let names: Vec<&str> = ok.knowledge.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["menu.md", "faq/returns.txt"]);

        assert_eq!(
            error_field(with(vec![document("../x", 1)])),
            "knowledge[0].name"
        );
        assert_eq!(
            error_field(with(vec![document("/etc/passwd", 1)])),
            "knowledge[0].name"
        );
        assert_eq!(
            error_field(with(vec![document("a.md", 1), document("./a.md", 1)])),
            "knowledge[1].name"
        );
        assert_eq!(
            error_field(with(vec![document(
                "big.md",
                MAX_KNOWLEDGE_DOCUMENT_BYTES + 1
            )])),
            "knowledge[0].text"
        );
        assert_eq!(
            error_field(with(vec![
                document("faq", 1),
                document("faq/returns.md", 1)
            ])),
            "knowledge[1].name"
        );
        assert_eq!(
            error_field(with(vec![
                document("faq/returns.md", 1),
                document("faq", 1)
            ])),
            "knowledge[1].name"
        );
        let many = (0..=MAX_KNOWLEDGE_DOCUMENTS)
            .map(|i| document(&format!("{i}.md"), 1))
            .collect();
        assert_eq!(error_field(with(many)), "knowledge");
    }

    #[test]
    fn character_file_names_are_checked() {
        let long = format!(r#"{{"name": "{}"}}"#, "a".repeat(MAX_NAME_CHARS + 1));
        let control = br#"{"name": "a\u001b[31mb"}"#.to_vec();
        for bytes in [long.into_bytes(), control] {
            let request = register(v1::register_vendor_request::Character::CharacterFile(bytes));
            assert_eq!(error_field(registration(request)), "character_file name");
        }
    }

    #[test]
    fn updates_cannot_write_and_remove_one_document() {
        let request = v1::UpdateVendorRequest {
            vendor_id: "crumb".to_owned(),
            knowledge: vec![v1::KnowledgeDocument {
                name: "menu.md".to_owned(),
                text: "Rye".to_owned(),
            }],
            remove_knowledge: vec!["./menu.md".to_owned()],
            ..Default::default()
        };
        assert!(
            matches!(update(request), Err(RegistryError::Invalid { field, .. }) if field == "remove_knowledge")
        );
        let request = v1::UpdateVendorRequest {
            vendor_id: "crumb".to_owned(),
            remove_knowledge: vec!["x.md".to_owned(); MAX_REMOVED_DOCUMENTS + 1],
            ..Default::default()
        };
        assert!(
            matches!(update(request), Err(RegistryError::Invalid { field, .. }) if field == "remove_knowledge")
        );
    }

    #[test]
    fn updates_must_change_something() {
        let empty = v1::UpdateVendorRequest {
            vendor_id: "crumb".to_owned(),
            ..Default::default()
        };
        assert!(matches!(update(empty), Err(RegistryError::Invalid { .. })));
        let suspend = v1::UpdateVendorRequest {
            vendor_id: "crumb".to_owned(),
            status: v1::VendorStatus::Suspended as i32,
            ..Default::default()
        };
        assert_eq!(update(suspend).unwrap().suspend, Some(true));
        let pending = v1::UpdateVendorRequest {
            vendor_id: "crumb".to_owned(),
            status: v1::VendorStatus::Pending as i32,
            ..Default::default()
        };
        assert!(
            matches!(update(pending), Err(RegistryError::Invalid { field, .. }) if field == "status")
        );
    }
}
