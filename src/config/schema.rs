//! The JSON Schema of one config file (`feedbuttons schema`), for editors' completion and checks.
//!
//! It mirrors `raw.rs` (fields and types) and the per-value limits of `validate.rs`; cross-file rules
//! (names defined once, users assigned once) cannot be said in a schema and are checked by `validate`.

use serde_json::{Value, json};

use crate::feishu::wire::api;

/// The schema as a JSON value (draft 2020-12).
pub fn schema() -> Value {
    let url = json!({
        "type": "string",
        "format": "uri",
        "pattern": "^https://",
        "maxLength": api::MAX_URL_CHARS,
        "description": "An https URL of at most 700 characters."
    });
    let button = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["text"],
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": api::MAX_TEXT_CHARS,
                "description": "The label (text.text), 1 to 30 characters."
            },
            "style": {
                "enum": ["default", "primary", "success"],
                "default": "default",
                "description": "The look (button_type)."
            },
            "url": {
                "description": "Where a url_page button leads (multi_url): one URL, or one per platform.",
                "oneOf": [
                    url,
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "minProperties": 1,
                        "properties": {
                            "default": url, "android": url, "ios": url, "pc": url
                        }
                    }
                ]
            },
            "action": {
                "enum": ["url_page", "webhook"],
                "default": "url_page",
                "description": "What a click does (action_type)."
            },
            "action_map": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Strings handed to the app on a webhook click."
            }
        }
    });
    let id_type = json!({
        "enum": ["open_id", "union_id", "user_id"],
        "default": "open_id",
        "description": "The type of the user ids (open_id: ou_..., union_id: on_..., user_id: tenant ids)."
    });
    let id_list = json!({"type": "array", "items": {"type": "string", "minLength": 1,
        "description": "A user id of the chat's user_id_type, an email, or a mobile (\"+86...\"), looked up in feedbuttons.lock."}});
    let assignment = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["buttons"],
        "properties": {
            "user_sets": {"type": "array", "items": {"type": "string"}},
            "users": id_list,
            "everyone": {"type": "boolean", "description": "The chat as a whole (a request without user_ids)."},
            "buttons": {
                "type": "array",
                "maxItems": api::MAX_BUTTONS,
                "description": "0 to 2 buttons: names defined under `buttons`, or inline buttons. [] clears.",
                "items": {"oneOf": [{"type": "string"}, {"$ref": "#/$defs/button"}]}
            }
        }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "feedbuttons config file (version 1)",
        "description": "One file of a feedbuttons config directory. Every *.yaml/*.yml file under the directory is merged into one desired state.",
        "type": "object",
        "additionalProperties": false,
        "required": ["version"],
        "$defs": {"button": button},
        "properties": {
            "version": {"const": 1, "description": "The config format version; required in every file."},
            "user_id_type": id_type,
            "buttons": {
                "type": "object",
                "description": "Reusable buttons by name; names are unique across the whole directory.",
                "additionalProperties": {"$ref": "#/$defs/button"}
            },
            "user_sets": {
                "type": "object",
                "description": "Named lists of users (ids, emails, mobiles) and directory sources ({members_of: oc_...}, {department: od-...}); names are unique across the whole directory.",
                "additionalProperties": {"type": "array", "items": {"oneOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "object", "additionalProperties": false, "required": ["members_of"],
                     "properties": {"members_of": {"type": "string", "pattern": "^oc_.+", "description": "Everyone in this chat (from feedbuttons.lock)."}}},
                    {"type": "object", "additionalProperties": false, "required": ["department"],
                     "properties": {"department": {"type": "string", "description": "A department's own people, by open department id od-... (from feedbuttons.lock)."}}}
                ]}}
            },
            "chats": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["chat_id"],
                    "properties": {
                        "chat_id": {"type": "string", "pattern": "^oc_.+", "description": "The chat's id (oc_...)."},
                        "name": {"type": "string", "description": "A label shown in plans."},
                        "user_id_type": id_type,
                        "assign": {
                            "type": "array",
                            "items": assignment
                        }
                    }
                }
            }
        }
    })
}

/// The schema as the text checked in at `specs/feedbuttons.schema.json`.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}
