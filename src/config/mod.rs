//! Loading a config directory: files -> spanned YAML tree -> raw values -> validated desired state,
//! with every diagnostic collected on the way (see `format.md`).

pub mod diag;
pub mod incremental;
pub mod people;
pub mod raw;
pub mod schema;
pub mod syntax;
pub mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use diag::{Diagnostic, FileId, Report, SourceFile, Sources};
use yaml::{Node, Pos};

use crate::desired::DesiredState;

/// Most YAML nodes (mappings, lists and scalars) one file may hold. serde-saphyr's default
/// (250,000) is too small for a file with a hundred thousand users; this is twenty times that.
pub const MAX_NODES_PER_FILE: usize = 5_000_000;

/// The stack of a thread that parses files: room for the parser's recursion down to the depth
/// limit with a wide margin, in a debug build too.
pub(crate) const PARSER_STACK_BYTES: usize = 32 << 20;

/// A directory that cannot be loaded at all (as opposed to a config with errors in it).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The config directory does not exist or is not a directory.
    #[error("config directory {path} does not exist or is not a directory")]
    NotADirectory { path: PathBuf },
    /// A directory under the config could not be listed.
    #[error("cannot list {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A loaded config: its files, what is wrong with them, and the desired state they declare.
#[derive(Debug)]
pub struct Loaded {
    pub sources: Sources,
    pub report: Report,
    /// Present only when the config has no errors.
    pub desired: Option<DesiredState>,
}

/// Loads and validates every config file under `dir`, reading the people it names from the
/// lock beside it (`feedbuttons.lock`), if there is one.
pub fn load_dir(dir: &Path) -> Result<Loaded, LoadError> {
    load(dir, None)
}

/// [`load_dir`], with the people taken from `people` instead of the directory's own lock
/// (`resolve` notes what is asked; `watch --resolve-every` holds the live members).
pub fn load_dir_with(dir: &Path, people: &people::People) -> Result<Loaded, LoadError> {
    load(dir, Some(people))
}

fn load(dir: &Path, given: Option<&people::People>) -> Result<Loaded, LoadError> {
    let rel_paths = list_files(dir)?;
    let mut report = Report::default();
    let mut sources = Sources::default();
    let mut text_known = Vec::with_capacity(rel_paths.len());
    for rel in &rel_paths {
        let read = read_file(dir, rel, sources.files.len());
        report.diagnostics.extend(read.problem);
        text_known.push(read.text_known);
        sources.files.push(read.source);
    }
    if sources.files.is_empty() {
        report.push(no_config_files(dir));
    }
    if let Some(people) = given {
        return Ok(finish(sources, report, &text_known, people));
    }
    let people = dir_people(dir, &mut report);
    Ok(finish(sources, report, &text_known, &people))
}

/// The people named by the lock in `dir` (none without one); a lock that cannot be read is
/// reported in `report`, and then no one is known.
pub(crate) fn dir_people(dir: &Path, report: &mut Report) -> people::People {
    match crate::lock::Lock::load(dir) {
        Ok(lock) => people::People::new(lock),
        Err(e) => {
            report.push(
                Diagnostic::error("lock-invalid", e.to_string())
                    .help("run `feedbuttons resolve` to write it again"),
            );
            people::People::default()
        }
    }
}

/// The config files under `dir`, relative to it, in sorted order.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut rel_paths = Vec::new();
    collect_files(dir, Path::new(""), &mut rel_paths, &mut Vec::new())?;
    rel_paths.sort();
    Ok(rel_paths)
}

/// The error for a directory without config files.
fn no_config_files(dir: &Path) -> Diagnostic {
    Diagnostic::error(
        "no-config-files",
        format!("no *.yaml or *.yml files under {}", dir.display()),
    )
    .help("point feedbuttons at the directory that holds your config files")
}

/// One config file as read.
#[derive(Debug)]
struct ReadFile {
    source: SourceFile,
    /// Whether its text could be read at all (a file that is not UTF-8 is shown all the same).
    text_known: bool,
    /// Why it cannot be parsed: it could not be read, or is not UTF-8.
    problem: Option<Diagnostic>,
}

/// How the file `rel` of the config `dir` is named in diagnostics.
fn shown_path(dir: &Path, rel: &Path) -> PathBuf {
    if dir == Path::new(".") {
        rel.to_path_buf()
    } else {
        dir.join(rel)
    }
}

/// Reads `dir/rel`, file `file` of the config.
fn read_file(dir: &Path, rel: &Path, file: FileId) -> ReadFile {
    let shown = shown_path(dir, rel);
    let (text, problem) = match read_config_file(&dir.join(rel)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => (Some(t), None),
            Err(e) => {
                let bytes = e.into_bytes();
                // Kept, with the bad bytes replaced, so that the error shows its line.
                let problem = not_utf8(file, &bytes);
                (
                    Some(String::from_utf8_lossy(&bytes).into_owned()),
                    Some(problem),
                )
            }
        },
        Err(problem) => (None, Some(problem.diagnostic(file, &shown))),
    };
    ReadFile {
        text_known: text.is_some(),
        source: SourceFile {
            path: shown,
            text: text.unwrap_or_default(),
        },
        problem,
    }
}

