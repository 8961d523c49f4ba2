//! The API client (`feishu::client`) against the in-process emulator over HTTP on 127.0.0.1:
//! what goes on the wire, how each answer is handled, tokens, retries, the rate limit, secrets.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig, Fixtures, RunningEmulator,
};
use feedbuttons::feishu::client::{
    CallError, ChatButtonOutcome, Client, ClientConfig, RetryPolicy, Secret,
};
use feedbuttons::feishu::wire::{
    ActionType, Button, ButtonType, Buttons, ChatButtonRequest, MultiUrl, Text, UserIdType,
};
use serde_json::{Value, json};

const BUTTONS: &str = "/open-apis/im/v2/chat_button";
const TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";

/// Apps and chats for the membership and credential tests. The secret is distinctive so that
/// the secrets test cannot match it by accident.
const TEAM: &str = "
apps:
  - {app_id: cli_team, app_secret: sekrit-5f2c9e0b}
chats:
  - chat_id: oc_team
    members: [ou_alice, ou_bob]
  - chat_id: oc_nobot
    bot_member: false
    members: everyone
";
const TEAM_APP: (&str, &str) = ("cli_team", "sekrit-5f2c9e0b");

/// Waits short enough to keep the suite quick, the same shape as the default policy.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

async fn start(config: EmulatorConfig) -> RunningEmulator {
    Emulator::start(config).await.expect("start the emulator")
}

async fn open() -> RunningEmulator {
    start(EmulatorConfig::default()).await
}

async fn team() -> RunningEmulator {
    start(EmulatorConfig {
        fixtures: Some(Fixtures::parse(TEAM).expect("valid fixtures")),
        ..EmulatorConfig::default()
    })
    .await
}

fn config_for(emu: &RunningEmulator, app: (&str, &str)) -> ClientConfig {
    ClientConfig {
        retry: quick_retries(),
        timeout: Duration::from_secs(10),
        ..ClientConfig::new(emu.base_url(), app.0, Secret::new(app.1.to_owned()))
    }
}

fn client_for(emu: &RunningEmulator, app: (&str, &str)) -> Client {
    Client::new(config_for(emu, app)).expect("a client")
}

/// A client of the built-in app at the default rate (10/s).
fn client(emu: &RunningEmulator) -> Client {
    client_for(emu, (BUILTIN_APP_ID, BUILTIN_APP_SECRET))
}

fn button(text: &str) -> Button {
    Button {
        multi_url: Some(MultiUrl {
            url: Some("https://example.com/runbook".to_owned()),
            ..MultiUrl::default()
        }),
        action_type: ActionType::UrlPage,
        text: Text {
            text: text.to_owned(),
        },
        button_type: Some(ButtonType::Primary),
        action_map: None,
    }
}

/// A request: no `users` means the whole chat.
fn request(chat: &str, users: &[&str], texts: &[&str]) -> ChatButtonRequest {
    ChatButtonRequest {
        user_ids: (!users.is_empty()).then(|| users.iter().map(|u| (*u).into()).collect()),
        chat_id: chat.into(),
        buttons: Buttons {
            buttons: texts.iter().map(|t| button(t)).collect(),
        },
    }
}

async fn get(emu: &RunningEmulator, path: &str) -> Value {
    reqwest::get(emu.url(path))
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON answer")
}

async fn admin(emu: &RunningEmulator, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method, emu.url(path))
        .json(&body)
        .send()
        .await
        .expect("admin call");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("admin answer")
}

async fn faults(emu: &RunningEmulator, spec: Value) {
    admin(emu, reqwest::Method::PUT, "/_emulator/faults", spec).await;
}

/// What the emulator logged for `path`, oldest first.
async fn logged(emu: &RunningEmulator, path: &str) -> Vec<Value> {
    let v = get(emu, &format!("/_emulator/requests?path={path}")).await;
    v["requests"].as_array().expect("requests").clone()
}

/// The `code` of each logged chat-button call (`null` for a dropped connection).
async fn codes(emu: &RunningEmulator) -> Vec<Value> {
    logged(emu, BUTTONS)
        .await
        .iter()
        .map(|r| r["code"].clone())
        .collect()
}

