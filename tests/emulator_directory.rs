//! The emulator's directory calls (issue 15) driven with plain HTTP: batch_get_id, a chat's
//! members and a department's members, their documented limits and errors, app scopes and
//! contact scopes, their rate limits, and the `/_emulator/` changes to the directory.

use std::time::Duration;

use clap::Parser;
use feedbuttons::emulator::{
    BUILTIN_APP_ID, BUILTIN_APP_SECRET, DirectoryRateLimit, Emulator, EmulatorArgs, EmulatorConfig,
    Fixtures, RunningEmulator,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "/open-apis/auth/v3/tenant_access_token/internal";
const BATCH_GET_ID: &str = "/open-apis/contact/v3/users/batch_get_id";
const FIND_BY_DEPARTMENT: &str = "/open-apis/contact/v3/users/find_by_department";
const BUTTONS: &str = "/open-apis/im/v2/chat_button";

/// A small tenant: Engineering with SRE below it, Sales beside it, and one person straight
/// under the root. `cli_sre` sees Engineering (so SRE too), `cli_all` sees everyone,
/// `cli_none` has no directory scope, `cli_ids` may list departments but gets no sensitive field,
/// `cli_lookup` may only look ids up.
const TENANT: &str = r#"
apps:
  - {app_id: cli_all, app_secret: s-all}
  - {app_id: cli_sre, app_secret: s-sre, contact_scope: [od-eng]}
  - {app_id: cli_none, app_secret: s-none, scopes: [im:app_feed_card:write]}
  - {app_id: cli_ids, app_secret: s-ids, scopes: [contact:contact.base:readonly]}
  - {app_id: cli_lookup, app_secret: s-lookup, scopes: [contact:user.id:readonly]}
departments:
  - {department_id: eng, open_department_id: od-eng, name: Engineering}
  - {department_id: sre, open_department_id: od-sre, name: SRE, parent: od-eng}
  - {department_id: sales, open_department_id: od-sales, name: Sales}
people:
  - {open_id: ou_alice, union_id: on_alice, user_id: alice, name: Alice, email: alice@example.com,
     mobile: "+8613800000001", departments: [od-sre]}
  - {open_id: ou_bob, name: Bob, email: bob@example.com, mobile: "+14155550100",
     departments: [od-eng], resigned: true}
  - {open_id: ou_eve, name: Eve, email: eve@example.com, departments: [eng]}
  - {open_id: ou_carol, name: Carol, email: carol@example.com,
     enterprise_email: carol@corp.example.com, departments: [od-sales]}
  - {open_id: ou_dan, name: Dan, email: dan@example.com}
chats:
  - chat_id: oc_team
    members: [ou_alice, ou_carol, ou_dan]
  - chat_id: oc_botless
    bot_member: false
    members: [ou_alice]
"#;

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

    /// `data.items` (or `data.user_list`), empty when left out.
    fn list(&self, name: &str) -> Vec<Value> {
        self.body["data"][name]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn page_token(&self) -> Option<String> {
        self.body["data"]["page_token"].as_str().map(str::to_owned)
    }

    fn has_more(&self) -> bool {
        self.body["data"]["has_more"] == true
    }
}

impl Emu {
    async fn start(config: EmulatorConfig) -> Emu {
        Emu {
            emu: Emulator::start(config).await.expect("start the emulator"),
            http: reqwest::Client::new(),
        }
    }

    async fn with(yaml: &str, limits: DirectoryRateLimit) -> Emu {
        Emu::start(EmulatorConfig {
            fixtures: Some(Fixtures::parse(yaml).expect("valid fixtures")),
            directory_rate_limit: limits,
            ..EmulatorConfig::default()
        })
        .await
    }

    /// The tenant above, without directory rate limits (the limits have their own tests).
    async fn tenant() -> Emu {
        Emu::with(TENANT, unlimited()).await
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

    async fn token(&self, app_id: &str, secret: &str) -> String {
        let resp = self
            .http
            .post(self.emu.url(TOKEN))
            .json(&json!({"app_id": app_id, "app_secret": secret}))
            .send()
            .await
            .expect("token call");
        let a = Emu::answer(resp).await;
        a.body["tenant_access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("a token for {app_id}: {a:?}"))
            .to_owned()
    }

    async fn batch_get_id(&self, token: &str, query: &str, body: &Value) -> Answer {
        let resp = self
            .http
            .post(format!("{}{query}", self.emu.url(BATCH_GET_ID)))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .expect("batch_get_id call");
        Emu::answer(resp).await
    }

    async fn members(&self, token: &str, chat_id: &str, query: &str) -> Answer {
        let url = self
            .emu
            .url(&format!("/open-apis/im/v1/chats/{chat_id}/members{query}"));
        let resp = self
            .http
            .get(url)
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("chat members call");
        Emu::answer(resp).await
    }

    async fn department(&self, token: &str, query: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{query}", self.emu.url(FIND_BY_DEPARTMENT)))
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("find_by_department call");
        Emu::answer(resp).await
    }

    async fn chat_button(&self, token: &str, query: &str, body: &Value) -> Answer {
        let resp = self
            .http
            .put(format!("{}{query}", self.emu.url(BUTTONS)))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .expect("chat_button call");
        Emu::answer(resp).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.emu.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("admin call");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every member id of a chat, page after page of `page_size`, and each page's length.
    async fn all_members(
        &self,
        token: &str,
        chat_id: &str,
        query: &str,
    ) -> (Vec<String>, Vec<usize>) {
        let (mut ids, mut pages) = (Vec::new(), Vec::new());
        let mut next: Option<String> = None;
        loop {
            let q = match &next {
                None => format!("?{query}"),
                Some(t) => format!("?{query}&page_token={t}"),
            };
            let a = self.members(token, chat_id, &q).await;
            assert_eq!((a.status, a.code()), (StatusCode::OK, 0), "{a:?}");
            let items = a.list("items");
            pages.push(items.len());
            ids.extend(
                items
                    .iter()
                    .map(|m| m["member_id"].as_str().unwrap_or_default().to_owned()),
            );
            assert_eq!(a.has_more(), a.page_token().is_some(), "{a:?}");
            next = a.page_token();
            if next.is_none() {
                return (ids, pages);
            }
            assert!(pages.len() < 50, "paging never ends");
        }
    }
}

fn unlimited() -> DirectoryRateLimit {
    DirectoryRateLimit {
        per_second: 0,
        per_minute: 0,
    }
}

/// `(email or mobile asked, user_id)` of each entry of a batch_get_id answer.
fn resolved(a: &Answer) -> Vec<(String, Option<String>)> {
    a.list("user_list")
        .iter()
        .map(|e| {
            let asked = e["email"].as_str().or(e["mobile"].as_str()).unwrap_or("?");
            (asked.to_owned(), e["user_id"].as_str().map(str::to_owned))
        })
        .collect()
}

fn pairs(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    v.iter()
        .map(|(a, id)| (a.to_string(), id.map(str::to_owned)))
        .collect()
}

/// The open ids of a find_by_department page.
fn open_ids(a: &Answer) -> Vec<String> {
    a.list("items")
        .iter()
        .map(|u| u["open_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------- batch_get_id

#[tokio::test]
async fn batch_get_id_answers_each_item_asked_with_a_user_id_only_for_who_can_be_resolved() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_sre", "s-sre").await;
    let ask = json!({
        "emails": ["alice@example.com", "bob@example.com", "carol@example.com",
                   "nobody@example.com", "carol@corp.example.com", "ALICE@example.com"],
        "mobiles": ["13800000001", "+8613800000001", "+14155550100", "14155550100", "138 0000 0001"],
    });
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert_eq!(
        (a.status, a.code(), a.msg()),
        (StatusCode::OK, 0, "success")
    );
    assert_eq!(
        resolved(&a),
        pairs(&[
            ("alice@example.com", Some("ou_alice")),
            // Resigned, and include_resigned is false by default.
            ("bob@example.com", None),
            // In Sales: outside cli_sre's contact scope.
            ("carol@example.com", None),
            ("nobody@example.com", None),
            // An enterprise mailbox never resolves.
            ("carol@corp.example.com", None),
            ("ALICE@example.com", Some("ou_alice")),
            // A mainland number may come without +86.
            ("13800000001", Some("ou_alice")),
            ("+8613800000001", Some("ou_alice")),
            ("+14155550100", None),
            // Without + a number is read as a mainland one: +8614155550100 is nobody.
            ("14155550100", None),
            ("138 0000 0001", None),
        ])
    );
    // The status comes with every resolved entry (the app has every field scope).
    assert_eq!(a.list("user_list")[0]["status"]["is_activated"], true);
    assert!(a.list("user_list")[1].get("status").is_none());

    let a = emu
        .batch_get_id(
            &token,
            "?user_id_type=union_id",
            &json!({"emails": ["alice@example.com", "bob@example.com"], "include_resigned": true}),
        )
        .await;
    let list = a.list("user_list");
    assert_eq!(list[0]["user_id"], "on_alice");
    // Bob resolves once resigned people are asked for, and says he has resigned.
    assert!(
        list[1]["user_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("on_")),
        "{a:?}"
    );
    assert_eq!(list[1]["status"]["is_resigned"], true);

    // An app that sees the whole tenant resolves Carol and Dan (who sits under the root).
    let all = emu.token("cli_all", "s-all").await;
    let a = emu
        .batch_get_id(
            &all,
            "?user_id_type=user_id",
            &json!({"emails": ["carol@example.com", "dan@example.com", "alice@example.com"]}),
        )
        .await;
    let ids: Vec<Option<String>> = resolved(&a).into_iter().map(|(_, id)| id).collect();
    assert!(ids.iter().all(Option::is_some), "{a:?}");
    assert_eq!(ids[2].as_deref(), Some("alice"));
}

#[tokio::test]
async fn user_ids_and_status_need_their_field_scopes() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_lookup", "s-lookup").await;
    let ask = json!({"emails": ["alice@example.com"], "mobiles": ["+8613800000001"]});
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert_eq!(
        resolved(&a),
        pairs(&[
            ("alice@example.com", Some("ou_alice")),
            ("+8613800000001", Some("ou_alice"))
        ])
    );
    assert!(a.list("user_list")[0].get("status").is_none(), "{a:?}");
    // Without contact:user.employee_id:readonly nobody resolves to a user_id.
    let a = emu
        .batch_get_id(&token, "?user_id_type=user_id", &ask)
        .await;
    assert_eq!(a.code(), 0, "{a:?}");
    assert_eq!(
        resolved(&a),
        pairs(&[("alice@example.com", None), ("+8613800000001", None)])
    );
}

#[tokio::test]
async fn batch_get_id_takes_fifty_emails_and_fifty_mobiles_and_refuses_more() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_all", "s-all").await;
    let emails: Vec<String> = (0..50).map(|i| format!("u{i}@example.com")).collect();
    let mobiles: Vec<String> = (0..50).map(|i| format!("+1415555{i:04}")).collect();
    let a = emu
        .batch_get_id(&token, "", &json!({"emails": emails, "mobiles": mobiles}))
        .await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, 0), "{a:?}");
    assert_eq!(a.list("user_list").len(), 100);
    assert!(
        a.list("user_list")
            .iter()
            .all(|e| e.get("user_id").is_none())
    );

    let mut too_many = emails.clone();
    too_many.push("alice@example.com".to_owned());
    for body in [
        json!({"emails": too_many}),
        json!({"mobiles": (0..51).map(|i| format!("1380000{i:04}")).collect::<Vec<_>>()}),
    ] {
        let a = emu.batch_get_id(&token, "", &body).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 99992402),
            "{a:?}"
        );
        let field = &a.body["error"]["field_violations"][0];
        assert!(
            ["emails", "mobiles"].contains(&field["field"].as_str().unwrap_or_default()),
            "{a:?}"
        );
        assert!(a.body.get("data").is_none(), "nothing is resolved: {a:?}");
    }
    let a = emu
        .batch_get_id(
            &token,
            "?user_id_type=email",
            &json!({"emails": ["alice@example.com"]}),
        )
        .await;
    assert_eq!(a.code(), 99992402, "{a:?}");
    assert_eq!(
        a.body["error"]["field_violations"][0]["field"],
        "user_id_type"
    );
}

#[tokio::test]
async fn without_fixtures_nobody_resolves_by_email_or_mobile() {
    let emu = Emu::start(EmulatorConfig::default()).await;
    let token = emu.token(BUILTIN_APP_ID, BUILTIN_APP_SECRET).await;
    let a = emu
        .batch_get_id(
            &token,
            "",
            &json!({"emails": ["alice@example.com"], "mobiles": ["13800000001"]}),
        )
        .await;
    assert_eq!(a.code(), 0, "{a:?}");
    assert_eq!(
        resolved(&a),
        pairs(&[("alice@example.com", None), ("13800000001", None)])
    );
}

// ---------------------------------------------------------------- scopes

#[tokio::test]
async fn an_app_without_the_scope_gets_99991672_naming_the_scopes_it_needs() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_none", "s-none").await;
    let answers = [
        (
            emu.batch_get_id(&token, "", &json!({"emails": ["alice@example.com"]}))
                .await,
            "contact:user.id:readonly",
        ),
        (
            emu.members(&token, "oc_team", "").await,
            "im:chat.members:read",
        ),
        (
            emu.department(&token, "?department_id=od-eng").await,
            "contact:contact.base:readonly",
        ),
    ];
    for (a, scope) in answers {
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 99991672),
            "{a:?}"
        );
        assert!(a.msg().contains(scope), "{a:?}");
    }
    // The chat-button call does not need them.
    let a = emu
        .chat_button(
            &token,
            "",
            &json!({"chat_id": "oc_team", "buttons": {"buttons": []}}),
        )
        .await;
    assert_eq!(a.code(), 0, "{a:?}");
}