/// Loads and validates config files given as text (for tests and tools that hold files in memory).
pub fn load_texts(files: Vec<(PathBuf, String)>) -> Loaded {
    let sources = Sources {
        files: files
            .into_iter()
            .map(|(path, text)| SourceFile { path, text })
            .collect(),
    };
    let text_known = vec![true; sources.files.len()];
    finish(
        sources,
        Report::default(),
        &text_known,
        &people::People::default(),
    )
}

/// Parses, decodes and validates the files whose reading raised no diagnostic yet.
/// `text_known[i]` is false for a file whose content could not be read at all.
fn finish(
    sources: Sources,
    mut report: Report,
    text_known: &[bool],
    people: &people::People,
) -> Loaded {
    let readable: Vec<bool> = (0..sources.files.len())
        .map(|i| {
            !report
                .diagnostics
                .iter()
                .any(|d| d.labels.first().is_some_and(|l| l.file == i))
        })
        .collect();
    let to_parse: Vec<(FileId, &str)> = sources
        .files
        .iter()
        .enumerate()
        .filter(|(i, _)| readable[*i])
        .map(|(i, f)| (i, f.text.as_str()))
        .collect();
    let decoded = parse_and_decode(&to_parse);
    let mut raws = Vec::with_capacity(decoded.len());
    let mut parsed = vec![false; sources.files.len()];
    for (file, raw, file_report) in decoded {
        report.diagnostics.extend(file_report.diagnostics);
        if let Some(raw) = raw {
            parsed[file] = true;
            raws.push((file, raw));
        }
    }
    // Files that declare nothing because they could not be read or parsed: what they would
    // have defined is unknown, so validation must not call their names undefined.
    let unparsed: Vec<validate::Unparsed> = sources
        .files
        .iter()
        .enumerate()
        .filter(|(i, _)| !parsed[*i])
        .map(|(i, f)| validate::Unparsed {
            file: i,
            text: text_known
                .get(i)
                .copied()
                .unwrap_or(true)
                .then_some(f.text.as_str()),
        })
        .collect();
    let mut desired = validate::validate(&raws, &unparsed, people, &mut report);
    desired.people = people.labels();
    desired.open_ids_of = people.open_id_app();
    drop(raws);
    report.sort();
    let desired = (!report.has_errors()).then_some(desired);
    Loaded {
        sources,
        report,
        desired,
    }
}

/// Why a config file's bytes could not be read.
enum ReadProblem {
    /// It is a FIFO, a socket or a device, itself or at the end of a symbolic link.
    NotRegular {
        what: &'static str,
        link_target: Option<PathBuf>,
    },
    Io {
        error: std::io::Error,
        dangling_link: bool,
    },
}

impl ReadProblem {
    fn diagnostic(&self, file: FileId, shown: &Path) -> Diagnostic {
        match self {
            ReadProblem::NotRegular { what, link_target } => {
                let message = match link_target {
                    Some(target) => format!(
                        "`{}` is a symbolic link to `{}`, which is {what}, not a regular file",
                        shown.display(),
                        target.display()
                    ),
                    None => format!("`{}` is {what}, not a regular file", shown.display()),
                };
                Diagnostic::error("file-not-regular", message)
                    .label(file, Pos::START, "")
                    .help("a config file must be a regular file: replace it with one, or rename it so that it does not end in `.yaml` or `.yml`")
            }
            ReadProblem::Io {
                error,
                dangling_link,
            } => {
                let help = if *dangling_link {
                    "it is a symbolic link whose target is missing: restore the target or remove the link"
                } else {
                    "make the file readable, or remove it from the config directory"
                };
                Diagnostic::error("file-unreadable", format!("cannot read the file: {error}"))
                    .label(file, Pos::START, "")
                    .help(help)
            }
        }
    }
}

