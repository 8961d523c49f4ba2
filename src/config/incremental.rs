//! Reloading a config directory again and again (the `watch` daemon): takes the directory,
//! gives what [`super::load_dir`] gives, for less. Each file's text and parsed part are kept;
//! a reload reads every file, parses only those whose text changed, and re-checks only the
//! chats that they declare or declared. Everything else is taken from the last reload: every
//! diagnostic of a file or chat is the same as long as its inputs are.
//!
//! A reload checks every chat again (still without parsing unchanged files) when a file was
//! added, removed or renamed (file ids, and so diagnostics, shift), when a changed file's
//! `buttons:` or `user_sets:` changed (any chat may use them), when a file does not parse, or
//! when the last reload found errors, or when the people the config names changed: the
//! directory's `feedbuttons.lock` (its bytes differ), or the live members given instead.
//!
//! A file's text is kept only while a diagnostic points into it, or it did not parse: a
//! digest stands for it otherwise (a million targets are 50 MB of YAML, which the daemon would
//! hold at idle). A diagnostic that comes to point into an unchanged file later reads the file
//! again for its lines, as it was when parsed (its digest says so; a file changed since shows
//! no lines, and is parsed again at the next reload, whether its stamp moved or not).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::diag::{Diagnostic, FileId, Report, Sources};
use super::people::People;
use super::raw::RawFile;
use super::validate::{self, Memo};
use super::{LoadError, ReadFile};
use crate::desired::DesiredState;
use crate::lock::{LOCK_FILE, Lock};

/// One file as last read and parsed.
#[derive(Debug)]
struct CachedFile {
    rel: PathBuf,
    /// How the file looked just before it was read.
    stamp: Option<Stamp>,
    text_known: bool,
    /// It was read without a problem (its text is all there is to compare).
    read_ok: bool,
    /// Its own diagnostics: reading, parsing and decoding it.
    diagnostics: Vec<Diagnostic>,
    /// `None` when it could not be read or parsed.
    raw: Option<RawFile>,
    /// The SHA-256 of its text, which stands for the text once that is let go.
    digest: [u8; 32],
    /// Its text was let go (see the module's doc): its source holds an empty text.
    text_dropped: bool,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// What a file's metadata says of its content: a file with the same stamp as when it was read,
/// read a while after its last change, holds what was read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device and inode: a file replaced by another (a checkout, an editor's save) is another.
    id: (u64, u64),
    /// When the stamp was taken (not compared).
    taken: Comparable<SystemTime>,
}

/// A value left out of comparisons.
#[derive(Clone, Copy, Debug)]
struct Comparable<T>(T);

impl<T> PartialEq for Comparable<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Comparable<T> {}

/// A file changed less than this long before it was read may change again within the same
/// tick of the file system's clock, unseen in its stamp: it is read again next time.
const SETTLE: Duration = Duration::from_secs(2);

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let taken = SystemTime::now();
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let id = (0, 0);
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            id,
            taken: Comparable(taken),
        })
    }

    /// Whether the file had not changed for a while when the stamp was taken (just before it
    /// was read): then a change since shows in its stamp.
    fn settled(&self) -> bool {
        self.modified.is_some_and(|m| m + SETTLE <= self.taken.0)
    }
}

/// A config directory's files and findings, kept from one reload to the next.
#[derive(Debug, Default)]
pub struct ConfigCache {
    dir: PathBuf,
    files: Vec<CachedFile>,
    sources: Sources,
    memo: Memo,
    /// The last reload checked every file and found no error: its memo can be built on.
    clean: bool,
    /// The people the last reload validated with, where they came from, and what reading
    /// them reported (a lock that cannot be read).
    people: People,
    people_from: PeopleFrom,
    people_labels: std::collections::BTreeMap<String, String>,
    people_diagnostics: Vec<Diagnostic>,
}

/// Where the people of a reload came from: any change of them re-checks every chat.
#[derive(Debug, Default, PartialEq, Eq)]
enum PeopleFrom {
    /// Not known (nothing read yet, or the lock could not be read): read them again.
    #[default]
    Unknown,
    /// The directory's lock: the SHA-256 of its bytes, `None` when there is no lock.
    Dir(Option<Vec<u8>>),
    /// Live members the caller gave (`watch --resolve-every`), held in `people`.
    Live,
}

