//! Source: where a repository's files come from.
//!
//! ```text
//!   --repo PATH [--path SUBDIR] [--rev REV]
//!        │
//!        ├── a Git repository ──> GitTree   (the commit's tree, read through git2 — never the
//!        │                                   working directory, which may be half-written)
//!        └── a plain directory ─> DirTree   (for `validate` / `render` without Git, or --worktree)
//!                      │
//!                      v
//!              Snapshot { revision, tree: dyn Tree }
//! ```
//!
//! Everything above this module sees only [`Tree`]: repository-relative paths with `/`
//! separators, rooted at `--path`. Symlinks are resolved here, as the kernel resolves them
//! (component by component, `..` after a link stepping back from where the link led), and a path
//! that leaves the root (`..`, an absolute path, a symlink pointing out) is refused here, once,
//! for every reader. Tools get a checkout of the tree in which only links that stay inside exist.
//! SOPS files are read decrypted here too ([`sops`]): nothing above sees a ciphertext.

pub mod sops;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{Mode, OFlags};

use crate::diag::{Code, Diagnostic};

/// Files larger than this are refused before they are read: no legitimate profile, cluster or
/// manifest file comes close, and a multi-gigabyte blob must not take the daemon down.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Symlink hops followed while resolving one path before giving up (as Linux's ELOOP).
const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug)]
pub enum ReadError {
    NotFound,
    /// The file is larger than [`MAX_FILE_BYTES`]; carries its size.
    TooLarge(u64),
    /// A path that leaves the repository root, and the symlink that took it there (if one did).
    Escapes {
        path: String,
        through: Option<String>,
    },
    /// Too many symlink hops resolving this path.
    Loop(String),
    /// The file system refused the read; the `io::Error` is the source.
    Io(io::Error),
    /// git2 refused the read (a corrupt or missing object); the `git2::Error` is the source.
    Git(git2::Error),
    /// What is at the path is not what was asked for (a directory for a file, a link with a
    /// non-UTF-8 target, a checkout too large): no lower error caused it.
    Unusable(String),
    /// A SOPS file that does not decrypt ([`crate::source::sops`]).
    Decrypt(crate::source::sops::DecryptFailure),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotFound => f.write_str("no such file or directory"),
            ReadError::TooLarge(size) => {
                write!(f, "file is {size} bytes, larger than the {MAX_FILE_BYTES}-byte limit")
            }
            ReadError::Escapes { path, through: None } => write!(f, "`{path}` points outside the repository"),
            ReadError::Escapes { path, through: Some(link) } if link == path => {
                write!(f, "`{path}` is a symlink that points outside the repository")
            }
            ReadError::Escapes { path, through: Some(link) } => {
                write!(f, "`{path}` points outside the repository through the symlink `{link}`")
            }
            ReadError::Loop(path) => write!(f, "`{path}`: too many levels of symbolic links"),
            ReadError::Io(e) => e.fmt(f),
            ReadError::Git(e) => f.write_str(e.message()),
            ReadError::Unusable(message) => f.write_str(message),
            ReadError::Decrypt(failure) => failure.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Git(e) => Some(e),
            _ => None,
        }
    }
}

impl From<git2::Error> for ReadError {
    fn from(e: git2::Error) -> Self {
        if e.code() == git2::ErrorCode::NotFound { ReadError::NotFound } else { ReadError::Git(e) }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound { ReadError::NotFound } else { ReadError::Io(e) }
    }
}

/// A read-only view of a repository at one revision. Paths are relative to the root, `/`-separated,
/// and already normalised (no `.`, `..` or empty components); `""` is the root itself.
/// These are the raw operations; [`resolve`], [`read_file`] and [`walk_files`] build on them.
/// A tree is shared by the threads that render a fleet's clusters in parallel.
pub trait Tree: Send + Sync {
    /// The kind of the entry at `path`, without following a final symlink.
    fn kind(&self, path: &str) -> Option<EntryKind>;
    /// The entries of a directory, sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, ReadError>;
    /// The bytes of a regular file, refusing files over `limit` bytes before reading them.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError>;
    /// The target of a symlink, as written.
    fn read_link(&self, path: &str) -> Result<String, ReadError>;
    /// A content identity for a file or directory that is cheap to get (a Git object id), when
    /// the tree has one. The root's tells two revisions apart without reading them.
    fn object_id(&self, path: &str) -> Option<String>;
    /// A directory on the local filesystem holding this tree, for tools that need real files
    /// (kustomize, helm): a confined copy written into `scratch` the first time (see
    /// [`checkout`]), never the repository's own directory, where links may lead anywhere.
    fn local_root(&self, scratch: &Path) -> Result<PathBuf, ReadError>;
    /// Whether the file at `path` (resolved) is read decrypted: a SOPS file ([`crate::source::sops`]).
    fn decrypted(&self, _path: &str) -> bool {
        false
    }
    /// The bytes of a regular file as they are in the repository, before any decryption.
    fn read_raw(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        self.read(path, limit)
    }
    /// Tells the tree which paths tools (kustomize, helm) read — at or below each of them;
    /// `None`: anywhere — before its first checkout: a checkout ([`Tree::local_root`]) holds a
    /// decrypted file only there. The first caller's answer stands (`paths` is called once).
    fn tools_read(&self, _paths: &dyn Fn() -> Option<Vec<String>>) {}
    /// Whether a checkout holds the decrypted file at `path` ([`Tree::tools_read`]); files that
    /// are not decrypted are always held.
    fn checkout_holds(&self, _path: &str) -> bool {
        true
    }
}

/// Joins `base` and a relative `path` lexically, collapsing `.` and `..`. `None` when `..` climbs
/// above the root or `path` is absolute. Lexical is right only where no link can be in the way
/// (names from a listing, paths shown to people); paths users write go through [`resolve`].
pub fn join(base: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in components(path)? {
        if part == ".." {
            parts.pop()?;
        } else {
            parts.push(part);
        }
    }
    Some(parts.join("/"))
}

/// The path of the entry `name` of directory `dir`, both as a listing gives them: a name is one
/// component whatever it holds (`\\x` is a file name on Linux, not an absolute path).
pub fn child(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

/// The components of a relative path, without empty and `.` ones (`..` is kept: only the tree
/// knows what it means). `None` for an absolute path.
pub fn components(path: &str) -> Option<Vec<&str>> {
    if path.starts_with('/') || path.starts_with('\\') || Path::new(path).is_absolute() {
        return None;
    }
    Some(path.split('/').filter(|p| !p.is_empty() && *p != ".").collect())
}

/// Resolves `path` as the kernel would, inside the tree: component by component, a symlink's
/// target continues from the link's own directory, and `..` steps back from the directory
/// actually reached — so `a/../b`, with `a` a link to `deep/er`, is `deep/b`, not `b`. Returns
/// the real path (no links, no `..`) and what is there. A path or link that reaches above the
/// root, or an absolute link, is refused ([`ReadError::Escapes`], naming the last link followed).
pub fn resolve(tree: &dyn Tree, path: &str) -> Result<(String, EntryKind), ReadError> {
    let escapes = |link: &Option<String>| ReadError::Escapes { path: path.to_string(), through: link.clone() };
    let mut pending: Vec<String> =
        components(path).ok_or_else(|| escapes(&None))?.into_iter().rev().map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut kind = EntryKind::Dir;
    let mut last_link: Option<String> = None;
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if kind != EntryKind::Dir {
            // Something after a file: ENOTDIR.
            return Err(ReadError::NotFound);
        }
        if part == ".." {
            resolved.pop().ok_or_else(|| escapes(&last_link))?;
            continue;
        }
        resolved.push(part);
        let candidate = resolved.join("/");
        match tree.kind(&candidate).ok_or(ReadError::NotFound)? {
            EntryKind::Symlink => {
                resolved.pop();
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ReadError::Loop(path.to_string()));
                }
                let target = tree.read_link(&candidate)?;
                last_link = Some(candidate);
                let parts = components(&target).ok_or_else(|| escapes(&last_link))?;
                pending.extend(parts.into_iter().rev().map(str::to_string));
            }
            found => kind = found,
        }
    }
    Ok((resolved.join("/"), kind))
}

/// Reads a file, following symlinks inside the tree.
pub fn read_file(tree: &dyn Tree, path: &str) -> Result<Vec<u8>, ReadError> {
    match resolve(tree, path)? {
        (real, EntryKind::File) => tree.read(&real, MAX_FILE_BYTES),
        _ => Err(ReadError::Unusable(format!("`{path}` is a directory, not a file"))),
    }
}

