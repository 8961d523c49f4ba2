//! Validation of a chat-button request, rule for rule as documented (`specs/feishu-api.md`):
//! raw query and body in, a [`ValidRequest`] or every violation (each naming its field) out.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::feishu::wire::api::{MAX_BUTTONS, MAX_TEXT_CHARS, MAX_URL_CHARS, MAX_USERS_PER_CALL};
use crate::feishu::wire::{ActionType, Button, ButtonType, MultiUrl, Text, UserIdType};

use super::fixtures::id_problem;
use super::world::ValidRequest;

/// One broken rule: the field (as a path into the request) and what is wrong with it.
type Violation = String;

fn violation(field: &str, problem: impl std::fmt::Display) -> Violation {
    format!("{field}: {problem}")
}

/// Checks the `Content-Type` header: JSON, with or without a charset.
pub fn content_type(value: Option<&str>) -> Result<(), Violation> {
    let media = value
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(violation(
            "Content-Type",
            format!(
                "must be application/json; charset=utf-8, got {}",
                value.map_or("nothing".to_owned(), |v| format!("{v:?}"))
            ),
        )),
    }
}

/// Validates the query string and the body of `PUT /open-apis/im/v2/chat_button`.
pub fn chat_button(query: Option<&str>, body: &[u8]) -> Result<ValidRequest, Vec<Violation>> {
    let mut violations = Vec::new();
    let user_id_type = user_id_type(query).unwrap_or_else(|v| {
        violations.push(v);
        UserIdType::OpenId
    });
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(vec![violation("body", format!("is not JSON ({e})"))]),
    };
    let Some(obj) = value.as_object() else {
        return Err(vec![violation("body", "must be a JSON object")]);
    };

    let chat_id = match obj.get("chat_id") {
        None | Some(Value::Null) => {
            violations.push(violation("chat_id", "is required"));
            String::new()
        }
        Some(Value::String(s)) if !s.starts_with("oc_") || s.len() == 3 => {
            violations.push(violation(
                "chat_id",
                format!("{s:?} is not a chat id (oc_...)"),
            ));
            String::new()
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            violations.push(violation("chat_id", "must be a string"));
            String::new()
        }
    };

    let user_ids = match obj.get("user_ids") {
        // A null list is read as an absent one, as the API's JSON decoding does for optional
        // fields.
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => {
            if ids.is_empty() || ids.len() > MAX_USERS_PER_CALL {
                violations.push(violation(
                    "user_ids",
                    format!("must hold 1 to {MAX_USERS_PER_CALL} ids, got {}", ids.len()),
                ));
            }
            let mut seen = HashSet::new();
            let mut list = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let field = format!("user_ids[{i}]");
                match id.as_str() {
                    None => violations.push(violation(&field, "must be a string")),
                    Some(id) => match id_problem(user_id_type, id) {
                        Some(p) => violations.push(violation(
                            &field,
                            format!("{p} (user_id_type is {user_id_type})"),
                        )),
                        None if seen.insert(id) => list.push(id.to_owned()),
                        None => {}
                    },
                }
            }
            Some(list)
        }
        Some(_) => {
            violations.push(violation("user_ids", "must be a list of ids"));
            None
        }
    };

    let buttons = match obj.get("buttons") {
        // Documented: without `buttons` no button is shown.
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(b)) => match b.get("buttons") {
            None | Some(Value::Null) => {
                violations.push(violation("buttons.buttons", "is required"));
                Vec::new()
            }
            Some(Value::Array(list)) => {
                if list.len() > MAX_BUTTONS {
                    violations.push(violation(
                        "buttons.buttons",
                        format!("must hold 0 to {MAX_BUTTONS} buttons, got {}", list.len()),
                    ));
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, b)| {
                        button(&format!("buttons.buttons[{i}]"), b, &mut violations)
                    })
                    .collect()
            }
            Some(_) => {
                violations.push(violation("buttons.buttons", "must be a list of buttons"));
                Vec::new()
            }
        },
        Some(_) => {
            violations.push(violation(
                "buttons",
                "must be an object {\"buttons\": [...]}",
            ));
            Vec::new()
        }
    };

    if violations.is_empty() {
        Ok(ValidRequest {
            chat_id,
            user_id_type,
            user_ids,
            buttons,
        })
    } else {
        Err(violations)
    }
}

fn user_id_type(query: Option<&str>) -> Result<UserIdType, Violation> {
    let value = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user_id_type")
            .map(|(_, v)| v.into_owned())
    });
    match value {
        None => Ok(UserIdType::OpenId),
        Some(v) => UserIdType::parse(&v).ok_or_else(|| {
            violation(
                "user_id_type",
                format!("must be open_id, union_id or user_id, got {v:?}"),
            )
        }),
    }
}

