//! Sets `RINGCHAT_GIT_COMMIT` for `ringchat --version`: the short hash of the commit built,
//! with `-dirty` when the work tree has changes, or `unknown` outside a git checkout (or
//! without git). `RINGCHAT_GIT_COMMIT` in the build's environment overrides it (for builds
//! from a source archive).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RINGCHAT_GIT_COMMIT");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest);
    let commit = match std::env::var("RINGCHAT_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => from_git(dir).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=RINGCHAT_GIT_COMMIT={commit}");
}

fn from_git(dir: &Path) -> Option<String> {
    // Only a checkout of this workspace counts (not an enclosing repository of some other project).
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !Path::new(&top).join("net").join("build.rs").is_file() {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs. Git paths
    // are asked of git, so a linked work tree (whose HEAD is not under .git/) works too. Only
    // paths that exist are named (cargo reruns a build script whose named file is missing every
    // time); a branch not yet written as a file of its own is watched through its directory.
    let git_path = |p: &str| git(dir, &["rev-parse", "--path-format=absolute", "--git-path", p]).map(std::path::PathBuf::from);
    let mut watch = vec![git_path("HEAD"), git_path("packed-refs")];
    if let Some(head_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        let path = git_path(&head_ref);
        watch.push(match path {
            Some(p) if !p.exists() => p.parent().map(Path::to_path_buf),
            other => other,
        });
    }
    for path in watch.into_iter().flatten().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // And when the sources change, so `-dirty` follows edits (files elsewhere in the tree are
    // only seen at the next rebuild for another reason).
    for d in ["core", "sim", "net", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", Path::new(&top).join(d).display());
    }
    let hash = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
