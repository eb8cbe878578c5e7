//! A generator of realistic chatbot-platform activity, used by `logbook demo` and by the benchmarks.
//!
//! It draws entity types, actions, event types and resource keys from the chatbot-platform catalog shipped in
//! `data/chatbot-platform-catalog.json`, and produces input events (the JSON a client would send): about half
//! operational events (messages, conversations, integration errors, dataset and file processing, token usage)
//! with resources and nested metadata, the rest audit events (CRUD with before/after snapshots, logins,
//! invitations). The generator is deterministic for a given seed.

use crate::time::Millis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};

/// The catalog shipped with Logbook.
pub const CATALOG_JSON: &str = include_str!("../../../data/chatbot-platform-catalog.json");

/// An entity type and what it is.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, utoipa::ToSchema)]
pub struct EntityType {
    pub name: String,
    pub description: String,
}

/// The entity catalog: entity types, actions, example event types and resource keys. Logbook accepts events
/// with any entity type; the catalog describes the known ones for people (the dashboard's lists, `GET
/// /v1/entity-types`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub entity_types: Vec<EntityType>,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub event_types_examples: Vec<String>,
    #[serde(default)]
    pub resource_keys: Vec<String>,
}

impl Catalog {
    /// The chatbot-platform catalog shipped in `data/`.
    pub fn builtin() -> Catalog {
        serde_json::from_str(CATALOG_JSON).expect("the shipped catalog is valid")
    }

    /// A catalog from JSON text, with the standard actions added when it names none.
    pub fn from_json(text: &str) -> Result<Catalog, String> {
        let mut catalog: Catalog = serde_json::from_str(text)
            .map_err(|error| format!("invalid entity catalog: {error}"))?;
        if catalog.actions.is_empty() {
            catalog.actions = STANDARD_ACTIONS
                .iter()
                .map(|action| action.to_string())
                .collect();
        }
        for action in &mut catalog.actions {
            *action = action.to_uppercase();
        }
        Ok(catalog)
    }
}

/// The audit actions every deployment knows; custom ones are accepted too.
pub const STANDARD_ACTIONS: [&str; 7] = [
    "CREATED", "UPDATED", "DELETED", "INVITED", "ACCEPTED", "LOGIN", "LOGOUT",
];

const PEOPLE: &[(&str, &str)] = &[
    ("u_alice", "Alice Martin"),
    ("u_bob", "Bob Chen"),
    ("u_carol", "Carol Diaz"),
    ("u_dan", "Dan Okafor"),
    ("u_erin", "Erin Walsh"),
    ("u_farid", "Farid Haddad"),
    ("u_grace", "Grace Kim"),
    ("u_hugo", "Hugo Lefèvre"),
];
const CHANNELS: &[&str] = &[
    "webchat",
    "slack",
    "whatsapp",
    "telegram",
    "messenger",
    "sms",
];
const MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"];
const NAMES: &[&str] = &[
    "Welcome",
    "Pricing FAQ",
    "Order status",
    "Handoff",
    "Returns",
    "Onboarding",
    "Feedback",
];
const ERRORS: &[&str] = &[
    "rate_limited",
    "timeout",
    "invalid_token",
    "upstream_500",
    "payload_rejected",
];

/// Generates input events for one or more tenants.
pub struct DemoGenerator {
    rng: StdRng,
    catalog: Catalog,
    counter: u64,
}

impl DemoGenerator {
    pub fn new(seed: u64) -> DemoGenerator {
        DemoGenerator {
            rng: StdRng::seed_from_u64(seed),
            catalog: Catalog::builtin(),
            counter: 0,
        }
    }

    fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
        &items[rng.random_range(0..items.len())]
    }

    /// One input event created at `created_at`.
    pub fn event(&mut self, created_at: Millis) -> Value {
        self.counter += 1;
        let rng = &mut self.rng;
        let (actor_id, actor_name) = *Self::pick(rng, PEOPLE);
        let bot = format!("bot_{}", rng.random_range(1..=12));
        let conversation = format!("c_{}", rng.random_range(1..=5_000));
        let request_id = format!("req_{:016x}", rng.random::<u64>());
        let ip = format!("203.0.113.{}", rng.random_range(1..=254));
        let context = json!({"ip": ip, "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0", "request_id": request_id});
        let roll = rng.random_range(0..100);
        let mut event = if roll < 35 {
            let tokens = rng.random_range(20..2_000);
            json!({
                "type": "conversation.message.created",
                "actor": {"id": format!("contact_{}", rng.random_range(1..=20_000)), "type": "contact"},
                "resources": {"bot_id": bot, "conversation_id": conversation, "contact_id": format!("ct_{}", rng.random_range(1..=20_000))},
                "description": "Message received from contact",
                "metadata": {
                    "channel": *Self::pick(rng, CHANNELS),
                    "model": *Self::pick(rng, MODELS),
                    "usage": {"tokens": tokens, "latency_ms": rng.random_range(80..4_000)},
                    "status": "ok"
                }
            })
        } else if roll < 45 {
            let integration = *Self::pick(rng, CHANNELS);
            let failed = rng.random_bool(0.6);
            json!({
                "type": if failed { "integration.error".to_string() } else { format!("integration.{integration}.message.received") },
                "actor": {"id": "system", "type": "system"},
                "outcome": if failed { "failure" } else { "success" },
                "resources": {"bot_id": bot, "integration_id": format!("int_{integration}_{}", rng.random_range(1..=40))},
                "description": if failed { format!("{integration} integration call failed") } else { format!("{integration} message delivered") },
                "metadata": {"integration": integration, "status": if failed { "error" } else { "ok" },
                             "error": if failed { json!({"code": *Self::pick(rng, ERRORS), "retryable": rng.random_bool(0.5)}) } else { Value::Null }}
            })
        } else if roll < 55 {
            let event_type = Self::pick(rng, &self.catalog.event_types_examples).clone();
            let resource_key = Self::pick(rng, &self.catalog.resource_keys).clone();
            let failed = event_type.ends_with("failed") || event_type.ends_with("error");
            json!({
                "type": event_type,
                "actor": {"id": "system", "type": "system"},
                "outcome": if failed { "failure" } else { "success" },
                "resources": {"bot_id": bot, resource_key: format!("r_{}", rng.random_range(1..=2_000))},
                "metadata": {"status": if failed { "error" } else { "ok" }, "duration_ms": rng.random_range(5..60_000),
                             "size_bytes": rng.random_range(100..50_000_000)}
            })
        } else if roll < 90 {
            let entity_type = Self::pick(rng, &self.catalog.entity_types).name.clone();
            let entity_id = format!(
                "{}_{}",
                &entity_type[..entity_type.len().min(3)],
                rng.random_range(1..=400)
            );
            let name = *Self::pick(rng, NAMES);
            let new_name = *Self::pick(rng, NAMES);
            let action_roll = rng.random_range(0..10);
            let snapshot = |name: &str, active: bool| json!({"name": name, "is_active": active, "settings": {"language": "en", "priority": 1}});
            let (action, before, after) = match action_roll {
                0..=2 => ("CREATED", Value::Null, snapshot(name, true)),
                3..=7 => (
                    "UPDATED",
                    snapshot(name, true),
                    snapshot(new_name, action_roll != 7),
                ),
                _ => ("DELETED", snapshot(name, false), Value::Null),
            };
            json!({
                "action": action,
                "actor": {"id": actor_id, "type": "user", "name": actor_name},
                "entity": {"type": entity_type, "id": entity_id, "name": if after.is_null() { name } else { after["name"].as_str().unwrap_or(name) }},
                "resources": {"bot_id": bot},
                "description": format!("{actor_name} {} {entity_type} {entity_id}", action.to_lowercase()),
                "changes": {"before": before, "after": after}
            })
        } else {
            let action = *Self::pick(rng, &["LOGIN", "LOGIN", "LOGOUT", "INVITED", "ACCEPTED"]);
            let invitee = *Self::pick(rng, PEOPLE);
            let (entity, description) = match action {
                "INVITED" | "ACCEPTED" => (
                    json!({"type": "access", "id": format!("acc_{}", invitee.0), "name": invitee.1}),
                    format!(
                        "{actor_name} {} access for {}",
                        action.to_lowercase(),
                        invitee.1
                    ),
                ),
                _ => (
                    json!({"type": "session", "id": format!("sess_{}", self.counter)}),
                    format!("{actor_name} {}", action.to_lowercase()),
                ),
            };
            json!({
                "type": format!("team.{}", action.to_lowercase()),
                "action": action,
                "actor": {"id": actor_id, "type": "user", "name": actor_name},
                "entity": entity,
                "description": description,
                "metadata": {"method": *Self::pick(rng, &["password", "sso", "magic_link"])}
            })
        };
        event["created_at"] = json!(created_at);
        event["context"] = context;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Limits, NewEvent};

    #[test]
    fn every_generated_event_is_valid_and_realistically_sized() {
        let mut generator = DemoGenerator::new(7);
        let mut total_bytes = 0;
        for index in 0..2_000 {
            let event = generator.event(1_795_341_600_000 + index);
            let bytes = event.to_string().len();
            total_bytes += bytes;
            NewEvent::from_json(event.clone(), bytes, &Limits::default(), 1_795_341_600_000)
                .unwrap_or_else(|error| panic!("{event}: {error}"));
        }
        let average = total_bytes / 2_000;
        assert!(
            (250..900).contains(&average),
            "average event is {average} bytes"
        );
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;

    #[test]
    fn a_catalog_without_actions_gets_the_standard_ones_and_bad_json_is_explained() {
        let catalog = Catalog::from_json(
            r#"{"entity_types": [{"name": "invoice", "description": "A bill"}]}"#,
        )
        .unwrap();
        assert_eq!(catalog.actions, STANDARD_ACTIONS.map(String::from).to_vec());
        let error = Catalog::from_json(r#"{"entity_types": [{"name": "x"}]}"#).unwrap_err();
        assert!(error.contains("description"), "{error}");
        assert!(Catalog::builtin().entity_types.len() > 50);
    }
}