/// Every file below `dir`, recursively, as (path as seen from `dir`'s side, real path), sorted by
/// the former. Symlinks are followed (and refused when they leave the tree); a directory reached
/// twice through links is listed once.
pub fn walk_files(tree: &dyn Tree, dir: &str) -> Result<Vec<(String, String)>, ReadError> {
    let (real, kind) = resolve(tree, dir)?;
    if kind != EntryKind::Dir {
        return Err(ReadError::Unusable(format!("`{dir}` is not a directory")));
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    walk_into(tree, dir, &real, &mut out, &mut seen)?;
    out.sort();
    Ok(out)
}

fn walk_into(
    tree: &dyn Tree,
    shown: &str,
    real: &str,
    out: &mut Vec<(String, String)>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(), ReadError> {
    if !seen.insert(real.to_string()) {
        return Ok(());
    }
    for (name, kind) in tree.list(real)? {
        let shown_child = child(shown, &name);
        let real_child = child(real, &name);
        let (target, target_kind) = match kind {
            EntryKind::Symlink => resolve(tree, &real_child)?,
            other => (real_child, other),
        };
        match target_kind {
            EntryKind::Dir => walk_into(tree, &shown_child, &target, out, seen)?,
            _ => out.push((shown_child, target)),
        }
    }
    Ok(())
}

/// The paths that differ between two revisions: files added, removed or changed, symlinks
/// retargeted (both sides' paths of each). What a plan asks of it is whether a path some
/// rendering reads — a file, or a directory standing for everything below it — is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    paths: BTreeSet<String>,
}

impl Changes {
    pub fn new(paths: impl IntoIterator<Item = String>) -> Self {
        Changes { paths: paths.into_iter().collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    /// Whether `path` changed, or anything below it, or anything above it (a directory that
    /// became a file or a link, which changes what `path` is). `""` is the root.
    pub fn touches(&self, path: &str) -> bool {
        if path.is_empty() {
            return !self.paths.is_empty();
        }
        if self.paths.contains(path) {
            return true;
        }
        // Below: the paths sorting from `path/` up to (not including) `path0` ('0' follows '/').
        let below = self.paths.range(format!("{path}/")..format!("{path}0")).next().is_some();
        below || path.match_indices('/').any(|(i, _)| self.paths.contains(&path[..i]))
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.paths.iter().map(String::as_str).collect();
        f.write_str(&shown.join(", "))
    }
}

/// A repository at one revision: what every command reads.
pub struct Snapshot {
    /// The full commit id, or `None` for a plain directory.
    pub revision: Option<String>,
    pub tree: Box<dyn Tree>,
}

impl Snapshot {
    /// The revision shortened for people: `1a2b3c4`, or `working tree`.
    pub fn short_revision(&self) -> String {
        match &self.revision {
            Some(rev) => rev.chars().take(7).collect(),
            None => "working tree".to_string(),
        }
    }
}

/// Errors opening a repository or a revision: user input, reported with what to do. Git's own
/// error is kept as the [`std::error::Error::source`] (its class and code say what kind of
/// failure it was); the text shown is git's message alone, as before.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: no such directory", .0.display())]
    NotFound(PathBuf),
    #[error(
        "{}: not a Git repository, so {wanted} cannot be read (run `git init` there, or drop the revision options)",
        path.display()
    )]
    NotGit { path: PathBuf, wanted: String },
    #[error("revision `{rev}` not found: {} (give a branch, tag or commit that exists)", source.message())]
    BadRevision {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("`{path}` is not a directory at revision {rev} (check --path)")]
    NoSubdir { rev: String, path: String },
    /// A tree entry git's own `fsck` refuses (`..`, `.git`, a name holding `/`, a duplicate, a
    /// bad mode): no `git add` makes one, only a crafted object. The whole revision is refused.
    #[error(
        "commit {}: tree entry `{}`: {problem} (git fsck refuses it; the commit was crafted)",
        short(revision),
        path.escape_debug()
    )]
    BadEntry { revision: String, path: String, problem: EntryProblem },
    /// git2 failed reading the repository (a corrupt object, a permission, a lock).
    #[error("git: {}", .0.message())]
    Git(#[source] git2::Error),
    /// A snapshot that is not a Git tree was given where one of this repository's was wanted.
    #[error("git: not a Git snapshot")]
    NotGitSnapshot,
    /// A failure of the host's copy of the repository, described by the daemon (its mirror's own
    /// error, kept as the source).
    #[error("git: {0}")]
    Host(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SourceError {
    /// The finding a user is shown for a revision that is at fault (`error[path]`), when it is one.
    pub fn diagnostic(&self) -> Option<Diagnostic> {
        match self {
            SourceError::BadEntry { revision, path, problem } => Some(
                Diagnostic::new(Code::Path, format!("tree entry `{}`: {problem}", path.escape_debug()))
                    .about(format!("commit {}", short(revision)))
                    .help("git fsck refuses this entry and no `git add` makes one: the commit was crafted; push a commit without it (and set receive.fsckObjects on the server)"),
            ),
            _ => None,
        }
    }
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// A Git repository, opened once, from which snapshots of several revisions can be taken.
#[derive(Clone, Debug)]
pub struct GitSource {
    path: PathBuf,
    subdir: String,
    /// What its SOPS files are decrypted with: every snapshot reads them decrypted (or fails to).
    keys: Arc<crate::source::sops::Keys>,
}

impl GitSource {
    /// Opens `path` as a Git repository (working tree or bare). `Ok(None)` when it is a plain
    /// directory.
    pub fn open(path: &Path, subdir: Option<&str>) -> Result<Option<GitSource>, SourceError> {
        if !path.exists() {
            return Err(SourceError::NotFound(path.to_path_buf()));
        }
        match git2::Repository::open(path) {
            Ok(_) => Ok(Some(GitSource {
                path: path.to_path_buf(),
                subdir: normalise_subdir(subdir)?,
                keys: Default::default(),
            })),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(SourceError::Git(e)),
        }
    }

    /// Files under the path strata reads that differ from HEAD in the working directory:
    /// modified, added, deleted, renamed, and untracked ones (ignored files are not counted).
    /// `None` for a bare repository, or when git cannot tell.
    pub fn uncommitted(&self) -> Option<usize> {
        let repo = git2::Repository::open(&self.path).ok()?;
        repo.workdir()?;
        let mut options = git2::StatusOptions::new();
        options.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
        if !self.subdir.is_empty() {
            options.pathspec(&self.subdir);
        }
        let statuses = repo.statuses(Some(&mut options)).ok()?;
        Some(statuses.iter().filter(|s| s.status() != git2::Status::CURRENT).count())
    }

    /// This repository with its SOPS files decrypted with `keys` (without: none decrypts).
    pub fn with_keys(mut self, keys: Arc<crate::source::sops::Keys>) -> GitSource {
        self.keys = keys;
        self
    }

    /// The keys its snapshots decrypt SOPS files with.
    pub fn keys(&self) -> &crate::source::sops::Keys {
        &self.keys
    }

    /// The local path of the repository.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot of `rev` (any revspec git understands: `HEAD`, `main`, `HEAD~1`, a SHA).
    pub fn snapshot(&self, rev: &str) -> Result<Snapshot, SourceError> {
        let repo = git2::Repository::open(&self.path).map_err(SourceError::Git)?;
        let object =
            repo.revparse_single(rev).map_err(|source| SourceError::BadRevision { rev: rev.to_string(), source })?;
        let commit =
            object.peel_to_commit().map_err(|source| SourceError::BadRevision { rev: rev.to_string(), source })?;
        let mut tree = commit.tree().map_err(SourceError::Git)?;
        if !self.subdir.is_empty() {
            let entry = tree
                .get_path(Path::new(&self.subdir))
                .map_err(|_| SourceError::NoSubdir { rev: rev.to_string(), path: self.subdir.clone() })?;
            if entry.kind() != Some(git2::ObjectType::Tree) {
                return Err(SourceError::NoSubdir { rev: rev.to_string(), path: self.subdir.clone() });
            }
            tree = repo.find_tree(entry.id()).map_err(SourceError::Git)?;
        }
        let revision = commit.id().to_string();
        let root = tree.id();
        check_tree(&repo, root).map_err(|bad| match bad {
            Unchecked::Bad { path, problem } => SourceError::BadEntry { revision: revision.clone(), path, problem },
            Unchecked::Git(e) => SourceError::Git(e),
        })?;
        drop(tree);
        drop(commit);
        drop(object);
        let tree = GitTree {
            git_dir: repo.path().to_path_buf(),
            repos: Mutex::new(vec![repo]),
            root,
            dirs: Default::default(),
            local: Default::default(),
        };
        Ok(Snapshot {
            revision: Some(revision),
            tree: Box::new(crate::source::sops::Decrypting::new(Box::new(tree), self.keys.clone())),
        })
    }

    /// The authors of every commit from `from` (exclusive) to `to`, on every parent (a merge
    /// brings its branch's commits), as Git records them, each once: who wrote a change that
    /// goes from `from` to `to`. At most `limit` commits are read (then the authors of those);
    /// a `from` no longer in the history hides nothing. Empty when the history cannot be read.
    pub fn authors_between(&self, from: Option<&str>, to: &str, limit: usize) -> Vec<(String, String)> {
        let walk = || -> Result<Vec<(String, String)>, git2::Error> {
            let repo = git2::Repository::open(&self.path)?;
            let mut walk = repo.revwalk()?;
            walk.push(repo.revparse_single(to)?.peel_to_commit()?.id())?;
            if let Some(commit) = from.and_then(|f| repo.revparse_single(f).and_then(|o| o.peel_to_commit()).ok()) {
                walk.hide(commit.id())?;
            }
            let mut authors: Vec<(String, String)> = Vec::new();
            for oid in walk.take(limit) {
                let commit = repo.find_commit(oid?)?;
                let author = commit.author();
                let who = (author.name().unwrap_or("").to_string(), author.email().unwrap_or("").to_string());
                if !authors.contains(&who) {
                    authors.push(who);
                }
            }
            Ok(authors)
        };
        walk().unwrap_or_default()
    }

    /// The commits from `from` (exclusive) to `to`, first parent, newest first, as `abc1234
    /// subject`: at most `limit`, and how many more there are. Without `from`, `to` alone.
    pub fn commits_between(&self, from: Option<&str>, to: &str, limit: usize) -> (Vec<String>, usize) {
        let walk = || -> Result<(Vec<String>, usize), git2::Error> {
            let repo = git2::Repository::open(&self.path)?;
            let mut walk = repo.revwalk()?;
            walk.simplify_first_parent()?;
            walk.push(repo.revparse_single(to)?.peel_to_commit()?.id())?;
            if let Some(from) = from {
                // A `from` no longer in the history (a force-push) hides nothing.
                if let Ok(commit) = repo.revparse_single(from).and_then(|o| o.peel_to_commit()) {
                    walk.hide(commit.id())?;
                }
            }
            let mut shown = Vec::new();
            let mut more = 0;
            for (i, oid) in walk.enumerate() {
                let oid = oid?;
                if from.is_none() && i > 0 {
                    break;
                }
                if shown.len() < limit {
                    let commit = repo.find_commit(oid)?;
                    let subject: String = commit.summary().ok().flatten().unwrap_or("").chars().take(80).collect();
                    shown.push(format!("{} {subject}", &oid.to_string()[..7]));
                } else {
                    more += 1;
                }
            }
            Ok((shown, more))
        };
        walk().unwrap_or_default()
    }

    /// The paths that differ between two snapshots of this repository (relative to `--path`),
    /// from a diff of their trees: only what changed is read.
    pub fn changes(&self, base: &Snapshot, head: &Snapshot) -> Result<Changes, SourceError> {
        let git = SourceError::Git;
        let tree_of = |snapshot: &Snapshot| {
            let id = snapshot.tree.object_id("").ok_or(SourceError::NotGitSnapshot)?;
            git2::Oid::from_str(&id).map_err(git)
        };
        let (base_id, head_id) = (tree_of(base)?, tree_of(head)?);
        if base_id == head_id {
            return Ok(Changes::default());
        }
        let repo = git2::Repository::open(&self.path).map_err(git)?;
        Ok(Changes { paths: diff_trees(&repo, base_id, head_id).map_err(git)? })
    }
}

/// A tree's entries sorted by name (as bytes, whatever order the object has them in): name,
/// object, mode.
type Entries = Vec<(Box<[u8]>, git2::Oid, i32)>;

/// Large trees read lately, newest first. A commit to one file of a directory of 100,000 makes
/// a new tree of 100,000 entries (4 MB to inflate, hash and parse, ~30 ms): checked, diffed and
/// listed, it is read once; the one before it, diffed against, is still here. Trees are
/// content-addressed, so one id is one content in any repository.
static TREES: Mutex<std::collections::VecDeque<(git2::Oid, Arc<Entries>)>> =
    Mutex::new(std::collections::VecDeque::new());
/// How many large trees are kept: the head's, the last head's, and two to spare (a
/// revision a cluster runs).
const TREES_KEPT: usize = 4;
/// Trees this large are kept: smaller ones cost less to read again than to keep.
const TREE_KEPT_FROM: usize = 1024;

/// The entries of the tree `oid`, from [`TREES`] or read (and kept there when large).
fn tree_entries(repo: &git2::Repository, oid: git2::Oid) -> Result<Arc<Entries>, git2::Error> {
    let kept = || TREES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, hit)) = kept().iter().find(|(id, _)| *id == oid) {
        return Ok(hit.clone());
    }
    let tree = repo.find_tree(oid)?;
    let mut entries: Entries = tree.iter().map(|e| (e.name_bytes().into(), e.id(), e.filemode_raw())).collect();
    // Git writes them sorted (directories as if their names ended in `/`); by name here, so a
    // name is found by a binary search and two trees are paired entry by entry, whatever order
    // a crafted tree has.
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let entries = Arc::new(entries);
    if entries.len() >= TREE_KEPT_FROM {
        let mut kept = kept();
        kept.push_front((oid, entries.clone()));
        kept.truncate(TREES_KEPT);
    }
    Ok(entries)
}

/// The files that differ between the trees `old` and `new`, as git's recursive tree diff lists
/// them: each file added, removed, or changed in content or mode, and each file under a
/// directory that came or went. Trees with the same id on both sides are not read, and two that
/// differ are compared entry by entry by name: a commit to one file of a directory of 100,000
/// reads that directory's new tree once (libgit2's diff spends several times as long on them).
fn diff_trees(repo: &git2::Repository, old: git2::Oid, new: git2::Oid) -> Result<BTreeSet<String>, git2::Error> {
    const TREE: i32 = 0o040000;
    let read = |oid: Option<git2::Oid>| -> Result<Arc<Entries>, git2::Error> {
        match oid {
            Some(oid) => tree_entries(repo, oid),
            None => Ok(Arc::default()),
        }
    };
    let mut paths = BTreeSet::new();
    let mut pending = vec![(String::new(), Some(old), Some(new))];
    while let Some((at, old, new)) = pending.pop() {
        let (old, new) = (read(old)?, read(new)?);
        let (mut before, mut after) = (old.iter().peekable(), new.iter().peekable());
        loop {
            let (was, is) = match (before.peek(), after.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.0 == b.0 => (before.next(), after.next()),
                (Some(a), Some(b)) if a.0 < b.0 => (before.next(), None),
                (_, Some(_)) => (None, after.next()),
                (Some(_), None) => (before.next(), None),
            };
            if let (Some(a), Some(b)) = (was, is)
                && (a.1, a.2) == (b.1, b.2)
            {
                continue;
            }
            // Not UTF-8: a tree that holds such a name is refused before anything is read.
            let Some(name) = was.or(is).and_then(|e| std::str::from_utf8(&e.0).ok()) else { continue };
            let path = if at.is_empty() { name.to_string() } else { format!("{at}/{name}") };
            let tree = |e: Option<&(Box<[u8]>, git2::Oid, i32)>| e.filter(|e| e.2 == TREE).map(|e| e.1);
            let (was_tree, is_tree) = (tree(was), tree(is));
            if was.is_some_and(|e| e.2 != TREE) || is.is_some_and(|e| e.2 != TREE) {
                paths.insert(path.clone());
            }
            if was_tree.is_some() || is_tree.is_some() {
                pending.push((path, was_tree, is_tree));
            }
        }
    }
    Ok(paths)
}

fn normalise_subdir(subdir: Option<&str>) -> Result<String, SourceError> {
    let subdir = subdir.unwrap_or("");
    join("", subdir).ok_or_else(|| SourceError::NoSubdir { rev: "-".into(), path: subdir.to_string() })
}

/// Why git's own `fsck` refuses a tree entry (fsck.c, `fsck_tree`), and strata with it. No
/// `git add` makes such an entry; `git hash-object --literally` does, and a server without
/// `receive.fsckObjects` takes it. Written out, `..` or `a/b/../../x` would land outside the
/// checkout, and `.git` would be read as Git's own metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    Empty,
    Dot,
    DotDot,
    /// `.git` in any case, or a name HFS+ or NTFS take for it (`.git\u{200c}`, `git~1`, `.git.`).
    DotGit,
    /// A name holding `/` (or NUL): a path, not a name.
    Slash,
    /// Not UTF-8: strata reads repository paths as UTF-8 only.
    NotUtf8,
    /// Two entries of one tree with the same name.
    Duplicate,
    /// A mode that is not a file, an executable, a symlink, a directory or a submodule.
    BadMode(u32),
    /// Trees nested deeper than [`MAX_TREE_DEPTH`] (git's own `core.maxTreeDepth` refuses them too).
    TooDeep,
    /// A tree object git cannot parse (an empty name, a truncated entry).
    Malformed,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::Empty => f.write_str("an entry with an empty name"),
            EntryProblem::Dot => f.write_str("an entry named `.`"),
            EntryProblem::DotDot => f.write_str("an entry named `..`"),
            EntryProblem::DotGit => f.write_str("an entry named `.git` (or a spelling a filesystem takes for it)"),
            EntryProblem::Slash => f.write_str("an entry name holding `/` or NUL"),
            EntryProblem::NotUtf8 => f.write_str("an entry name that is not UTF-8"),
            EntryProblem::Duplicate => f.write_str("two entries with this name in one tree"),
            EntryProblem::BadMode(mode) => write!(f, "an entry with mode {mode:o}, which git does not make"),
            EntryProblem::TooDeep => write!(f, "trees nested more than {MAX_TREE_DEPTH} deep"),
            EntryProblem::Malformed => f.write_str("a tree object git cannot parse"),
        }
    }
}