/// The button texts `user` sees in `chat`.
async fn sees(emu: &RunningEmulator, chat: &str, user: &str) -> Vec<String> {
    let v = get(emu, &format!("/_emulator/chats/{chat}/users/{user}")).await;
    v["buttons"]
        .as_array()
        .expect("buttons")
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn put(client: &Client, req: &ChatButtonRequest) -> Result<ChatButtonOutcome, CallError> {
    client.put_chat_button(UserIdType::OpenId, req).await
}

/// `n` calls at once, each to its own chat; returns the outcomes and the time they took.
async fn concurrently(client: &Client, n: usize) -> (Vec<ChatButtonOutcome>, Duration) {
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(
                async move { put(&client, &request(&format!("oc_{i}"), &[], &["X"])).await },
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("task").expect("the call succeeds"));
    }
    (outcomes, started.elapsed())
}

/// The emulator saw every chat-button call answered 200, never more than `limit` in any
/// one-second span.
async fn assert_paced(emu: &RunningEmulator, limit: usize) {
    let log = logged(emu, BUTTONS).await;
    assert!(
        log.iter().all(|r| r["status"] == 200),
        "throttled or failed: {:?}",
        log.iter().map(|r| &r["status"]).collect::<Vec<_>>()
    );
    let times: Vec<u64> = log
        .iter()
        .map(|r| r["unix_ms"].as_u64().expect("unix_ms"))
        .collect();
    for (i, pair) in times.iter().zip(times.iter().skip(limit)).enumerate() {
        assert!(
            pair.1 - pair.0 >= 1000,
            "calls {i} and {} were {} ms apart",
            i + limit,
            pair.1 - pair.0
        );
    }
}

// ---------------------------------------------------------------- the wire

#[tokio::test]
async fn a_call_sends_the_documented_body_and_the_emulator_applies_it() {
    let emu = open().await;
    let client = client(&emu);
    let mut req = request("oc_1", &["ou_a"], &["Runbook"]);
    req.buttons.buttons[0].action_map = Some([("k".to_owned(), "v".to_owned())].into());
    let outcome = put(&client, &req).await.expect("applied");
    assert_eq!(outcome.attempts, 1);
    assert!(outcome.failed_users.is_empty());

    let log = logged(&emu, BUTTONS).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["method"], "PUT");
    // The emulator keeps the body as parsed JSON in received key order, so printing it again
    // gives back the bytes sent (serde_json writes compact JSON).
    assert_eq!(
        log[0]["body"].to_string(),
        r#"{"user_ids":["ou_a"],"chat_id":"oc_1","buttons":{"buttons":[{"multi_url":{"url":"https://example.com/runbook"},"action_type":"url_page","text":{"text":"Runbook"},"button_type":"primary","action_map":{"k":"v"}}]}}"#
    );
    assert_eq!(
        log[0]["body"].to_string(),
        serde_json::to_string(&req).expect("encode")
    );
    assert_eq!(sees(&emu, "oc_1", "ou_a").await, ["Runbook"]);
    assert_eq!(client.stats().http_attempts, 1);
    assert_eq!(client.stats().token_fetches, 1);
}

#[tokio::test]
async fn an_empty_list_is_sent_as_an_empty_buttons_object_and_clears() {
    let emu = open().await;
    let client = client(&emu);
    put(&client, &request("oc_1", &[], &["Runbook"]))
        .await
        .expect("set");
    put(&client, &request("oc_1", &[], &[]))
        .await
        .expect("clear");
    let log = logged(&emu, BUTTONS).await;
    assert_eq!(
        log[1]["body"].to_string(),
        r#"{"chat_id":"oc_1","buttons":{"buttons":[]}}"#
    );
    assert!(sees(&emu, "oc_1", "ou_a").await.is_empty());
}

#[tokio::test]
async fn user_id_type_goes_in_the_query() {
    let emu = open().await;
    let client = client(&emu);
    for (t, id) in [
        (UserIdType::OpenId, "ou_a"),
        (UserIdType::UnionId, "on_a"),
        (UserIdType::UserId, "a"),
    ] {
        client
            .put_chat_button(t, &request("oc_1", &[id], &["X"]))
            .await
            .expect("applied");
    }
    let queries: Vec<Value> = logged(&emu, BUTTONS)
        .await
        .iter()
        .map(|r| r["query"].clone())
        .collect();
    assert_eq!(
        queries,
        [
            "user_id_type=open_id",
            "user_id_type=union_id",
            "user_id_type=user_id"
        ]
    );
}

// ---------------------------------------------------------------- answers

