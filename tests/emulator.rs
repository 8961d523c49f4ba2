//! The emulator, driven with plain HTTP (reqwest, none of our client code): every documented
//! rule and code of `specs/feishu-api.md`, the `/_emulator/` API, faults, and the CLI banner.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorArgs, EmulatorConfig, Fixtures,
    RunningEmulator,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";
const BUTTONS: &str = "/open-apis/im/v2/chat_button";
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// A started emulator and a client to talk to it.
struct Emu {
    emu: RunningEmulator,
    http: reqwest::Client,
}

/// One answer: status, the rate-limit headers, and the JSON body (`null` if not JSON).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    limit: Option<String>,
    reset: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> i64 {
        self.body["code"].as_i64().expect("a code in the answer")
    }

    fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or_default()
    }

    fn failed_users(&self) -> Vec<&str> {
        self.body["data"]["failed_user_reasons"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["user_id"].as_str()).collect())
            .unwrap_or_default()
    }
}

impl Emu {
    async fn start(config: EmulatorConfig) -> Emu {
        Emu {
            emu: Emulator::start(config).await.expect("start the emulator"),
            http: reqwest::Client::new(),
        }
    }

    async fn open() -> Emu {
        Emu::start(EmulatorConfig::default()).await
    }

    async fn with_fixtures(yaml: &str) -> Emu {
        let fixtures = Fixtures::parse(yaml).expect("valid fixtures");
        Emu::start(EmulatorConfig {
            fixtures: Some(fixtures),
            ..EmulatorConfig::default()
        })
        .await
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, limit, reset) = (
            resp.status(),
            header("x-ogw-ratelimit-limit"),
            header("x-ogw-ratelimit-reset"),
        );
        let text = resp.text().await.expect("read the answer");
        Answer {
            status,
            limit,
            reset,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn token_call(&self, body: Value) -> Answer {
        let resp = self
            .http
            .post(self.emu.url(TOKEN))
            .json(&body)
            .send()
            .await
            .expect("token call");
        Emu::answer(resp).await
    }

    async fn token_for(&self, app_id: &str, secret: &str) -> String {
        let a = self
            .token_call(json!({"app_id": app_id, "app_secret": secret}))
            .await;
        assert_eq!(a.code(), 0, "{a:?}");
        a.body["tenant_access_token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    async fn token(&self) -> String {
        self.token_for(BUILTIN_APP_ID, BUILTIN_APP_SECRET).await
    }

    /// `PUT chat_button` with a raw `Authorization` value (or none) and query.
    async fn put_raw(&self, auth: Option<&str>, query: &str, body: &Value) -> Answer {
        let mut req = self
            .http
            .put(format!("{}{query}", self.emu.url(BUTTONS)))
            .header("Content-Type", JSON_UTF8)
            .body(body.to_string());
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        Emu::answer(req.send().await.expect("chat_button call")).await
    }

    async fn put(&self, token: &str, body: &Value) -> Answer {
        self.put_raw(Some(&format!("Bearer {token}")), "", body)
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.emu.url(path)).send().await.expect("GET");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn send_admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, self.emu.url(path))
            .json(&body)
            .send()
            .await
            .expect("admin call");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("admin answer")
    }

    async fn faults(&self, spec: Value) {
        self.send_admin(reqwest::Method::PUT, "/_emulator/faults", spec)
            .await;
    }

