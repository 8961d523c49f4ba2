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
}

impl DesiredState {
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
        self.targets.retain(|t, _| chats.contains(&t.chat_id));
        self.chat_names.retain(|c, _| chats.contains(c));
    }
}
