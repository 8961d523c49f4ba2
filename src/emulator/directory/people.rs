//! The directory's side of the world: people joining, leaving departments or resigning, what
//! `/_emulator/people` and `/_emulator/departments` show, and the three look-ups (people by
//! email or mobile, a chat's roster, a department's direct members) as the API answers them.

use crate::feishu::wire::directory::ROOT_DEPARTMENT_ID;
use crate::feishu::wire::{
    ChatMember, DepartmentIdType, DepartmentUser, UserContactInfo, UserIdType,
};

use super::super::fixtures::{AppAccess, ContactScope, MemberIds, PersonSpec, normalize_mobile};
use super::super::world::{Members, PersonId, World};
use super::{
    DepartmentView, DeptIdx, Fields, NoDeptAuthority, NotInChat, PersonError, PersonView, Profile,
    Roster, TENANT_KEY,
};

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