// ---------------------------------------------------------------- chat members

/// `n` members named by open id, and `bots` other bots.
fn big_chat(n: usize, bots: u32) -> String {
    let members: Vec<String> = (0..n).map(|i| format!("ou_m{i:02}")).collect();
    format!(
        "chats:\n  - chat_id: oc_big\n    bots: {bots}\n    members: [{}]\n",
        members.join(", ")
    )
}

#[tokio::test]
async fn chat_members_come_page_by_page_and_bots_leave_pages_short() {
    let emu = Emu::with(&big_chat(25, 2), unlimited()).await;
    let token = emu.token(BUILTIN_APP_ID, BUILTIN_APP_SECRET).await;
    let a = emu.members(&token, "oc_big", "?page_size=10").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, 0), "{a:?}");
    assert_eq!(a.body["data"]["member_total"], 25);
    let first = &a.list("items")[0];
    assert_eq!(first["member_id_type"], "open_id");
    assert_eq!(first["member_id"], "ou_m00");
    // Nobody told the emulator their name: the fixtures only name them by id.
    assert_eq!(first["name"], "");
    assert!(
        first["tenant_key"].as_str().is_some_and(|k| !k.is_empty()),
        "{first}"
    );
    let (ids, pages) = emu.all_members(&token, "oc_big", "page_size=10").await;
    // The two other bots took two places of the first page and are never listed.
    assert_eq!(pages, [8, 10, 7]);
    let expected: Vec<String> = (0..25).map(|i| format!("ou_m{i:02}")).collect();
    assert_eq!(ids, expected);

    // The default page is 20 places.
    let (_, pages) = emu
        .all_members(&token, "oc_big", "member_id_type=open_id")
        .await;
    assert_eq!(pages, [18, 7]);
    // 100 is the most a page may ask for.
    let (_, pages) = emu.all_members(&token, "oc_big", "page_size=100").await;
    assert_eq!(pages, [25]);
    let a = emu.members(&token, "oc_big", "?page_size=101").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, 99992402),
        "{a:?}"
    );
    assert_eq!(a.body["error"]["field_violations"][0]["field"], "page_size");
    // A token is only good for the list it came from.
    let a = emu.members(&token, "oc_big", "?page_size=10").await;
    let token_of_big = a.page_token().expect("a second page");
    let b = emu
        .members(&token, "oc_other", &format!("?page_token={token_of_big}"))
        .await;
    assert_eq!(b.code(), 232001, "{b:?}");
}

