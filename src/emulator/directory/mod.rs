//! The emulated directory: departments, what is known of each person (name, email, mobile,
//! departments, resigned), and the three look-ups behind `feedbuttons resolve`: people by email
//! or mobile, a chat's members, a department's direct members. It reads and extends the world
//! (`world.rs`) and gives the API's wire types; checks, errors and paging are in `lookup.rs`.
//!
//! Who may see whom follows the app's contact scope: a department in the scope brings every
//! department below it. A person in no department sits directly under the root, which only an
//! all-staff scope sees.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::feishu::wire::directory::ROOT_DEPARTMENT_ID;
use crate::feishu::wire::{ChatMember, DepartmentIdType, UserStatus};

use super::fixtures::{AppAccess, ContactScope, DepartmentSpec, MemberIds};
use super::world::PersonId;

mod people;

/// The one tenant's `tenant_key` in member lists (any constant does: clients only compare it).
pub const TENANT_KEY: &str = "emulator-tenant";

/// Field scopes: a field of a department user is returned only when the app has one of its
/// scopes (documented per field on find_by_department and batch_get_id).
const CONTACT_WIDE: [&str; 3] = [
    "contact:contact:access_as_app",
    "contact:contact:readonly",
    "contact:contact:readonly_as_app",
];
const FIELD_NAME: &[&str] = &["contact:user.base:readonly"];
const FIELD_EMAIL: &[&str] = &["contact:user.email:readonly"];
const FIELD_MOBILE: &[&str] = &["contact:user.phone:readonly"];
const FIELD_USER_ID: &[&str] = &["contact:user.employee_id:readonly"];
const FIELD_STATUS: &[&str] = &["contact:user.employee:readonly"];
const FIELD_DEPARTMENTS: &[&str] = &["contact:user.department:readonly"];

type DeptIdx = usize;

#[derive(Clone, Debug)]
struct Department {
    department_id: String,
    open_department_id: String,
    name: String,
    /// `None`: directly under the root.
    parent: Option<DeptIdx>,
}

/// What the directory knows of one person.
#[derive(Clone, Debug)]
struct Profile {
    name: String,
    email: Option<String>,
    enterprise_email: Option<String>,
    /// Normalized: `+` and digits.
    mobile: Option<String>,
    /// Direct departments; empty: directly under the root.
    departments: Vec<DeptIdx>,
    resigned: bool,
}

impl Profile {
    fn status(&self) -> UserStatus {
        UserStatus {
            is_resigned: self.resigned,
            is_activated: !self.resigned,
            ..UserStatus::default()
        }
    }
}

/// Departments and the people the directory knows (a chat member the fixtures only name by id
/// has no profile: no name, no email, in no department).
#[derive(Default)]
pub struct Directory {
    departments: Vec<Department>,
    profiles: BTreeMap<PersonId, Profile>,
}

impl Directory {
    /// The department tree the fixtures describe, and every problem found. Even with problems
    /// the tree holds every department that has an id (a bad parent reads as the root), so that
    /// people naming good departments are not reported too.
    pub fn from_departments(specs: &[DepartmentSpec]) -> (Directory, Vec<String>) {
        let mut problems = Vec::new();
        let mut departments = Vec::new();
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let Some((id, open)) = spec.ids() else {
                problems.push(format!(
                    "departments[{i}]: give department_id or open_department_id"
                ));
                continue;
            };
            if !open.starts_with("od-") {
                problems.push(format!(
                    "departments[{i}]: open_department_id {open:?} does not start with od-"
                ));
            }
            for d in [&id, &open] {
                if d.is_empty() || d == ROOT_DEPARTMENT_ID {
                    problems.push(format!(
                        "departments[{i}]: {d:?} cannot be a department id (\"0\" is the root)"
                    ));
                }
                match owner.get(d.as_str()) {
                    Some(j) if *j != i => problems.push(format!(
                        "departments[{i}]: id {d:?} is already departments[{j}]'s"
                    )),
                    _ => {
                        owner.insert(d.clone(), i);
                    }
                }
            }
            departments.push((
                i,
                Department {
                    department_id: id,
                    open_department_id: open,
                    name: spec.name.clone(),
                    parent: None,
                },
            ));
        }
        let index_of: HashMap<usize, DeptIdx> = departments
            .iter()
            .enumerate()
            .map(|(idx, (i, _))| (*i, idx))
            .collect();
        let mut tree: Vec<Department> = Vec::with_capacity(departments.len());
        for (i, mut d) in departments {
            let parent = &specs[i].parent;
            if parent != ROOT_DEPARTMENT_ID {
                match owner.get(parent.as_str()).and_then(|j| index_of.get(j)) {
                    Some(p) => d.parent = Some(*p),
                    None => problems.push(format!(
                        "departments[{i}]: parent {parent:?} is not a department (\"0\" is the root)"
                    )),
                }
            }
            tree.push(d);
        }
        let directory = Directory {
            departments: tree,
            profiles: BTreeMap::new(),
        };
        for d in 0..directory.departments.len() {
            if directory.above(d).count() > directory.departments.len() {
                problems.push(format!(
                    "department {:?}: its parents go round in a circle",
                    directory.departments[d].open_department_id
                ));
            }
        }
        (directory, problems)
    }

    /// A department by either of its ids.
    fn find(&self, id: &str) -> Option<DeptIdx> {
        self.departments
            .iter()
            .position(|d| d.department_id == id || d.open_department_id == id)
    }

    fn find_typed(&self, t: DepartmentIdType, id: &str) -> Option<DeptIdx> {
        self.departments.iter().position(|d| match t {
            DepartmentIdType::DepartmentId => d.department_id == id,
            DepartmentIdType::OpenDepartmentId => d.open_department_id == id,
        })
    }

    fn id_of(&self, d: DeptIdx, t: DepartmentIdType) -> &str {
        let d = &self.departments[d];
        match t {
            DepartmentIdType::DepartmentId => &d.department_id,
            DepartmentIdType::OpenDepartmentId => &d.open_department_id,
        }
    }

    /// `d`, its parent, its parent's parent... up to the root. Bounded, so that a circle (which
    /// the fixtures check refuses) cannot loop forever.
    fn above(&self, d: DeptIdx) -> impl Iterator<Item = DeptIdx> + '_ {
        std::iter::successors(Some(d), |d| self.departments[*d].parent)
            .take(self.departments.len() + 1)
    }

    /// Whether an app whose contact scope is `scope` may see department `d`.
    fn sees_department(&self, scope: &ContactScope, d: DeptIdx) -> bool {
        match scope {
            ContactScope::All => true,
            ContactScope::Departments(list) => {
                let granted: Vec<DeptIdx> = list.iter().filter_map(|id| self.find(id)).collect();
                self.above(d).any(|a| granted.contains(&a))
            }
        }
    }

    /// Whether an app with contact scope `scope` may see person `p`: one of their departments
    /// is in the scope (directly under the root: only an all-staff scope).
    fn sees_person(&self, scope: &ContactScope, p: PersonId) -> bool {
        match (scope, self.profiles.get(&p)) {
            (ContactScope::All, _) => true,
            (_, None) => false,
            (_, Some(profile)) => profile
                .departments
                .iter()
                .any(|d| self.sees_department(scope, *d)),
        }
    }
}

