//! Characters generated from a business template and the facts a vendor
//! registers with.
//!
//! A template is an ElizaOS v1 character in which `{{vendorName}}` stands
//! for the vendor's name. Generation fills in the name, puts the vendor's
//! description first in the bio, and adds every fact as its own knowledge
//! string, so that retrieval can quote one fact at a time.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde_json::{Map, Value};
use voca_storage::store::{CharacterStore, StoreError, MAX_CHARACTER_BYTES};

use crate::error::RegistryError;

/// Placeholder for the vendor's name in templates.
pub const NAME_PLACEHOLDER: &str = "{{vendorName}}";

/// The templates the registry writes to `templates/{name}.json` when the
/// bucket has none, as (business type, template text).
pub const BUILTIN_TEMPLATES: [(&str, &str); 3] = [
    ("retail", include_str!("../templates/retail.json")),
    ("ecommerce", include_str!("../templates/ecommerce.json")),
    ("service", include_str!("../templates/service.json")),
];

/// Replies shared by every vendor, written to `shared/common-responses.json`.
pub const COMMON_RESPONSES: &str = include_str!("../templates/common-responses.json");

/// The facts a vendor states about its business when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BusinessProfile {
    pub name: String,
    /// One or two sentences about the business.
    pub description: String,
    /// Opening hours, one entry per line such as "Saturday: 9:00 to 13:00".
    pub opening_hours: Vec<String>,
    /// Address or service area.
    pub location: String,
    /// Products or services, one per entry, with prices where known.
    pub offerings: Vec<String>,
    /// Policies such as returns, delivery, booking or warranty terms.
    pub policies: Vec<String>,
}

/// A template or profile that cannot make a character.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {template:?} is not a JSON object: {reason}")]
    Malformed { template: String, reason: String },
    #[error("the vendor name is empty; give the business's name")]
    EmptyName,
}

/// Generates the text of an ElizaOS v1 `character.json` for `profile` from
/// the template `template_text`, named `template` in errors.
pub fn generate_character(
    template: &str,
    template_text: &str,
    profile: &BusinessProfile,
) -> Result<String, TemplateError> {
    let name = profile.name.trim();
    if name.is_empty() {
        return Err(TemplateError::EmptyName);
    }
    let malformed = |reason: String| TemplateError::Malformed {
        template: template.to_owned(),
        reason,
    };
    let value: Value = serde_json::from_str(template_text).map_err(|e| malformed(e.to_string()))?;
    let Value::Object(mut character) = fill_name(value, name) else {
        return Err(malformed("the top level is not an object".to_owned()));
    };
    character.insert("name".to_owned(), Value::String(name.to_owned()));
    prepend_bio(&mut character, profile.description.trim());
    let knowledge = knowledge_strings(profile);
    if !knowledge.is_empty() {
        let entries = character
            .entry("knowledge")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(entries) = entries {
            entries.extend(knowledge.into_iter().map(Value::String));
        }
    }
    Ok(serde_json::to_string_pretty(&Value::Object(character))
        .expect("a JSON value always serializes"))
}

/// Path of a business type's template in the character store.
pub fn template_path(business_type: &str) -> String {
    format!("templates/{business_type}.json")
}

/// Path of the shared replies in the character store.
pub const COMMON_RESPONSES_PATH: &str = "shared/common-responses.json";

/// Time a template read from the store is used before it is read again, so
/// that an operator's edit takes effect without a restart.
const TEMPLATE_TTL: Duration = Duration::from_secs(30);

/// The business templates in the character store, read through a
/// short-lived cache so that a bulk import reads each template once.
pub struct TemplateLibrary {
    store: Arc<dyn CharacterStore>,
    /// Template text by business type.
    cache: Cache<String, Arc<str>>,
}

impl TemplateLibrary {
    pub fn new(store: Arc<dyn CharacterStore>) -> Self {
        Self {
            store,
            cache: Cache::builder()
                .max_capacity(1000)
                .time_to_live(TEMPLATE_TTL)
                .build(),
        }
    }

