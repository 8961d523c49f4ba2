//! The desired state: every target the config declares and the button list it should show.
//!
//! Built by `config::validate` from a config without errors; read by the plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::target::{ButtonList, Target};

/// What the config asks for: targets in their canonical order, and the chats' labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Identical lists share one allocation, so a million targets cost a million pointers.
    pub targets: BTreeMap<Target, Arc<ButtonList>>,
    /// `name:` labels of chats, for plans.
    pub chat_names: BTreeMap<String, String>,
    /// How plans show a user id: the email, mobile or name the lock knows it by.
    pub people: BTreeMap<String, String>,
    /// The app whose open_ids the lock gave (when it gave any): they are no one's under
    /// another app (see [`DesiredState::check_app`]).
    pub open_ids_of: Option<String>,
}

/// The lock's open_ids were looked up for another app than the one a run is for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "feedbuttons.lock holds open_ids of app {lock}, but this run is for app {run}: an open_id is per app, and these would name no one (or someone else) under {run}; run `feedbuttons resolve` with {run}'s credentials (a config directory, and its lock, per app)"
)]
pub struct OtherAppsIds {
    pub lock: String,
    pub run: String,
}

impl OtherAppsIds {
    /// Refuses a run for `app_id` with open_ids of `open_ids_of` (a config's, or a saved plan's).
    pub fn check(open_ids_of: Option<&str>, app_id: &str) -> Result<(), OtherAppsIds> {
        match open_ids_of {
            Some(lock) if lock != app_id => Err(OtherAppsIds {
                lock: lock.to_owned(),
                run: app_id.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

impl DesiredState {
    /// Refuses a run for `app_id` when the lock's open_ids belong to another app.
    pub fn check_app(&self, app_id: &str) -> Result<(), OtherAppsIds> {
        OtherAppsIds::check(self.open_ids_of.as_deref(), app_id)
    }

    /// The number of distinct chats with at least one target.
    pub fn chat_count(&self) -> usize {
        let mut n = 0;
        let mut last: Option<&str> = None;
        for t in self.targets.keys() {
            if last != Some(t.chat_id.as_str()) {
                n += 1;
                last = Some(&t.chat_id);
            }
        }
        n
    }

    /// Keeps only the targets of the given chats (no filter when `chats` is empty).
    pub fn retain_chats(&mut self, chats: &[String]) {
        if chats.is_empty() {
            return;
        }
        self.targets
            .retain(|t, _| chats.iter().any(|c| *c == t.chat_id));
        self.chat_names.retain(|c, _| chats.contains(c));
    }
}
