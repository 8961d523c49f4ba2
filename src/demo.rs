//! `feedbuttons demo`: the whole loop against an in-process emulator, with a throwaway state and
//! the emulator's built-in app, so that a new user sees plan -> apply -> result -> no changes
//! without a Feishu tenant or credentials.

use std::collections::BTreeMap;
use std::path::Path;

use crate::emulator::{BUILTIN_APP_ID, BUILTIN_APP_SECRET, Emulator, EmulatorConfig};
use crate::feishu::client::{CallError, ClientError, Secret};
use crate::plan::{self, json::PlanDoc, render};
use crate::settings::{Connection, Credentials, CredentialsError, Endpoint};
use crate::state::{self, TargetRecord};
use crate::target::Target;

/// The quick-start example, built in so that `feedbuttons demo` works from anywhere.
const QUICKSTART: &str = include_str!("../examples/quickstart/buttons.yaml");

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A temporary directory for the config or the state could not be made.
    #[error("cannot prepare a temporary directory: {0}")]
    Temp(std::io::Error),
    /// The config directory could not be loaded.
    #[error("{0}")]
    Load(#[from] crate::config::LoadError),
    /// The config has errors (they were printed).
    #[error("the config has errors; fix them (see `feedbuttons validate`) and run the demo again")]
    Invalid,
    /// The emulator could not start.
    #[error("cannot start the emulator: {0}")]
    Emulator(#[from] crate::emulator::EmulatorError),
    /// The throwaway state failed.
    #[error("{0}")]
    State(#[from] state::StateError),
    /// The built-in app's credentials were refused (they never are).
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    /// The client could not be built.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The credentials check against the emulator failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// What the emulator shows could not be read.
    #[error("cannot read what the emulator shows: {0}")]
    Inspect(#[source] reqwest::Error),
    /// Some of the demo's calls were not applied (the summary above says which).
    #[error("the apply did not complete")]
    Incomplete,
}

/// Runs the demo on `dir` (the built-in quick start when `None`), printing as it goes.
pub async fn run(dir: Option<&Path>, color: bool) -> Result<(), DemoError> {
    let tmp = tempfile::Builder::new()
        .prefix("feedbuttons-demo-")
        .tempdir()
        .map_err(DemoError::Temp)?;
    let (dir, shown) = match dir {
        Some(d) => (d.to_path_buf(), d.display().to_string()),
        None => {
            let d = tmp.path().join("quickstart");
            std::fs::create_dir_all(&d).map_err(DemoError::Temp)?;
            std::fs::write(d.join("buttons.yaml"), QUICKSTART).map_err(DemoError::Temp)?;
            (
                d,
                "the built-in quick-start example (examples/quickstart)".to_owned(),
            )
        }
    };
    let loaded = crate::config::load_dir(&dir)?;
    if !loaded.report.diagnostics.is_empty() {
        eprint!("{}", loaded.report.render_text(&loaded.sources));
    }
    let desired = loaded.desired.ok_or(DemoError::Invalid)?;

    let emulator = Emulator::start(EmulatorConfig::default()).await?;
    let base_url = emulator.base_url();
    println!(
        "1. Started the Feishu emulator at {base_url} (built-in app {BUILTIN_APP_ID}; every chat and user exists)."
    );
    println!(
        "   Config: {shown} ({} chats, {} targets). State: a throwaway file.\n",
        desired.chat_count(),
        desired.targets.len()
    );

    let store = state::open(&tmp.path().join("state.json"))?;
    let mut writer = store.writer(&state::holder("demo"))?;
    let options = plan::PlanOptions {
        chats: Vec::new(),
        rate_limit: crate::feishu::wire::api::RATE_LIMIT_PER_SECOND,
        ..Default::default()
    };
    // The config against what the state records now.
    fn plan_against<'a>(
        desired: &'a crate::desired::DesiredState,
        applied: &'a BTreeMap<Target, TargetRecord>,
        options: &plan::PlanOptions,
    ) -> plan::Plan<'a> {
        plan::plan(&desired.targets, &desired.chat_names, applied, options)
    }
    let first = plan_against(&desired, &writer.state().targets, &options);
    println!("2. The plan (what `feedbuttons plan` shows):\n");
    print!("{}", render::text(&first, render::Style { color }));
    let doc = PlanDoc::new(&first);
    drop(first);

    let credentials = Credentials::new(
        BUILTIN_APP_ID.to_owned(),
        Secret::new(BUILTIN_APP_SECRET.to_owned()),
    )?;
    let endpoint = Endpoint {
        base_url: base_url.clone(),
        rate_limit: crate::feishu::wire::api::RATE_LIMIT_PER_SECOND,
    };
    let Connection {
        client, binding, ..
    } = Connection::new(&endpoint, credentials)?;
    client.check_credentials().await?;
    writer.bind(&binding)?;
    let (_never, stop) = tokio::sync::watch::channel(false);
    let report = crate::apply::apply(
        &doc,
        &client,
        writer.as_mut(),
        8,
        &mut crate::apply::Quiet,
        stop,
    )
    .await;
    println!("\n3. Applied (what `feedbuttons apply` does):\n");
    print!("{}", crate::apply::summary(&report, doc.requests.len()));

    println!(
        "\n4. What each user now sees, as the emulator reports it (GET {base_url}/_emulator/chats):\n"
    );
    print!(
        "{}",
        what_users_see(&base_url)
            .await
            .map_err(DemoError::Inspect)?
    );

    let again = plan_against(&desired, &writer.state().targets, &options);
    println!("\n5. Planning again:\n");
    print!("{}", render::text(&again, render::Style { color }));
    emulator.shutdown().await;
    if !report.complete() {
        return Err(DemoError::Incomplete);
    }
    println!(
        "\nNext: point FEISHU_BASE_URL, FEISHU_APP_ID and FEISHU_APP_SECRET at your app and run `feedbuttons plan` and `feedbuttons apply` on your own config."
    );
    Ok(())
}

/// One line per chat and audience, from the emulator's view.
async fn what_users_see(base_url: &str) -> Result<String, reqwest::Error> {
    let v: serde_json::Value = reqwest::get(format!("{base_url}/_emulator/chats"))
        .await?
        .json()
        .await?;
    let texts = |b: &serde_json::Value| -> String {
        let names: Vec<String> = b
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["text"]["text"].as_str().map(|t| format!("[{t}]")))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            "(no buttons)".to_owned()
        } else {
            names.join(" ")
        }
    };
    let mut out = String::new();
    for chat in v["chats"].as_array().into_iter().flatten() {
        out.push_str(&format!("   {}\n", chat["chat_id"].as_str().unwrap_or("?")));
        if !chat["chat_buttons"].is_null() {
            out.push_str(&format!(
                "     everyone (whole chat): {}\n",
                texts(&chat["chat_buttons"])
            ));
        }
        for u in chat["users"].as_array().into_iter().flatten() {
            let id = ["open_id", "union_id", "user_id"]
                .iter()
                .find_map(|k| u["ids"][k].as_str())
                .unwrap_or("?");
            out.push_str(&format!("     {id}: {}\n", texts(&u["buttons"])));
        }
    }
    Ok(out)
}