    /// Writes the built-in templates and the shared replies to the store
    /// where it has none, leaving files an operator changed as they are.
    /// Returns the paths written.
    pub async fn seed(&self) -> Result<Vec<String>, StoreError> {
        let files = BUILTIN_TEMPLATES
            .iter()
            .map(|(business_type, text)| (template_path(business_type), *text))
            .chain([(COMMON_RESPONSES_PATH.to_owned(), COMMON_RESPONSES)]);
        let mut written = Vec::new();
        for (path, text) in files {
            if self
                .store
                .read_object(&path, MAX_CHARACTER_BYTES)
                .await?
                .is_none()
            {
                self.store.write_object(&path, text.as_bytes()).await?;
                written.push(path);
            }
        }
        Ok(written)
    }

    /// Generates the character text of `profile` from the template of
    /// `business_type`.
    pub async fn generate(
        &self,
        business_type: &str,
        profile: &BusinessProfile,
    ) -> Result<String, RegistryError> {
        let text = self.template(business_type).await?;
        generate_character(business_type, &text, profile).map_err(|error| match error {
            TemplateError::EmptyName => {
                RegistryError::invalid("profile.name", &profile.name, error.to_string())
            }
            TemplateError::Malformed { .. } => RegistryError::Internal(format!(
                "{} in the character store is unusable: {error}; fix or replace that file",
                template_path(business_type)
            )),
        })
    }

    /// Returns the template text of `business_type`, or an invalid-argument
    /// error naming the type when the store has no such template.
    async fn template(&self, business_type: &str) -> Result<Arc<str>, RegistryError> {
        if let Some(text) = self.cache.get(business_type).await {
            return Ok(text);
        }
        let path = template_path(business_type);
        // A missing template is not cached, so that one an operator uploads
        // is used by the next registration.
        let bytes = self
            .store
            .read_object(&path, MAX_CHARACTER_BYTES)
            .await?
            .ok_or_else(|| {
                RegistryError::invalid(
                    "profile.business_type",
                    business_type,
                    format!(
                        "there is no template {path}; use retail, ecommerce or service, or upload that template to the character store"
                    ),
                )
            })?;
        let text: Arc<str> = Arc::from(String::from_utf8(bytes).map_err(|_| {
            RegistryError::Internal(format!(
                "{path} in the character store is not UTF-8; fix or replace that file"
            ))
        })?);
        self.cache
            .insert(business_type.to_owned(), text.clone())
            .await;
        Ok(text)
    }
}

/// Replaces the name placeholder in every string of `value`.
fn fill_name(value: Value, name: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace(NAME_PLACEHOLDER, name)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| fill_name(v, name)).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, v)| (key, fill_name(v, name)))
                .collect(),
        ),
        other => other,
    }
}

/// Puts the description first in the bio, turning a bio string into a list.
fn prepend_bio(character: &mut Map<String, Value>, description: &str) {
    if description.is_empty() {
        return;
    }
    let mut bio = match character.remove("bio") {
        Some(Value::Array(lines)) => lines,
        Some(Value::String(line)) => vec![Value::String(line)],
        _ => Vec::new(),
    };
    bio.insert(0, Value::String(description.to_owned()));
    character.insert("bio".to_owned(), Value::Array(bio));
}

/// Ends `text` with a full stop unless it ends with punctuation already.
fn sentence(mut text: String) -> String {
    if !text.ends_with(['.', '!', '?', ')', '"']) {
        text.push('.');
    }
    text
}