    /// The button texts user `id` (type from its prefix) sees in `chat`, and where they come from.
    async fn sees(&self, chat: &str, id: &str) -> (Vec<String>, String) {
        let (status, v) = self
            .get(&format!("/_emulator/chats/{chat}/users/{id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let texts = v["buttons"]
            .as_array()
            .expect("buttons")
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        (texts, v["source"].as_str().unwrap_or_default().to_owned())
    }
}

fn button(text: &str) -> Value {
    json!({
        "action_type": "url_page",
        "text": {"text": text},
        "button_type": "primary",
        "multi_url": {"url": "https://example.com/runbook"}
    })
}

/// A request body: `users` empty means the whole chat.
fn body(chat: &str, users: &[&str], texts: &[&str]) -> Value {
    let buttons: Vec<Value> = texts.iter().map(|t| button(t)).collect();
    let mut b = json!({"chat_id": chat, "buttons": {"buttons": buttons}});
    if !users.is_empty() {
        b["user_ids"] = json!(users);
    }
    b
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn the_builtin_app_gets_a_two_hour_token_and_the_same_one_when_asking_again() {
    let emu = Emu::open().await;
    let creds = json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET});
    let first = emu.token_call(creds.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!((first.code(), first.msg()), (0, "ok"));
    let token = first.body["tenant_access_token"].as_str().expect("token");
    assert!(token.starts_with("t-"), "{token}");
    assert_eq!(first.body["expire"], 7200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = emu.token_call(creds).await;
    assert_eq!(second.body["tenant_access_token"], token);
    let expire = second.body["expire"].as_u64().expect("expire");
    assert!(expire < 7200, "expire is the remaining lifetime: {expire}");
}

#[tokio::test]
async fn with_less_than_half_an_hour_left_a_new_token_comes_and_the_old_one_still_works() {
    let emu = Emu::start(EmulatorConfig {
        token_ttl: Duration::from_secs(1200),
        ..EmulatorConfig::default()
    })
    .await;
    let old = emu.token().await;
    let new = emu.token().await;
    assert_ne!(old, new);
    for token in [&old, &new] {
        let a = emu.put(token, &body("oc_1", &[], &["Runbook"])).await;
        assert_eq!(a.code(), 0, "{a:?}");
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_with_99991677_and_a_new_one_is_issued() {
    let emu = Emu::start(EmulatorConfig {
        token_ttl: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await;
    let old = emu.token().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = emu.put(&old, &body("oc_1", &[], &["Runbook"])).await;
    assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, 99991677));
    let new = emu.token().await;
    assert_ne!(new, old);
    assert_eq!(emu.put(&new, &body("oc_1", &[], &[])).await.code(), 0);
}

#[tokio::test]
async fn early_expiry_ends_every_issued_token_now() {
    let emu = Emu::open().await;
    let old = emu.token().await;
    let v = emu
        .send_admin(reqwest::Method::POST, "/_emulator/tokens/expire", json!({}))
        .await;
    assert_eq!(v["expired"], 1);
    let a = emu.put(&old, &body("oc_1", &[], &[])).await;
    assert_eq!(a.code(), 99991677);
    let new = emu.token().await;
    assert_ne!(new, old);
    assert_eq!(emu.put(&new, &body("oc_1", &[], &[])).await.code(), 0);
}

#[tokio::test]
async fn unknown_app_wrong_secret_and_missing_credentials_get_their_codes() {
    let emu = Emu::open().await;
    let cases = [
        (json!({"app_id": "cli_nobody", "app_secret": "x"}), 10014),
        (
            json!({"app_id": BUILTIN_APP_ID, "app_secret": "wrong"}),
            10015,
        ),
        (json!({"app_id": BUILTIN_APP_ID}), 10003),
        (json!({"app_id": "", "app_secret": ""}), 10003),
    ];
    for (creds, code) in cases {
        let a = emu.token_call(creds.clone()).await;
        assert_eq!(a.code(), code, "{creds}");
        assert!(a.body.get("tenant_access_token").is_none());
    }
}

#[tokio::test]
async fn fixtures_apps_replace_the_builtin_app() {
    let emu = Emu::with_fixtures(
        "apps:\n  - {app_id: cli_team, app_secret: team-secret}\nopen_chats: true\n",
    )
    .await;
    emu.token_for("cli_team", "team-secret").await;
    let a = emu
        .token_call(json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET}))
        .await;
    assert_eq!(a.code(), 10014);
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_get_their_codes() {
    let emu = Emu::open().await;
    let b = body("oc_1", &[], &["Runbook"]);
    let cases = [
        (None, 99991661),
        (Some("Bearer "), 99991661),
        (Some("t-0123456789abcdef"), 99991671),
        (Some("Basic dXNlcjpwYXNz"), 99991671),
        (Some("Bearer u-user-token"), 99991671),
        (Some("Bearer t-0123456789abcdef"), 99991663),
    ];
    for (auth, code) in cases {
        let a = emu.put_raw(auth, "", &b).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, code),
            "{auth:?}"
        );
    }
}

// ---------------------------------------------------------------- validation

#[tokio::test]
async fn every_documented_limit_is_enforced_with_230001_naming_the_field() {
    let emu = Emu::start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await;
    let token = emu.token().await;
    let ok = body("oc_1", &["ou_a"], &["Runbook"]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = ok.clone();
        f(&mut b);
        b
    };
    let too_many_users: Vec<String> = (0..21).map(|i| format!("ou_{i}")).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "",
            with(&|b| drop(b.as_object_mut().map(|o| o.remove("chat_id")))),
            "chat_id",
        ),
        ("", with(&|b| b["chat_id"] = json!("chat-1")), "chat_id"),
        ("", with(&|b| b["user_ids"] = json!([])), "user_ids"),
        (
            "",
            with(&|b| b["user_ids"] = json!(too_many_users)),
            "user_ids",
        ),
        (
            "",
            with(&|b| b["user_ids"] = json!(["on_a"])),
            "user_ids[0]",
        ),
        ("?user_id_type=union_id", ok.clone(), "user_ids[0]"),
        ("?user_id_type=email", ok.clone(), "user_id_type"),
        ("", with(&|b| b["buttons"] = json!({})), "buttons.buttons"),
        (
            "",
            with(&|b| b["buttons"]["buttons"] = json!([button("a"), button("b"), button("c")])),
            "buttons.buttons",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["text"]["text"] = json!("")),
            "buttons.buttons[0].text.text",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["text"]["text"] = json!("x".repeat(31))),
            "buttons.buttons[0].text.text",
        ),
        (
            "",
            with(&|b| {
                drop(
                    b["buttons"]["buttons"][0]
                        .as_object_mut()
                        .map(|o| o.remove("text")),
                )
            }),
            "buttons.buttons[0].text",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["action_type"] = json!("open")),
            "buttons.buttons[0].action_type",
        ),
        (
            "",
            with(&|b| {
                drop(
                    b["buttons"]["buttons"][0]
                        .as_object_mut()
                        .map(|o| o.remove("action_type")),
                )
            }),
            "buttons.buttons[0].action_type",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["button_type"] = json!("danger")),
            "buttons.buttons[0].button_type",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["multi_url"]["url"] = json!("http://example.com")),
            "buttons.buttons[0].multi_url.url",
        ),
        (
            "",
            with(&|b| {
                b["buttons"]["buttons"][0]["multi_url"]["ios_url"] =
                    json!(format!("https://example.com/{}", "a".repeat(681)))
            }),
            "buttons.buttons[0].multi_url.ios_url",
        ),
        (
            "",
            with(&|b| b["buttons"]["buttons"][0]["action_map"] = json!({"n": 1})),
            "buttons.buttons[0].action_map.n",
        ),
    ];
    for (query, b, field) in cases {
        let a = emu
            .put_raw(Some(&format!("Bearer {token}")), query, &b)
            .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 230001),
            "{field}: {a:?}"
        );
        assert!(
            a.msg().contains(&format!("{field}:")),
            "the message names {field}: {}",
            a.msg()
        );
    }
    let (_, seen) = emu.get("/_emulator/chats/oc_1/users/ou_a").await;
    assert_eq!(
        seen["source"], "none",
        "no invalid request changed anything"
    );
}