impl ConfigCache {
    /// Takes the people to validate with: `live` when given, else the lock in `dir`. Says
    /// whether they may differ from those of the last reload.
    fn update_people(&mut self, dir: &Path, live: Option<Lock>) -> bool {
        match live {
            Some(lock) => {
                if self.people_from == PeopleFrom::Live && self.people.lock() == Some(&lock) {
                    return false;
                }
                self.people = People::new(Some(lock));
                self.people_from = PeopleFrom::Live;
                self.people_diagnostics.clear();
            }
            None => {
                // The bytes are read before the lock is parsed: a lock written in between is
                // seen as changed at the next reload, never missed.
                let from = match std::fs::read(dir.join(LOCK_FILE)) {
                    Ok(bytes) => PeopleFrom::Dir(Some(Sha256::digest(&bytes).to_vec())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => PeopleFrom::Dir(None),
                    Err(_) => PeopleFrom::Unknown,
                };
                if from != PeopleFrom::Unknown && from == self.people_from {
                    return false;
                }
                let mut report = Report::default();
                self.people = super::dir_people(dir, &mut report);
                self.people_diagnostics = report.diagnostics;
                self.people_from = from;
            }
        }
        self.people_labels = self.people.labels();
        true
    }
}

/// What a reload found.
#[derive(Debug)]
pub struct Reload<'c> {
    /// Every file of the config, for rendering the report.
    pub sources: &'c Sources,
    /// Every diagnostic of the config, as [`super::load_dir`] reports them.
    pub report: Report,
    /// Present only when the config has no errors: the chats of `chats`, or every chat.
    pub desired: Option<DesiredState>,
    /// The chats checked again, when not all were: every other chat declares what it declared
    /// at the last reload.
    pub chats: Option<BTreeSet<String>>,
}

impl ConfigCache {
    /// Reads `dir` again, parsing only the files that changed since the last reload, and
    /// checking only the chats they declare or declared, and the chats of `also`.
    /// The people named in the config are `live` when given, else the lock in `dir`.
    pub fn reload(
        &mut self,
        dir: &Path,
        also: &BTreeSet<String>,
        live: Option<Lock>,
    ) -> Result<Reload<'_>, LoadError> {
        let rels = super::list_files(dir)?;
        let people_changed = self.update_people(dir, live);
        let same_files = self.dir == dir
            && rels.len() == self.files.len()
            && rels.iter().zip(&self.files).all(|(r, f)| *r == f.rel);
        // Every file as last seen, by path.
        let mut old: HashMap<PathBuf, (CachedFile, String)> = std::mem::take(&mut self.files)
            .into_iter()
            .zip(std::mem::take(&mut self.sources.files))
            .map(|(f, s)| (f.rel.clone(), (f, s.text)))
            .collect();
        // A file whose stamp is the one it had when read last, long enough after its last
        // change, is not read again: the config can be large, and an edit touches one file.
        let mut read: Vec<ReadFile> = Vec::with_capacity(rels.len());
        let mut stamps: Vec<Option<Stamp>> = Vec::with_capacity(rels.len());
        let mut unread: Vec<bool> = Vec::with_capacity(rels.len());
        for (i, rel) in rels.iter().enumerate() {
            let stamp = Stamp::of(&dir.join(rel));
            let known = match (self.dir == dir, &stamp, old.get_mut(rel)) {
                (true, Some(stamp), Some((f, text)))
                    if f.read_ok
                        && f.stamp.as_ref() == Some(stamp)
                        && f.stamp.as_ref().is_some_and(Stamp::settled) =>
                {
                    Some(std::mem::take(text))
                }
                _ => None,
            };
            unread.push(known.is_some());
            read.push(match known {
                Some(text) => ReadFile {
                    source: super::diag::SourceFile {
                        path: super::shown_path(dir, rel),
                        text,
                    },
                    text_known: true,
                    problem: None,
                },
                None => super::read_file(dir, rel, i),
            });
            stamps.push(stamp);
        }
        // The digest of each file read again (`None`: not read, its text as last seen), taken
        // once: it tells whether the text changed, and stands for it after.
        let fresh: Vec<Option<[u8; 32]>> = read
            .iter()
            .zip(&unread)
            .map(|(r, &unread)| (!unread).then(|| digest(&r.source.text)))
            .collect();
        let mut files: Vec<Option<CachedFile>> = Vec::with_capacity(read.len());
        // Changed files, with what they held before (`None`: new, or not parsed then).
        let mut changed: Vec<(FileId, Option<RawFile>)> = Vec::new();
        for (i, (rel, r)) in rels.iter().zip(&read).enumerate() {
            match old.remove(rel) {
                Some((mut f, _))
                    if f.read_ok
                        && r.problem.is_none()
                        && fresh[i].is_none_or(|d| d == f.digest) =>
                {
                    f.stamp = stamps[i].take();
                    // Read again, its text is here again.
                    f.text_dropped &= unread[i];
                    // Same text, maybe at another place in the list: its diagnostics say so.
                    for d in &mut f.diagnostics {
                        for l in &mut d.labels {
                            l.file = i;
                        }
                    }
                    files.push(Some(f));
                }
                Some((f, _)) => {
                    changed.push((i, f.raw));
                    files.push(None);
                }
                None => {
                    changed.push((i, None));
                    files.push(None);
                }
            }
        }
        // A file that is gone may have defined names, or declared chats.
        let mut defs_changed = !old.is_empty();
        drop(old);

