//! Change events: watches the config directory (recursively, as the loader reads it) and the
//! directories holding it and each symbolic link on its path, and says when something that can
//! change the config did. Debouncing is the controller's: this only filters and forwards.
//!
//! Why the parents too: git-sync publishes a revision by renaming a new symbolic link over the
//! old one (`DIR -> rev-abc` becomes `DIR -> rev-def`). Nothing changes inside the old revision,
//! so a watch on it alone would never fire; the rename is an event in the link's parent. After
//! such an event [`DirWatcher::refresh`] resolves the path again and moves the recursive watch
//! to the new revision.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use crate::sync;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirChange {
    /// A file or folder under the config directory (hidden names excepted, as the loader
    /// skips them: `.git/`, and the state's own `.feedbuttons/`).
    Files,
    /// The config directory itself, or a symbolic link on its path, was replaced: resolve the
    /// path again before reading.
    Link,
}

/// Which event paths count, as the notify thread sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Filter {
    /// The resolved config directory, watched recursively.
    tree: Option<PathBuf>,
    /// Directory entries whose replacement counts: the config directory and every symbolic
    /// link on its path, each named through its resolved parent (as events name them).
    entries: Vec<PathBuf>,
}

/// Watches one config directory for as long as it lives.
pub struct DirWatcher {
    /// `None` when the platform's watcher could not start: the daemon then relies on
    /// `--interval` alone.
    watcher: Option<RecommendedWatcher>,
    /// The config directory as given, made absolute.
    dir: PathBuf,
    filter: Arc<RwLock<Filter>>,
    /// What is watched now, and how.
    watched: Vec<(PathBuf, RecursiveMode)>,
}

impl DirWatcher {
    /// Starts watching `dir`; every relevant change is sent on `changes`.
    pub fn new(dir: &Path, changes: UnboundedSender<DirChange>) -> DirWatcher {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let filter = Arc::new(RwLock::new(Filter::default()));
        let seen = Arc::clone(&filter);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let event = match res {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "file watching reported an error; changes may be missed until the next --interval"
                    );
                    return;
                }
            };
            let filter = sync::read(&seen);
            if let Some(change) = classify(&filter, &event) {
                // The receiver is gone only when the daemon is stopping.
                let _ = changes.send(change);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot watch files; reconciling every --interval only"
                );
                None
            }
        };
        let mut w = DirWatcher {
            watcher,
            dir,
            filter,
            watched: Vec::new(),
        };
        w.refresh();
        w
    }

    /// Resolves the directory's path again and moves the watches to match; returns whether
    /// the resolved directory changed. Cheap when nothing moved: called on every reconcile,
    /// so that a missed link swap is caught by the next `--interval` at the latest.
    pub fn refresh(&mut self) -> bool {
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let (filter, wanted) = plan_watches(&self.dir);
        let changed = {
            let current = sync::read(&self.filter);
            current.tree != filter.tree
        };
        for (path, mode) in &self.watched {
            if !wanted.contains(&(path.clone(), *mode)) {
                // It may be gone already (a deleted revision): nothing to undo then.
                let _ = watcher.unwatch(path);
            }
        }
        let mut now_watched = Vec::with_capacity(wanted.len());
        for (path, mode) in wanted {
            if self.watched.contains(&(path.clone(), mode)) {
                now_watched.push((path, mode));
                continue;
            }
            match watcher.watch(&path, mode) {
                Ok(()) => now_watched.push((path, mode)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot watch; changes there are seen at the next --interval"
                ),
            }
        }
        self.watched = now_watched;
        *sync::write(&self.filter) = filter;
        changed
    }
}

/// What to watch for `dir` (absolute): the resolved directory recursively, and the resolved
/// parent of the directory and of each symbolic link on its path, non-recursively.
fn plan_watches(dir: &Path) -> (Filter, Vec<(PathBuf, RecursiveMode)>) {
    let mut filter = Filter::default();
    let mut wanted: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    if let Ok(tree) = dir.canonicalize()
        && tree.is_dir()
    {
        wanted.push((tree.clone(), RecursiveMode::Recursive));
        filter.tree = Some(tree);
    }
    let mut entries: Vec<&Path> = vec![dir];
    entries.extend(
        dir.ancestors()
            .skip(1)
            .filter(|a| a.symlink_metadata().is_ok_and(|m| m.is_symlink())),
    );
    for entry in entries {
        let (Some(parent), Some(name)) = (entry.parent(), entry.file_name()) else {
            continue;
        };
        let Ok(parent) = parent.canonicalize() else {
            continue;
        };
        filter.entries.push(parent.join(name));
        let watch = (parent, RecursiveMode::NonRecursive);
        if !wanted.contains(&watch) {
            wanted.push(watch);
        }
    }
    (filter, wanted)
}