#[tokio::test]
async fn requests_at_every_documented_limit_are_accepted() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    let twenty: Vec<String> = (0..20).map(|i| format!("ou_{i}")).collect();
    let mut at_limits = body("oc_1", &[], &[&"字".repeat(30), "b"]);
    at_limits["user_ids"] = json!(twenty);
    at_limits["buttons"]["buttons"][1] = json!({
        "action_type": "webhook",
        "text": {"text": "Ack"},
        "button_type": "success",
        "action_map": {"k": "v"},
        "multi_url": {"pc_url": format!("https://example.com/{}", "a".repeat(680))}
    });
    let cases = [
        ("", at_limits),
        ("?user_id_type=union_id", body("oc_1", &["on_x"], &["A"])),
        ("?user_id_type=user_id", body("oc_1", &["4d7a3c6g"], &["A"])),
        ("?user_id_type=open_id", body("oc_1", &["ou_x"], &[])),
        ("", json!({"chat_id": "oc_1", "bot_id": "ignored"})),
    ];
    for (query, b) in cases {
        let a = emu
            .put_raw(Some(&format!("Bearer {token}")), query, &b)
            .await;
        assert_eq!(
            (a.status, a.code(), a.msg()),
            (StatusCode::OK, 0, "success"),
            "{b}"
        );
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_or_not_sent_as_json_is_invalid() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    let resp = emu
        .http
        .put(emu.emu.url(BUTTONS))
        .bearer_auth(&token)
        .header("Content-Type", "text/plain")
        .body(body("oc_1", &[], &[]).to_string())
        .send()
        .await
        .expect("call");
    let a = Emu::answer(resp).await;
    assert_eq!(a.code(), 230001);
    assert!(a.msg().contains("Content-Type"), "{}", a.msg());
    let resp = emu
        .http
        .put(emu.emu.url(BUTTONS))
        .bearer_auth(&token)
        .header("Content-Type", JSON_UTF8)
        .body("{not json")
        .send()
        .await
        .expect("call");
    assert_eq!(Emu::answer(resp).await.code(), 230001);
}

