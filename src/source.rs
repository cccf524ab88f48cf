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

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    Io(String),
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
            ReadError::Io(message) => f.write_str(message),
        }
    }
}

impl From<git2::Error> for ReadError {
    fn from(e: git2::Error) -> Self {
        if e.code() == git2::ErrorCode::NotFound { ReadError::NotFound } else { ReadError::Io(e.message().to_string()) }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound { ReadError::NotFound } else { ReadError::Io(e.to_string()) }
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
        _ => Err(ReadError::Io(format!("`{path}` is a directory, not a file"))),
    }
}

/// Every file below `dir`, recursively, as (path as seen from `dir`'s side, real path), sorted by
/// the former. Symlinks are followed (and refused when they leave the tree); a directory reached
/// twice through links is listed once.
pub fn walk_files(tree: &dyn Tree, dir: &str) -> Result<Vec<(String, String)>, ReadError> {
    let (real, kind) = resolve(tree, dir)?;
    if kind != EntryKind::Dir {
        return Err(ReadError::Io(format!("`{dir}` is not a directory")));
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
        let shown_child = join(shown, &name).unwrap_or_default();
        let real_child = join(real, &name).unwrap_or_default();
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

/// Errors opening a repository or a revision: user input, reported with what to do.
#[derive(Debug)]
pub enum SourceError {
    NotFound(PathBuf),
    NotGit { path: PathBuf, wanted: String },
    BadRevision { rev: String, message: String },
    NoSubdir { rev: String, path: String },
    Git(String),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::NotFound(path) => write!(f, "{}: no such directory", path.display()),
            SourceError::NotGit { path, wanted } => write!(
                f,
                "{}: not a Git repository, so {wanted} cannot be read (run `git init` there, or drop the revision options)",
                path.display()
            ),
            SourceError::BadRevision { rev, message } => {
                write!(f, "revision `{rev}` not found: {message} (give a branch, tag or commit that exists)")
            }
            SourceError::NoSubdir { rev, path } => {
                write!(f, "`{path}` is not a directory at revision {rev} (check --path)")
            }
            SourceError::Git(message) => write!(f, "git: {message}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// A Git repository, opened once, from which snapshots of several revisions can be taken.
#[derive(Clone, Debug)]
pub struct GitSource {
    path: PathBuf,
    subdir: String,
}

impl GitSource {
    /// Opens `path` as a Git repository (working tree or bare). `Ok(None)` when it is a plain
    /// directory.
    pub fn open(path: &Path, subdir: Option<&str>) -> Result<Option<GitSource>, SourceError> {
        if !path.exists() {
            return Err(SourceError::NotFound(path.to_path_buf()));
        }
        match git2::Repository::open(path) {
            Ok(_) => Ok(Some(GitSource { path: path.to_path_buf(), subdir: normalise_subdir(subdir)? })),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(SourceError::Git(e.message().to_string())),
        }
    }

    /// The snapshot of `rev` (any revspec git understands: `HEAD`, `main`, `HEAD~1`, a SHA).
    pub fn snapshot(&self, rev: &str) -> Result<Snapshot, SourceError> {
        let repo = git2::Repository::open(&self.path).map_err(|e| SourceError::Git(e.message().to_string()))?;
        let object = repo
            .revparse_single(rev)
            .map_err(|e| SourceError::BadRevision { rev: rev.to_string(), message: e.message().to_string() })?;
        let commit = object
            .peel_to_commit()
            .map_err(|e| SourceError::BadRevision { rev: rev.to_string(), message: e.message().to_string() })?;
        let mut tree = commit.tree().map_err(|e| SourceError::Git(e.message().to_string()))?;
        if !self.subdir.is_empty() {
            let entry = tree
                .get_path(Path::new(&self.subdir))
                .map_err(|_| SourceError::NoSubdir { rev: rev.to_string(), path: self.subdir.clone() })?;
            if entry.kind() != Some(git2::ObjectType::Tree) {
                return Err(SourceError::NoSubdir { rev: rev.to_string(), path: self.subdir.clone() });
            }
            tree = repo.find_tree(entry.id()).map_err(|e| SourceError::Git(e.message().to_string()))?;
        }
        let revision = commit.id().to_string();
        let root = tree.id();
        drop(tree);
        drop(commit);
        drop(object);
        Ok(Snapshot {
            revision: Some(revision),
            tree: Box::new(GitTree {
                git_dir: repo.path().to_path_buf(),
                repos: Mutex::new(vec![repo]),
                root,
                dirs: Default::default(),
                local: Default::default(),
            }),
        })
    }

    /// The paths that differ between two snapshots of this repository (relative to `--path`),
    /// from a diff of their trees: only what changed is read.
    pub fn changes(&self, base: &Snapshot, head: &Snapshot) -> Result<Changes, SourceError> {
        let git = |e: git2::Error| SourceError::Git(e.message().to_string());
        let tree_of = |snapshot: &Snapshot| {
            let id = snapshot.tree.object_id("").ok_or_else(|| SourceError::Git("not a Git snapshot".into()))?;
            git2::Oid::from_str(&id).map_err(git)
        };
        let (base_id, head_id) = (tree_of(base)?, tree_of(head)?);
        if base_id == head_id {
            return Ok(Changes::default());
        }
        let repo = git2::Repository::open(&self.path).map_err(git)?;
        let (old, new) = (repo.find_tree(base_id).map_err(git)?, repo.find_tree(head_id).map_err(git)?);
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None).map_err(git)?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path().and_then(Path::to_str) {
                    paths.insert(path.to_string());
                }
            }
        }
        Ok(Changes { paths })
    }
}

fn normalise_subdir(subdir: Option<&str>) -> Result<String, SourceError> {
    let subdir = subdir.unwrap_or("");
    join("", subdir).ok_or_else(|| SourceError::NoSubdir { rev: "-".into(), path: subdir.to_string() })
}

/// Opens what a command reads: the commit `rev` (default HEAD) of a Git repository, or a plain
/// directory as it is on disk when `path` is not a repository or `worktree` is set.
pub fn open(path: &Path, subdir: Option<&str>, rev: Option<&str>, worktree: bool) -> Result<Snapshot, SourceError> {
    let git = if worktree { None } else { GitSource::open(path, subdir)? };
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
            Ok(Snapshot { revision: None, tree: Box::new(DirTree::new(root)) })
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
    dirs: Mutex<HashMap<String, Arc<Listing>>>,
    local: Mutex<Option<PathBuf>>,
}

/// A tree's entries, sorted by name: (name, object id, file mode).
type Listing = Vec<(String, git2::Oid, i32)>;

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

    fn listing(&self, dir: &str) -> Option<Arc<Listing>> {
        if let Some(hit) = self.dirs.lock().expect("listing cache").get(dir) {
            return Some(hit.clone());
        }
        let (oid, mode) = self.entry(dir)?;
        if kind_of_mode(mode) != EntryKind::Dir {
            return None;
        }
        let mut entries: Listing = self
            .with_repo(|repo| {
                let tree = repo.find_tree(oid)?;
                Ok(tree.iter().filter_map(|e| Some((e.name().ok()?.to_string(), e.id(), e.filemode()))).collect())
            })
            .ok()?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let entries = Arc::new(entries);
        self.dirs.lock().expect("listing cache").insert(dir.to_string(), entries.clone());
        Some(entries)
    }

    fn entry(&self, path: &str) -> Option<(git2::Oid, i32)> {
        if path.is_empty() {
            return Some((self.root, 0o040000));
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let listing = self.listing(parent)?;
        let i = listing.binary_search_by(|e| e.0.as_str().cmp(name)).ok()?;
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
        Ok(listing.iter().map(|(name, _, mode)| (name.clone(), kind_of_mode(*mode))).collect())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        self.blob(path, limit)
    }

    fn read_link(&self, path: &str) -> Result<String, ReadError> {
        let target = self.blob(path, 4096)?;
        String::from_utf8(target).map_err(|_| ReadError::Io(format!("symlink `{path}` has a non-UTF-8 target")))
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
            let path = join(dir, &name).unwrap_or_default();
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
            return Err(ReadError::Io(format!("`{path}` is not a regular file")));
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
            .map_err(|_| ReadError::Io(format!("symlink `{path}` has a non-UTF-8 target")))
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
/// Threads that need the checkout at once wait for the one writing it.
fn checkout(tree: &dyn Tree, cell: &Mutex<Option<PathBuf>>, scratch: &Path) -> Result<PathBuf, ReadError> {
    let mut done = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = done.as_ref() {
        return Ok(path.clone());
    }
    let root = scratch.join("tree");
    let mut budget = MAX_CHECKOUT_BYTES;
    write_checkout(tree, "", &root, &mut budget)?;
    Ok(done.insert(root).clone())
}

fn write_checkout(tree: &dyn Tree, dir: &str, into: &Path, budget: &mut u64) -> Result<(), ReadError> {
    fs::create_dir_all(into)?;
    for (name, kind) in tree.list(dir)? {
        let path = join(dir, &name).unwrap_or_default();
        let target = into.join(&name);
        match kind {
            EntryKind::Dir => write_checkout(tree, &path, &target, budget)?,
            EntryKind::File => match tree.read(&path, MAX_FILE_BYTES) {
                Ok(bytes) => {
                    *budget = budget.checked_sub(bytes.len() as u64).ok_or_else(|| {
                        ReadError::Io(format!("the repository is larger than {MAX_CHECKOUT_BYTES} bytes to check out"))
                    })?;
                    fs::write(&target, bytes)?;
                }
                // Too large for strata to read, or a submodule (a commit, not content of this
                // repository): left out.
                Err(ReadError::TooLarge(_) | ReadError::NotFound) => {}
                Err(e) => return Err(e),
            },
            EntryKind::Symlink => {
                if resolve(tree, &path).is_ok() {
                    std::os::unix::fs::symlink(tree.read_link(&path)?, &target)?;
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
}