#[tokio::test]
async fn as_many_bots_as_a_page_give_an_empty_page_that_still_has_more() {
    let emu = Emu::with(&big_chat(3, 5), unlimited()).await;
    let token = emu.token(BUILTIN_APP_ID, BUILTIN_APP_SECRET).await;
    let (ids, pages) = emu.all_members(&token, "oc_big", "page_size=5").await;
    assert_eq!(pages, [0, 3]);
    assert_eq!(ids, ["ou_m00", "ou_m01", "ou_m02"]);
}

#[tokio::test]
async fn members_come_in_the_id_type_asked_and_a_made_up_id_names_the_same_person() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_all", "s-all").await;
    let (ids, _) = emu
        .all_members(&token, "oc_team", "member_id_type=union_id")
        .await;
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], "on_alice");
    // Carol has no union_id in the fixtures: the emulator makes one up, the same every time...
    let carol = ids[1].clone();
    assert!(carol.starts_with("on_") && carol.len() == 35, "{carol}");
    let (again, _) = emu
        .all_members(&token, "oc_team", "member_id_type=union_id")
        .await;
    assert_eq!(again, ids);
    // ...that names her in a chat-button call too.
    let a = emu
        .chat_button(
            &token,
            "?user_id_type=union_id",
            &json!({"chat_id": "oc_team", "user_ids": [carol],
                    "buttons": {"buttons": [{"action_type": "url_page", "text": {"text": "Go"},
                    "multi_url": {"url": "https://example.com"}}]}}),
        )
        .await;
    assert_eq!(a.code(), 0, "{a:?}");
    assert!(a.body["data"].get("failed_user_reasons").is_none(), "{a:?}");
    let (status, v) = emu
        .admin(Method::GET, "/_emulator/chats/oc_team/users/ou_carol", None)
        .await;
    assert_eq!(
        (status, v["source"].clone()),
        (StatusCode::OK, json!("user")),
        "{v}"
    );

    let a = emu
        .members(&token, "oc_team", "?member_id_type=user_id")
        .await;
    let items = a.list("items");
    assert_eq!(items[0]["member_id"], "alice");
    assert_eq!(items[0]["member_id_type"], "user_id");
    assert_eq!(items[0]["name"], "Alice");
}