// ---------------------------------------------------------------- membership

const TEAM: &str = "
apps:
  - {app_id: cli_a, app_secret: secret-a}
  - {app_id: cli_b, app_secret: secret-b}
chats:
  - chat_id: oc_team
    members:
      - ou_alice
      - {open_id: ou_bob, union_id: on_bob, user_id: bob}
  - chat_id: oc_nobot
    bot_member: false
    members: everyone
";

#[tokio::test]
async fn a_chat_without_the_bot_or_unknown_to_the_fixtures_gets_230027() {
    let emu = Emu::with_fixtures(TEAM).await;
    let token = emu.token_for("cli_a", "secret-a").await;
    for chat in ["oc_nobot", "oc_unknown"] {
        let a = emu.put(&token, &body(chat, &[], &["X"])).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 230027),
            "{chat}"
        );
    }
}

#[tokio::test]
async fn a_user_not_in_the_chat_is_reported_and_keeps_no_buttons_until_let_in() {
    let emu = Emu::with_fixtures(TEAM).await;
    let token = emu.token_for("cli_a", "secret-a").await;
    let a = emu
        .put(
            &token,
            &body("oc_team", &["ou_alice", "ou_carol"], &["Runbook"]),
        )
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, 0));
    assert_eq!(
        a.body["data"]["failed_user_reasons"],
        json!([{"error_code": 0, "error_message": "The user is not in the chat", "user_id": "ou_carol"}])
    );
    assert_eq!(
        emu.sees("oc_team", "ou_alice").await.0,
        strings(&["Runbook"])
    );
    assert_eq!(
        emu.sees("oc_team", "ou_carol").await,
        (vec![], "not_member".to_owned())
    );

    emu.send_admin(
        reqwest::Method::POST,
        "/_emulator/chats/oc_team/members",
        json!({"members": ["ou_carol"]}),
    )
    .await;
    assert_eq!(
        emu.sees("oc_team", "ou_carol").await,
        (vec![], "none".to_owned())
    );
    let a = emu
        .put(&token, &body("oc_team", &["ou_carol"], &["Runbook"]))
        .await;
    assert!(a.failed_users().is_empty(), "{a:?}");
    assert_eq!(
        emu.sees("oc_team", "ou_carol").await.0,
        strings(&["Runbook"])
    );

    // And out again: they see nothing, and a call naming them fails for them.
    let v = emu
        .send_admin(
            reqwest::Method::DELETE,
            "/_emulator/chats/oc_team/members/ou_carol",
            json!(null),
        )
        .await;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2));
    let a = emu.put(&token, &body("oc_team", &["ou_carol"], &[])).await;
    assert_eq!(a.failed_users(), ["ou_carol"]);
}

#[tokio::test]
async fn the_bot_can_be_taken_out_of_a_chat_and_put_back() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.send_admin(
        reqwest::Method::PUT,
        "/_emulator/chats/oc_1/bot",
        json!({"member": false}),
    )
    .await;
    assert_eq!(
        emu.put(&token, &body("oc_1", &[], &[])).await.code(),
        230027
    );
    emu.send_admin(
        reqwest::Method::PUT,
        "/_emulator/chats/oc_1/bot",
        json!({"member": true}),
    )
    .await;
    assert_eq!(emu.put(&token, &body("oc_1", &[], &[])).await.code(), 0);
}

#[tokio::test]
async fn without_fixtures_every_user_is_a_member_of_every_chat() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    let a = emu
        .put(
            &token,
            &body("oc_anything", &["ou_anyone", "ou_else"], &["Hi"]),
        )
        .await;
    assert_eq!(a.code(), 0);
    assert!(a.failed_users().is_empty());
    assert_eq!(a.body["data"], json!({}));
    assert_eq!(
        emu.sees("oc_anything", "ou_anyone").await.0,
        strings(&["Hi"])
    );
}