/// How deep trees may nest: far past any real repository, short of what could exhaust a stack.
pub const MAX_TREE_DEPTH: usize = 256;

/// What is wrong with an entry named `name` (raw bytes, as the tree holds them) of mode `mode`.
pub fn entry_problem(name: &[u8], mode: i32) -> Option<EntryProblem> {
    let problem = match name {
        [] => EntryProblem::Empty,
        b"." => EntryProblem::Dot,
        b".." => EntryProblem::DotDot,
        _ if name.contains(&b'/') || name.contains(&0) => EntryProblem::Slash,
        _ => match std::str::from_utf8(name) {
            Err(_) => EntryProblem::NotUtf8,
            Ok(text) if is_dot_git(text) => EntryProblem::DotGit,
            // Regular files (0664 only from very old gits, which fsck still accepts), symlinks,
            // directories, submodules.
            Ok(_) => match mode as u32 {
                0o100644 | 0o100755 | 0o100664 | 0o120000 | 0o040000 | 0o160000 => return None,
                other => EntryProblem::BadMode(other),
            },
        },
    };
    Some(problem)
}

/// `.git` as fsck recognises it: in any case; with the code points HFS+ ignores (zero-width
/// joiners, direction marks, the byte-order mark); and as NTFS reads it — trailing dots and
/// spaces dropped, an alternate data stream (`.git::$INDEX_ALLOCATION`) ignored, the short name
/// `git~1`.
fn is_dot_git(name: &str) -> bool {
    // The code points HFS+ ignores are none of them ASCII: an ASCII name (a fleet's thousands of
    // file names) is compared as it is, without a copy.
    let hfs = if name.is_ascii() {
        name.eq_ignore_ascii_case(".git")
    } else {
        let kept: String = name
            .chars()
            .filter(|c| !matches!(*c as u32, 0x200c..=0x200f | 0x202a..=0x202e | 0x206a..=0x206f | 0xfeff))
            .collect();
        kept.eq_ignore_ascii_case(".git")
    };
    let ntfs = name.split(':').next().unwrap_or(name).trim_end_matches(['.', ' ']);
    hfs || ntfs.eq_ignore_ascii_case(".git") || ntfs.eq_ignore_ascii_case("git~1")
}

