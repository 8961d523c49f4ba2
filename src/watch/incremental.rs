//! What the daemon keeps between reconciles so that an edit costs what it touches: the config's
//! files and findings ([`ConfigCache`]) and every chat's plan tally. Takes the config directory
//! and the applied state; gives the plan that reading everything again would give.
//!
//! A chat is compared again when a changed file declares (or declared) it, or when its last
//! plan was not quiet (it had calls, records to settle, or waiting targets): only calls and
//! settling change a chat's records during a reconcile. Everything is compared again after
//! another writer changed the state (its lineage or serial moved between two reconciles: a
//! resync call, the writer taken again), and whenever the config is checked whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::LoadError;
use crate::config::diag::{Report, Sources};
use crate::config::incremental::ConfigCache;
use crate::desired::DesiredState;
use crate::lock::Lock;
use crate::plan::{self, ChatTally, Plan, PlanOptions, Scope};
use crate::state::AppliedState;

/// The config and plan tallies kept between reconciles.
#[derive(Debug, Default)]
pub struct Incremental {
    config: ConfigCache,
    /// Every chat's tally at the last plan; `None` until a plan compared every chat, and after
    /// the state moved.
    tallies: Option<BTreeMap<String, ChatTally>>,
    /// The state's lineage and serial after the last reconcile recorded what it did.
    state_at: Option<(String, u64)>,
}

/// A config as reloaded.
#[derive(Debug)]
pub struct Reloaded {
    /// Every diagnostic, as `config::load_dir` gives them.
    pub report: Report,
    /// Present only when the config has no errors: the chats of `chats`, or every chat.
    pub desired: Option<DesiredState>,
    /// The chats checked again, when not every chat was.
    pub chats: Option<BTreeSet<String>>,
}

impl Incremental {
    /// Compares everything again unless `applied` is the state the last reconcile left.
    pub fn check_state(&mut self, applied: &AppliedState) {
        let same = self.state_at.as_ref().is_some_and(|(lineage, serial)| {
            *lineage == applied.lineage && *serial == applied.serial
        });
        if !same {
            self.forget_state();
        }
    }

    /// Compares every chat at the next plan: the state was read anew.
    pub fn forget_state(&mut self) {
        self.tallies = None;
        self.state_at = None;
    }

    /// Reads the config again (see [`ConfigCache::reload`]), checking too the chats whose last
    /// plan was not quiet, and every chat when the next plan must compare every chat. The
    /// people the config names are those of the lock in `dir`, as `config::load_dir` reads them.
    pub fn reload(&mut self, dir: &Path) -> Result<Reloaded, LoadError> {
        self.reload_with(dir, None)
    }

    /// [`Incremental::reload`], with the people taken from `live` when given (`watch
    /// --resolve-every`: the committed lock with its sources' live members), as
    /// `config::load_dir_with` takes them; every chat is checked again when they changed.
    pub fn reload_with(&mut self, dir: &Path, live: Option<Lock>) -> Result<Reloaded, LoadError> {
        let also: BTreeSet<String> = match &self.tallies {
            Some(tallies) => tallies
                .iter()
                .filter(|(_, t)| !t.quiet)
                .map(|(c, _)| c.clone())
                .collect(),
            None => {
                self.config.check_every_chat();
                BTreeSet::new()
            }
        };
        let r = self.config.reload(dir, &also, live)?;
        Ok(Reloaded {
            report: r.report,
            desired: r.desired,
            chats: r.chats,
        })
    }

    /// The config's files, for rendering the diagnostics of the last reload.
    pub fn sources(&self) -> &Sources {
        self.config.sources()
    }

    /// Plans what `reloaded` declares against `applied`: the chats it checked again, or every
    /// chat.
    pub fn plan<'a>(
        &mut self,
        desired: &'a DesiredState,
        chats: Option<&BTreeSet<String>>,
        applied: &'a AppliedState,
        options: &PlanOptions,
    ) -> Plan<'a> {
        let targets = &desired.targets;
        let names = &desired.chat_names;
        match (chats, self.tallies.as_mut()) {
            (Some(chats), Some(tallies)) => {
                let mut rest = ChatTally {
                    quiet: true,
                    ..ChatTally::default()
                };
                for (chat, t) in tallies.iter() {
                    if !chats.contains(chat) {
                        rest.add(t);
                    }
                }
                tallies.retain(|c, _| !chats.contains(c));
                let scope = Scope::Chats { chats, rest };
                plan::plan_in(
                    targets,
                    names,
                    &applied.targets,
                    options,
                    scope,
                    &mut |c, t| {
                        tallies.insert(c.to_owned(), t);
                    },
                )
            }
            _ => {
                let mut tallies = BTreeMap::new();
                let p = plan::plan_in(
                    targets,
                    names,
                    &applied.targets,
                    options,
                    Scope::Every,
                    &mut |c, t| {
                        tallies.insert(c.to_owned(), t);
                    },
                );
                // A plan of some chats only (`--chat`) leaves the others unknown.
                self.tallies = options.chats.is_empty().then_some(tallies);
                p
            }
        }
    }

    /// Notes the state as the reconcile leaves it: the next plan builds on it while no one
    /// else writes.
    pub fn recorded(&mut self, applied: &AppliedState) {
        self.state_at = Some((applied.lineage.clone(), applied.serial));
    }
}

/// Hands the memory freed by a reconcile back to the system. A full reload of a large config
/// frees hundreds of megabytes (the parse trees, the desired targets, the plan) that glibc's
/// allocator would otherwise keep, and the daemon then idles with them.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer and
    // has no precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}