/// Which fields of a department user an app gets, from its scopes.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    name: bool,
    email: bool,
    mobile: bool,
    user_id: bool,
    status: bool,
    departments: bool,
}

impl Fields {
    pub fn for_app(access: &AppAccess) -> Fields {
        let with = |own: &[&str]| access.has_any(own) || access.has_any(&CONTACT_WIDE);
        Fields {
            name: with(FIELD_NAME),
            // Email, mobile and user_id are sensitive: only their own scope gives them.
            email: access.has_any(FIELD_EMAIL),
            mobile: access.has_any(FIELD_MOBILE),
            user_id: access.has_any(FIELD_USER_ID),
            status: with(FIELD_STATUS),
            departments: with(FIELD_DEPARTMENTS),
        }
    }
}

/// Why a directory change through `/_emulator/` was refused.
#[derive(Debug, thiserror::Error)]
pub enum PersonError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// It contradicts the directory as it stands (409).
    #[error("{0}")]
    Conflict(String),
    /// No person of the directory has that id (404).
    #[error("{0}")]
    Unknown(String),
}

/// The bot is not in the chat (or, with fixtures, the chat is not known).
#[derive(Debug, PartialEq, Eq)]
pub struct NotInChat;

/// The department is not in the app's contact scope (or does not exist).
#[derive(Debug, PartialEq, Eq)]
pub struct NoDeptAuthority;

/// A chat's member list before paging: other bots take the first places (they joined first)
/// and are never listed.
pub struct Roster {
    pub other_bots: usize,
    pub members: Vec<ChatMember>,
}

/// `GET /_emulator/people`: one person of the directory.
#[derive(Clone, Debug, Serialize)]
pub struct PersonView {
    pub ids: MemberIds,
    pub name: String,
    pub email: Option<String>,
    pub enterprise_email: Option<String>,
    pub mobile: Option<String>,
    /// Open department ids; empty: directly under the root.
    pub departments: Vec<String>,
    pub resigned: bool,
}

/// `GET /_emulator/departments`: one department.
#[derive(Clone, Debug, Serialize)]
pub struct DepartmentView {
    pub department_id: String,
    pub open_department_id: String,
    pub name: String,
    /// The parent's open id, or `"0"` for the root.
    pub parent: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dept(id: &str, parent: &str) -> DepartmentSpec {
        DepartmentSpec {
            department_id: Some(id.to_owned()),
            open_department_id: None,
            name: id.to_owned(),
            parent: parent.to_owned(),
        }
    }

    #[test]
    fn a_department_in_the_scope_brings_those_below_it() {
        let (dir, problems) = Directory::from_departments(&[
            dept("eng", "0"),
            dept("sre", "od-eng"),
            dept("sales", "0"),
        ]);
        assert_eq!(problems, Vec::<String>::new());
        let scope = ContactScope::Departments(vec!["eng".to_owned()]);
        let sre = dir.find("od-sre").expect("sre");
        let sales = dir.find("sales").expect("sales");
        assert!(dir.sees_department(&scope, sre));
        assert!(!dir.sees_department(&scope, sales));
        assert!(dir.sees_department(&ContactScope::All, sales));
    }

    #[test]
    fn unknown_parents_duplicate_ids_and_circles_are_refused() {
        let (_, problems) = Directory::from_departments(&[
            dept("a", "nope"),
            dept("b", "0"),
            dept("b", "0"),
            dept("c", "d"),
            dept("d", "c"),
        ]);
        let text = problems.join("\n");
        assert!(text.contains("departments[0]: parent \"nope\""), "{text}");
        assert!(text.contains("departments[2]: id \"b\""), "{text}");
        assert!(text.contains("circle"), "{text}");
    }
}