/// Why a tree could not be shown to be sound.
enum Unchecked {
    Bad { path: String, problem: EntryProblem },
    Git(git2::Error),
}

impl From<git2::Error> for Unchecked {
    fn from(e: git2::Error) -> Self {
        Unchecked::Git(e)
    }
}

/// Trees already shown to hold only sound entries, all the way down. Trees are
/// content-addressed, so one checked is checked for every commit (and repository) that has it:
/// a new commit costs the trees it changed. Forgotten, all at once, past [`CHECKED_MAX`].
static CHECKED: Mutex<Option<HashSet<git2::Oid>>> = Mutex::new(None);
const CHECKED_MAX: usize = 1 << 20;

/// Checks every entry of the tree `root` and of every tree below it as git's `fsck` would, before
/// anything of it is read. Iterative, so a crafted tree nested without end costs no stack.
fn check_tree(repo: &git2::Repository, root: git2::Oid) -> Result<(), Unchecked> {
    let known =
        |oid: &git2::Oid| CHECKED.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|s| s.contains(oid));
    if known(&root) {
        return Ok(());
    }
    let mut checked: Vec<git2::Oid> = Vec::new();
    let mut seen: HashSet<git2::Oid> = HashSet::new();
    let mut pending: Vec<(git2::Oid, String, usize)> = vec![(root, String::new(), 0)];
    while let Some((oid, at, depth)) = pending.pop() {
        if !seen.insert(oid) || known(&oid) {
            continue;
        }
        let entries = match tree_entries(repo, oid) {
            Ok(entries) => entries,
            // There, but not a tree git can read: crafted.
            Err(_) if repo.odb()?.exists(oid) => {
                let path = if at.is_empty() { ".".to_string() } else { at };
                return Err(Unchecked::Bad { path, problem: EntryProblem::Malformed });
            }
            Err(e) => return Err(e.into()),
        };
        // Sorted by name: a name twice is two neighbours.
        let mut last: Option<&[u8]> = None;
        for (name, id, mode) in entries.iter() {
            let (name, mode) = (&name[..], *mode);
            let path = |name: &[u8]| {
                let name = String::from_utf8_lossy(name);
                if at.is_empty() { name.into_owned() } else { format!("{at}/{name}") }
            };
            let problem = entry_problem(name, mode)
                .or_else(|| (last == Some(name)).then_some(EntryProblem::Duplicate))
                .or_else(|| (mode == 0o040000 && depth + 1 > MAX_TREE_DEPTH).then_some(EntryProblem::TooDeep));
            if let Some(problem) = problem {
                return Err(Unchecked::Bad { path: path(name), problem });
            }
            last = Some(name);
            if mode == 0o040000 {
                pending.push((*id, path(name), depth + 1));
            }
        }
        checked.push(oid);
    }
    let mut cache = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashSet::new);
    if cache.len() + checked.len() > CHECKED_MAX {
        cache.clear();
    }
    cache.extend(checked);
    Ok(())
}

/// Opens what a command reads: the commit `rev` (default HEAD) of a Git repository, or a plain
/// directory as it is on disk when `path` is not a repository or `worktree` is set.
/// SOPS files read decrypted with `keys`.
pub fn open(
    path: &Path,
    subdir: Option<&str>,
    rev: Option<&str>,
    worktree: bool,
    keys: &Arc<crate::source::sops::Keys>,
) -> Result<Snapshot, SourceError> {
    let git = if worktree { None } else { GitSource::open(path, subdir)?.map(|g| g.with_keys(keys.clone())) };
    match (git, rev) {
        (Some(git), rev) => git.snapshot(rev.unwrap_or("HEAD")),
        (None, Some(rev)) => Err(SourceError::NotGit { path: path.to_path_buf(), wanted: format!("revision `{rev}`") }),
        (None, None) => {
            if !path.is_dir() {
                return Err(SourceError::NotFound(path.to_path_buf()));
            }
            let root = path.join(normalise_subdir(subdir)?);
            if !root.is_dir() {
                return Err(SourceError::NotFound(root));
            }
            Ok(crate::source::sops::decrypting(Snapshot { revision: None, tree: Box::new(DirTree::new(root)) }, keys))
        }
    }
}

/// A commit's tree in a Git repository.
pub struct GitTree {
    /// libgit2 handles are not to be used from two threads at once: a reader takes one (another
    /// is opened when all are taken), so threads loading a fleet's files read in parallel.
    repos: Mutex<Vec<git2::Repository>>,
    git_dir: PathBuf,
    root: git2::Oid,
    /// Directory listings, read once: a large directory (a thousand cluster files) would
    /// otherwise be inflated and parsed again for every file looked up in it.
    dirs: Mutex<HashMap<String, Arc<Entries>>>,
    local: Mutex<Option<PathBuf>>,
}