#[tokio::test]
async fn users_not_in_the_chat_come_back_as_failed_users() {
    let emu = team().await;
    let client = client_for(&emu, TEAM_APP);
    let outcome = put(
        &client,
        &request("oc_team", &["ou_alice", "ou_carol"], &["Runbook"]),
    )
    .await
    .expect("the call succeeds");
    let failed: Vec<&str> = outcome
        .failed_users
        .iter()
        .map(|f| f.user_id.as_str())
        .collect();
    assert_eq!(failed, ["ou_carol"]);
    assert_eq!(
        outcome.failed_users[0].error_code, 0,
        "failed whatever the code"
    );
    assert_eq!(sees(&emu, "oc_team", "ou_alice").await, ["Runbook"]);

    admin(
        &emu,
        reqwest::Method::POST,
        "/_emulator/chats/oc_team/members",
        json!({"members": ["ou_carol"]}),
    )
    .await;
    let outcome = put(&client, &request("oc_team", &["ou_carol"], &["Runbook"]))
        .await
        .expect("the call succeeds");
    assert!(outcome.failed_users.is_empty());
    assert_eq!(sees(&emu, "oc_team", "ou_carol").await, ["Runbook"]);
}

#[tokio::test]
async fn a_chat_without_the_bot_is_bot_not_in_chat_without_retry() {
    let emu = team().await;
    let client = client_for(&emu, TEAM_APP);
    let err = put(&client, &request("oc_nobot", &[], &["X"]))
        .await
        .expect_err("the bot is not in the chat");
    assert!(
        matches!(&err, CallError::BotNotInChat { chat_id } if chat_id == "oc_nobot"),
        "{err:?}"
    );
    assert!(!err.is_fatal(), "other chats go on");
    assert_eq!(codes(&emu).await, [json!(230027)]);
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn an_invalid_request_is_rejected_without_retry() {
    let emu = open().await;
    let client = client(&emu);
    let too_long = "x".repeat(31);
    let err = put(&client, &request("oc_1", &[], &[&too_long]))
        .await
        .expect_err("text too long");
    let CallError::Rejected { code, msg } = &err else {
        panic!("not rejected: {err:?}");
    };
    assert_eq!(*code, 230001);
    assert!(msg.contains("buttons.buttons[0].text.text"), "{msg}");
    assert!(!err.is_fatal());
    assert_eq!(codes(&emu).await, [json!(230001)]);
}

#[tokio::test]
async fn wrong_credentials_stop_the_run_before_any_change() {
    let emu = team().await;
    let wrong_secret = client_for(&emu, ("cli_team", "not-the-secret"));
    let err = wrong_secret
        .check_credentials()
        .await
        .expect_err("a wrong secret");
    assert!(
        matches!(&err, CallError::Credentials { code: 10015, .. }),
        "{err:?}"
    );
    assert!(err.is_fatal());
    let text = err.to_string();
    assert!(text.contains("FEISHU_APP_SECRET"), "{text}");
    assert!(!text.contains("not-the-secret") && !format!("{err:?}").contains("not-the-secret"));

    let unknown_app = client_for(&emu, ("cli_nobody", "x"));
    let err = put(&unknown_app, &request("oc_team", &[], &["X"]))
        .await
        .expect_err("an unknown app");
    assert!(
        matches!(&err, CallError::Credentials { code: 10014, .. }),
        "{err:?}"
    );
    // One token request each, and no chat-button call at all.
    assert_eq!(logged(&emu, TOKEN).await.len(), 2);
    assert!(logged(&emu, BUTTONS).await.is_empty());

    let right = client_for(&emu, TEAM_APP);
    right.check_credentials().await.expect("good credentials");
    put(&right, &request("oc_team", &[], &["X"]))
        .await
        .expect("applied");
    assert_eq!(
        right.stats().token_fetches,
        1,
        "the checked token is reused"
    );
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn an_expired_token_is_dropped_fetched_again_and_the_call_retried_once() {
    let emu = open().await;
    let client = client(&emu);
    client.check_credentials().await.expect("credentials");
    put(&client, &request("oc_1", &[], &["A"]))
        .await
        .expect("applied");
    let v = admin(
        &emu,
        reqwest::Method::POST,
        "/_emulator/tokens/expire",
        json!({}),
    )
    .await;
    assert_eq!(v["expired"], 1);

    let outcome = put(&client, &request("oc_1", &[], &["B"]))
        .await
        .expect("applied with a new token");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(codes(&emu).await, [json!(0), json!(99991677), json!(0)]);
    let stats = client.stats();
    assert_eq!((stats.token_fetches, stats.tokens_refused), (2, 1));
    assert_eq!(stats.retries, 0, "a token refusal is not a backoff retry");
    assert_eq!(sees(&emu, "oc_1", "ou_a").await, ["B"]);
}

#[tokio::test]
async fn a_token_refused_even_when_fresh_is_retried_by_the_policy_then_given_up() {
    // Every token the emulator issues is already expired.
    let emu = start(EmulatorConfig {
        token_ttl: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await;
    let client = client(&emu);
    let err = put(&client, &request("oc_1", &[], &["X"]))
        .await
        .expect_err("always expired");
    match &err {
        CallError::GaveUp { attempts, last } => {
            // Each of the policy's 6 attempts tried the cached token and one fresh one.
            assert_eq!(*attempts, 12, "{err}");
            assert!(
                last.contains("a freshly fetched token was refused too"),
                "{last}"
            );
            assert!(last.contains("99991677"), "{last}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(codes(&emu).await.len(), 12, "bounded: no loop");
    assert!(client.stats().token_fetches >= 6);
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn a_429_burst_waits_for_the_reset_and_succeeds() {
    let emu = open().await;
    let client = client(&emu);
    client.check_credentials().await.expect("credentials");
    faults(&emu, json!({"rate_limited_next": 2})).await;
    let started = Instant::now();
    let outcome = put(&client, &request("oc_1", &[], &["X"]))
        .await
        .expect("applied after the throttle");
    // Twice `x-ogw-ratelimit-reset: 1`, whatever the (much shorter) backoff delays say.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.attempts, 3);
    assert_eq!(
        codes(&emu).await,
        [json!(99991400), json!(99991400), json!(0)]
    );
    let stats = client.stats();
    assert_eq!((stats.rate_limited, stats.retries), (2, 2));
}

#[tokio::test]
async fn a_share_of_server_errors_is_absorbed_by_retries() {
    let emu = start(EmulatorConfig {
        rate_limit: 0,
        ..EmulatorConfig::default()
    })
    .await;
    // Ten tries, so that no call can be unlucky enough to give up.
    let client = Client::new(ClientConfig {
        rate_limit: 0,
        retry: RetryPolicy {
            max_attempts: 10,
            ..quick_retries()
        },
        ..config_for(&emu, (BUILTIN_APP_ID, BUILTIN_APP_SECRET))
    })
    .expect("a client");
    faults(&emu, json!({"server_error_rate": 0.2, "seed": 7})).await;
    let (outcomes, _) = concurrently(&client, 30).await;
    let log = logged(&emu, BUTTONS).await;
    let errors = log.iter().filter(|r| r["fault"] == "server_error").count();
    assert!(errors > 0, "the seed gives some errors");
    assert_eq!(client.stats().retries, errors as u64);
    assert_eq!(
        outcomes.iter().map(|o| o.attempts as usize).sum::<usize>(),
        log.len()
    );
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let emu = open().await;
    let client = client(&emu);
    faults(&emu, json!({"drops_next": 2})).await;
    let outcome = put(&client, &request("oc_1", &[], &["X"]))
        .await
        .expect("applied on the third try");
    assert_eq!(outcome.attempts, 3);
    assert_eq!(codes(&emu).await, [Value::Null, Value::Null, json!(0)]);
}

#[tokio::test]
async fn retries_run_out_and_the_call_gives_up() {
    let emu = open().await;
    let client = Client::new(ClientConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            ..quick_retries()
        },
        ..config_for(&emu, (BUILTIN_APP_ID, BUILTIN_APP_SECRET))
    })
    .expect("a client");
    faults(
        &emu,
        json!({"server_errors_next": 10, "server_error_status": 503}),
    )
    .await;
    let err = put(&client, &request("oc_1", &[], &["X"]))
        .await
        .expect_err("always 503");
    // A 5xx may come after the API applied the call: no answer settled it.
    let CallError::Unanswered { attempts, last, .. } = &err else {
        panic!("not given up unanswered: {err:?}");
    };
    assert!(err.may_have_applied() && err.is_exhausted());
    assert_eq!(*attempts, 3);
    assert!(last.contains("HTTP 503"), "{last}");
    assert!(!err.is_fatal());
    assert_eq!(logged(&emu, BUTTONS).await.len(), 3);
}

#[tokio::test]
async fn a_call_that_times_out_is_retried_then_given_up() {
    let emu = open().await;
    let client = Client::new(ClientConfig {
        retry: RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
        timeout: Duration::from_millis(150),
        ..config_for(&emu, (BUILTIN_APP_ID, BUILTIN_APP_SECRET))
    })
    .expect("a client");
    faults(&emu, json!({"latency_ms": 1000})).await;
    let err = put(&client, &request("oc_1", &[], &["X"]))
        .await
        .expect_err("too slow");
    assert!(
        matches!(&err, CallError::Unanswered { attempts: 2, last, .. } if last.contains("timed out")),
        "{err}"
    );
}

// ---------------------------------------------------------------- the rate limit

#[tokio::test]
async fn thirty_concurrent_calls_at_ten_a_second_are_spread_over_three_seconds() {
    let emu = open().await;
    let client = client(&emu);
    client.check_credentials().await.expect("credentials");
    let (outcomes, elapsed) = concurrently(&client, 30).await;
    assert!(elapsed >= Duration::from_millis(2900), "{elapsed:?}");
    assert!(outcomes.iter().all(|o| o.attempts == 1));
    assert_paced(&emu, 10).await;
    assert_eq!(client.stats().rate_limited, 0);
}

#[tokio::test]
async fn with_200_ms_latency_calls_overlap_and_still_go_out_ten_a_second() {
    let emu = start(EmulatorConfig {
        latency: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await;
    let client = client(&emu);
    client.check_credentials().await.expect("credentials");
    let (_, elapsed) = concurrently(&client, 30).await;
    // One at a time this would take 6 s or more.
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert_paced(&emu, 10).await;
}

// ---------------------------------------------------------------- secrets

/// Everything a tracing subscriber writes, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the buffer")).into_owned()
    }
}

/// The token the emulator hands out now: the client's, as long as it has 30 minutes left.
async fn current_token(emu: &RunningEmulator) -> String {
    let v: Value = reqwest::Client::new()
        .post(emu.url(TOKEN))
        .json(&json!({"app_id": TEAM_APP.0, "app_secret": TEAM_APP.1}))
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("token answer");
    v["tenant_access_token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

/// Logs are a process-wide affair (tracing's interest cache and the `log` bridge are global), so
/// a subscriber scoped to one test thread misses events while other tests run beside it. The
/// check runs in a process of its own: this test binary again, with only the test below.
#[test]
fn the_secret_and_tokens_never_reach_logs_or_errors() {
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "client::secrets_in_logs_in_a_process_of_its_own",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the check failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
#[ignore = "run by the_secret_and_tokens_never_reach_logs_or_errors, in a process of its own"]
async fn secrets_in_logs_in_a_process_of_its_own() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    // reqwest and hyper log through the `log` crate: forward that too.
    let _ = tracing_log::LogTracer::init();

    let emu = start(EmulatorConfig {
        fixtures: Some(Fixtures::parse(&format!("{TEAM}open_chats: true\n")).expect("fixtures")),
        ..EmulatorConfig::default()
    })
    .await;
    let config = config_for(&emu, TEAM_APP);
    let shown = format!("{config:?}");
    assert!(
        shown.contains("app_secret: ***") && !shown.contains(TEAM_APP.1),
        "{shown}"
    );
    let client = Client::new(config).expect("a client");
    let mut errors = Vec::new();

    client.check_credentials().await.expect("credentials");
    put(&client, &request("oc_team", &["ou_alice"], &["A"]))
        .await
        .expect("applied");
    let first = current_token(&emu).await;
    admin(
        &emu,
        reqwest::Method::POST,
        "/_emulator/tokens/expire",
        json!({}),
    )
    .await;
    faults(
        &emu,
        json!({"server_errors_next": 1, "rate_limited_next": 1}),
    )
    .await;
    put(&client, &request("oc_team", &[], &["B"]))
        .await
        .expect("applied after a refusal, a 5xx and a 429");
    let second = current_token(&emu).await;
    assert_ne!(first, second);
    errors.push(
        put(&client, &request("oc_nobot", &[], &["C"]))
            .await
            .expect_err("no bot"),
    );
    let wrong = client_for(&emu, (TEAM_APP.0, "sekrit-but-wrong"));
    errors.push(wrong.check_credentials().await.expect_err("wrong secret"));
    for e in &errors {
        tracing::error!(error = %e, debug = ?e, "a call failed");
    }
    tracing::debug!(?client, stats = ?client.stats(), "done");

    let text = captured.text();
    assert!(
        text.contains("chat_button answered"),
        "the client logged nothing: {text}"
    );
    for secret in [TEAM_APP.1, "sekrit-but-wrong", &first, &second] {
        assert!(!text.contains(secret), "{secret:?} was logged:\n{text}");
    }
}
