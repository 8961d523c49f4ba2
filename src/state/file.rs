//! The file store: an applied state kept in files beside each other. Takes a path; gives the
//! `StateStore` and its one writer.
//!
//! For `state.json` (the snapshot, see `snapshot`) the companions are `state.journal` (one
//! checksummed line per change since the snapshot, see `journal`), `state.lock` (held with an OS
//! file lock by the writer, and naming it) and `state.json.tmp` (the next snapshot while it is
//! written).
//!
//! Why it survives a crash at any instant: a change is one appended journal line, fsynced before
//! the writer goes on, and a torn last line is dropped on load. A compaction writes the whole
//! state to the temporary file, fsyncs it, renames it over the snapshot (atomic), fsyncs the
//! directory and only then empties the journal; journal entries the new snapshot already holds
//! carry serials at or below its serial and are skipped. A new writer cuts a torn last line off
//! before it appends, so that its own lines follow intact ones.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::journal::{self, Replayed};
use super::{AppliedState, Binding, Record, StateError, StateStore, StateWriter, snapshot};

/// Journals are folded into the snapshot once they pass this size or a quarter of the
/// snapshot, whichever is larger: replaying them stays cheap next to reading the snapshot.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// How often a reader starts over when a compaction changed the files while it read them.
const LOAD_ATTEMPTS: usize = 5;

/// An applied state in a snapshot file and its companions.
#[derive(Clone, Debug)]
pub struct FileStore {
    snapshot: PathBuf,
    journal: PathBuf,
    lock: PathBuf,
    temp: PathBuf,
}

impl FileStore {
    /// The store whose snapshot is `path` (usually `DIR/.feedbuttons/state.json`). Nothing is
    /// read or created yet.
    pub fn new(path: impl Into<PathBuf>) -> Result<FileStore, StateError> {
        let snapshot: PathBuf = path.into();
        let invalid = |why: &str| StateError::InvalidPath {
            path: snapshot.clone(),
            why: why.to_owned(),
        };
        let Some(name) = snapshot.file_name() else {
            return Err(invalid("a state path must name a file"));
        };
        let journal = snapshot.with_extension("journal");
        let lock = snapshot.with_extension("lock");
        if journal == snapshot || lock == snapshot {
            return Err(invalid(
                "a state path cannot end in .journal or .lock: those names are its companion files",
            ));
        }
        let mut temp_name = name.to_owned();
        temp_name.push(".tmp");
        let temp = snapshot.with_file_name(temp_name);
        Ok(FileStore {
            snapshot,
            journal,
            lock,
            temp,
        })
    }