impl GitTree {
    fn with_repo<T>(&self, read: impl FnOnce(&git2::Repository) -> Result<T, ReadError>) -> Result<T, ReadError> {
        // The pool holds only handles nobody uses: a panic elsewhere leaves it usable.
        let taken = self.repos.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let repo = match taken {
            Some(repo) => repo,
            None => git2::Repository::open(&self.git_dir)?,
        };
        let result = read(&repo);
        self.repos.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(repo);
        result
    }

    fn listing(&self, dir: &str) -> Option<Arc<Entries>> {
        if let Some(hit) = self.dirs.lock().expect("listing cache").get(dir) {
            return Some(hit.clone());
        }
        let (oid, mode) = self.entry(dir)?;
        if kind_of_mode(mode) != EntryKind::Dir {
            return None;
        }
        // Every name was checked when the snapshot was taken (`check_tree`).
        let entries = self.with_repo(|repo| Ok(tree_entries(repo, oid)?)).ok()?;
        self.dirs.lock().expect("listing cache").insert(dir.to_string(), entries.clone());
        Some(entries)
    }

    fn entry(&self, path: &str) -> Option<(git2::Oid, i32)> {
        if path.is_empty() {
            return Some((self.root, 0o040000));
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let listing = self.listing(parent)?;
        let i = listing.binary_search_by(|e| e.0[..].cmp(name.as_bytes())).ok()?;
        Some((listing[i].1, listing[i].2))
    }

    fn blob(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (oid, _) = self.entry(path).ok_or(ReadError::NotFound)?;
        self.with_repo(|repo| {
            let (size, _) = repo.odb()?.read_header(oid)?;
            if size as u64 > limit {
                return Err(ReadError::TooLarge(size as u64));
            }
            Ok(repo.find_blob(oid)?.content().to_vec())
        })
    }
}

fn kind_of_mode(mode: i32) -> EntryKind {
    match mode & 0o170000 {
        0o040000 => EntryKind::Dir,
        0o120000 => EntryKind::Symlink,
        // Submodules (0o160000) have no content in this tree; treat them as empty files.
        _ => EntryKind::File,
    }
}

impl Tree for GitTree {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        self.entry(path).map(|(_, mode)| if path.is_empty() { EntryKind::Dir } else { kind_of_mode(mode) })
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, ReadError> {
        let listing = self.listing(dir).ok_or(ReadError::NotFound)?;
        let named = |(name, _, mode): &(Box<[u8]>, git2::Oid, i32)| {
            Some((std::str::from_utf8(name).ok()?.to_string(), kind_of_mode(*mode)))
        };
        Ok(listing.iter().filter_map(named).collect())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        self.blob(path, limit)
    }

    fn read_link(&self, path: &str) -> Result<String, ReadError> {
        let target = self.blob(path, 4096)?;
        String::from_utf8(target).map_err(|_| ReadError::Unusable(format!("symlink `{path}` has a non-UTF-8 target")))
    }

    fn object_id(&self, path: &str) -> Option<String> {
        self.entry(path).map(|(oid, _)| oid.to_string())
    }

    fn local_root(&self, scratch: &Path) -> Result<PathBuf, ReadError> {
        checkout(self, &self.local, scratch)
    }
}

/// A plain directory on disk.
pub struct DirTree {
    root: PathBuf,
    local: Mutex<Option<PathBuf>>,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into(), local: Default::default() }
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() { self.root.clone() } else { self.root.join(path) }
    }
}

