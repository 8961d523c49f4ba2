//! The domain's nouns shared by every stage: a `Target` (one chat and one audience) and the
//! `ButtonList` it should show.

use serde::{Deserialize, Serialize};

use crate::feishu::wire::{Button, UserIdType};
use crate::id::Id;

/// Who in a chat a button list is for.
///
/// The derived order puts `Everyone` before any user: a chat's whole-chat request is sent first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Audience {
    /// The chat as a whole: a request without `user_ids`.
    Everyone,
    /// One user, named by an id of the given type.
    User { id_type: UserIdType, id: Id },
}

/// One chat and one audience: the unit the desired and applied states map to a button list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub chat_id: Id,
    pub audience: Audience,
}

impl Target {
    /// The whole-chat target of `chat_id`.
    pub fn everyone(chat_id: impl Into<Id>) -> Target {
        Target {
            chat_id: chat_id.into(),
            audience: Audience::Everyone,
        }
    }

    /// The target of one user in `chat_id`.
    pub fn user(chat_id: impl Into<Id>, id_type: UserIdType, id: impl Into<Id>) -> Target {
        Target {
            chat_id: chat_id.into(),
            audience: Audience::User {
                id_type,
                id: id.into(),
            },
        }
    }

    /// The user id, or `None` for the whole chat.
    pub fn user_id(&self) -> Option<&str> {
        match &self.audience {
            Audience::Everyone => None,
            Audience::User { id, .. } => Some(id.as_str()),
        }
    }

    /// How the target is named in plans and state listings: `everyone` or the user id.
    pub fn audience_label(&self) -> &str {
        self.user_id().unwrap_or("everyone")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.audience {
            Audience::Everyone => write!(f, "{}/everyone", self.chat_id),
            Audience::User { id_type, id } => write!(f, "{}/{}:{}", self.chat_id, id_type, id),
        }
    }
}

/// The complete, ordered list of 0..2 buttons a target shows (an empty list is an explicit clear).
pub type ButtonList = Vec<Button>;
