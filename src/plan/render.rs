//! Renders a plan for people: text for a terminal (optionally coloured) and markdown for a
//! pull-request comment. Both group a chat's users by identical change and show old and new
//! buttons as a diff; removals stand out.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use anstyle::AnsiColor;
use similar::{ChangeTag, TextDiff};

use super::{Action, Change, Note, Plan};
use crate::feishu::wire::{ActionType, Button, ButtonType};
use crate::target::ButtonList;
use crate::text::{count, group_digits};

/// GitHub refuses comments longer than this many characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;
/// The hidden line that lets a CI job find its earlier plan comment and update it in place.
pub const COMMENT_MARKER: &str = "<!-- feedbuttons-plan -->";
/// How many user ids a group lists before "and N more".
const USERS_SHOWN: usize = 10;

/// ANSI colours, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, style: anstyle::Style, s: &str) -> String {
        if self.color {
            format!("{style}{s}{style:#}")
        } else {
            s.to_owned()
        }
    }
    fn green(self, s: &str) -> String {
        self.paint(AnsiColor::Green.on_default(), s)
    }
    fn yellow(self, s: &str) -> String {
        self.paint(AnsiColor::Yellow.on_default(), s)
    }
    fn red_bold(self, s: &str) -> String {
        self.paint(AnsiColor::Red.on_default().bold(), s)
    }
    fn red(self, s: &str) -> String {
        self.paint(AnsiColor::Red.on_default(), s)
    }
    fn bold(self, s: &str) -> String {
        self.paint(anstyle::Style::new().bold(), s)
    }
    fn dim(self, s: &str) -> String {
        self.paint(anstyle::Style::new().dimmed(), s)
    }
}

/// One button on one line: `"Runbook" primary, opens https://...`.
pub fn button_line(b: &Button) -> String {
    let style = b.button_type.unwrap_or(ButtonType::Default).as_str();
    let mut s = format!("{:?} {style}", b.text.text);
    match b.action_type {
        ActionType::UrlPage => s.push_str(", opens"),
        ActionType::Webhook => s.push_str(", webhook"),
    }
    if let Some(u) = &b.multi_url {
        if let Some(url) = &u.url {
            let _ = write!(s, " {url}");
        }
        for (name, url) in [
            ("android", &u.android_url),
            ("ios", &u.ios_url),
            ("pc", &u.pc_url),
        ] {
            if let Some(url) = url {
                let _ = write!(s, " {name}:{url}");
            }
        }
    }
    if let Some(m) = &b.action_map {
        let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(s, " {{{}}}", pairs.join(", "));
    }
    s
}

fn list_lines(list: &ButtonList) -> String {
    if list.is_empty() {
        return "(no buttons)\n".to_owned();
    }
    list.iter().map(|b| button_line(b) + "\n").collect()
}

/// A chat's changes grouped by (action, old list, new list, note), in plan order.
struct Group<'a> {
    action: Action,
    first: &'a Change<'a>,
    targets: Vec<Cow<'a, str>>,
}

type GroupKey<'a> = (
    Action,
    Option<&'a ButtonList>,
    &'a ButtonList,
    Option<&'a Note>,
);

/// How a target is shown: `everyone`, the user id, or, for a person the lock knows,
/// `alice@example.com (ou_...)`.
pub fn shown<'a>(
    target: &'a crate::target::Target,
    people: &BTreeMap<String, String>,
) -> Cow<'a, str> {
    let id = target.audience_label();
    match target.user_id().and_then(|id| people.get(id)) {
        Some(person) => Cow::Owned(format!("{person} ({id})")),
        None => Cow::Borrowed(id),
    }
}

