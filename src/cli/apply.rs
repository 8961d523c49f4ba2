//! `feedbuttons apply`: plan (or load a saved plan), confirm, send the calls and record each
//! call's fate. Everything that can refuse the run is checked before the first call.

use std::process::ExitCode;

use super::args::ApplyArgs;
use super::{Error, load, term};
use crate::plan::{self, json::PlanDoc};
use crate::settings::Settings;
use crate::state::{self, StateWriter};

/// Exit 0 when everything applied, 4 when only users the API refused wait, 3 when partly
/// applied, 1 when nothing was (see `apply::exit_code`).
pub fn run(args: &ApplyArgs) -> Result<ExitCode, Error> {
    let settings = Settings::resolve(
        args.dir.clone(),
        args.state.as_deref(),
        &args.api.endpoint(),
    )
    .map_err(refused)?;
    let store = settings.state.open()?;
    let mut writer = store.writer(&state::holder("apply")).map_err(refused)?;
    let connection = &settings.connection;
    writer
        .state()
        .check_binding(&connection.binding)
        .map_err(refused)?;
    let doc = match &args.plan {
        Some(plan_file) => saved_plan(plan_file, writer.as_ref())?,
        None => {
            let (desired, _) = load::desired(&args.dir)?;
            let options = plan::PlanOptions {
                chats: args.chats.clone(),
                rate_limit: connection.rate_limit,
                ..Default::default()
            };
            let known = |c: &str| writer.state().chat(c).next().is_some();
            load::check_chats_known(&args.chats, &desired, known, "the state").map_err(refused)?;
            let p = plan::plan(
                &desired.targets,
                &desired.chat_names,
                &writer.state().targets,
                &options,
            );
            term::print(&plan::render::text(
                &p,
                plan::render::Style {
                    color: term::stdout_color(),
                },
            ))?;
            // Waiting targets the config no longer asks to change: nothing to send, only the
            // record to put right.
            writer.record(&p.settle).map_err(refused)?;
            PlanDoc::new(&p)
        }
    };
    if let Some(m) = &doc.mass_removal
        && !args.allow_mass_removal
    {
        return Err(refused(Error::MassRemoval {
            reason: m.reason.clone(),
        }));
    }
    if doc.requests.is_empty() {
        if args.plan.is_some() {
            println!("Nothing to do: the plan makes no calls.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.plan.is_none() && !args.yes && !term::confirm(doc.requests.len()).map_err(refused)? {
        eprintln!("Not confirmed; nothing was applied.");
        return Ok(ExitCode::FAILURE);
    }
    let rt = crate::runtime::build().map_err(Error::Runtime)?;
    rt.block_on(send(&doc, &settings, writer))
}

/// Checks the credentials, binds the state and sends the plan's calls.
async fn send(
    doc: &PlanDoc,
    settings: &Settings,
    mut writer: Box<dyn StateWriter>,
) -> Result<ExitCode, Error> {
    let connection = &settings.connection;
    connection
        .client
        .check_credentials()
        .await
        .map_err(refused)?;
    writer.bind(&connection.binding).map_err(refused)?;
    let stop = stop_on_signal();
    let mut progress = term::Progress::new(doc.requests.len(), connection.rate_limit);
    let report = crate::apply::apply(
        doc,
        &connection.client,
        writer.as_mut(),
        crate::apply::concurrency_for(connection.rate_limit),
        &mut progress,
        stop,
    )
    .await;
    if let Err(e) = writer.compact() {
        eprintln!(
            "warning: the state could not be compacted (the journal keeps every record): {e}"
        );
    }
    eprint!("{}", crate::apply::summary(&report, doc.requests.len()));
    Ok(ExitCode::from(crate::apply::exit_code(&report)))
}

/// Loads a saved plan and checks it was made against the state as it is now.
fn saved_plan(plan_file: &std::path::Path, writer: &dyn StateWriter) -> Result<PlanDoc, Error> {
    let doc = PlanDoc::load(plan_file).map_err(refused)?;
    let now = writer.state();
    if let Some(made) = &doc.state
        && (made.lineage != now.lineage || made.serial != now.serial)
    {
        return Err(refused(Error::StalePlan {
            path: plan_file.to_path_buf(),
            made: made.serial,
            now: now.serial,
            other_lineage: made.lineage != now.lineage,
        }));
    }
    let n = &doc.summary;
    println!(
        "Applying the saved plan {}: {} to add, {} to change, {} to remove; {} calls.",
        plan_file.display(),
        n.add,
        n.change,
        n.remove,
        n.requests
    );
    Ok(doc)
}

/// An error that refused the run before any call: nothing was applied.
fn refused(e: impl Into<Error>) -> Error {
    Error::NothingApplied(Box::new(e.into()))
}

/// A watch that turns true on SIGINT or SIGTERM (never, if the handlers cannot be installed).
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    match crate::runtime::shutdown_signal() {
        Ok(signal) => {
            tokio::spawn(async move {
                signal.await;
                eprintln!("\nStopping: waiting for the calls in flight, then recording them...");
                let _ = tx.send(true);
            });
        }
        Err(e) => eprintln!("warning: cannot wait for SIGINT/SIGTERM: {e}"),
    }
    rx
}
