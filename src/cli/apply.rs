//! `feedbuttons apply`: plan (or load a saved plan), confirm, send the calls and record each
//! call's fate. Everything that can refuse the run is checked before the first call.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::args::{ApplyArgs, ApplyFormat};
use super::{Error, load, term};
use crate::apply::{ApplyReport, Failure};
use crate::desired::OtherAppsIds;
use crate::plan::{self, json::PlanDoc};
use crate::runtime::Signal;
use crate::settings::{Settings, StateLocation};
use crate::state::{self, StateWriter};

/// The version of `apply --format json`'s shape, its `format_version`.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// Exit 0 when everything applied, 4 when only users the API refused wait, 3 when partly
/// applied, 1 when nothing was (see `apply::exit_code`); 130 or 143 when SIGINT or SIGTERM
/// stopped it.
pub fn run(args: &ApplyArgs) -> Result<ExitCode, Error> {
    let out = Output(args.format);
    let location = StateLocation::resolve(&args.dir, args.state.as_deref())
        .named(args.state_name.as_deref())
        .waiting(args.lock_timeout);
    let settings =
        Settings::resolve(args.dir.clone(), location, &args.api.endpoint()).map_err(refused)?;
    let store = settings.state.open()?;
    let mut writer = settings
        .state
        .writer(store.as_ref(), &state::holder("apply"))
        .map_err(refused)?;
    let connection = &settings.connection;
    writer
        .state()
        .check_binding(&connection.binding)
        .map_err(refused)?;
    let doc = match &args.plan {
        Some(plan_file) => saved_plan(plan_file, writer.as_ref(), &connection.binding.app_id, out)?,
        None => {
            let (desired, _) = load::desired(&args.dir)?;
            desired
                .check_app(&connection.binding.app_id)
                .map_err(refused)?;
            let options = plan::PlanOptions {
                chats: args.chats.clone(),
                rate_limit: connection.rate_limit,
                ..Default::default()
            };
            let known = |c: &str| writer.state().chat(c).next().is_some();
            load::check_chats_known(&args.chats, &desired, known, "the state").map_err(refused)?;
            let mut p = plan::plan(
                &desired.targets,
                &desired.chat_names,
                &writer.state().targets,
                &options,
            );
            p.label_people(&desired.people);
            out.human(&plan::render::text(
                &p,
                plan::render::Style { color: out.color() },
            ))?;
            let settle = std::mem::take(&mut p.settle);
            let doc = PlanDoc::new(&p);
            drop(p);
            // Waiting targets the config no longer asks to change: nothing to send, only the
            // record to put right.
            writer.record(&settle).map_err(refused)?;
            doc
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
            out.human("Nothing to do: the plan makes no calls.\n")?;
        }
        out.result(&doc, &ApplyReport::default(), None, 0)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.plan.is_none() && !args.yes && !term::confirm(doc.requests.len()).map_err(refused)? {
        eprintln!("Not confirmed; nothing was applied.");
        return Ok(ExitCode::FAILURE);
    }
    let rt = crate::runtime::build().map_err(Error::Runtime)?;
    let (report, signal) = rt.block_on(send(&doc, &settings, writer))?;
    eprint!("{}", crate::apply::summary(&report, doc.requests.len()));
    let code = match signal {
        // A signal that stopped the run gives the shell's code for it, whatever was applied.
        Some(signal) if report.interrupted => signal.exit_code(),
        _ => crate::apply::exit_code(&report),
    };
    out.result(&doc, &report, signal, code)?;
    Ok(ExitCode::from(code))
}

/// Checks the credentials, binds the state and sends the plan's calls; gives what happened
/// and the signal that asked the run to stop, if one did.
async fn send(
    doc: &PlanDoc,
    settings: &Settings,
    mut writer: Box<dyn StateWriter>,
) -> Result<(ApplyReport, Option<Signal>), Error> {
    let connection = &settings.connection;
    // Listening from before the first request: a signal while the credentials are checked or
    // the state bound stops the run before any call, and says so, instead of killing it.
    let signal = Arc::new(OnceLock::new());
    let stop = stop_on_signal(Arc::clone(&signal));
    // The check retries for half a minute while the token endpoint fails: a signal ends it
    // there, and the run with nothing sent.
    let mut signalled = stop.clone();
    tokio::select! {
        checked = connection.client.check_credentials() => checked.map_err(refused)?,
        Ok(_) = signalled.wait_for(|s| *s) => {
            let report = ApplyReport {
                calls_not_sent: doc.requests.len(),
                interrupted: true,
                ..ApplyReport::default()
            };
            return Ok((report, signal.get().copied()));
        }
    }
    writer.bind(&connection.binding).map_err(refused)?;
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
    Ok((report, signal.get().copied()))
}

/// Loads a saved plan and checks it was made against the state as it is now.
fn saved_plan(
    plan_file: &std::path::Path,
    writer: &dyn StateWriter,
    app_id: &str,
    out: Output,
) -> Result<PlanDoc, Error> {
    let doc = PlanDoc::load(plan_file).map_err(refused)?;
    OtherAppsIds::check(doc.open_ids_of.as_deref(), app_id).map_err(refused)?;
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
    out.human(&format!(
        "Applying the saved plan {}: {} to add, {} to change, {} to remove; {} calls.\n",
        plan_file.display(),
        n.add,
        n.change,
        n.remove,
        n.requests
    ))?;
    Ok(doc)
}

/// An error that refused the run before any call: nothing was applied.
fn refused(e: impl Into<Error>) -> Error {
    Error::NothingApplied(Box::new(e.into()))
}

/// A watch that turns true on SIGINT or SIGTERM (never, if the handlers cannot be installed);
/// `which` keeps the signal.
fn stop_on_signal(which: Arc<OnceLock<Signal>>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    match crate::runtime::shutdown_signal() {
        Ok(signal) => {
            tokio::spawn(async move {
                let signal = signal.await;
                let _ = which.set(signal);
                eprintln!(
                    "\n{signal}: stopping; waiting for the calls in flight, then recording them..."
                );
                let _ = tx.send(true);
            });
        }
        Err(e) => eprintln!("warning: cannot wait for SIGINT/SIGTERM: {e}"),
    }
    rx
}

/// Where apply's words go: with `--format json` stdout holds only the JSON result, so what
/// people read (the plan, "Applying the saved plan...") goes to stderr.
#[derive(Clone, Copy)]
struct Output(ApplyFormat);

impl Output {
    fn human(self, text: &str) -> Result<(), Error> {
        match self.0 {
            ApplyFormat::Text => term::print(text),
            ApplyFormat::Json => {
                eprint!("{text}");
                Ok(())
            }
        }
    }

    /// Whether what [`Output::human`] writes may be coloured.
    fn color(self) -> bool {
        match self.0 {
            ApplyFormat::Text => term::stdout_color(),
            ApplyFormat::Json => term::stderr_color(),
        }
    }

    /// The JSON result on stdout, with `--format json`.
    fn result(
        self,
        doc: &PlanDoc,
        report: &ApplyReport,
        signal: Option<Signal>,
        code: u8,
    ) -> Result<(), Error> {
        if self.0 != ApplyFormat::Json {
            return Ok(());
        }
        let json = ApplyJson::new(doc, report, signal.filter(|_| report.interrupted), code);
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        term::print(&text)
    }
}

/// `apply --format json`.
#[derive(Serialize)]
struct ApplyJson<'a> {
    format_version: u32,
    /// What was applied: the plan's summary, as `plan --format json` gives it.
    plan: PlanJson<'a>,
    result: ResultJson<'a>,
}

