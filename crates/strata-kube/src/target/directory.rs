//! A directory as a cluster: each object is a file `<namespace or _cluster>/<kind>.<name>.yaml`,
//! read back as the "live" object. For rendered-manifest workflows (another tool applies the
//! files) and for trying strata without a cluster.
//!
//! The directory confines itself, whatever names reach it (render validates them, but an
//! inventory file or a future caller might not): every path is two components, a directory and a
//! file, each checked to be one plain name (no `..`, no `/`, no NUL, not absolute), and each is
//! opened relative to the root's descriptor with `O_NOFOLLOW`, so a symlink planted at
//! `<root>/<namespace>` or at an object's file is refused, never followed. Writes go through a
//! temporary file in the same directory and a rename, which replaces whatever entry was there
//! without following it.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde_json::Value;

use super::{Resource, Said, Target, TargetError};
use crate::render::object::{group_of, is_cluster_scoped_builtin};
use crate::target::inventory::Inventory;
use crate::yaml;

/// The directory of cluster-scoped objects; no namespace can be named so (namespaces are DNS
/// labels, and the target refuses names starting with `.` or `_` for namespace directories).
const CLUSTER_DIR: &str = "_cluster";
/// Inventories, one file per cluster.
const INVENTORY_DIR: &str = ".strata";
/// Files larger than this are not read back: strata writes objects, and no object is this big.
const MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// Linux's NAME_MAX: a longer file name cannot exist.
const NAME_MAX: usize = 255;

pub struct DirectoryTarget {
    root: PathBuf,
}

/// Where an object lives: a directory under the root and a file in it, both checked components.
#[derive(Debug, PartialEq, Eq)]
struct Location {
    dir: String,
    file: String,
}

impl Location {
    /// `hello-universe/deployment.ui.yaml`, `_cluster/namespace.kubecost.yaml`.
    fn object(kind: &str, namespace: Option<&str>, name: &str) -> Result<Location, TargetError> {
        Location { dir: namespace_dir(namespace)?, file: format!("{}.{name}.yaml", kind.to_lowercase()) }.checked()
    }

    fn inventory(cluster: &str) -> Result<Location, TargetError> {
        Location { dir: INVENTORY_DIR.to_string(), file: format!("inventory-{cluster}.json") }.checked()
    }

    fn checked(self) -> Result<Location, TargetError> {
        if !is_component(&self.dir) {
            return Err(refused("directory", &self.dir));
        }
        if !is_component(&self.file) {
            return Err(refused("file name", &self.file));
        }
        Ok(self)
    }
}

/// The directory of a namespace's objects. Names starting with `.` or `_` are reserved for the
/// target's own directories (no valid namespace starts so).
fn namespace_dir(namespace: Option<&str>) -> Result<String, TargetError> {
    match namespace {
        Some(ns) if ns.starts_with(['.', '_']) || !is_component(ns) => Err(refused("namespace", ns)),
        Some(ns) => Ok(ns.to_string()),
        None => Ok(CLUSTER_DIR.to_string()),
    }
}

/// One plain name in a directory: it cannot name the directory itself, its parent, a path
/// below it or an absolute path, and it fits the filesystem's limit.
fn is_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']) && name.len() <= NAME_MAX
}

fn refused(what: &str, value: &str) -> TargetError {
    let shown: String = value.chars().take(80).flat_map(char::escape_debug).collect();
    TargetError::Other(format!(
        "directory target: refusing {what} `{shown}`: it is not a single plain file name of at most {NAME_MAX} bytes"
    ))
}

