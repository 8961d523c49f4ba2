//! Stamps the git revision into `feedbuttons --version`: `FEEDBUTTONS_GIT_REV` when set (a
//! container build, which leaves `.git` out); else asked of git when built from a git checkout;
//! in a packaged crate (`cargo install`, no `.git`), read from the `.cargo_vcs_info.json` that
//! `cargo package` writes; "unknown revision" otherwise (a source tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FEEDBUTTONS_GIT_REV");
    if let Some(rev) = std::env::var("FEEDBUTTONS_GIT_REV")
        .ok()
        .and_then(|r| short_hex(r.trim()))
    {
        println!("cargo:rustc-env=FEEDBUTTONS_GIT_REV={rev}");
        return;
    }
    // Only this directory's own `.git` counts: a packaged crate unpacked inside some other
    // repository must not take that repository's revision.
    let rev = if root.join(".git").exists() {
        from_git(&root)
    } else {
        None
    }
    .or_else(|| from_vcs_info(&root))
    .unwrap_or_else(|| "unknown revision".to_owned());
    println!("cargo:rustc-env=FEEDBUTTONS_GIT_REV={rev}");
}

/// `git rev-parse --short=12 HEAD`, and a rebuild when HEAD or a branch moves (a new commit or a
/// checkout), not on every build. The paths come from git, so a worktree works too.
fn from_git(root: &Path) -> Option<String> {
    let rev = git(root, &["rev-parse", "--short=12", "HEAD"])?;
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(root, &["rev-parse", "--git-path", name])
            && root.join(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(rev)
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The commit a packaged crate was made from: `{"git": {"sha1": "..."}, ...}`.
fn from_vcs_info(root: &Path) -> Option<String> {
    let path = root.join(".cargo_vcs_info.json");
    let text = std::fs::read_to_string(&path).ok()?;
    println!("cargo:rerun-if-changed=.cargo_vcs_info.json");
    let after = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start();
    short_hex(value.strip_prefix('"')?)
}

/// The first 12 characters of a hexadecimal commit id (at least 7 of them), else `None`.
fn short_hex(s: &str) -> Option<String> {
    let sha: String = s
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    (sha.len() >= 7).then_some(sha)
}