/// Turns the profile's facts into knowledge strings, one fact each, led by
/// the kind of fact so that a question about it finds the string.
fn knowledge_strings(profile: &BusinessProfile) -> Vec<String> {
    let mut knowledge = Vec::new();
    let clean = |text: &str| text.trim().to_owned();
    // All the hours go in one string, so that a question about opening
    // hours is answered with every day, not with the best-matching line.
    let hours: Vec<String> = profile
        .opening_hours
        .iter()
        .map(|h| clean(h))
        .filter(|h| !h.is_empty())
        .collect();
    if !hours.is_empty() {
        knowledge.push(sentence(format!(
            "Opening hours and times, when we open and close: {}",
            hours.join("; ")
        )));
    }
    let location = clean(&profile.location);
    if !location.is_empty() {
        knowledge.push(sentence(format!("Location and address: {location}")));
    }
    for offering in profile
        .offerings
        .iter()
        .map(|o| clean(o))
        .filter(|o| !o.is_empty())
    {
        knowledge.push(sentence(format!("We offer {offering}")));
    }
    for policy in profile
        .policies
        .iter()
        .map(|p| clean(p))
        .filter(|p| !p.is_empty())
    {
        knowledge.push(sentence(format!("Our policy: {policy}")));
    }
    knowledge
}

#[cfg(test)]
mod tests {
    use voca_character::{parse_character, Agent, OfflineResponder};

    use super::*;

    fn bakery() -> BusinessProfile {
        BusinessProfile {
            name: "Crumb & Co".to_owned(),
            description: "A family bakery baking bread and cakes every morning.".to_owned(),
            opening_hours: vec![
                "Monday to Friday: 7:00 to 18:00".to_owned(),
                "Sunday: closed".to_owned(),
            ],
            location: "12 Mill Lane, Leeds".to_owned(),
            offerings: vec![
                "rye bread at £3.40 a loaf".to_owned(),
                "birthday cakes to order".to_owned(),
            ],
            policies: vec!["cake orders need 48 hours' notice".to_owned()],
        }
    }

    #[test]
    fn every_builtin_template_makes_a_parsable_character() {
        for (template, text) in BUILTIN_TEMPLATES {
            let generated = generate_character(template, text, &bakery()).unwrap();
            assert!(
                !generated.contains(NAME_PLACEHOLDER),
                "{template}: {generated}"
            );
            let character =
                parse_character(generated.as_bytes()).unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(character.name, "Crumb & Co");
            assert_eq!(
                character.bio[0],
                "A family bakery baking bread and cakes every morning."
            );
            assert_eq!(character.knowledge_texts().count(), 5, "{template}");
        }
    }

    #[test]
    fn generated_character_answers_from_facts() {
        let (template, text) = BUILTIN_TEMPLATES[0];
        let generated = generate_character(template, text, &bakery()).unwrap();
        let agent = Agent::new(parse_character(generated.as_bytes()).unwrap(), Vec::new());
        let responder = OfflineResponder::new();
        let cases = [
            (
                "What are your opening hours?",
                "Monday to Friday: 7:00 to 18:00; Sunday: closed",
            ),
            ("What time do you open?", "7:00"),
            ("How much is the rye bread?", "£3.40"),
            ("Where is your address?", "12 Mill Lane"),
            ("How much notice do you need for a cake order?", "48 hours"),
        ];
        for (question, fact) in cases {
            let reply = responder.reply(&agent, question).unwrap().text;
            assert!(reply.contains(fact), "{question}: {reply}");
        }
    }

    #[test]
    fn bad_input_is_rejected() {
        let profile = BusinessProfile {
            name: "  ".to_owned(),
            ..bakery()
        };
        assert_eq!(
            generate_character("retail", BUILTIN_TEMPLATES[0].1, &profile),
            Err(TemplateError::EmptyName)
        );
        let error = generate_character("broken", "[1, 2]", &bakery()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"broken\" is not a JSON object"),
            "{error}"
        );
        let error = generate_character("broken", "{", &bakery()).unwrap_err();
        assert!(matches!(error, TemplateError::Malformed { .. }));
    }

    #[test]
    fn common_responses_are_json() {
        let value: Value = serde_json::from_str(COMMON_RESPONSES).unwrap();
        assert!(value["greeting"].is_string());
    }
}