impl DirectoryTarget {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirectoryTarget { root: root.into() }
    }

    fn shown(&self, location: &Location) -> String {
        format!("{}/{}/{}", self.root.display(), location.dir, location.file)
    }

    fn error(&self, location: &Location, e: Errno) -> TargetError {
        let path = self.shown(location);
        match e {
            Errno::LOOP | Errno::NOTDIR | Errno::MLINK => TargetError::Other(format!(
                "{path}: a symlink or other non-regular entry is in the way; the directory target never follows links (remove it)"
            )),
            e => TargetError::Failed(Said::caused(format!("{path}: {e}"), std::io::Error::from(e))),
        }
    }

    /// The root, created when `create` is set. The root itself is the operator's choice and may
    /// be a link; nothing below it is followed.
    fn root(&self, create: bool) -> Result<Option<OwnedFd>, TargetError> {
        if create {
            std::fs::create_dir_all(&self.root).map_err(|e| io(e, &self.root))?;
        }
        match rustix::fs::open(&self.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if !create => Ok(None),
            Err(e) => Err(io(e.into(), &self.root)),
        }
    }

    /// The directory of `location` below the root, without following a link; `None` when it
    /// does not exist and `create` is not set.
    fn dir(&self, location: &Location, create: bool) -> Result<Option<OwnedFd>, TargetError> {
        let Some(root) = self.root(create)? else { return Ok(None) };
        let open = || {
            rustix::fs::openat(
                &root,
                &location.dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        match open() {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&root, &location.dir, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.error(location, e)),
                }
                open().map(Some).map_err(|e| self.error(location, e))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.error(location, e)),
        }
    }

    /// The bytes of a regular file, `None` when it is not there.
    fn read(&self, location: &Location) -> Result<Option<Vec<u8>>, TargetError> {
        let Some(dir) = self.dir(location, false)? else { return Ok(None) };
        // O_NONBLOCK: a FIFO planted in the directory must not hang the read.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, &location.file, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.error(location, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.error(location, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(self.error(location, Errno::LOOP));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TargetError::Failed(Said::caused(format!("{}: {e}", self.shown(location)), e)))?;
        if bytes.len() as u64 > MAX_OBJECT_BYTES {
            return Err(TargetError::Other(format!(
                "{}: larger than {MAX_OBJECT_BYTES} bytes, not an object strata wrote",
                self.shown(location)
            )));
        }
        Ok(Some(bytes))
    }

    /// Writes through a temporary file and a rename in the same directory, so a reader never
    /// sees half a file and whatever entry was at the name (a planted link) is replaced, not
    /// followed.
    fn write(&self, location: &Location, bytes: &[u8]) -> Result<(), TargetError> {
        let dir = self.dir(location, true)?.expect("created");
        let tmp = format!(".strata-tmp-{:016x}", fastrand::u64(..));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&dir, &tmp, flags, Mode::from_raw_mode(0o644)).map_err(|e| self.error(location, e))?;
        let renamed = std::fs::File::from(fd)
            .write_all(bytes)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            .and_then(|()| rustix::fs::renameat(&dir, &tmp, &dir, &location.file));
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
            return Err(self.error(location, e));
        }
        Ok(())
    }

    /// Removes the entry itself (a link is removed, not what it points at), then the directory
    /// when it is left empty.
    fn remove(&self, location: &Location) -> Result<(), TargetError> {
        let Some(dir) = self.dir(location, false)? else { return Ok(()) };
        match rustix::fs::unlinkat(&dir, &location.file, AtFlags::empty()) {
            Ok(()) => {
                drop(dir);
                if let Some(root) = self.root(false)? {
                    // Fails (and is meant to) while anything is left in it.
                    let _ = rustix::fs::unlinkat(&root, &location.dir, AtFlags::REMOVEDIR);
                }
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.error(location, e)),
        }
    }

    /// The names of the files in a directory below the root.
    fn files(&self, location: &Location) -> Result<Vec<String>, TargetError> {
        let Some(dir) = self.dir(location, false)? else { return Ok(Vec::new()) };
        let mut entries = Dir::read_from(dir.as_fd()).map_err(|e| self.error(location, e))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(|e| self.error(location, e))?;
            if let Ok(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

fn io(e: std::io::Error, path: &Path) -> TargetError {
    TargetError::Failed(Said::caused(format!("{}: {e}", path.display()), e))
}

fn parse(target: &DirectoryTarget, location: &Location, bytes: &[u8]) -> Result<Value, TargetError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| TargetError::Other(format!("{}: not UTF-8", target.shown(location))))?;
    yaml::parse::<Value>(text)
        .map_err(|e| TargetError::Other(format!("{}:{}: {}", target.shown(location), e.line, e.message)))
}