/// Reads one config file, refusing anything but a regular file. Reading a FIFO would wait for a
/// writer forever, and a device may never end or may act on being opened, so the type is
/// checked before opening; the file is opened non-blocking and checked again, in case it was
/// replaced in between.
fn read_config_file(path: &Path) -> Result<Vec<u8>, ReadProblem> {
    use std::io::Read;

    let io = |error: std::io::Error| ReadProblem::Io {
        dangling_link: std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()),
        error,
    };
    let not_regular = |meta: &std::fs::Metadata| ReadProblem::NotRegular {
        what: describe_file_type(meta),
        link_target: std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| std::fs::read_link(path).ok())
            .flatten(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let mut file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// What a file that is not a regular file is, in a person's words.
fn describe_file_type(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// The error for a file that is not UTF-8, at the line and column of its first invalid byte.
fn not_utf8(file: FileId, bytes: &[u8]) -> Diagnostic {
    let valid = std::str::from_utf8(bytes)
        .err()
        .map_or(bytes.len(), |e| e.valid_up_to());
    let prefix = String::from_utf8_lossy(&bytes[..valid]);
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let pos = Pos {
        line: u32::try_from(prefix.matches('\n').count() + 1).unwrap_or(u32::MAX),
        column: u32::try_from(prefix[line_start..].chars().count() + 1).unwrap_or(u32::MAX),
        len: 1,
    };
    let byte = bytes.get(valid).copied().unwrap_or_default();
    // A UTF-16 file starts with a byte order mark; saying so saves guessing the encoding.
    let help = if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        "the file looks like UTF-16: save it as UTF-8"
    } else {
        "save the file as UTF-8"
    };
    Diagnostic::error(
        "file-not-utf8",
        format!("the file is not UTF-8 (byte 0x{byte:02X} cannot start or continue a character)"),
    )
    .label(file, pos, "not UTF-8")
    .help(help)
}

/// Walks `dir/rel`, following symbolic links (a git-sync checkout is one), skipping hidden names.
fn collect_files(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
    seen_dirs: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    let here = root.join(rel);
    // Guard against a symbolic link cycle by remembering the real directories already walked.
    if let Ok(real) = here.canonicalize() {
        if seen_dirs.contains(&real) {
            return Ok(());
        }
        seen_dirs.push(real);
    }
    let entries = std::fs::read_dir(&here).map_err(|source| LoadError::ReadDir {
        path: here.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::ReadDir {
            path: here.clone(),
            source,
        })?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let s = name.to_string_lossy();
        if s.starts_with('.') {
            continue;
        }
        let is_config = s.ends_with(".yaml") || s.ends_with(".yml");
        let child = rel.join(&name);
        match std::fs::metadata(root.join(&child)) {
            Ok(meta) if meta.is_dir() => collect_files(root, &child, out, seen_dirs)?,
            // A config file that cannot be read (a dangling link, no permission, a FIFO or a
            // device) is kept, so that reading it reports the error: skipping it would drop
            // its targets, and the next plan would remove them.
            Ok(_) if is_config => out.push(child),
            Ok(_) => {}
            Err(_) if is_config => out.push(child),
            Err(_) => {}
        }
    }
    Ok(())
}

type Decoded = (FileId, Option<raw::RawFile>, Report);

/// Parses and decodes the files on every core: files are independent until validation.
fn parse_and_decode(files: &[(FileId, &str)]) -> Vec<Decoded> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    // Each worker takes the next file until none is left.
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(file, text)) = files.get(i) else {
                break;
            };
            let mut report = Report::default();
            let raw = parse(file, text, &mut report)
                .map(|node| raw::decode_file(file, &node, &mut report));
            done.push((file, raw, report));
        }
        done
    };
    let mut results: Vec<Decoded> = std::thread::scope(|scope| {
        // The parser recurses once per level of nesting, down to the depth limit (64), and
        // needs more than a thread's default 2 MiB for it in a debug build: a file nested
        // just under the limit aborted the process instead of being reported. The stack is
        // reserved, and only used that deep.
        let workers: Vec<_> = (0..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .stack_size(PARSER_STACK_BYTES)
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    // What no worker took (none could be started): parsed here.
    results.extend(work());
    results.sort_by_key(|r| r.0);
    results
}

/// Parses one file into a spanned tree, or reports why it is not YAML we can read.
pub fn parse(file: FileId, text: &str, report: &mut Report) -> Option<Node> {
    parse_with_limit(file, text, MAX_NODES_PER_FILE, report)
}

/// [`parse`] with another node limit (tests use a small one).
pub fn parse_with_limit(
    file: FileId,
    text: &str,
    max_nodes: usize,
    report: &mut Report,
) -> Option<Node> {
    let limits = syntax::Limits::for_nodes(max_nodes);
    let options = serde_saphyr::options! {
        budget: Some(limits.budget()),
        with_snippet: false,
        // `1e999` and `.nan` reach the decoder as numbers, which it refuses in its own words
        // ("must be a string, found a number: put it in quotes").
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    };
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(node) => Some(node),
        Err(e) => {
            report.push(syntax::diagnostic(file, text, &e, &limits));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_node_limit_is_reported_as_too_large() {
        let text = format!(
            "version: 1\nuser_sets:\n  big: [{}]\n",
            vec!["ou_a"; 200].join(", ")
        );
        let mut report = Report::default();
        assert!(parse_with_limit(0, &text, 100, &mut report).is_none());
        assert_eq!(report.diagnostics.len(), 1);
        assert_eq!(report.diagnostics[0].code, "file-too-large");
        assert!(
            report.diagnostics[0]
                .message
                .contains("more than 100 YAML nodes")
        );

        let mut report = Report::default();
        assert!(parse_with_limit(0, &text, 1_000, &mut report).is_some());
        assert!(report.diagnostics.is_empty());
    }
}
