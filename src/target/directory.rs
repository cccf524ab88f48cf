//! A directory as a cluster: each object is a file `<namespace or _cluster>/<kind>.<name>.yaml`,
//! read back as the "live" object. For rendered-manifest workflows (another tool applies the
//! files) and for trying strata without a cluster.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Resource, Target, TargetError};
use crate::apply::inventory::Inventory;
use crate::render::object::{group_of, is_cluster_scoped_builtin};
use crate::yaml;

pub struct DirectoryTarget {
    root: PathBuf,
}

impl DirectoryTarget {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirectoryTarget { root: root.into() }
    }

    /// `hello-universe/deployment.ui.yaml`, `_cluster/namespace.kubecost.yaml`.
    pub fn file_of(&self, kind: &str, namespace: Option<&str>, name: &str) -> PathBuf {
        self.root.join(namespace.unwrap_or("_cluster")).join(format!("{}.{name}.yaml", kind.to_lowercase()))
    }

    fn inventory_file(&self, cluster: &str) -> PathBuf {
        self.root.join(".strata").join(format!("inventory-{cluster}.json"))
    }
}

fn io(e: std::io::Error, path: &Path) -> TargetError {
    TargetError::Other(format!("{}: {e}", path.display()))
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TargetError> {
    let dir = path.parent().expect("target files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(e, dir))?;
    std::fs::write(tmp.path(), bytes).map_err(|e| io(e, tmp.path()))?;
    tmp.persist(path).map_err(|e| io(e.error, path))?;
    Ok(())
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
        let path = self.file_of(&resource.kind, namespace, name);
        match std::fs::read_to_string(&path) {
            Ok(text) => yaml::parse::<Value>(&text)
                .map(Some)
                .map_err(|e| TargetError::Other(format!("{}:{}: {}", path.display(), e.line, e.message))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e, &path)),
        }
    }

    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let dir = self.root.join(namespace.unwrap_or("_cluster"));
        let prefix = format!("{}.", resource.kind.to_lowercase());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e, &dir)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(e, &dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_prefix(&prefix).and_then(|f| f.strip_suffix(".yaml"))
                && let Some(object) = self.get(resource, namespace, name).await?
            {
                out.push(object);
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
        if !dry_run {
            let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
            let path = self.file_of(&resource.kind, manifest["metadata"]["namespace"].as_str(), name);
            write_atomic(&path, yaml::to_string(manifest).as_bytes())?;
        }
        Ok(manifest.clone())
    }

    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        let path = self.file_of(&resource.kind, namespace, name);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                // Leave no empty namespace directories behind.
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e, &path)),
        }
    }

    async fn read_inventory(&self, cluster: &str) -> Result<Option<Inventory>, TargetError> {
        let path = self.inventory_file(cluster);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TargetError::Other(format!("{}: corrupt inventory: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e, &path)),
        }
    }

    async fn write_inventory(&self, inventory: &Inventory) -> Result<(), TargetError> {
        let bytes = serde_json::to_vec_pretty(inventory).expect("inventories serialise");
        write_atomic(&self.inventory_file(&inventory.cluster), &bytes)
    }

    fn reports_health(&self) -> bool {
        false
    }
}