fn chat_groups<'a>(
    changes: impl Iterator<Item = &'a Change<'a>>,
    people: &BTreeMap<String, String>,
) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    // A fast hash: every change of the plan is looked up, by its lists' content.
    let mut index: foldhash::HashMap<GroupKey<'a>, usize> = Default::default();
    // Changes without a note are looked up by their lists' allocations first (a plan shares
    // one copy of each list), and by content once per distinct pair: hashing a list's buttons
    // for each of a million changes is most of the cost.
    let mut by_ptr: foldhash::HashMap<
        (Action, Option<*const ButtonList>, *const ButtonList),
        usize,
    > = Default::default();
    for c in changes {
        let ptrs = c.note.is_none().then(|| {
            (
                c.action,
                c.old.as_ref().map(std::sync::Arc::as_ptr),
                std::sync::Arc::as_ptr(&c.new),
            )
        });
        if let Some(&i) = ptrs.as_ref().and_then(|p| by_ptr.get(p)) {
            groups[i].targets.push(shown(c.target, people));
            continue;
        }
        let key = (
            c.action,
            c.old.as_deref(),
            c.new.as_ref(),
            c.note.as_deref(),
        );
        let i = match index.get(&key) {
            Some(&i) => {
                groups[i].targets.push(shown(c.target, people));
                i
            }
            None => {
                index.insert(key, groups.len());
                groups.push(Group {
                    action: c.action,
                    first: c,
                    targets: vec![shown(c.target, people)],
                });
                groups.len() - 1
            }
        };
        if let Some(p) = ptrs {
            by_ptr.insert(p, i);
        }
    }
    groups
}

fn who(targets: &[Cow<str>]) -> String {
    if targets.len() == 1 && targets[0] == "everyone" {
        return "everyone (the whole chat)".to_owned();
    }
    let n = targets.len();
    let shown: Vec<&str> = targets
        .iter()
        .take(USERS_SHOWN)
        .map(|t| t.as_ref())
        .collect();
    let more = if n > USERS_SHOWN {
        format!(" and {} more", group_digits((n - USERS_SHOWN) as u64))
    } else {
        String::new()
    };
    format!("{}: {}{more}", count(n, "user", "users"), shown.join(", "))
}

fn headline(g: &Group) -> String {
    let who = who(&g.targets);
    let note = g.first.note.as_deref();
    let head = match (g.action, note) {
        (Action::Add, _) => format!("add, {who}"),
        (Action::Change, _) => format!("change, {who}"),
        (Action::Remove, _) if g.first.new.is_empty() => {
            format!("REMOVE (buttons cleared), {who}")
        }
        (Action::Remove, _) => {
            format!("REMOVE (they get the whole-chat buttons and follow them), {who}")
        }
        (Action::Resend, Some(Note::WholeChat) | None) => {
            format!("re-send after the whole-chat change, {who}")
        }
        (Action::Resend, Some(Note::IdTypeMove)) => {
            format!("re-send after a removal under another id type, {who}")
        }
        (Action::Resend, Some(_)) => format!("re-send, {who}"),
        (Action::Follow, _) if g.first.new.is_empty() => {
            format!("clear (the whole-chat buttons they follow are gone), {who}")
        }
        (Action::Follow, _) => format!("follow the whole-chat buttons, {who}"),
    };
    match note {
        Some(n @ (Note::Owed { .. } | Note::Uncertain { .. } | Note::Waiting { .. })) => {
            format!("{head} [{}]", n.describe())
        }
        _ => head,
    }
}

/// Diff lines (`+ x`, `- x`, `  x`) from the old list to the new one.
fn diff_lines(g: &Group) -> Vec<(ChangeTag, String)> {
    let old = match g.action {
        Action::Add => String::new(),
        _ => g.first.old.as_deref().map(list_lines).unwrap_or_default(),
    };
    let new = match g.action {
        Action::Remove if g.first.new.is_empty() => String::new(),
        _ => list_lines(&g.first.new),
    };
    if g.action == Action::Resend {
        return new
            .lines()
            .map(|l| (ChangeTag::Equal, l.to_owned()))
            .collect();
    }
    TextDiff::from_lines(&old, &new)
        .iter_all_changes()
        .map(|c| (c.tag(), c.value().trim_end_matches('\n').to_owned()))
        .collect()
}

/// A plan of fewer changes than this is rendered on one thread.
const CHANGES_PER_THREAD: usize = 50_000;

/// Each chat rendered by `one` into one text, in order; on `threads` threads, a run of whole
/// chats each, the runs joined: the same text.
fn joined<F>(chats: &[(&str, Vec<&Change>)], threads: usize, one: F) -> String
where
    F: Fn(&mut String, &str, &[&Change]) + Sync,
{
    let run = |chats: &[(&str, Vec<&Change>)]| {
        let mut out = String::new();
        for (chat, changes) in chats {
            one(&mut out, chat, changes);
        }
        out
    };
    if threads <= 1 {
        return run(chats);
    }
    let changes: Vec<usize> = chats.iter().map(|(_, c)| c.len()).collect();
    let runs = crate::sync::runs_by_weight(&changes, threads)
        .into_iter()
        .map(|r| &chats[r])
        .collect();
    crate::sync::in_order(runs, "render", run).concat()
}