        let to_parse: Vec<(FileId, &str)> = changed
            .iter()
            .filter(|(i, _)| read[*i].problem.is_none())
            .map(|(i, _)| (*i, read[*i].source.text.as_str()))
            .collect();
        let mut parsed: HashMap<FileId, (Option<RawFile>, Report)> =
            super::parse_and_decode(&to_parse)
                .into_iter()
                .map(|(i, raw, report)| (i, (raw, report)))
                .collect();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (i, before) in changed {
            let r = &mut read[i];
            let mut diagnostics: Vec<Diagnostic> = r.problem.take().into_iter().collect();
            let read_ok = diagnostics.is_empty();
            let (raw, file_report) = parsed.remove(&i).unwrap_or_default();
            diagnostics.extend(file_report.diagnostics);
            for raw in [&before, &raw].into_iter().flatten() {
                touched.extend(
                    raw.chats
                        .iter()
                        .filter_map(|c| c.chat_id.as_ref().map(|id| id.value.clone())),
                );
            }
            defs_changed |= match (&before, &raw) {
                (Some(b), Some(n)) => b.buttons != n.buttons || b.user_sets != n.user_sets,
                _ => true,
            };
            files[i] = Some(CachedFile {
                stamp: stamps[i].take(),
                rel: rels[i].clone(),
                text_known: r.text_known,
                read_ok,
                diagnostics,
                raw,
                digest: fresh[i].unwrap_or_else(|| digest(&r.source.text)),
                text_dropped: false,
            });
        }
        let files: Vec<CachedFile> = files.into_iter().flatten().collect();
        let all_parsed = files.iter().all(|f| f.raw.is_some());
        let scoped = same_files && self.clean && all_parsed && !defs_changed && !people_changed;
        self.dir = dir.to_path_buf();
        self.sources.files = read.into_iter().map(|r| r.source).collect();
        self.files = files;