#[tokio::test]
async fn a_person_named_by_another_id_type_sees_the_same_buttons() {
    let emu = Emu::with_fixtures(TEAM).await;
    let token = emu.token_for("cli_a", "secret-a").await;
    let a = emu
        .put_raw(
            Some(&format!("Bearer {token}")),
            "?user_id_type=union_id",
            &body("oc_team", &["on_bob"], &["Deploy"]),
        )
        .await;
    assert!(a.failed_users().is_empty(), "{a:?}");
    assert_eq!(emu.sees("oc_team", "ou_bob").await.0, strings(&["Deploy"]));
    let a = emu
        .put_raw(
            Some(&format!("Bearer {token}")),
            "?user_id_type=user_id",
            &body("oc_team", &["bob"], &[]),
        )
        .await;
    assert!(a.failed_users().is_empty(), "{a:?}");
    assert_eq!(
        emu.sees("oc_team", "on_bob").await,
        (vec![], "user".to_owned())
    );
}

// ---------------------------------------------------------------- full replacement

#[tokio::test]
async fn each_call_replaces_the_whole_list_of_the_users_it_names() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.put(&token, &body("oc_1", &["ou_a", "ou_b"], &["One", "Two"]))
        .await;
    emu.put(&token, &body("oc_1", &["ou_a"], &["Two"])).await;
    assert_eq!(emu.sees("oc_1", "ou_a").await.0, strings(&["Two"]));
    assert_eq!(emu.sees("oc_1", "ou_b").await.0, strings(&["One", "Two"]));
    emu.put(&token, &body("oc_1", &["ou_b"], &[])).await;
    assert_eq!(emu.sees("oc_1", "ou_b").await, (vec![], "user".to_owned()));
}

#[tokio::test]
async fn a_user_sees_their_own_list_if_ever_set_else_the_whole_chat_list() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.put(&token, &body("oc_1", &[], &["All"])).await;
    emu.put(&token, &body("oc_1", &["ou_own"], &["Mine"])).await;
    assert_eq!(
        emu.sees("oc_1", "ou_other").await,
        (strings(&["All"]), "chat".to_owned())
    );
    assert_eq!(
        emu.sees("oc_1", "ou_own").await,
        (strings(&["Mine"]), "user".to_owned())
    );
    // A later whole-chat call does not erase per-user lists.
    emu.put(&token, &body("oc_1", &[], &["All v2"])).await;
    assert_eq!(emu.sees("oc_1", "ou_own").await.0, strings(&["Mine"]));
    assert_eq!(emu.sees("oc_1", "ou_other").await.0, strings(&["All v2"]));
    // Omitting `buttons` shows no buttons (documented), like an explicit empty list.
    emu.put(&token, &json!({"chat_id": "oc_1"})).await;
    assert_eq!(
        emu.sees("oc_1", "ou_other").await,
        (vec![], "chat".to_owned())
    );

    let (status, chat) = emu.get("/_emulator/chats/oc_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat["bot_member"], true);
    assert_eq!(chat["members"], "everyone");
    assert_eq!(chat["chat_buttons"], json!([]));
    assert_eq!(chat["users"][0]["ids"], json!({"open_id": "ou_own"}));
    assert_eq!(chat["users"][0]["buttons"][0]["text"]["text"], "Mine");
    let (_, all) = emu.get("/_emulator/chats").await;
    assert_eq!(all["chats"][0]["chat_id"], "oc_1");
}

#[tokio::test]
async fn buttons_are_kept_field_for_field() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    let b = json!({
        "action_type": "webhook",
        "text": {"text": "Ack"},
        "button_type": "success",
        "action_map": {"incident": "42"},
        "multi_url": {"url": "https://a.example", "android_url": "https://b.example",
                      "ios_url": "https://c.example", "pc_url": "https://d.example"}
    });
    emu.put(
        &token,
        &json!({"chat_id": "oc_1", "user_ids": ["ou_a"], "buttons": {"buttons": [b]}}),
    )
    .await;
    let (_, v) = emu.get("/_emulator/chats/oc_1/users/ou_a").await;
    assert_eq!(v["buttons"], json!([b]));
}

// ---------------------------------------------------------------- rate limit