/// One button, or `None` with its violations recorded.
fn button(field: &str, v: &Value, violations: &mut Vec<Violation>) -> Option<Button> {
    let before = violations.len();
    let Some(obj) = v.as_object() else {
        violations.push(violation(field, "must be an object"));
        return None;
    };

    let action_type = match obj.get("action_type") {
        None | Some(Value::Null) => {
            violations.push(violation(&format!("{field}.action_type"), "is required"));
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(ActionType::parse);
            if parsed.is_none() {
                violations.push(violation(
                    &format!("{field}.action_type"),
                    format!("must be url_page or webhook, got {v}"),
                ));
            }
            parsed
        }
    };

    let text = match obj.get("text") {
        None | Some(Value::Null) => {
            violations.push(violation(&format!("{field}.text"), "is required"));
            None
        }
        Some(Value::Object(t)) => match t.get("text") {
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if (1..=MAX_TEXT_CHARS).contains(&n) {
                    Some(Text { text: s.clone() })
                } else {
                    violations.push(violation(
                        &format!("{field}.text.text"),
                        format!("must be 1 to {MAX_TEXT_CHARS} characters, got {n}"),
                    ));
                    None
                }
            }
            None | Some(Value::Null) => {
                violations.push(violation(&format!("{field}.text.text"), "is required"));
                None
            }
            Some(_) => {
                violations.push(violation(&format!("{field}.text.text"), "must be a string"));
                None
            }
        },
        Some(_) => {
            violations.push(violation(
                &format!("{field}.text"),
                "must be an object {\"text\": \"...\"}",
            ));
            None
        }
    };

    let button_type = match obj.get("button_type") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let parsed = v.as_str().and_then(ButtonType::parse);
            if parsed.is_none() {
                violations.push(violation(
                    &format!("{field}.button_type"),
                    format!("must be default, primary or success, got {v}"),
                ));
            }
            parsed
        }
    };

    let multi_url = match obj.get("multi_url") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(multi_url(&format!("{field}.multi_url"), m, violations)),
        Some(_) => {
            violations.push(violation(
                &format!("{field}.multi_url"),
                "must be an object",
            ));
            None
        }
    };

    let action_map = match obj.get("action_map") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut map = BTreeMap::new();
            for (k, v) in m {
                match v.as_str() {
                    Some(s) => {
                        map.insert(k.clone(), s.to_owned());
                    }
                    None => violations.push(violation(
                        &format!("{field}.action_map.{k}"),
                        "must be a string",
                    )),
                }
            }
            Some(map)
        }
        Some(_) => {
            violations.push(violation(
                &format!("{field}.action_map"),
                "must be an object of strings",
            ));
            None
        }
    };

    if violations.len() > before {
        return None;
    }
    Some(Button {
        multi_url,
        action_type: action_type?,
        text: text?,
        button_type,
        action_map,
    })
}

fn multi_url(field: &str, m: &Map<String, Value>, violations: &mut Vec<Violation>) -> MultiUrl {
    let mut one = |key: &str| -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n > MAX_URL_CHARS {
                    violations.push(violation(
                        &format!("{field}.{key}"),
                        format!("must be at most {MAX_URL_CHARS} characters, got {n}"),
                    ));
                } else if !is_https(s) {
                    violations.push(violation(
                        &format!("{field}.{key}"),
                        format!("must be an https URL, got {s:?}"),
                    ));
                }
                Some(s.clone())
            }
            Some(_) => {
                violations.push(violation(&format!("{field}.{key}"), "must be a string"));
                None
            }
        }
    };
    MultiUrl {
        url: one("url"),
        android_url: one("android_url"),
        ios_url: one("ios_url"),
        pc_url: one("pc_url"),
    }
}

fn is_https(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(query: Option<&str>, body: &str) -> Vec<String> {
        chat_button(query, body.as_bytes())
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn the_documented_example_is_valid() {
        let body = r#"{"user_ids":["ou_89553eda9014c201e6969b478895c276"],
            "chat_id":"oc_a0553eda9014c201e6969b478895c230",
            "buttons":{"buttons":[{"multi_url":{"url":"https://www.feishu.cn/",
            "android_url":"https://www.feishu.cn/","ios_url":"https://www.feishu.cn/",
            "pc_url":"https://www.feishu.cn/"},"action_type":"url_page","text":{"text":"文本"},
            "button_type":"default","action_map":{"foo":"bar"}}]}}"#;
        let req = chat_button(None, body.as_bytes()).expect("valid");
        assert_eq!(req.user_id_type, UserIdType::OpenId);
        assert_eq!(req.buttons.len(), 1);
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let body = r#"{"user_ids":[],"buttons":{"buttons":[{"text":{"text":""},
            "action_type":"open","multi_url":{"pc_url":"http://x.example"}}]}}"#;
        let p = problems(Some("user_id_type=email"), body);
        let fields: Vec<&str> = p.iter().filter_map(|v| v.split(':').next()).collect();
        assert_eq!(
            fields,
            [
                "user_id_type",
                "chat_id",
                "user_ids",
                "buttons.buttons[0].action_type",
                "buttons.buttons[0].text.text",
                "buttons.buttons[0].multi_url.pc_url"
            ]
        );
    }

    #[test]
    fn text_length_counts_characters_not_bytes() {
        let body = |t: &str| {
            format!(
                r#"{{"chat_id":"oc_1","buttons":{{"buttons":[{{"action_type":"webhook","text":{{"text":"{t}"}}}}]}}}}"#
            )
        };
        assert!(problems(None, &body(&"飞".repeat(30))).is_empty());
        assert_eq!(problems(None, &body(&"飞".repeat(31))).len(), 1);
    }
}