impl Target for DirectoryTarget {
    async fn resource(&self, api_version: &str, kind: &str) -> Result<Option<Resource>, TargetError> {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        Ok(Some(Resource {
            api_version: api_version.to_string(),
            namespaced: !is_cluster_scoped_builtin(group_of(api_version), kind),
            group,
            version,
            kind: kind.to_string(),
            plural: kind.to_lowercase(),
        }))
    }

    fn refresh_discovery(&self) {}

    async fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, TargetError> {
        let location = Location::object(&resource.kind, namespace, name)?;
        match self.read(&location)? {
            Some(bytes) => parse(self, &location, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let dir = Location { dir: namespace_dir(namespace)?, file: String::new() };
        let prefix = format!("{}.", resource.kind.to_lowercase());
        let mut out = Vec::new();
        for file in self.files(&dir)? {
            if file.strip_prefix(&prefix).and_then(|f| f.strip_suffix(".yaml")).is_none() {
                continue;
            }
            let location = Location { dir: dir.dir.clone(), file }.checked()?;
            if let Some(bytes) = self.read(&location)? {
                out.push(parse(self, &location, &bytes)?);
            }
        }
        Ok(out)
    }

    async fn apply(
        &self,
        resource: &Resource,
        manifest: &Value,
        dry_run: bool,
        _force: bool,
    ) -> Result<Value, TargetError> {
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let location = Location::object(&resource.kind, manifest["metadata"]["namespace"].as_str(), name)?;
        if !dry_run {
            self.write(&location, yaml::to_string(manifest).as_bytes())?;
        }
        Ok(manifest.clone())
    }

    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        self.remove(&Location::object(&resource.kind, namespace, name)?)
    }

    async fn read_inventory(&self, cluster: &str) -> Result<Option<Inventory>, TargetError> {
        let location = Location::inventory(cluster)?;
        match self.read(&location)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                TargetError::Failed(Said::caused(format!("{}: corrupt inventory: {e}", self.shown(&location)), e))
            }),
            None => Ok(None),
        }
    }

    async fn write_inventory(&self, inventory: &Inventory) -> Result<(), TargetError> {
        let bytes = serde_json::to_vec_pretty(inventory).expect("inventories serialise");
        self.write(&Location::inventory(&inventory.cluster)?, &bytes)
    }

    fn reports_health(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    fn resource(kind: &str) -> Resource {
        Resource {
            api_version: "v1".into(),
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            plural: kind.to_lowercase(),
            namespaced: true,
        }
    }

    /// Every entry below `dir` (links not followed) with its kind and content.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_symlink() {
                    format!("link {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    "dir".to_string()
                } else {
                    format!("file {}", std::fs::read_to_string(&path).unwrap_or_default())
                };
                out.insert(path, what);
            }
        }
        out
    }

    /// Should the target ever regress, the escapes this test provokes must not land on the host:
    /// the test's thread may only write below `dir` (where the test sees them). Without Landlock
    /// the test still checks everything, unconfined.
    fn confine_this_thread_to(dir: &Path) {
        use landlock::{ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, path_beneath_rules};
        let abi = ABI::V3;
        let write = AccessFs::from_write(abi);
        Ruleset::default()
            .handle_access(write)
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules([dir], write)))
            .and_then(|r| r.restrict_self())
            .expect("landlock ruleset");
    }

    /// A hostile string: path syntax, NUL, unicode, percent signs, sometimes very long.
    fn hostile(rng: &mut fastrand::Rng) -> String {
        const PIECES: &[&str] = &[
            "..", ".", "/", "../", "/..", "\0", "a", "b-c", "é", "ß", "%2e", "%2F", "\\", "_cluster", ".strata", "~",
            " ",
        ];
        const WHOLE: &[&str] =
            &["", ".", "..", "/", "/etc", "../victim", "../../victim", "..%2f..", "_cluster", ".strata", "ns-link/.."];
        if rng.u8(..8) == 0 {
            return WHOLE[rng.usize(..WHOLE.len())].to_string();
        }
        let pieces = if rng.u8(..16) == 0 { rng.usize(100..400) } else { rng.usize(1..8) };
        (0..pieces).map(|_| PIECES[rng.usize(..PIECES.len())]).collect()
    }

    #[test]
    fn hostile_identities_never_leave_the_root_or_follow_links() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let victim = outer.path().join("victim");
        std::fs::create_dir_all(root.join("planted-file-dir")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("configmap.x.yaml"), "precious").unwrap();
        // Links planted where a namespace directory and an object file would go.
        symlink(&victim, root.join("ns-link")).unwrap();
        symlink("../../victim/configmap.x.yaml", root.join("planted-file-dir/configmap.x.yaml")).unwrap();
        symlink(&victim, root.join(INVENTORY_DIR)).unwrap();
        let outside_before =
            snapshot(outer.path()).into_iter().filter(|(p, _)| !p.starts_with(&root)).collect::<Vec<_>>();
        confine_this_thread_to(outer.path());

        let target = DirectoryTarget::new(&root);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut rng = fastrand::Rng::with_seed(0x5eed_d1c7);
        let mut written = 0;
        for round in 0..4000 {
            let kind = if round % 3 == 0 { "ConfigMap".to_string() } else { hostile(&mut rng) };
            let namespace = match round % 5 {
                0 => None,
                1 => Some("ns-link".to_string()),
                2 => Some("planted-file-dir".to_string()),
                _ => Some(hostile(&mut rng)),
            };
            let name = if round % 7 == 0 { "x".to_string() } else { hostile(&mut rng) };
            let manifest = serde_json::json!({"metadata": {"name": name, "namespace": namespace}});
            let r = resource(&kind);
            runtime.block_on(async {
                if target.apply(&r, &manifest, false, true).await.is_ok() {
                    written += 1;
                }
                let _ = target.get(&r, namespace.as_deref(), &name).await;
                let _ = target.list(&r, namespace.as_deref()).await;
                if rng.bool() {
                    let _ = target.delete(&r, namespace.as_deref(), &name).await;
                }
                let inventory = Inventory { cluster: hostile(&mut rng), ..Inventory::default() };
                let _ = target.write_inventory(&inventory).await;
                let _ = target.read_inventory(&inventory.cluster).await;
            });
        }
        assert!(written > 100, "plain names are still written ({written})");

        let after = snapshot(outer.path());
        let outside_after = after.iter().filter(|(p, _)| !p.starts_with(&root)).map(|(p, w)| (p.clone(), w.clone()));
        assert_eq!(outside_before, outside_after.collect::<Vec<_>>(), "nothing outside the root changed");
        for (path, what) in &after {
            let Ok(relative) = path.strip_prefix(&root) else { continue };
            let depth = relative.components().count();
            assert!(depth <= 2, "{} is deeper than <dir>/<file>", relative.display());
            if what.starts_with("link") {
                assert!(
                    ["ns-link", INVENTORY_DIR, "planted-file-dir/configmap.x.yaml"]
                        .contains(&relative.to_str().unwrap()),
                    "only the planted links are links: {}",
                    relative.display()
                );
            }
        }
    }

    #[test]
    fn planted_links_are_refused_not_followed() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let victim = outer.path().join("victim");
        std::fs::create_dir_all(root.join("apps")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("configmap.x.yaml"), "precious").unwrap();
        symlink(&victim, root.join("web")).unwrap();
        symlink(victim.join("configmap.x.yaml"), root.join("apps/configmap.x.yaml")).unwrap();
        let target = DirectoryTarget::new(&root);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let cm = resource("ConfigMap");
        let manifest = |ns: &str| serde_json::json!({"metadata": {"name": "x", "namespace": ns}, "data": {"a": "b"}});
        runtime.block_on(async {
            let e = target.apply(&cm, &manifest("web"), false, true).await.unwrap_err();
            assert!(e.to_string().contains("never follows links"), "{e}");
            assert!(target.delete(&cm, Some("web"), "x").await.is_err());
            assert!(target.get(&cm, Some("apps"), "x").await.is_err(), "a linked object file is not read");
            // A write replaces the planted link itself; the file it pointed at is untouched.
            target.apply(&cm, &manifest("apps"), false, true).await.unwrap();
            assert!(!std::fs::symlink_metadata(root.join("apps/configmap.x.yaml")).unwrap().is_symlink());
            target.delete(&cm, Some("apps"), "x").await.unwrap();
        });
        assert_eq!(std::fs::read_to_string(victim.join("configmap.x.yaml")).unwrap(), "precious");
    }
}