#[tokio::test]
async fn a_burst_over_ten_per_second_gets_429_with_the_ratelimit_headers() {
    let emu = Arc::new(Emu::with_fixtures(TEAM).await);
    let token = emu.token_for("cli_a", "secret-a").await;
    let other = emu.token_for("cli_b", "secret-b").await;
    let started = Instant::now();
    let calls = (0..15).map(|_| {
        let (emu, token) = (emu.clone(), token.clone());
        tokio::spawn(async move { emu.put(&token, &body("oc_team", &[], &["X"])).await })
    });
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("call"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the burst took too long to test"
    );
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok, limited.len()), (10, 5));
    for a in &limited {
        assert_eq!(a.code(), 99991400);
        assert_eq!(a.limit.as_deref(), Some("10"));
        assert_eq!(a.reset.as_deref(), Some("1"));
    }
    // The limit is per app: another app is not throttled.
    assert_eq!(
        emu.put(&other, &body("oc_team", &[], &["X"])).await.code(),
        0
    );
    // Waiting the reset time is enough.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        emu.put(&token, &body("oc_team", &[], &["X"])).await.code(),
        0
    );
}

#[tokio::test]
async fn a_client_pacing_itself_at_the_limit_is_never_throttled() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    // Delay, not burst, after a late tick: the client keeps its spacing even on a busy machine.
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..20 {
        tick.tick().await;
        let a = emu.put(&token, &body("oc_1", &[], &["X"])).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
}

#[tokio::test]
async fn rate_limit_zero_is_unlimited() {
    let emu = Emu::start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await;
    let token = emu.token().await;
    for _ in 0..40 {
        assert_eq!(emu.put(&token, &body("oc_1", &[], &["X"])).await.code(), 0);
    }
}

// ---------------------------------------------------------------- request log