#[derive(Serialize)]
struct PlanJson<'a> {
    summary: &'a plan::Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    mass_removal: Option<&'a plan::MassRemoval>,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    /// The process's exit code (see the README's exit codes).
    exit_code: u8,
    /// Every planned change applied (users the API refused wait apart).
    complete: bool,
    calls: CallsJson,
    targets_applied: usize,
    /// Targets not applied: they keep what they showed, and the next apply sends them.
    failures: &'a [Failure],
    /// Targets whose call went unanswered: marked uncertain and sent again next time.
    uncertain: &'a [Failure],
    /// Users the API refused (not in the chat): recorded as waiting.
    waiting: &'a [Failure],
    /// Chats whose bot is missing.
    bot_not_in: &'a [String],
    /// `SIGINT` or `SIGTERM` when a signal stopped the run.
    interrupted_by: Option<&'static str>,
    /// The error that stopped the run (credentials, scope, an outage), if one did.
    fatal: Option<&'a str>,
    /// Why recording in the state failed, if it did (the run stopped).
    state_error: Option<&'a str>,
    elapsed_seconds: f64,
}

#[derive(Serialize)]
struct CallsJson {
    planned: usize,
    success: usize,
    failed: usize,
    not_sent: usize,
}

impl<'a> ApplyJson<'a> {
    fn new(
        doc: &'a PlanDoc,
        report: &'a ApplyReport,
        signal: Option<Signal>,
        code: u8,
    ) -> ApplyJson<'a> {
        ApplyJson {
            format_version: JSON_FORMAT_VERSION,
            plan: PlanJson {
                summary: &doc.summary,
                mass_removal: doc.mass_removal.as_ref(),
            },
            result: ResultJson {
                exit_code: code,
                complete: report.every_call_applied(),
                calls: CallsJson {
                    planned: doc.requests.len(),
                    success: report.calls_ok,
                    failed: report.calls_failed,
                    not_sent: report.calls_not_sent,
                },
                targets_applied: report.targets_applied,
                failures: &report.failures,
                uncertain: &report.uncertain,
                waiting: &report.waiting,
                bot_not_in: &report.bot_not_in,
                interrupted_by: signal.map(Signal::name),
                fatal: report.fatal.as_deref(),
                state_error: report.state_error.as_deref(),
                elapsed_seconds: report.elapsed.as_secs_f64(),
            },
        }
    }
}