#[tokio::test]
async fn a_chat_without_the_bot_or_unknown_to_the_fixtures_gets_232011() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_all", "s-all").await;
    for chat in ["oc_botless", "oc_unknown"] {
        let a = emu.members(&token, chat, "").await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 232011),
            "{chat}: {a:?}"
        );
    }
    let a = emu.members(&token, "team", "").await;
    assert_eq!(a.code(), 232006, "{a:?}");
    // Let the bot in: the members come.
    let (status, _) = emu
        .admin(
            Method::PUT,
            "/_emulator/chats/oc_botless/bot",
            Some(json!({"member": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let a = emu.members(&token, "oc_botless", "").await;
    assert_eq!(a.code(), 0, "{a:?}");
    assert_eq!(a.list("items").len(), 1);
}

#[tokio::test]
async fn members_added_or_removed_at_runtime_show_in_the_list() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_all", "s-all").await;
    let (status, _) = emu
        .admin(
            Method::POST,
            "/_emulator/chats/oc_team/members",
            Some(json!({"members": ["ou_eve"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = emu
        .admin(
            Method::DELETE,
            "/_emulator/chats/oc_team/members/ou_carol",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (ids, _) = emu.all_members(&token, "oc_team", "").await;
    assert_eq!(ids, ["ou_alice", "ou_eve", "ou_dan"]);
}

// ---------------------------------------------------------------- find_by_department

#[tokio::test]
async fn a_department_lists_its_direct_members_within_the_contact_scope() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_sre", "s-sre").await;
    // Engineering's own member is Eve; Alice is in SRE below it; Bob has resigned.
    let a = emu.department(&token, "?department_id=od-eng").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, 0), "{a:?}");
    assert_eq!(open_ids(&a), ["ou_eve"]);
    assert!(!a.has_more() && a.page_token().is_none(), "{a:?}");
    let a = emu
        .department(
            &token,
            "?department_id=sre&department_id_type=department_id&user_id_type=user_id",
        )
        .await;
    assert_eq!(
        a.list("items"),
        [json!({
            "union_id": "on_alice", "user_id": "alice", "open_id": "ou_alice", "name": "Alice",
            "email": "alice@example.com", "mobile": "+8613800000001",
            "status": {"is_frozen": false, "is_resigned": false, "is_activated": true,
                       "is_exited": false, "is_unjoin": false},
            "department_ids": ["sre"],
        })]
    );
    // Sales, the root, and a department that does not exist are outside cli_sre's scope.
    for query in [
        "?department_id=od-sales",
        "?department_id=0",
        "?department_id=od-nowhere",
        // An id of the other type names no department.
        "?department_id=od-sre&department_id_type=department_id",
    ] {
        let a = emu.department(&token, query).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::FORBIDDEN, 40004),
            "{query}: {a:?}"
        );
    }
    // The root needs an all-staff scope; its direct members are those in no department.
    let all = emu.token("cli_all", "s-all").await;
    let a = emu.department(&all, "?department_id=0").await;
    assert_eq!((a.status, a.code()), (StatusCode::OK, 0), "{a:?}");
    assert_eq!(open_ids(&a), ["ou_dan"]);
    let a = emu.department(&all, "?department_id=od-sales").await;
    assert_eq!(open_ids(&a), ["ou_carol"]);
    let a = emu.department(&all, "").await;
    assert_eq!(a.code(), 99992402, "{a:?}");
}

#[tokio::test]
async fn sensitive_fields_come_only_with_their_field_scopes() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_ids", "s-ids").await;
    let a = emu.department(&token, "?department_id=od-sre").await;
    assert_eq!(a.code(), 0, "{a:?}");
    let user = &a.list("items")[0];
    assert_eq!(user["open_id"], "ou_alice");
    assert_eq!(user["union_id"], "on_alice");
    for field in [
        "user_id",
        "name",
        "email",
        "mobile",
        "status",
        "department_ids",
    ] {
        assert!(
            user.get(field).is_none(),
            "{field} without its scope: {user}"
        );
    }
}

#[tokio::test]
async fn department_members_come_ten_a_page_and_at_most_fifty() {
    let people: Vec<String> = (0..12)
        .map(|i| format!("  - {{open_id: ou_p{i:02}, name: P{i}, departments: [od-big]}}"))
        .collect();
    let yaml = format!(
        "departments:\n  - {{open_department_id: od-big, name: Big}}\npeople:\n{}\n",
        people.join("\n")
    );
    let emu = Emu::with(&yaml, unlimited()).await;
    let token = emu.token(BUILTIN_APP_ID, BUILTIN_APP_SECRET).await;
    let first = emu.department(&token, "?department_id=od-big").await;
    assert_eq!(first.list("items").len(), 10, "{first:?}");
    let next = first.page_token().expect("a second page");
    assert!(first.has_more());
    let second = emu
        .department(&token, &format!("?department_id=od-big&page_token={next}"))
        .await;
    assert_eq!(open_ids(&second), ["ou_p10", "ou_p11"]);
    assert!(
        !second.has_more() && second.page_token().is_none(),
        "{second:?}"
    );

    let a = emu
        .department(&token, "?department_id=od-big&page_size=50")
        .await;
    assert_eq!(a.list("items").len(), 12);
    for size in ["51", "0"] {
        let a = emu
            .department(&token, &format!("?department_id=od-big&page_size={size}"))
            .await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::BAD_REQUEST, 40011),
            "{a:?}"
        );
    }
    let a = emu
        .department(&token, "?department_id=od-big&page_token=not-a-token")
        .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, 40012),
        "{a:?}"
    );
    // A token of another department is not good here either.
    let a = emu
        .department(&token, &format!("?department_id=0&page_token={next}"))
        .await;
    assert_eq!(a.code(), 40012, "{a:?}");
}