/// Whether an event can change the config, and how.
fn classify(filter: &Filter, event: &notify::Event) -> Option<DirChange> {
    // The loader's own reads open files: those events must not start another reconcile.
    if matches!(event.kind, EventKind::Access(_)) {
        return None;
    }
    if event.need_rescan() {
        return Some(DirChange::Link);
    }
    let mut change = None;
    for path in &event.paths {
        if filter.entries.iter().any(|e| e == path) {
            return Some(DirChange::Link);
        }
        if let Some(tree) = &filter.tree
            && let Ok(rel) = path.strip_prefix(tree)
            && !hidden(rel)
        {
            change = Some(DirChange::Files);
        }
    }
    change
}

/// Whether a path below the config directory passes through a hidden name, which the loader
/// skips (and where the state lives by default: its writes must not look like config changes).
fn hidden(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(name) => name.to_str().is_some_and(|s| s.starts_with('.')),
        _ => false,
    })
}

/// The directory to read the config from: `dir` itself, or, when its path passes through a
/// symbolic link, the directory the link points at now. Resolving once per reconcile means
/// all files come from one revision even if a swap happens while they are read.
pub fn config_root(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if link_on_path(&abs).is_some() {
        abs.canonicalize().unwrap_or(abs)
    } else {
        dir.to_path_buf()
    }
}

/// The last symbolic link on `dir`'s path (`dir` itself included), if any: what a synced
/// checkout swaps to publish a revision.
pub fn link_on_path(dir: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    abs.ancestors()
        .find(|a| a.symlink_metadata().is_ok_and(|m| m.is_symlink()))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, ModifyKind};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn hidden_paths_reads_and_strangers_are_ignored() {
        let filter = Filter {
            tree: Some(PathBuf::from("/git/rev-a")),
            entries: vec![PathBuf::from("/git/current")],
        };
        let modify = EventKind::Modify(ModifyKind::Any);
        assert_eq!(
            classify(&filter, &event(modify, "/git/rev-a/team/buttons.yaml")),
            Some(DirChange::Files)
        );
        assert_eq!(
            classify(
                &filter,
                &event(modify, "/git/rev-a/.feedbuttons/state.journal")
            ),
            None
        );
        assert_eq!(
            classify(&filter, &event(modify, "/git/rev-a/.git/index")),
            None
        );
        assert_eq!(
            classify(
                &filter,
                &event(
                    EventKind::Access(AccessKind::Any),
                    "/git/rev-a/buttons.yaml"
                )
            ),
            None
        );
        assert_eq!(
            classify(
                &filter,
                &event(EventKind::Create(CreateKind::Any), "/git/current")
            ),
            Some(DirChange::Link)
        );
        assert_eq!(
            classify(&filter, &event(modify, "/git/.worktrees/x/buttons.yaml")),
            None
        );
    }

    #[test]
    fn a_symlinked_directory_is_watched_through_its_parent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        std::fs::create_dir(root.join("rev-a")).expect("mkdir");
        std::os::unix::fs::symlink("rev-a", root.join("current")).expect("symlink");
        let (filter, wanted) = plan_watches(&root.join("current"));
        assert_eq!(filter.tree, Some(root.join("rev-a")));
        assert_eq!(filter.entries, vec![root.join("current")]);
        assert!(wanted.contains(&(root.join("rev-a"), RecursiveMode::Recursive)));
        assert!(wanted.contains(&(root.clone(), RecursiveMode::NonRecursive)));
        assert_eq!(config_root(&root.join("current")), root.join("rev-a"));
        assert_eq!(
            link_on_path(&root.join("current/sub")),
            Some(root.join("current"))
        );
        assert_eq!(link_on_path(&root.join("rev-a")), None);
    }
}