#[tokio::test]
async fn the_request_log_shows_each_call_without_secrets_or_tokens_and_can_be_cleared() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.put_raw(
        Some(&format!("Bearer {token}")),
        "?user_id_type=open_id",
        &body("oc_1", &["ou_a"], &["X"]),
    )
    .await;
    let (_, v) = emu.get("/_emulator/requests").await;
    let text = v.to_string();
    assert!(!text.contains(&token), "the log never holds a token");
    assert!(
        !text.contains(BUILTIN_APP_SECRET),
        "the log never holds a secret"
    );
    let reqs = v["requests"].as_array().expect("requests");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["path"], TOKEN);
    assert_eq!(reqs[0]["body"]["app_id"], BUILTIN_APP_ID);
    let put = &reqs[1];
    assert_eq!(put["method"], "PUT");
    assert_eq!(put["path"], BUTTONS);
    assert_eq!(put["query"], "user_id_type=open_id");
    assert_eq!(put["status"], 200);
    assert_eq!(put["code"], 0);
    assert_eq!(put["app_id"], BUILTIN_APP_ID);
    assert_eq!(put["body"]["user_ids"], json!(["ou_a"]));
    assert!(put["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(put["seq"].as_u64() > reqs[0]["seq"].as_u64());

    let (_, only) = emu
        .get(&format!("/_emulator/requests?path={BUTTONS}"))
        .await;
    assert_eq!(only["requests"].as_array().map(Vec::len), Some(1));
    let cleared = emu
        .send_admin(reqwest::Method::DELETE, "/_emulator/requests", json!(null))
        .await;
    assert_eq!(cleared["cleared"], 2);
    let (_, v) = emu.get("/_emulator/requests").await;
    assert_eq!(v["requests"], json!([]));
}

#[tokio::test]
async fn unknown_paths_get_404_and_are_logged() {
    let emu = Emu::open().await;
    let resp = emu
        .http
        .get(emu.emu.url("/open-apis/im/v1/chats"))
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (_, v) = emu.get("/_emulator/requests").await;
    assert_eq!(v["requests"][0]["status"], 404);
    let (status, v) = emu.get("/_emulator/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn injected_server_errors_hit_the_next_calls_then_stop() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.faults(json!({"server_errors_next": 2, "server_error_status": 503}))
        .await;
    for _ in 0..2 {
        let a = emu.put(&token, &body("oc_1", &[], &["X"])).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        emu.sees("oc_1", "ou_a").await.1,
        "none",
        "a failed call changes nothing"
    );
    assert_eq!(emu.put(&token, &body("oc_1", &[], &["X"])).await.code(), 0);
    let (_, log) = emu.get("/_emulator/requests").await;
    assert_eq!(log["requests"][1]["fault"], "server_error");
}

#[tokio::test]
async fn a_seeded_error_share_gives_the_same_sequence_every_time() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let emu = Emu::start(EmulatorConfig {
            rate_limit: 0,
            ..EmulatorConfig::default()
        })
        .await;
        let token = emu.token().await;
        emu.faults(json!({"server_error_rate": 0.5, "seed": 11}))
            .await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(
                emu.put(&token, &body("oc_1", &[], &[]))
                    .await
                    .status
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let errors = runs[0].iter().filter(|s| **s == 500).count();
    assert!((5..=25).contains(&errors), "{errors} of 30 failed");
}

#[tokio::test]
async fn a_dropped_connection_gives_no_answer_and_may_still_have_taken_effect() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.faults(json!({"drops_next": 1})).await;
    let sent = emu
        .http
        .put(emu.emu.url(BUTTONS))
        .bearer_auth(&token)
        .header("Content-Type", JSON_UTF8)
        .body(body("oc_1", &[], &["Before"]).to_string())
        .send()
        .await;
    assert!(sent.is_err(), "no answer: {sent:?}");
    assert_eq!(emu.sees("oc_1", "ou_a").await.1, "none");

    emu.faults(json!({"drops_next": 1, "drop_after_processing": true}))
        .await;
    let sent = emu
        .http
        .put(emu.emu.url(BUTTONS))
        .bearer_auth(&token)
        .header("Content-Type", JSON_UTF8)
        .body(body("oc_1", &[], &["After"]).to_string())
        .send()
        .await;
    assert!(sent.is_err(), "no answer: {sent:?}");
    assert_eq!(emu.sees("oc_1", "ou_a").await.0, strings(&["After"]));
    let (_, log) = emu
        .get(&format!("/_emulator/requests?path={BUTTONS}"))
        .await;
    assert_eq!(log["requests"][0]["fault"], "dropped");
    assert_eq!(log["requests"][0]["status"], Value::Null);
    assert_eq!(log["requests"][1]["fault"], "dropped_after_processing");
    // The server is fine afterwards.
    assert_eq!(emu.put(&token, &body("oc_1", &[], &[])).await.code(), 0);
}

#[tokio::test]
async fn a_429_burst_for_the_next_calls_or_for_a_while() {
    let emu = Emu::open().await;
    let token = emu.token().await;
    emu.faults(json!({"rate_limited_next": 2})).await;
    for _ in 0..2 {
        let a = emu.put(&token, &body("oc_1", &[], &[])).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::TOO_MANY_REQUESTS, 99991400)
        );
        assert_eq!(
            (a.limit.as_deref(), a.reset.as_deref()),
            (Some("10"), Some("1"))
        );
    }
    assert_eq!(emu.put(&token, &body("oc_1", &[], &[])).await.code(), 0);

    emu.faults(json!({"rate_limited_for_ms": 2900})).await;
    let a = emu.put(&token, &body("oc_1", &[], &[])).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    // Whole seconds until the burst ends, rounded up: 3 unless this call came late.
    let reset: u64 = a
        .reset
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("a reset");
    assert!((1..=3).contains(&reset), "{reset}");
    let (_, f) = emu.get("/_emulator/faults").await;
    assert!(
        f["rate_limited_for_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 2900)
    );
    emu.send_admin(reqwest::Method::DELETE, "/_emulator/faults", json!(null))
        .await;
    assert_eq!(emu.put(&token, &body("oc_1", &[], &[])).await.code(), 0);
}

#[tokio::test]
async fn injected_latency_delays_answers_and_spares_the_token_endpoint_by_default() {
    let emu = Emu::open().await;
    emu.faults(json!({"latency_ms": 1000})).await;
    let started = Instant::now();
    let token = emu.token().await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    let started = Instant::now();
    emu.put(&token, &body("oc_1", &[], &[])).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));

    emu.faults(json!({"server_errors_next": 1, "token_endpoint": true}))
        .await;
    let a = emu
        .token_call(json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET}))
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn an_invalid_fault_set_is_refused_and_changes_nothing() {
    let emu = Emu::open().await;
    for bad in [
        json!({"server_error_rate": 1.5}),
        json!({"server_error_status": 404}),
        json!({"latency": 5}),
    ] {
        let resp = emu
            .http
            .put(emu.emu.url("/_emulator/faults"))
            .json(&bad)
            .send()
            .await
            .expect("call");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let v: Value = resp.json().await.expect("json");
        assert!(v["error"].is_string());
    }
    let (_, f) = emu.get("/_emulator/faults").await;
    assert_eq!(f["server_error_rate"], 0.0);
}

// ---------------------------------------------------------------- fixtures and CLI