impl Tree for DirTree {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        let meta = fs::symlink_metadata(self.path(path)).ok()?;
        let ft = meta.file_type();
        // FIFOs, sockets and devices are no repository content (and a FIFO would hang a read).
        match () {
            _ if ft.is_symlink() => Some(EntryKind::Symlink),
            _ if ft.is_dir() => Some(EntryKind::Dir),
            _ if ft.is_file() => Some(EntryKind::File),
            _ => None,
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, ReadError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(self.path(dir))? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            // Git metadata is not part of the repository's content.
            if dir.is_empty() && name == ".git" {
                continue;
            }
            let path = child(dir, &name);
            if let Some(kind) = self.kind(&path) {
                entries.push((name, kind));
            }
        }
        entries.sort();
        Ok(entries)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // The path is resolved, so a link at its end was put there since: do not follow it.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(path))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(ReadError::Unusable(format!("`{path}` is not a regular file")));
        }
        if meta.len() > limit {
            return Err(ReadError::TooLarge(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // A file that grows while read is cut at the limit rather than read without end.
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(ReadError::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }

    fn read_link(&self, path: &str) -> Result<String, ReadError> {
        let target = fs::read_link(self.path(path))?;
        target
            .into_os_string()
            .into_string()
            .map_err(|_| ReadError::Unusable(format!("symlink `{path}` has a non-UTF-8 target")))
    }

    fn object_id(&self, _path: &str) -> Option<String> {
        None
    }

    fn local_root(&self, scratch: &Path) -> Result<PathBuf, ReadError> {
        checkout(self, &self.local, scratch)
    }
}

/// A checkout's total size past which strata gives up: kustomize bases and charts are small, and
/// a repository that inflates past this is not one to copy onto the host's disk.
pub const MAX_CHECKOUT_BYTES: u64 = 512 * 1024 * 1024;

/// The tree written out under `scratch` once (and remembered in `cell`), for tools that need real
/// files. Everything a tool can reach in it is inside the repository: files and directories are
/// copied through the [`Tree`] API, links are kept only when they [`resolve`] inside the tree
/// (the kernel then resolves them to the same place in the copy), and links out, loops and
/// dangling links are left out. Files over [`MAX_FILE_BYTES`] are left out too, as strata would
/// refuse to read them, and so are submodules.
///
/// Every entry is written relative to the descriptor of the directory it goes in, opened with
/// `O_NOFOLLOW`, and created exclusively: no path is ever resolved again, so a link written a
/// moment before is never followed and nothing outside `scratch/tree` can be touched, whatever
/// names the tree holds. Threads that need the checkout at once wait for the one writing it.
///
/// A tree outlives the renderers that use it (the daemon keeps the head it evaluated for the
/// next evaluation), and each renderer has its own scratch directory, removed with it: the
/// checkout remembered is used only under the same scratch directory, and written anew under
/// another.
pub(crate) fn checkout(tree: &dyn Tree, cell: &Mutex<Option<PathBuf>>, scratch: &Path) -> Result<PathBuf, ReadError> {
    let mut done = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = scratch.join("tree");
    if let Some(path) = done.as_ref().filter(|path| **path == root) {
        return Ok(path.clone());
    }
    fs::create_dir_all(scratch)?;
    fs::create_dir(&root)?;
    let fd = rustix::fs::open(&root, DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
    let mut budget = MAX_CHECKOUT_BYTES;
    let mut pending = vec![(String::new(), fd)];
    // Iterative: how deep a tree goes costs no stack.
    while let Some((dir, fd)) = pending.pop() {
        write_entries(tree, &dir, &fd, &mut budget, &mut pending)?;
    }
    Ok(done.insert(root).clone())
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// A name that is one directory entry: not empty, `.` or `..`, without `/` or NUL. Trees are
/// checked at load; this keeps the writer safe whatever [`Tree`] it is given.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Writes the entries of `dir` into the directory open as `fd`; sub-directories are created and
/// queued in `pending`.
fn write_entries(
    tree: &dyn Tree,
    dir: &str,
    fd: &OwnedFd,
    budget: &mut u64,
    pending: &mut Vec<(String, OwnedFd)>,
) -> Result<(), ReadError> {
    let errno = |e: rustix::io::Errno| ReadError::from(io::Error::from(e));
    for (name, kind) in tree.list(dir)? {
        let path = child(dir, &name);
        if !plain_name(&name) {
            return Err(ReadError::Unusable(format!("`{}`: not a file name a checkout can hold", path.escape_debug())));
        }
        match kind {
            EntryKind::Dir => {
                rustix::fs::mkdirat(fd, name.as_str(), Mode::from_raw_mode(0o755)).map_err(errno)?;
                let sub = rustix::fs::openat(fd, name.as_str(), DIR_FLAGS, Mode::empty()).map_err(errno)?;
                pending.push((path, sub));
            }
            EntryKind::File => match tree.read(&path, MAX_FILE_BYTES) {
                // A decrypted file where no tool reads: left out, so plaintext is on disk only
                // where a tool must read it.
                Ok(_) if !tree.checkout_holds(&path) => {}
                Ok(bytes) => {
                    *budget = budget.checked_sub(bytes.len() as u64).ok_or_else(|| {
                        ReadError::Unusable(format!(
                            "the repository is larger than {MAX_CHECKOUT_BYTES} bytes to check out"
                        ))
                    })?;
                    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let file =
                        rustix::fs::openat(fd, name.as_str(), flags, Mode::from_raw_mode(0o644)).map_err(errno)?;
                    io::Write::write_all(&mut fs::File::from(file), &bytes)?;
                }
                // Too large for strata to read, or a submodule (a commit, not content of this
                // repository): left out. So is a SOPS file strata cannot decrypt: the layers that
                // read it fail with error[decrypt] before their tool runs, and no tool ever reads
                // its ciphertext as if it were the values.
                Err(ReadError::TooLarge(_) | ReadError::NotFound | ReadError::Decrypt(_)) => {}
                Err(e) => return Err(e),
            },
            EntryKind::Symlink => {
                if resolve(tree, &path).is_ok() {
                    rustix::fs::symlinkat(tree.read_link(&path)?, fd, name.as_str()).map_err(errno)?;
                }
            }
        }
    }
    Ok(())
}

/// A tree held in memory: files and symlinks by path, directories implied by what is below them.
/// For tests and fuzzing, where a repository is made up on the spot and a disk costs time.
#[derive(Debug, Default)]
pub struct MemTree {
    files: std::collections::BTreeMap<String, Vec<u8>>,
    links: std::collections::BTreeMap<String, String>,
    local: Mutex<Option<PathBuf>>,
}

impl Clone for MemTree {
    /// A copy may be changed on its own: it gets a checkout of its own when it needs one.
    fn clone(&self) -> Self {
        MemTree { files: self.files.clone(), links: self.links.clone(), local: Mutex::default() }
    }
}

impl MemTree {
    pub fn new() -> Self {
        MemTree::default()
    }

    /// Adds a file; a path that does not normalise inside the root is ignored, as a Git tree
    /// cannot hold one.
    pub fn file(&mut self, path: &str, content: impl Into<Vec<u8>>) -> &mut Self {
        if let Some(path) = join("", path).filter(|p| !p.is_empty()) {
            self.files.insert(path, content.into());
        }
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        if let Some(path) = join("", path).filter(|p| !p.is_empty()) {
            self.links.insert(path, target.to_string());
        }
        self
    }

    /// A directory is anything with an entry below it: in sorted order, the first key at or
    /// after `path/` starts with it if any key does.
    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        let below = |first: Option<&String>| first.is_some_and(|k| k.starts_with(&prefix));
        path.is_empty()
            || below(self.files.range(prefix.clone()..).next().map(|(k, _)| k))
            || below(self.links.range(prefix.clone()..).next().map(|(k, _)| k))
    }
}

impl Tree for MemTree {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        if self.links.contains_key(path) {
            Some(EntryKind::Symlink)
        } else if self.files.contains_key(path) {
            Some(EntryKind::File)
        } else {
            self.is_dir(path).then_some(EntryKind::Dir)
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, ReadError> {
        if self.kind(dir) != Some(EntryKind::Dir) {
            return Err(ReadError::NotFound);
        }
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut names = std::collections::BTreeSet::new();
        for path in self.files.keys().chain(self.links.keys()) {
            if let Some(rest) = path.strip_prefix(&prefix) {
                names.insert(rest.split('/').next().unwrap_or(rest).to_string());
            }
        }
        Ok(names
            .into_iter()
            .filter_map(|name| {
                let kind = self.kind(&format!("{prefix}{name}"))?;
                Some((name, kind))
            })
            .collect())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let content = self.files.get(path).ok_or(ReadError::NotFound)?;
        if content.len() as u64 > limit {
            return Err(ReadError::TooLarge(content.len() as u64));
        }
        Ok(content.clone())
    }

    fn read_link(&self, path: &str) -> Result<String, ReadError> {
        self.links.get(path).cloned().ok_or(ReadError::NotFound)
    }

    fn object_id(&self, _path: &str) -> Option<String> {
        None
    }

    fn local_root(&self, scratch: &Path) -> Result<PathBuf, ReadError> {
        checkout(self, &self.local, scratch)
    }
}

/// What a reader says of a file it could not read at `path`: the escaping link or the loop
/// named where it is, a file too large, a SOPS file that does not decrypt.
pub fn read_diag(path: &str, e: ReadError) -> Diagnostic {
    match e {
        // Named by the link (or path) that leads out, which may be deep below `path`.
        ReadError::Escapes { path: ref escaping, .. } => Diagnostic::new(Code::Path, e.to_string())
            .in_file(escaping)
            .help("resolved as the filesystem resolves it, it leaves the repository: keep files and links inside"),
        ReadError::Loop(ref looping) => Diagnostic::new(Code::Path, e.to_string())
            .in_file(looping)
            .help("a symlink leads back to itself: fix or remove it"),
        ReadError::TooLarge(_) => Diagnostic::new(Code::TooLarge, e.to_string()).in_file(path),
        ReadError::Decrypt(ref failure) => sops::diagnostic(path, failure),
        _ => Diagnostic::new(Code::Yaml, e.to_string()).in_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, DirTree) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("packs/app")).unwrap();
        fs::write(root.join("packs/app/a.yaml"), "a").unwrap();
        fs::write(root.join("packs/app/b.yaml"), "b").unwrap();
        symlink("app", root.join("packs/alias")).unwrap();
        symlink("/etc", root.join("packs/out")).unwrap();
        symlink("../../..", root.join("packs/up")).unwrap();
        symlink("loop2", root.join("packs/loop1")).unwrap();
        symlink("loop1", root.join("packs/loop2")).unwrap();
        let tree = DirTree::new(root);
        (dir, tree)
    }

    #[test]
    fn join_normalises_and_refuses_to_climb_out() {
        assert_eq!(join("packs", "./app/../app/x.yaml").as_deref(), Some("packs/app/x.yaml"));
        assert_eq!(join("", "a/../.."), None);
        assert_eq!(join("", "/etc/passwd"), None);
    }

    #[test]
    fn symlinks_inside_the_tree_resolve() {
        let (_dir, tree) = tree();
        assert_eq!(resolve(&tree, "packs/alias/a.yaml").unwrap(), ("packs/app/a.yaml".into(), EntryKind::File));
        let files = walk_files(&tree, "packs/alias").unwrap();
        assert_eq!(
            files,
            vec![
                ("packs/alias/a.yaml".into(), "packs/app/a.yaml".into()),
                ("packs/alias/b.yaml".into(), "packs/app/b.yaml".into())
            ]
        );
    }

    #[test]
    fn symlinks_out_of_the_tree_are_refused() {
        let (_dir, tree) = tree();
        assert!(matches!(resolve(&tree, "packs/out"), Err(ReadError::Escapes { .. })));
        assert!(matches!(resolve(&tree, "packs/up/x"), Err(ReadError::Escapes { .. })));
        assert!(matches!(resolve(&tree, "packs/loop1"), Err(ReadError::Loop(_))));
        assert!(matches!(resolve(&tree, "../x"), Err(ReadError::Escapes { .. })));
    }

    /// `repo/` inside `outer/`, with `outer/decoy/` beside it and `repo/decoy/` at the same
    /// lexical place: a resolver that collapses `..` before following links picks the wrong one.
    fn tricky() -> (tempfile::TempDir, DirTree) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("repo");
        for dir in ["repo/deep/er", "repo/deep/b", "repo/b", "repo/decoy", "repo/packs", "decoy"] {
            fs::create_dir_all(outer.path().join(dir)).unwrap();
        }
        fs::write(outer.path().join("decoy/secret.yaml"), "outside").unwrap();
        fs::write(root.join("decoy/secret.yaml"), "inside").unwrap();
        symlink("deep/er", root.join("a")).unwrap();
        symlink("..", root.join("packs/up")).unwrap();
        symlink("up/../decoy", root.join("packs/via")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("self/x", root.join("self")).unwrap();
        let tree = DirTree::new(&root);
        (outer, tree)
    }

    #[test]
    fn dot_dot_after_a_link_steps_back_from_where_the_link_led() {
        let (_outer, tree) = tricky();
        assert_eq!(resolve(&tree, "a/../b").unwrap(), ("deep/b".into(), EntryKind::Dir));
        assert_eq!(resolve(&tree, "packs/up/decoy/secret.yaml").unwrap().0, "decoy/secret.yaml");
    }

    #[test]
    fn chains_lexically_inside_but_physically_outside_are_refused() {
        let (_outer, tree) = tricky();
        // Lexically `decoy/secret.yaml` (inside); physically `outer/decoy/secret.yaml`.
        let escape = |path| match resolve(&tree, path) {
            Err(ReadError::Escapes { through, .. }) => through.unwrap(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(escape("packs/up/../decoy/secret.yaml"), "packs/up");
        assert_eq!(escape("packs/via/secret.yaml"), "packs/up");
        assert_eq!(escape("abs/passwd"), "abs");
        assert!(matches!(resolve(&tree, "self"), Err(ReadError::Loop(_))));
        assert!(matches!(walk_files(&tree, "packs"), Err(ReadError::Escapes { .. })));
    }

    #[test]
    fn a_checkout_holds_only_links_that_stay_inside() {
        let (outer, tree) = tricky();
        let scratch = outer.path().join("scratch");
        let root = tree.local_root(&scratch).unwrap();
        assert!(root.starts_with(&scratch), "tools never see the repository's own directory");
        assert_eq!(fs::read_link(root.join("a")).unwrap(), Path::new("deep/er"));
        assert!(fs::symlink_metadata(root.join("packs/up")).is_ok(), "`..` from packs/ is the root: inside");
        for gone in ["packs/via", "abs", "self"] {
            assert!(fs::symlink_metadata(root.join(gone)).is_err(), "{gone} is left out");
        }
        assert_eq!(fs::read_to_string(root.join("decoy/secret.yaml")).unwrap(), "inside");
    }

    #[test]
    fn a_tree_kept_past_its_renderer_is_written_again_under_the_next_scratch_directory() {
        let (outer, tree) = tricky();
        let first = outer.path().join("first");
        let root = tree.local_root(&first).unwrap();
        assert_eq!(tree.local_root(&first).unwrap(), root, "written once per scratch directory");
        // The renderer that owned the first scratch directory is gone, and its directory with it.
        fs::remove_dir_all(&first).unwrap();
        let second = outer.path().join("second");
        let again = tree.local_root(&second).unwrap();
        assert!(again.starts_with(&second));
        assert_eq!(fs::read_to_string(again.join("decoy/secret.yaml")).unwrap(), "inside");
    }

    /// A repository whose commits are made from raw tree objects, as `git hash-object
    /// --literally` makes them: entries no `git add` would write.
    struct Crafted {
        dir: tempfile::TempDir,
        repo: git2::Repository,
    }

    impl Crafted {
        fn new() -> Crafted {
            let dir = tempfile::tempdir().unwrap();
            let repo = git2::Repository::init_bare(dir.path().join("repo.git")).unwrap();
            Crafted { dir, repo }
        }

        fn blob(&self, content: &[u8]) -> git2::Oid {
            self.repo.blob(content).unwrap()
        }

        /// A tree object of `entries` (raw name, mode, object) exactly as given: unsorted,
        /// duplicated, with any bytes in names.
        fn tree(&self, entries: &[(&[u8], u32, git2::Oid)]) -> git2::Oid {
            let mut raw = Vec::new();
            for (name, mode, oid) in entries {
                raw.extend_from_slice(format!("{mode:o} ").as_bytes());
                raw.extend_from_slice(name);
                raw.push(0);
                raw.extend_from_slice(oid.as_bytes());
            }
            self.repo.odb().unwrap().write(git2::ObjectType::Tree, &raw).unwrap()
        }

        /// A commit of `tree`, written as raw bytes too (libgit2 would parse the tree first).
        fn commit(&self, tree: git2::Oid) -> String {
            let raw = format!(
                "tree {tree}\nauthor t <t@strata.invalid> 0 +0000\ncommitter t <t@strata.invalid> 0 +0000\n\ncrafted\n"
            );
            self.repo.odb().unwrap().write(git2::ObjectType::Commit, raw.as_bytes()).unwrap().to_string()
        }

        fn snapshot(&self, commit: &str) -> Result<Snapshot, SourceError> {
            GitSource::open(&self.dir.path().join("repo.git"), None).unwrap().unwrap().snapshot(commit)
        }
    }

    #[test]
    fn tree_entries_git_fsck_refuses_refuse_the_revision_naming_the_path() {
        let c = Crafted::new();
        let blob = c.blob(b"key: value\n");
        let inner = c.tree(&[(b"x.yaml", 0o100644, blob)]);
        let cases: Vec<(&[u8], u32, EntryProblem)> = vec![
            (b"..", 0o40000, EntryProblem::DotDot),
            (b".", 0o40000, EntryProblem::Dot),
            (b".git", 0o40000, EntryProblem::DotGit),
            (b".GiT", 0o100644, EntryProblem::DotGit),
            (b"git~1", 0o40000, EntryProblem::DotGit),
            (b".git. ", 0o40000, EntryProblem::DotGit),
            (".g\u{200c}it".as_bytes(), 0o40000, EntryProblem::DotGit),
            (b"a/b/../../x", 0o100644, EntryProblem::Slash),
            (b"../../redaction.key", 0o100644, EntryProblem::Slash),
            (b"", 0o100644, EntryProblem::Malformed),
            (b"caf\xe9", 0o100644, EntryProblem::NotUtf8),
            (b"odd", 0o100777, EntryProblem::BadMode(0o100777)),
        ];
        for (name, mode, problem) in cases {
            let object = if mode == 0o40000 { inner } else { blob };
            let packs = c.tree(&[(name, mode, object), (b"ok.yaml", 0o100644, blob)]);
            let commit = c.commit(c.tree(&[(b"packs", 0o40000, packs)]));
            match c.snapshot(&commit) {
                Err(SourceError::BadEntry { revision, path, problem: found }) => {
                    assert_eq!(revision, commit);
                    assert_eq!(found, problem, "{}", String::from_utf8_lossy(name));
                    assert!(path.starts_with("packs"), "{path}");
                }
                Err(other) => panic!("{}: {other}", String::from_utf8_lossy(name)),
                Ok(_) => panic!("{} was taken", String::from_utf8_lossy(name)),
            }
        }
        let twice = c.commit(c.tree(&[(b"a", 0o100644, blob), (b"a", 0o40000, inner)]));
        assert!(matches!(c.snapshot(&twice), Err(SourceError::BadEntry { problem: EntryProblem::Duplicate, .. })));
        let mut deep = inner;
        for _ in 0..=MAX_TREE_DEPTH {
            deep = c.tree(&[(b"d", 0o40000, deep)]);
        }
        assert!(matches!(
            c.snapshot(&c.commit(deep)),
            Err(SourceError::BadEntry { problem: EntryProblem::TooDeep, .. })
        ));
        // In a tree large enough to be kept read (and sorted) for later, a name twice is found
        // wherever the object has the two, and a sound large tree is taken.
        let names: Vec<String> = (0..TREE_KEPT_FROM + 500).map(|i| format!("c{i:05}.yaml")).collect();
        let mut wide: Vec<(&[u8], u32, git2::Oid)> = names.iter().map(|n| (n.as_bytes(), 0o100644, blob)).collect();
        assert!(c.snapshot(&c.commit(c.tree(&[(b"clusters", 0o40000, c.tree(&wide))]))).is_ok());
        wide.insert(7, (b"c01400.yaml", 0o100644, blob));
        let again = c.commit(c.tree(&[(b"clusters", 0o40000, c.tree(&wide))]));
        match c.snapshot(&again) {
            Err(SourceError::BadEntry { path, problem: EntryProblem::Duplicate, .. }) => {
                assert_eq!(path, "clusters/c01400.yaml")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a name twice in a large tree was taken"),
        }
        let sound = c.commit(c.tree(&[(b"packs", 0o40000, inner), (b".gitignore", 0o100644, blob)]));
        assert!(c.snapshot(&sound).is_ok(), "names that merely start like .git are fine");
        let diagnostic = c.snapshot(&twice).err().unwrap().diagnostic().unwrap().to_string();
        assert!(diagnostic.starts_with("error[path]") && diagnostic.contains("commit "), "{diagnostic}");
    }

    /// Any names at all, in trees of any shape: a snapshot either refuses them or its checkout
    /// writes inside its own directory and nowhere else.
    #[test]
    fn random_tree_entry_names_never_write_outside_the_checkout() {
        let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
        eprintln!("seed {seed} (STRATA_SEED={seed} repeats it)");
        let mut rng = fastrand::Rng::with_seed(seed);
        let alphabet: &[&[u8]] = &[b".", b"..", b"/", b"a", b"b", b"x.yaml", b".git", b"\xff", b"\\", b" ", b"~1"];
        let c = Crafted::new();
        let blob = c.blob(b"kind: ConfigMap\n");
        let victim = c.dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("redaction.key"), "original").unwrap();
        let mut taken = 0;
        for round in 0..300 {
            let mut name = || -> Vec<u8> {
                (0..rng.usize(1..5)).flat_map(|_| alphabet[rng.usize(..alphabet.len())].to_vec()).collect()
            };
            let leaf = c.tree(&[(&name(), 0o100644, blob), (&name(), 0o120000, c.blob(&name()))]);
            let mid = c.tree(&[(&name(), 0o40000, leaf), (&name(), 0o100644, blob)]);
            let root =
                c.tree(&[(&name(), 0o40000, mid), (&name(), 0o40000, leaf), (&name(), 0o120000, c.blob(b"../victim"))]);
            let commit = c.commit(root);
            let Ok(snapshot) = c.snapshot(&commit) else { continue };
            taken += 1;
            let scratch = c.dir.path().join(format!("scratch-{round}"));
            fs::create_dir(&scratch).unwrap();
            let before = outside(c.dir.path(), &scratch);
            let written = snapshot.tree.local_root(&scratch);
            assert_eq!(outside(c.dir.path(), &scratch), before, "seed {seed}, round {round}: written outside");
            if let Ok(root) = written {
                assert!(root.starts_with(&scratch), "seed {seed}");
            }
            assert_eq!(fs::read_to_string(victim.join("redaction.key")).unwrap(), "original", "seed {seed}");
        }
        assert!(taken > 0, "seed {seed}: some random trees are sound");
    }

    /// Every path under `root` but those under `except`, with sizes, links not followed.
    fn outside(root: &Path, except: &Path) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.starts_with(except) {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                out.push((path, meta.len()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_change_touches_the_path_what_is_below_it_and_what_is_above_it() {
        let changes = Changes::new(["packs/app/a.yaml".to_string(), "packs/link".to_string()]);
        for touched in ["packs/app/a.yaml", "packs/app", "packs", "", "packs/link/x.yaml"] {
            assert!(changes.touches(touched), "{touched}");
        }
        for untouched in ["packs/app/b.yaml", "packs/ap", "packs/app-2", "packs/app/a.yaml.bak", "profiles"] {
            assert!(!changes.touches(untouched), "{untouched}");
        }
        assert!(!Changes::default().touches(""));
    }

    #[test]
    fn changes_between_two_commits_are_the_paths_their_trees_differ_in() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@strata.invalid", "-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        fs::create_dir_all(dir.path().join("fleet/packs/app")).unwrap();
        fs::write(dir.path().join("fleet/packs/app/a.yaml"), "a").unwrap();
        fs::write(dir.path().join("fleet/packs/app/b.yaml"), "b").unwrap();
        git(&["init", "-q", "-b", "main"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "one"]);
        fs::write(dir.path().join("fleet/packs/app/b.yaml"), "changed").unwrap();
        symlink("app", dir.path().join("fleet/packs/alias")).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "two"]);
        let source = GitSource::open(dir.path(), Some("fleet")).unwrap().unwrap();
        let changes = source.changes(&source.snapshot("HEAD~1").unwrap(), &source.snapshot("HEAD").unwrap()).unwrap();
        assert_eq!(changes, Changes::new(["packs/alias".to_string(), "packs/app/b.yaml".to_string()]));
        let same = source.changes(&source.snapshot("HEAD").unwrap(), &source.snapshot("HEAD").unwrap()).unwrap();
        assert!(same.is_empty());
    }

    /// The paths strata's tree diff lists are those libgit2's recursive diff lists, over random
    /// pairs of trees: files, executables, links and directories added, removed, replaced by one
    /// another and changed deep down, subtrees shared. The seed is printed on failure
    /// (`STRATA_SEED` replays one).
    #[test]
    fn the_tree_diff_lists_what_gits_diff_lists() {
        let c = Crafted::new();
        let seeds: Vec<u64> = match std::env::var("STRATA_SEED") {
            Ok(seed) => vec![seed.parse().expect("STRATA_SEED is a number")],
            Err(_) => (0..300).collect(),
        };
        for seed in seeds {
            let mut rng = fastrand::Rng::with_seed(seed);
            // One in fifty a directory of thousands of entries (the trees kept read, a fleet's
            // `clusters/`), the others small ones nested.
            let old = if seed % 50 == 0 { wide_tree(&mut rng, &c.repo) } else { random_tree(&mut rng, &c.repo, 0) };
            let new = mutate(&mut rng, &c.repo, old, 0);
            for (a, b) in [(old, new), (new, old), (old, old)] {
                let (a_tree, b_tree) = (c.repo.find_tree(a).unwrap(), c.repo.find_tree(b).unwrap());
                let diff = c.repo.diff_tree_to_tree(Some(&a_tree), Some(&b_tree), None).unwrap();
                let gits: BTreeSet<String> = diff
                    .deltas()
                    .flat_map(|d| [d.old_file(), d.new_file()])
                    .filter_map(|f| f.path().and_then(Path::to_str).map(str::to_string))
                    .collect();
                assert_eq!(diff_trees(&c.repo, a, b).unwrap(), gits, "seed {seed} (STRATA_SEED={seed} replays it)");
            }
        }
    }

    fn random_entry(rng: &mut fastrand::Rng, repo: &git2::Repository, depth: usize) -> (git2::Oid, i32) {
        match rng.u8(0..10) {
            0..=4 => (repo.blob(&[rng.u8(0..3)]).unwrap(), 0o100644),
            5 => (repo.blob(&[rng.u8(0..3)]).unwrap(), 0o100755),
            6 => (repo.blob(b"elsewhere").unwrap(), 0o120000),
            _ if depth < 3 => (random_tree(rng, repo, depth + 1), 0o040000),
            _ => (repo.blob(b"deep").unwrap(), 0o100644),
        }
    }

    fn random_tree(rng: &mut fastrand::Rng, repo: &git2::Repository, depth: usize) -> git2::Oid {
        let mut tree = repo.treebuilder(None).unwrap();
        for _ in 0..rng.usize(0..6) {
            let (oid, mode) = random_entry(rng, repo, depth);
            tree.insert(format!("n{}", rng.u8(0..8)), oid, mode).unwrap();
        }
        tree.write().unwrap()
    }

    fn wide_tree(rng: &mut fastrand::Rng, repo: &git2::Repository) -> git2::Oid {
        // Objects written once (each write is a file): the entries differ in name and mode.
        let objects: Vec<(git2::Oid, i32)> = (0..8).map(|_| random_entry(rng, repo, 2)).collect();
        let mut tree = repo.treebuilder(None).unwrap();
        for i in 0..rng.usize(TREE_KEPT_FROM..2 * TREE_KEPT_FROM) {
            let (oid, mode) = objects[rng.usize(..objects.len())];
            tree.insert(format!("c{i:05}"), oid, mode).unwrap();
        }
        tree.write().unwrap()
    }

    fn mutate(rng: &mut fastrand::Rng, repo: &git2::Repository, oid: git2::Oid, depth: usize) -> git2::Oid {
        let old = repo.find_tree(oid).unwrap();
        let mut tree = repo.treebuilder(Some(&old)).unwrap();
        for entry in old.iter() {
            let name = entry.name().unwrap().to_string();
            match rng.u8(0..6) {
                0 => tree.remove(&name).unwrap(),
                1 => {
                    let (oid, mode) = random_entry(rng, repo, depth);
                    tree.insert(&name, oid, mode).unwrap();
                }
                2 | 3 if entry.filemode() == 0o040000 => {
                    tree.insert(&name, mutate(rng, repo, entry.id(), depth + 1), 0o040000).unwrap();
                }
                _ => {}
            }
        }
        if rng.bool() {
            let (oid, mode) = random_entry(rng, repo, depth);
            tree.insert(format!("n{}", rng.u8(0..8)), oid, mode).unwrap();
        }
        tree.write().unwrap()
    }

    #[test]
    fn gits_own_error_stays_the_source_and_users_read_its_message() {
        let c = Crafted::new();
        let Err(e) = c.snapshot("no-such-branch") else { panic!("a revision that does not exist") };
        let git = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<git2::Error>()).expect("git's error");
        assert_eq!(git.code(), git2::ErrorCode::NotFound);
        assert_eq!(
            e.to_string(),
            format!(
                "revision `no-such-branch` not found: {} (give a branch, tag or commit that exists)",
                git.message()
            )
        );

        // A commit whose tree is gone: git's class (the object database) survives.
        let commit = c.commit(git2::Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap());
        let Err(e) = c.snapshot(&commit) else { panic!("a commit without its tree") };
        assert!(matches!(e, SourceError::Git(_)), "{e:?}");
        let git = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<git2::Error>()).expect("git's error");
        assert_eq!(git.class(), git2::ErrorClass::Odb);
        assert_eq!(e.to_string(), format!("git: {}", git.message()));
    }

    #[test]
    fn a_read_that_fails_keeps_the_file_systems_error() {
        let e = ReadError::from(io::Error::from(io::ErrorKind::PermissionDenied));
        let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()).expect("the io error");
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(e.to_string(), io.to_string());
    }
}