        let mut report = Report::default();
        for f in &self.files {
            report.diagnostics.extend(f.diagnostics.iter().cloned());
        }
        if self.files.is_empty() {
            report.push(super::no_config_files(dir));
        }
        report
            .diagnostics
            .extend(self.people_diagnostics.iter().cloned());
        let raws: Vec<(FileId, &RawFile)> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.raw.as_ref().map(|r| (i, r)))
            .collect();
        let unparsed: Vec<validate::Unparsed> = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.raw.is_none())
            .map(|(i, f)| validate::Unparsed {
                file: i,
                text: f.text_known.then_some(self.sources.files[i].text.as_str()),
            })
            .collect();
        let chats = scoped.then(|| {
            touched.extend(also.iter().cloned());
            touched
        });
        let mut desired = validate::validate_with(
            &raws,
            &unparsed,
            &self.people,
            &mut report,
            Some((&mut self.memo, chats.as_ref())),
        );
        desired.people = self.people_labels.clone();
        desired.open_ids_of = self.people.open_id_app();
        report.sort();
        self.keep_texts_for(dir, &report);
        self.clean = all_parsed && !report.has_errors();
        let desired = (!report.has_errors()).then_some(desired);
        Ok(Reload {
            sources: &self.sources,
            report,
            desired,
            chats,
        })
    }

    /// Keeps the text of each file that a diagnostic of `report` points into, or that did not
    /// parse, reading it again where it was let go; lets the others' go.
    fn keep_texts_for(&mut self, dir: &Path, report: &Report) {
        let mut needed = vec![false; self.files.len()];
        for l in report.diagnostics.iter().flat_map(|d| &d.labels) {
            if let Some(n) = needed.get_mut(l.file) {
                *n = true;
            }
        }
        for ((f, source), needed) in self
            .files
            .iter_mut()
            .zip(&mut self.sources.files)
            .zip(needed)
        {
            if needed || f.raw.is_none() {
                if f.text_dropped {
                    // As parsed, or not at all: a file changed since is parsed at the next
                    // reload, even if its stamp did not move. Read as the config is (never
                    // waiting on a FIFO, nor reading a device without end).
                    match super::read_config_file(&dir.join(&f.rel)).map(String::from_utf8) {
                        Ok(Ok(text)) if digest(&text) == f.digest => {
                            source.text = text;
                            f.text_dropped = false;
                        }
                        _ => f.stamp = None,
                    }
                }
            } else if !f.text_dropped {
                source.text = String::new();
                f.text_dropped = true;
            }
        }
    }

    /// Makes the next reload check every chat (parsing only the files that changed).
    pub fn check_every_chat(&mut self) {
        self.clean = false;
    }

    /// The config's files as last read.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::config::yaml::Pos;

    /// A file whose text was let go, replaced by a FIFO after the reload took its stamp and
    /// before a diagnostic came to point into it: reading its lines again must not wait for
    /// a writer that never comes (the daemon would hang), as reading the config never does.
    #[test]
    fn reading_a_file_again_for_its_lines_does_not_hang_on_a_fifo() {
        let dir = tempfile::tempdir().expect("a directory");
        let a = dir.path().join("a.yaml");
        std::fs::write(
            &a,
            "version: 1\nchats:\n  - chat_id: oc_one\n    assign:\n      - users: [ou_1]\n        buttons:\n          - {text: Runbook, url: 'https://wiki.example.com'}\n",
        )
        .expect("write");
        let mut cache = ConfigCache::default();
        let first = cache
            .reload(dir.path(), &BTreeSet::new(), None)
            .expect("a directory");
        assert!(first.report.diagnostics.is_empty(), "{:?}", first.report);
        assert!(cache.files[0].text_dropped, "nothing points into it");

        std::fs::remove_file(&a).expect("remove");
        let path = std::ffi::CString::new(a.to_str().expect("UTF-8").as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
        let report = Report {
            diagnostics: vec![Diagnostic::error("test", "points into a.yaml").label(
                0,
                Pos {
                    line: 5,
                    column: 17,
                    len: 4,
                },
                "",
            )],
        };
        let (done, finished) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            cache.keep_texts_for(&root, &report);
            let _ = done.send(cache.sources.files[0].text.clone());
        });
        match finished.recv_timeout(Duration::from_secs(5)) {
            Ok(text) => assert_eq!(text, "", "a FIFO holds no lines of the file as parsed"),
            Err(_) => {
                // Let the reader go before failing.
                let _ = std::fs::OpenOptions::new().write(true).open(&a);
                panic!("reading a.yaml again waited on a FIFO");
            }
        }
    }
}