#[test]
fn fixtures_problems_are_all_reported() {
    let problems = Fixtures::parse(
        "
apps:
  - {app_id: cli_a, app_secret: ''}
chats:
  - chat_id: team
    members: [{open_id: on_x}]
  - chat_id: oc_1
    members: [{open_id: ou_a, union_id: on_a}]
  - chat_id: oc_2
    members: [{open_id: ou_a, union_id: on_b}]
",
    )
    .expect_err("invalid fixtures");
    let text = problems.join("\n");
    assert!(text.contains("apps[0]"), "{text}");
    assert!(text.contains("chats[0]: chat_id"), "{text}");
    assert!(text.contains("chats[0].members[0]"), "{text}");
    assert_eq!(problems.len(), 3, "{text}");
    let problems = Fixtures::parse(
        "
chats:
  - chat_id: oc_1
    members: [{open_id: ou_a, union_id: on_a}]
  - chat_id: oc_2
    members: [{open_id: ou_a, union_id: on_b}]
",
    )
    .expect_err("conflicting ids");
    assert!(
        problems[0].starts_with("chats[1].members[0]"),
        "{problems:?}"
    );
    assert!(Fixtures::parse("chats: [{chat_id: oc_1, memebers: []}]").is_err());
}

#[test]
fn fixtures_can_be_json() {
    let f = Fixtures::parse(
        r#"{"apps": [{"app_id": "cli_j", "app_secret": "s"}],
            "chats": [{"chat_id": "oc_j", "members": ["ou_a", "on_b", "carol"]}]}"#,
    )
    .expect("JSON fixtures");
    assert_eq!(f.apps.get("cli_j").map(String::as_str), Some("s"));
    assert_eq!(f.chats[0].members.as_ref().map(Vec::len), Some(3));
}

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: EmulatorArgs,
}

#[test]
fn the_cli_defaults_are_the_documented_ones() {
    let args = Cmd::parse_from(["emulator"]).args;
    assert_eq!(args.listen, "127.0.0.1:8089");
    assert_eq!(args.rate_limit, 10);
    assert_eq!(args.latency_ms, 0);
    assert_eq!(args.token_ttl, 7200);
    assert_eq!(args.fixtures, None);
    assert!(Cmd::try_parse_from(["emulator", "--token-ttl", "0"]).is_err());
}

/// A writer the test can read while the server runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_cli_prints_the_address_and_the_builtin_credentials_and_serves_until_stopped() {
    let args = Cmd::parse_from(["emulator", "--listen", "127.0.0.1:0", "--quiet"]).args;
    let out = Shared::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut writer = out.clone();
    let server = tokio::spawn(async move {
        feedbuttons::emulator::cli::run_until(
            args,
            async move {
                let _ = stopped.await;
                Ok(())
            },
            &mut writer,
        )
        .await
    });
    let banner = loop {
        let text = String::from_utf8_lossy(&out.0.lock().expect("lock")).into_owned();
        if text.contains("Ctrl-C") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(banner.contains("FEISHU_APP_ID=cli_emulator"), "{banner}");
    assert!(
        banner.contains("FEISHU_APP_SECRET=emulator-secret"),
        "{banner}"
    );
    let base = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("export FEISHU_BASE_URL="))
        .expect("a base URL line")
        .to_owned();
    assert!(!base.ends_with(":0"), "the real port is printed: {base}");
    let a = reqwest::Client::new()
        .post(format!("{base}{TOKEN}"))
        .json(&json!({"app_id": BUILTIN_APP_ID, "app_secret": BUILTIN_APP_SECRET}))
        .send()
        .await
        .expect("token call");
    assert_eq!(a.status(), StatusCode::OK);
    stop.send(()).expect("the server is running");
    server
        .await
        .expect("join")
        .expect("the emulator stops cleanly");
}

#[tokio::test]
async fn the_cli_refuses_a_bad_fixtures_file_naming_it() {
    let dir = crate::util::Dir::new().file("fixtures.yaml", "chats: [{chat_id: nope}]\n");
    let path = dir.path().join("fixtures.yaml");
    let args = Cmd::parse_from([
        "emulator",
        "--listen",
        "127.0.0.1:0",
        "--fixtures",
        path.to_str().expect("utf-8 path"),
    ])
    .args;
    let err = feedbuttons::emulator::cli::run_until(args, async { Ok(()) }, &mut Vec::new())
        .await
        .expect_err("invalid fixtures");
    let text = err.to_string();
    assert!(
        text.contains("fixtures.yaml") && text.contains("oc_"),
        "{text}"
    );
}