/// Chat ids in plan order, with their changes.
fn chats<'p>(plan: &'p Plan<'p>) -> Vec<(&'p str, Vec<&'p Change<'p>>)> {
    let mut out: Vec<(&str, Vec<&Change>)> = Vec::new();
    for r in &plan.requests {
        let chat = r.body.chat_id.as_str();
        match out.last_mut() {
            Some((c, changes)) if *c == chat => changes.extend(r.changes.iter()),
            _ => out.push((chat, r.changes.iter().collect())),
        }
    }
    out
}

fn chat_title(plan: &Plan, chat: &str) -> String {
    match plan.chat_names.get(chat) {
        Some(name) => format!("{chat} ({name})"),
        None => chat.to_owned(),
    }
}

fn chat_counts(changes: &[&Change]) -> String {
    let of = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let mut parts = Vec::new();
    for (a, word) in [
        (Action::Add, "to add"),
        (Action::Change, "to change"),
        (Action::Remove, "to remove"),
        (Action::Resend, "to re-send"),
        (Action::Follow, "following the whole-chat buttons"),
    ] {
        let n = of(a);
        if n > 0 {
            parts.push(format!("{} {word}", group_digits(n as u64)));
        }
    }
    parts.join(", ")
}

fn removal_warning(plan: &Plan) -> Option<String> {
    let n = plan.summary.remove;
    (n > 0).then(|| {
        if n == 1 {
            "1 target will have its buttons REMOVED.".to_owned()
        } else {
            format!(
                "{} targets will have their buttons REMOVED.",
                group_digits(n as u64)
            )
        }
    })
}

/// The plan for a terminal.
pub fn text(plan: &Plan, style: Style) -> String {
    let chats = chats(plan);
    let changes: usize = chats.iter().map(|(_, c)| c.len()).sum();
    let threads = crate::sync::threads_for(changes, CHANGES_PER_THREAD);
    let mut out = joined(&chats, threads, |out, chat, changes| {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold("chat"),
            style.bold(&chat_title(plan, chat))
        );
        for g in chat_groups(changes.iter().copied(), &plan.people) {
            let (mark, head) = match g.action {
                Action::Add => (style.green("+"), style.green(&headline(&g))),
                Action::Change => (style.yellow("~"), style.yellow(&headline(&g))),
                Action::Remove => (style.red_bold("-"), style.red_bold(&headline(&g))),
                Action::Resend => (style.dim("="), style.dim(&headline(&g))),
                Action::Follow => (style.yellow("~"), style.yellow(&headline(&g))),
            };
            let _ = writeln!(out, "  {mark} {head}");
            for (tag, line) in diff_lines(&g) {
                let l = match tag {
                    ChangeTag::Insert => style.green(&format!("+ {line}")),
                    ChangeTag::Delete => style.red(&format!("- {line}")),
                    ChangeTag::Equal => style.dim(&format!("  {line}")),
                };
                let _ = writeln!(out, "      {l}");
            }
        }
        out.push('\n');
    });
    if let Some(w) = removal_warning(plan) {
        let _ = writeln!(out, "{}", style.red_bold(&format!("Warning: {w}")));
    }
    if let Some(m) = &plan.mass_removal {
        let _ = writeln!(
            out,
            "{}",
            style.red_bold(&format!(
                "Mass removal: {}; apply refuses it without --allow-mass-removal.",
                m.reason
            ))
        );
    }
    if plan.has_changes() {
        let _ = writeln!(out, "{}", style.bold(&plan.summary_line()));
    } else {
        let _ = writeln!(
            out,
            "No changes: the applied buttons match the config ({} unchanged).",
            count(plan.summary.unchanged, "target", "targets")
        );
    }
    out
}

/// The plan as a pull-request comment, never longer than GitHub's limit.
pub fn markdown(plan: &Plan) -> String {
    markdown_limited(plan, GITHUB_COMMENT_LIMIT)
}