    /// The snapshot file.
    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot
    }

    /// The journal beside the snapshot.
    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    /// The lock file beside the snapshot.
    pub fn lock_path(&self) -> &Path {
        &self.lock
    }

    /// Takes the lock and loads the state under it, as the concrete writer type.
    pub fn open_writer(&self, holder: &str) -> Result<FileWriter, StateError> {
        let dir = self.dir();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err(&dir, "create the state directory"))?;
            // Best effort: the lock file and snapshot below fsync their own directory entries.
            if let Some(parent) = dir.parent() {
                let _ = sync_dir(parent);
            }
        }
        let mut lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Not truncated before the lock is ours: it names the current holder.
            .truncate(false)
            .open(&self.lock)
            .map_err(io_err(&self.lock, "open the lock file"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let named = fs::read_to_string(&self.lock).unwrap_or_default();
                let holder = match named.trim() {
                    "" => "another process (it has not said who yet)".to_owned(),
                    named => named.to_owned(),
                };
                return Err(StateError::Locked {
                    location: self.lock.display().to_string(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&self.lock, "lock")(e)),
        }
        let named = format!("{holder} since {}\n", utc_now());
        lock_file
            .set_len(0)
            .and_then(|()| lock_file.seek(SeekFrom::Start(0)))
            .and_then(|_| lock_file.write_all(named.as_bytes()))
            .map_err(io_err(&self.lock, "write the lock holder"))?;

        let loaded = self.load_once()?;
        loaded.torn().tell(self);
        let mut writer = FileWriter {
            store: self.clone(),
            lock_file,
            journal: None,
            state: loaded.state,
            snapshot_len: loaded.snapshot_len,
            snapshot_exists: loaded.snapshot_exists,
            journal_len: loaded.journal_len,
            poisoned: false,
        };
        // Leave the journal as a writer expects it: no torn tail to append after, and no
        // entries an interrupted compaction already put in the snapshot.
        if loaded.replayed.applied == 0 && loaded.journal_len > 0 {
            writer.truncate_journal(0)?;
        } else if loaded.valid_len < loaded.journal_len {
            writer.truncate_journal(loaded.valid_len)?;
        }
        if writer.compaction_due() {
            writer.compact()?;
        }
        Ok(writer)
    }

    fn dir(&self) -> PathBuf {
        parent_dir(&self.snapshot)
    }

    /// One read of the journal and then the snapshot.
    ///
    /// In that order because a reader takes no lock. A writer only appends to the journal,
    /// except that a compaction first renames a snapshot holding every entry so far into place
    /// and then empties the journal. So a snapshot read after the journal is the one the journal
    /// continues, or a newer one that holds all of it: the entries it holds are skipped, and a
    /// reader never sees an older state than one it saw before.
    fn load_once(&self) -> Result<Loaded, StateError> {
        let journal_bytes = read_if_exists(&self.journal)?.unwrap_or_default();
        let snapshot_bytes = read_if_exists(&self.snapshot)?;
        let scanned = journal::scan(&journal_bytes, &self.journal)?;
        let snapshot_exists = snapshot_bytes.is_some();
        let snapshot_len = snapshot_bytes.as_ref().map_or(0, |b| b.len() as u64);
        let mut state = match snapshot_bytes {
            Some(bytes) => snapshot::decode_owned(bytes, &self.snapshot)?,
            None => AppliedState::new(),
        };
        if !snapshot_exists && !scanned.entries.is_empty() {
            return Err(StateError::Corrupt {
                path: self.journal.clone(),
                line: None,
                why: format!(
                    "the journal records changes but its snapshot {} is missing; restore the \
                     snapshot, or remove the journal to start a new state",
                    self.snapshot.display()
                ),
            });
        }
        let replayed = journal::replay(&mut state, scanned.entries, &self.journal)?;
        Ok(Loaded {
            state,
            snapshot_exists,
            snapshot_len,
            journal_len: journal_bytes.len() as u64,
            valid_len: scanned.valid_len,
            replayed,
        })
    }

    /// Says that the journal's incomplete last line was ignored.
    fn warn_torn_tail(&self) {
        tracing::warn!(
            journal = %self.journal.display(),
            "ignored an incomplete last journal line: a writer was interrupted while recording it"
        );
    }

    /// [`StateStore::load`], leaving its one warning to the caller: the state, and whether an
    /// incomplete last journal line was ignored ([`FileStore::warn_torn_tail`] says so). A
    /// read done ahead, on another thread, warns only once its state is used.
    pub fn load_untold(&self) -> Result<(AppliedState, TornTail), StateError> {
        let mut attempt = 1;
        loop {
            let before = self.snapshot_version();
            match self.load_once() {
                Ok(loaded) => {
                    let torn = loaded.torn();
                    return Ok((loaded.state, torn));
                }
                // A reader holds no lock: a compaction may have emptied the journal while it
                // was being read. Read again; a real fault persists.
                Err(StateError::Corrupt { .. })
                    if attempt < LOAD_ATTEMPTS && self.snapshot_version() != before =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What identifies the snapshot file's current version, to notice a compaction mid-read.
    fn snapshot_version(&self) -> Option<(u64, Option<std::time::SystemTime>, u64)> {
        let m = fs::metadata(&self.snapshot).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some((m.len(), m.modified().ok(), inode))
    }
}

impl StateStore for FileStore {
    fn location(&self) -> String {
        self.snapshot.display().to_string()
    }

    fn load(&self) -> Result<AppliedState, StateError> {
        let (state, torn) = self.load_untold()?;
        torn.tell(self);
        Ok(state)
    }

    fn writer(&self, holder: &str) -> Result<Box<dyn StateWriter>, StateError> {
        Ok(Box::new(self.open_writer(holder)?))
    }
}

/// Whether a read ignored an incomplete last journal line (a writer interrupted while
/// recording it), to be told once the read is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a torn journal line is told with `tell`"]
pub struct TornTail(pub bool);

impl TornTail {
    /// Warns, if a line was ignored.
    pub fn tell(self, store: &FileStore) {
        if self.0 {
            store.warn_torn_tail();
        }
    }
}

struct Loaded {
    state: AppliedState,
    snapshot_exists: bool,
    snapshot_len: u64,
    journal_len: u64,
    /// Where the journal's intact lines end.
    valid_len: u64,
    replayed: Replayed,
}

impl Loaded {
    /// Whether the journal's intact lines end before its last byte.
    fn torn(&self) -> TornTail {
        TornTail(self.valid_len < self.journal_len)
    }
}

/// The one writer of a file store, holding its lock until dropped.
#[derive(Debug)]
pub struct FileWriter {
    store: FileStore,
    lock_file: File,
    /// Opened for appending at the first record.
    journal: Option<File>,
    state: AppliedState,
    snapshot_exists: bool,
    snapshot_len: u64,
    journal_len: u64,
    /// Set when memory got ahead of the disk and could not be brought back.
    poisoned: bool,
}

impl FileWriter {
    fn check_poisoned(&self) -> Result<(), StateError> {
        if self.poisoned {
            return Err(StateError::Poisoned {
                path: self.store.snapshot.clone(),
            });
        }
        Ok(())
    }

    /// The next change's serial; a state at the largest serial (only a hand edit gets it
    /// there) takes no more changes.
    fn next_serial(&self) -> Result<u64, StateError> {
        self.state
            .serial
            .checked_add(1)
            .ok_or_else(|| StateError::Corrupt {
                path: self.store.snapshot.clone(),
                line: None,
                why: "the serial is at its largest value, so no change can follow it; restore the state from a backup".to_owned(),
            })
    }

    fn compaction_due(&self) -> bool {
        self.journal_len > self.compaction_threshold()
    }

    fn compaction_threshold(&self) -> u64 {
        COMPACT_MIN_BYTES.max(self.snapshot_len / 4)
    }

    /// Writes the first snapshot, with a new lineage, before the first journal line: a journal
    /// always has a snapshot to belong to.
    fn ensure_created(&mut self) -> Result<(), StateError> {
        if self.snapshot_exists {
            return Ok(());
        }
        if self.state.lineage.is_empty() {
            self.state.lineage = format!("{:032x}", rand::random::<u128>());
        }
        self.write_snapshot()
    }

    /// Appends one line durably, or leaves the journal as it was.
    fn append(&mut self, line: &[u8]) -> Result<(), StateError> {
        let path = &self.store.journal;
        let mut f = match self.journal.take() {
            Some(f) => f,
            None => {
                let existed = path.exists();
                let f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(io_err(path, "open the journal"))?;
                if !existed {
                    let dir = self.store.dir();
                    sync_dir(&dir).map_err(io_err(&dir, "sync the state directory"))?;
                }
                f
            }
        };
        let written = f.write_all(line).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Cut back what may have been written, so that the next line is not glued to a
            // torn one (which would read as damage in the middle of the journal).
            if f.set_len(self.journal_len)
                .and_then(|()| f.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            self.journal = Some(f);
            return Err(io_err(path, "append to the journal")(e));
        }
        self.journal = Some(f);
        self.journal_len += line.len() as u64;
        Ok(())
    }

    /// Appends `line` as change `serial` and applies `change` in memory once it is durable.
    /// Without a line, or with one too large to journal, the change is folded into a new
    /// snapshot instead (adopting a whole config is cheaper to snapshot than to journal).
    fn commit(
        &mut self,
        serial: u64,
        line: Option<&[u8]>,
        change: impl FnOnce(&mut AppliedState),
    ) -> Result<(), StateError> {
        let line = match line {
            Some(line) if line.len() as u64 <= self.compaction_threshold() => line,
            _ => {
                change(&mut self.state);
                self.state.serial = serial;
                if let Err(e) = self.compact_now() {
                    // Memory is ahead of the disk now, with no cheap way back.
                    self.poisoned = true;
                    return Err(e);
                }
                return Ok(());
            }
        };
        self.append(line)?;
        change(&mut self.state);
        self.state.serial = serial;
        if self.compaction_due()
            && let Err(e) = self.compact()
        {
            // The change itself is durable in the journal; the next writer compacts.
            tracing::warn!(error = %e, "could not compact the state journal");
        }
        Ok(())
    }

    fn write_snapshot(&mut self) -> Result<(), StateError> {
        let bytes = snapshot::encode(&self.state);
        let temp = &self.store.temp;
        let written = File::create(temp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        written.map_err(io_err(temp, "write the new snapshot"))?;
        fs::rename(temp, &self.store.snapshot)
            .map_err(io_err(&self.store.snapshot, "replace the snapshot"))?;
        let dir = self.store.dir();
        sync_dir(&dir).map_err(io_err(&dir, "sync the state directory"))?;
        self.snapshot_exists = true;
        self.snapshot_len = bytes.len() as u64;
        Ok(())
    }

    fn compact_now(&mut self) -> Result<(), StateError> {
        self.write_snapshot()?;
        self.truncate_journal(0)
    }

    fn truncate_journal(&mut self, len: u64) -> Result<(), StateError> {
        let path = &self.store.journal;
        let cut = |f: &File| f.set_len(len).and_then(|()| f.sync_all());
        match &self.journal {
            Some(f) => cut(f),
            None => match OpenOptions::new().write(true).open(path) {
                Ok(f) => cut(&f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
        .map_err(io_err(path, "truncate the journal"))?;
        self.journal_len = len;
        Ok(())
    }
}

impl StateWriter for FileWriter {
    fn location(&self) -> String {
        self.store.location()
    }

    fn state(&self) -> &AppliedState {
        &self.state
    }

    fn bind(&mut self, binding: &Binding) -> Result<(), StateError> {
        self.check_poisoned()?;
        match &self.state.binding {
            Some(b) if b == binding => return Ok(()),
            Some(b) => {
                return Err(StateError::BindingMismatch {
                    location: self.store.snapshot.display().to_string(),
                    recorded: b.clone(),
                    wanted: binding.clone(),
                });
            }
            None => {}
        }
        self.ensure_created()?;
        let serial = self.next_serial()?;
        let line = journal::bind_line(&self.state.lineage, serial, binding);
        self.commit(serial, Some(&line), |s| s.binding = Some(binding.clone()))
    }

    fn record(&mut self, records: &[Record]) -> Result<(), StateError> {
        self.check_poisoned()?;
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_created()?;
        let serial = self.next_serial()?;
        let apply = |s: &mut AppliedState| s.apply(records);
        // Hardly any record takes fewer bytes in a journal line: a batch that is clearly too
        // large to journal goes straight to a snapshot without encoding the line first.
        const MIN_RECORD_BYTES: u64 = 64;
        if records.len() as u64 * MIN_RECORD_BYTES > self.compaction_threshold() {
            return self.commit(serial, None, apply);
        }
        let line = journal::batch_line(&self.state.lineage, serial, records);
        self.commit(serial, Some(&line), apply)
    }

    fn replace(&mut self, state: &AppliedState) -> Result<(), StateError> {
        self.check_poisoned()?;
        self.state = state.clone();
        if let Err(e) = self.compact_now() {
            // Memory is ahead of the disk now, with no cheap way back.
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<(), StateError> {
        self.check_poisoned()?;
        // Nothing was ever written, or nothing since the snapshot: no files to touch.
        if !self.snapshot_exists || self.journal_len == 0 {
            return Ok(());
        }
        self.compact_now()
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Unname the holder before the lock goes (closing the file releases it), so that whoever
        // fails to take the lock next is not told about a writer that has finished.
        let _ = self.lock_file.set_len(0);
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or a new file in `dir` durable (on Unix a directory is fsynced like a file).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The current time as `2026-05-01T10:00:00Z`, for lock holders.
fn utc_now() -> String {
    crate::time::rfc3339_seconds(crate::time::unix_millis_now() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_paths() {
        let s = FileStore::new("d/.feedbuttons/state.json").expect("valid");
        assert_eq!(s.journal_path(), Path::new("d/.feedbuttons/state.journal"));
        assert_eq!(s.lock_path(), Path::new("d/.feedbuttons/state.lock"));
        assert_eq!(s.temp, Path::new("d/.feedbuttons/state.json.tmp"));
        assert!(FileStore::new("prod.journal").is_err());
        assert!(FileStore::new("prod.lock").is_err());
    }

    #[test]
    fn utc_now_has_the_rfc3339_shape() {
        let t = utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
