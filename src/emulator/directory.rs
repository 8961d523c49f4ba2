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
use crate::feishu::wire::{
    ChatMember, DepartmentIdType, DepartmentUser, UserContactInfo, UserIdType, UserStatus,
};

use super::fixtures::{
    AppAccess, ContactScope, DepartmentSpec, MemberIds, PersonSpec, normalize_mobile,
};
use super::world::{Members, PersonId, World};

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

impl World {
    /// Whether `id` is the root or a department (by either id).
    pub fn has_department(&self, id: &str) -> bool {
        id == ROOT_DEPARTMENT_ID || self.directory.find(id).is_some()
    }

    /// Adds a person to the directory (linked to whoever their ids already name, such as a chat
    /// member). Nothing changes when it is refused.
    pub fn add_person(&mut self, spec: &PersonSpec) -> Result<PersonId, PersonError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(PersonError::Invalid(problems.join("; ")));
        }
        let departments = self.departments_named(&spec.departments)?;
        let mobile = spec.mobile.as_deref().and_then(normalize_mobile);
        for (p, other) in &self.directory.profiles {
            let ids = &self.people.persons[*p];
            if let (Some(a), Some(b)) = (&spec.email, &other.email)
                && a.eq_ignore_ascii_case(b)
            {
                return Err(PersonError::Conflict(format!(
                    "email {a:?} is already {}'s",
                    describe(ids)
                )));
            }
            if mobile.is_some() && mobile == other.mobile {
                return Err(PersonError::Conflict(format!(
                    "mobile {:?} is already {}'s",
                    spec.mobile.as_deref().unwrap_or_default(),
                    describe(ids)
                )));
            }
        }
        // Checked before linking, which would otherwise add these ids to that person.
        if let Some(p) = spec
            .ids()
            .iter()
            .find_map(|(t, id)| self.people.find(t, id))
            .filter(|p| self.directory.profiles.contains_key(p))
        {
            return Err(PersonError::Conflict(format!(
                "{} is already in the directory",
                describe(&self.people.persons[p])
            )));
        }
        let p = self
            .people
            .link(&spec.ids())
            .map_err(PersonError::Conflict)?;
        self.directory.profiles.insert(
            p,
            Profile {
                name: spec.name.clone(),
                email: spec.email.clone(),
                enterprise_email: spec.enterprise_email.clone(),
                mobile,
                departments,
                resigned: spec.resigned,
            },
        );
        Ok(p)
    }

    fn departments_named(&self, ids: &[String]) -> Result<Vec<DeptIdx>, PersonError> {
        let mut out = Vec::new();
        for id in ids.iter().filter(|id| *id != ROOT_DEPARTMENT_ID) {
            let d = self
                .directory
                .find(id)
                .ok_or_else(|| PersonError::Invalid(format!("no department {id:?}")))?;
            if !out.contains(&d) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The directory person an id names.
    fn directory_person(&self, t: UserIdType, id: &str) -> Result<PersonId, PersonError> {
        self.people
            .find(t, id)
            .filter(|p| self.directory.profiles.contains_key(p))
            .ok_or_else(|| {
                PersonError::Unknown(format!("no person of the directory has {t} {id:?}"))
            })
    }

    /// Marks a person resigned (or back at work).
    pub fn set_resigned(
        &mut self,
        t: UserIdType,
        id: &str,
        resigned: bool,
    ) -> Result<PersonView, PersonError> {
        let p = self.directory_person(t, id)?;
        if let Some(profile) = self.directory.profiles.get_mut(&p) {
            profile.resigned = resigned;
        }
        self.person_view(p)
            .ok_or_else(|| PersonError::Unknown(id.to_owned()))
    }

    /// Moves a person: their direct departments become exactly these (none: the root).
    pub fn set_departments(
        &mut self,
        t: UserIdType,
        id: &str,
        departments: &[String],
    ) -> Result<PersonView, PersonError> {
        let p = self.directory_person(t, id)?;
        let departments = self.departments_named(departments)?;
        if let Some(profile) = self.directory.profiles.get_mut(&p) {
            profile.departments = departments;
        }
        self.person_view(p)
            .ok_or_else(|| PersonError::Unknown(id.to_owned()))
    }

    pub fn person_view(&self, p: PersonId) -> Option<PersonView> {
        let profile = self.directory.profiles.get(&p)?;
        Some(PersonView {
            ids: self.people.persons[p].clone(),
            name: profile.name.clone(),
            email: profile.email.clone(),
            enterprise_email: profile.enterprise_email.clone(),
            mobile: profile.mobile.clone(),
            departments: profile
                .departments
                .iter()
                .map(|d| {
                    self.directory
                        .id_of(*d, DepartmentIdType::OpenDepartmentId)
                        .to_owned()
                })
                .collect(),
            resigned: profile.resigned,
        })
    }

    /// Every person of the directory, in the order they were added.
    pub fn person_views(&self) -> Vec<PersonView> {
        self.directory
            .profiles
            .keys()
            .filter_map(|p| self.person_view(*p))
            .collect()
    }

    pub fn department_views(&self) -> Vec<DepartmentView> {
        let open = |d: DeptIdx| {
            self.directory
                .id_of(d, DepartmentIdType::OpenDepartmentId)
                .to_owned()
        };
        self.directory
            .departments
            .iter()
            .map(|d| DepartmentView {
                department_id: d.department_id.clone(),
                open_department_id: d.open_department_id.clone(),
                name: d.name.clone(),
                parent: d.parent.map_or_else(|| ROOT_DEPARTMENT_ID.to_owned(), open),
            })
            .collect()
    }

    /// batch_get_id: one entry per email, then one per mobile, each with `user_id` (of type
    /// `t`) only when that person is known, in the app's contact scope, and not resigned
    /// unless `include_resigned` (and, for user_ids, when the app may read user_ids).
    pub fn resolve_ids(
        &mut self,
        access: &AppAccess,
        t: UserIdType,
        emails: &[String],
        mobiles: &[String],
        include_resigned: bool,
    ) -> Vec<UserContactInfo> {
        let fields = Fields::for_app(access);
        let with_status = fields.status;
        // user_ids need their own field scope: without it nobody resolves to one (documented
        // among the reasons an entry comes back without `user_id`).
        if t == UserIdType::UserId && !fields.user_id {
            let unresolved = |asked: &String, email: bool| UserContactInfo {
                email: email.then(|| asked.clone()),
                mobile: (!email).then(|| asked.clone()),
                ..UserContactInfo::default()
            };
            return emails
                .iter()
                .map(|e| unresolved(e, true))
                .chain(mobiles.iter().map(|m| unresolved(m, false)))
                .collect();
        }
        let mut out = Vec::with_capacity(emails.len() + mobiles.len());
        for email in emails {
            // An enterprise mailbox never resolves (documented): only `email` is searched.
            let p = self.find_profile(|pr| {
                pr.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            });
            let mut entry = self.resolved(p, access, t, include_resigned, with_status);
            entry.email = Some(email.clone());
            out.push(entry);
        }
        for mobile in mobiles {
            let wanted = normalize_mobile(mobile);
            let p = wanted.and_then(|w| self.find_profile(|pr| pr.mobile.as_deref() == Some(&w)));
            let mut entry = self.resolved(p, access, t, include_resigned, with_status);
            entry.mobile = Some(mobile.clone());
            out.push(entry);
        }
        out
    }

    fn find_profile(&self, matches: impl Fn(&Profile) -> bool) -> Option<PersonId> {
        self.directory
            .profiles
            .iter()
            .find(|(_, pr)| matches(pr))
            .map(|(p, _)| *p)
    }

    fn resolved(
        &mut self,
        p: Option<PersonId>,
        access: &AppAccess,
        t: UserIdType,
        include_resigned: bool,
        with_status: bool,
    ) -> UserContactInfo {
        let Some(p) = p.filter(|p| self.directory.sees_person(&access.contact_scope, *p)) else {
            return UserContactInfo::default();
        };
        let Some(status) = self.directory.profiles.get(&p).map(Profile::status) else {
            return UserContactInfo::default();
        };
        if status.is_resigned && !include_resigned {
            return UserContactInfo::default();
        }
        UserContactInfo {
            user_id: Some(self.people.id_of(p, t)),
            status: with_status.then_some(status),
            ..UserContactInfo::default()
        }
    }

    /// A chat's members, ids of type `t`, in the order the emulator first knew each person.
    /// A chat whose members are "everyone" lists every person the emulator knows.
    pub fn chat_roster(&mut self, chat_id: &str, t: UserIdType) -> Result<Roster, NotInChat> {
        self.touch(chat_id);
        let chat = self.chats.get(chat_id).ok_or(NotInChat)?;
        if !chat.bot_member {
            return Err(NotInChat);
        }
        let persons: Vec<PersonId> = match &chat.members {
            Members::Everyone => (0..self.people.persons.len()).collect(),
            Members::Listed(set) => set.iter().copied().collect(),
        };
        let other_bots = chat.other_bots as usize;
        let members = persons
            .into_iter()
            .map(|p| ChatMember {
                member_id_type: t,
                member_id: self.people.id_of(p, t),
                name: self
                    .directory
                    .profiles
                    .get(&p)
                    .map(|pr| pr.name.clone())
                    .unwrap_or_default(),
                tenant_key: TENANT_KEY.to_owned(),
            })
            .collect();
        Ok(Roster {
            other_bots,
            members,
        })
    }

    /// find_by_department: the direct members (not of sub-departments) of `department` (`None`:
    /// the root) who have not resigned, with the fields the app's scopes give. Each user carries
    /// their three ids as fields of their own, so the query's `user_id_type` (which types the
    /// ids inside other fields, such as a leader's) changes nothing here.
    pub fn department_users(
        &mut self,
        access: &AppAccess,
        department: Option<&str>,
        dept_type: DepartmentIdType,
    ) -> Result<Vec<DepartmentUser>, NoDeptAuthority> {
        let scope = &access.contact_scope;
        let d = match department {
            None if *scope == ContactScope::All => None,
            None => return Err(NoDeptAuthority),
            Some(id) => {
                let d = self
                    .directory
                    .find_typed(dept_type, id)
                    .ok_or(NoDeptAuthority)?;
                if !self.directory.sees_department(scope, d) {
                    return Err(NoDeptAuthority);
                }
                Some(d)
            }
        };
        let fields = Fields::for_app(access);
        let persons: Vec<PersonId> = self
            .directory
            .profiles
            .iter()
            .filter(|(_, pr)| !pr.resigned)
            .filter(|(_, pr)| match d {
                None => pr.departments.is_empty(),
                Some(d) => pr.departments.contains(&d),
            })
            .map(|(p, _)| *p)
            .filter(|p| self.directory.sees_person(scope, *p))
            .collect();
        let mut users = Vec::with_capacity(persons.len());
        for p in persons {
            let open_id = self.people.id_of(p, UserIdType::OpenId);
            let union_id = self.people.id_of(p, UserIdType::UnionId);
            let user_id = self.people.id_of(p, UserIdType::UserId);
            let Some(profile) = self.directory.profiles.get(&p) else {
                continue;
            };
            users.push(DepartmentUser {
                union_id: Some(union_id),
                user_id: fields.user_id.then_some(user_id),
                open_id: Some(open_id),
                name: fields.name.then(|| profile.name.clone()),
                email: if fields.email {
                    profile.email.clone()
                } else {
                    None
                },
                mobile: if fields.mobile {
                    profile.mobile.clone()
                } else {
                    None
                },
                status: fields.status.then(|| profile.status()),
                department_ids: fields.departments.then(|| {
                    profile
                        .departments
                        .iter()
                        .map(|d| self.directory.id_of(*d, dept_type).to_owned())
                        .collect()
                }),
            });
        }
        Ok(users)
    }
}

fn describe(ids: &MemberIds) -> String {
    ids.iter()
        .map(|(t, id)| format!("{t} {id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
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