// ---------------------------------------------------------------- the directory at runtime

#[tokio::test]
async fn people_can_join_resign_and_move_at_runtime() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_sre", "s-sre").await;
    let (status, person) = emu
        .admin(
            Method::POST,
            "/_emulator/people",
            Some(
                json!({"open_id": "ou_frank", "name": "Frank", "email": "frank@example.com",
                        "mobile": "+447700900123", "departments": ["od-sre"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{person}");
    assert_eq!(person["departments"], json!(["od-sre"]));
    let ask = json!({"emails": ["frank@example.com"], "mobiles": ["+447700900123"]});
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert_eq!(
        resolved(&a),
        pairs(&[
            ("frank@example.com", Some("ou_frank")),
            ("+447700900123", Some("ou_frank"))
        ])
    );
    let a = emu.department(&token, "?department_id=od-sre").await;
    assert_eq!(open_ids(&a), ["ou_alice", "ou_frank"]);

    // Moved to Sales: out of cli_sre's sight.
    let (status, person) = emu
        .admin(
            Method::PUT,
            "/_emulator/people/ou_frank/departments",
            Some(json!({"departments": ["sales"]})),
        )
        .await;
    assert_eq!(
        (status, person["departments"].clone()),
        (StatusCode::OK, json!(["od-sales"]))
    );
    let a = emu.department(&token, "?department_id=od-sre").await;
    assert_eq!(open_ids(&a), ["ou_alice"]);
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert!(resolved(&a).iter().all(|(_, id)| id.is_none()), "{a:?}");

    // Resigned: gone for every app unless resigned people are asked for.
    let all = emu.token("cli_all", "s-all").await;
    let (status, _) = emu
        .admin(
            Method::PUT,
            "/_emulator/people/ou_frank/resigned",
            Some(json!({"resigned": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let a = emu.batch_get_id(&all, "", &ask).await;
    assert!(resolved(&a).iter().all(|(_, id)| id.is_none()), "{a:?}");
    let a = emu.department(&all, "?department_id=od-sales").await;
    assert_eq!(open_ids(&a), ["ou_carol"]);
    let mut with_resigned = ask.clone();
    with_resigned["include_resigned"] = json!(true);
    let a = emu.batch_get_id(&all, "", &with_resigned).await;
    assert!(
        resolved(&a)
            .iter()
            .all(|(_, id)| id.as_deref() == Some("ou_frank")),
        "{a:?}"
    );

    // Refusals: a taken email (409), an unknown department (400), an unknown person (404).
    for (method, path, body, expected) in [
        (
            Method::POST,
            "/_emulator/people",
            json!({"open_id": "ou_x", "email": "ALICE@example.com"}),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/_emulator/people",
            json!({"open_id": "ou_alice", "email": "alice2@example.com"}),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/_emulator/people",
            json!({"open_id": "ou_y", "departments": ["od-nowhere"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/_emulator/people/ou_nobody/resigned",
            json!({"resigned": true}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, v) = emu.admin(method, path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (_, v) = emu.admin(Method::GET, "/_emulator/people", None).await;
    let frank = &v["people"][5];
    assert_eq!(
        (&frank["ids"]["open_id"], &frank["resigned"]),
        (&json!("ou_frank"), &json!(true))
    );
    assert_eq!(v["people"].as_array().map(Vec::len), Some(6));
    let (_, v) = emu.admin(Method::GET, "/_emulator/departments", None).await;
    assert_eq!(v["departments"][1]["parent"], "od-eng");
}

#[tokio::test]
async fn injected_faults_hit_the_directory_calls_too() {
    let emu = Emu::tenant().await;
    let token = emu.token("cli_all", "s-all").await;
    let (status, _) = emu
        .admin(
            Method::PUT,
            "/_emulator/faults",
            Some(json!({"server_errors_next": 1, "rate_limited_next": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let a = emu.members(&token, "oc_team", "").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{a:?}");
    let a = emu.department(&token, "?department_id=0").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, 99991400),
        "{a:?}"
    );
    // An injected 429 reports the directory calls' limit, not the chat-button one.
    assert_eq!(a.limit.as_deref(), Some("50"));
    assert_eq!(emu.members(&token, "oc_team", "").await.code(), 0);
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn directory_calls_are_limited_per_second_and_per_minute_each_api_and_app_apart() {
    let emu = Emu::with(
        TENANT,
        DirectoryRateLimit {
            per_second: 3,
            per_minute: 5,
        },
    )
    .await;
    let token = emu.token("cli_all", "s-all").await;
    let ask = json!({"emails": ["alice@example.com"]});
    for _ in 0..3 {
        let a = emu.batch_get_id(&token, "", &ask).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, 99991400),
        "{a:?}"
    );
    assert_eq!(
        (a.limit.as_deref(), a.reset.as_deref()),
        (Some("3"), Some("1"))
    );
    // Another API, another app and the chat-button call each have their own budget.
    assert_eq!(emu.members(&token, "oc_team", "").await.code(), 0);
    assert_eq!(emu.department(&token, "?department_id=0").await.code(), 0);
    let other = emu.token("cli_sre", "s-sre").await;
    assert_eq!(emu.batch_get_id(&other, "", &ask).await.code(), 0);
    let a = emu
        .chat_button(
            &token,
            "",
            &json!({"chat_id": "oc_team", "buttons": {"buttons": []}}),
        )
        .await;
    assert_eq!(a.code(), 0, "{a:?}");

    // A second later the per-second window has room, but the minute allows only 5.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        let a = emu.batch_get_id(&token, "", &ask).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    let a = emu.batch_get_id(&token, "", &ask).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::TOO_MANY_REQUESTS, 99991400),
        "{a:?}"
    );
    assert_eq!(a.limit.as_deref(), Some("5"));
    let reset: u64 = a.reset.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    assert!((55..=60).contains(&reset), "wait for the minute: {a:?}");
}

#[tokio::test]
async fn the_documented_directory_limits_are_the_defaults_and_zero_lifts_them() {
    assert_eq!(
        EmulatorConfig::default().directory_rate_limit,
        DirectoryRateLimit {
            per_second: 50,
            per_minute: 1000
        }
    );
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: EmulatorArgs,
    }
    let args = Cmd::parse_from(["emulator"]).args;
    assert_eq!(
        (
            args.directory_rate_limit,
            args.directory_rate_limit_per_minute
        ),
        (50, 1000)
    );
    let args = Cmd::parse_from(["emulator", "--directory-rate-limit", "0"]).args;
    let config = args.config().await.expect("a config");
    assert_eq!(config.directory_rate_limit.per_second, 0);
    assert_eq!(config.rate_limit, 10, "the chat-button limit stays apart");

    let emu = Emu::with(
        TENANT,
        DirectoryRateLimit {
            per_second: 0,
            per_minute: 0,
        },
    )
    .await;
    let token = emu.token("cli_all", "s-all").await;
    for _ in 0..60 {
        let a = emu.members(&token, "oc_team", "").await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    let (_, info) = emu.admin(Method::GET, "/_emulator", None).await;
    assert_eq!(
        info["directory_rate_limit"],
        json!({"per_second": 0, "per_minute": 0})
    );
}

// ---------------------------------------------------------------- fixtures

#[test]
fn directory_fixtures_problems_are_all_reported() {
    let problems = Fixtures::parse(
        r#"
apps:
  - {app_id: cli_a, app_secret: s, contact_scope: [od-nowhere]}
departments:
  - {department_id: eng, name: Engineering, parent: od-ghost}
people:
  - {open_id: ou_a, email: a@example.com, departments: [od-eng]}
  - {open_id: ou_b, email: A@example.com}
  - {open_id: ou_c, mobile: "+86 138"}
  - {open_id: ou_d, departments: [od-missing]}
"#,
    )
    .expect_err("invalid fixtures");
    let text = problems.join("\n");
    assert!(text.contains("people[2]: mobile"), "{text}");
    // Checks that need the whole world wait until each entry is valid on its own.
    let problems = Fixtures::parse(
        r#"
apps:
  - {app_id: cli_a, app_secret: s, contact_scope: [od-nowhere]}
departments:
  - {department_id: eng, name: Engineering, parent: od-ghost}
people:
  - {open_id: ou_a, email: a@example.com}
  - {open_id: ou_b, email: A@example.com}
  - {open_id: ou_d, departments: [od-missing]}
"#,
    )
    .expect_err("invalid fixtures");
    let text = problems.join("\n");
    assert!(
        text.contains("departments[0]: parent \"od-ghost\""),
        "{text}"
    );
    assert!(text.contains("people[1]: email"), "{text}");
    assert!(
        text.contains("people[2]: no department \"od-missing\""),
        "{text}"
    );
    // People in good departments are not reported for a department's bad parent.
    let problems = Fixtures::parse(
        "departments: [{department_id: a, parent: ghost}, {department_id: b}]\npeople: [{open_id: ou_a, departments: [a, b]}]",
    )
    .expect_err("a bad parent");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(Fixtures::parse("people: [{name: Nobody}]").is_err());
    assert!(Fixtures::parse("apps: [{app_id: a, app_secret: s, contact_scope: some}]").is_err());
    let ok = Fixtures::parse(
        "apps: [{app_id: a, app_secret: s, contact_scope: all, scopes: []}]\nchats: [{chat_id: oc_1, bots: 3}]",
    )
    .expect("valid fixtures");
    assert_eq!(ok.chats[0].bots, 3);
}

#[tokio::test]
async fn the_readme_fixtures_example_is_valid_and_resolves_its_person() {
    let readme = std::fs::read_to_string(crate::util::root().join("README.md")).expect("README.md");
    let block: String = readme
        .split("```yaml\n# fixtures.yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the fixtures example")
        .to_owned();
    Fixtures::parse(&block).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let emu = Emu::with(&block, DirectoryRateLimit::default()).await;
    let token = emu.token("cli_demo", "demo-secret").await;
    let a = emu
        .batch_get_id(&token, "", &json!({"emails": ["alice@example.com"]}))
        .await;
    assert_eq!(
        resolved(&a),
        pairs(&[(
            "alice@example.com",
            Some("ou_7d8a6e6df7621556ce0d21922b676706")
        )])
    );
}