/// [`markdown`] with another size limit (in characters).
pub fn markdown_limited(plan: &Plan, limit: usize) -> String {
    let mut head = String::new();
    let _ = writeln!(head, "{COMMENT_MARKER}");
    if plan.has_changes() {
        let _ = writeln!(head, "**{}**", plan.summary_line());
    } else {
        let _ = writeln!(
            head,
            "**Plan: no changes.** The applied buttons match the config ({} unchanged).",
            count(plan.summary.unchanged, "target", "targets")
        );
    }
    if let Some(w) = removal_warning(plan) {
        let _ = writeln!(head, "\n> [!WARNING]\n> {w}");
    }
    if let Some(m) = &plan.mass_removal {
        let _ = writeln!(
            head,
            "\n> [!CAUTION]\n> **Mass removal:** {}. `feedbuttons apply` refuses this plan without `--allow-mass-removal`.",
            m.reason
        );
    }
    // Each chat's section is rendered only if it may still fit.
    let section = |(chat, changes): &(&str, Vec<&Change>)| {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n<details><summary><code>{chat}</code>{}: {}</summary>\n\n```diff",
            plan.chat_names
                .get(*chat)
                .map(|n| format!(" {}", escape_html(n)))
                .unwrap_or_default(),
            chat_counts(changes)
        );
        for g in chat_groups(changes.iter().copied(), &plan.people) {
            let _ = writeln!(s, "@@ {} @@", headline(&g).replace("```", "'''"));
            for (tag, line) in diff_lines(&g) {
                let sign = match tag {
                    ChangeTag::Insert => '+',
                    ChangeTag::Delete => '-',
                    ChangeTag::Equal => ' ',
                };
                // A fence inside the block would end it early.
                let _ = writeln!(s, "{sign} {}", line.replace("```", "'''"));
            }
        }
        let _ = writeln!(s, "```\n\n</details>");
        s
    };
    let chats = chats(plan);
    let mut out = head;
    let mut out_chars = out.chars().count();
    let total = chats.len();
    for (i, s) in chats.iter().map(section).enumerate() {
        let note = format!(
            "\n_The plan is too long for one comment: {} more chats are not shown. The full plan is in the JSON (`feedbuttons plan --format json`)._\n",
            total - i
        );
        let s_chars = s.chars().count();
        if out_chars + s_chars + note.chars().count() > limit {
            out.push_str(&note);
            return out;
        }
        out_chars += s_chars;
        out.push_str(&s);
    }
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::target::Target;

    /// However many threads render it, a plan reads the same, chat by chat in order: runs are
    /// cut at chat boundaries by their share of the changes, however uneven the chats are.
    #[test]
    fn a_plan_rendered_on_several_threads_reads_as_on_one() {
        let targets: Vec<Target> = (0..40)
            .flat_map(|c| {
                // Chats of 1 to 40 users, the big ones together.
                (0..(c * 7 % 40 + 1)).map(move |u| {
                    Target::user(
                        format!("oc_{c:02}"),
                        crate::feishu::wire::UserIdType::OpenId,
                        format!("ou_{u:02}"),
                    )
                })
            })
            .collect();
        let list = Arc::new(Vec::new());
        let changes: Vec<Change> = targets
            .iter()
            .map(|t| Change {
                target: t,
                action: Action::Add,
                old: None,
                new: list.clone(),
                note: None,
            })
            .collect();
        let mut chats: Vec<(&str, Vec<&Change>)> = Vec::new();
        for c in &changes {
            match chats.last_mut() {
                Some((id, cs)) if *id == c.target.chat_id.as_str() => cs.push(c),
                _ => chats.push((c.target.chat_id.as_str(), vec![c])),
            }
        }
        let one = |out: &mut String, chat: &str, changes: &[&Change]| {
            let _ = writeln!(out, "{chat}: {}", changes.len());
            for c in changes {
                let _ = writeln!(out, "  {}", c.target.audience_label());
            }
        };
        let alone = joined(&chats, 1, one);
        assert_eq!(alone.lines().filter(|l| l.starts_with("oc_")).count(), 40);
        for threads in 2..=45 {
            assert_eq!(joined(&chats, threads, one), alone, "{threads} threads");
        }
    }
}
