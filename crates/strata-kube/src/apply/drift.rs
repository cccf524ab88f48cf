//! Drift: does a live object still hold what strata applied?
//!
//! The comparison is between the live object and the result of a server-side dry-run apply of
//! the desired manifest onto it. Both carry the server's defaults and every other manager's
//! fields, so only fields strata sets and someone changed differ — no false positives from
//! defaulting, other controllers or metadata the server maintains. Fields in ignore rules are
//! removed from both sides first.

use serde::Serialize;
use serde_json::Value;

use crate::render::object::ObjectId;

/// One drifted field (or a deleted object, with path `""`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub id: ObjectId,
    pub layer: String,
    /// JSON pointer of the field; empty when the whole object is gone.
    pub path: String,
    /// The value in the cluster (`None`: missing).
    pub live: Option<Value>,
    /// The value strata applies (`None`: strata would remove it).
    pub desired: Option<Value>,
}

/// Metadata the API server maintains, which never counts as drift.
const SERVER_METADATA: &[&str] =
    &["managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink", "deletionTimestamp"];

/// A copy of `object` without server-maintained metadata, status, and the `ignore`d fields.
pub fn normalise(object: &Value, ignore: &[String]) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in SERVER_METADATA {
                meta.remove(*key);
            }
        }
    }
    for pointer in ignore {
        remove_pointer(&mut out, pointer);
    }
    out
}

/// Whether two objects are equal apart from status, server-maintained metadata and the `ignore`d
/// fields — [`normalise`] on both and compare, without copying either when there is nothing to
/// ignore (the common case, and the hot path of an unchanged re-apply).
pub fn same(a: &Value, b: &Value, ignore: &[String]) -> bool {
    if !ignore.is_empty() {
        return normalise(a, ignore) == normalise(b, ignore);
    }
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    let keys = a.keys().chain(b.keys()).filter(|k| k.as_str() != "status");
    for key in keys {
        let equal = if key == "metadata" {
            let (ma, mb) = (a.get(key).and_then(Value::as_object), b.get(key).and_then(Value::as_object));
            match (ma, mb) {
                (Some(ma), Some(mb)) => ma
                    .keys()
                    .chain(mb.keys())
                    .filter(|k| !SERVER_METADATA.contains(&k.as_str()))
                    .all(|k| ma.get(k) == mb.get(k)),
                _ => a.get(key) == b.get(key),
            }
        } else {
            a.get(key) == b.get(key)
        };
        if !equal {
            return false;
        }
    }
    true
}

/// Whether every field of `desired` holds the same value in `live` (maps may have more keys in
/// `live`; lists must have the same length, item by item).
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv))),
        (Value::Array(l), Value::Array(d)) => l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv)),
        (l, d) => l == d,
    }
}

/// Removes the value at a JSON pointer, if there is one.
pub fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = unescape(last);
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every leaf where `live` and `desired` differ, as (pointer, live, desired). Lists of equal
/// length are compared item by item; lists whose length changed are one difference.
pub fn differences(live: &Value, desired: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    walk(String::new(), Some(live), Some(desired), &mut out);
    out
}

fn walk(
    path: String,
    live: Option<&Value>,
    desired: Option<&Value>,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    match (live, desired) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                walk(format!("{path}/{}", escape(key)), a.get(key), b.get(key), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(format!("{path}/{i}"), Some(x), Some(y), out);
            }
        }
        (a, b) if a != b => out.push((path, a.cloned(), b.cloned())),
        _ => {}
    }
}

/// Findings for one object: `live` against the dry-run result of applying the desired manifest.
pub fn compare(id: &ObjectId, layer: &str, live: Option<&Value>, dry_run: &Value, ignore: &[String]) -> Vec<Finding> {
    let Some(live) = live else {
        return vec![Finding {
            id: id.clone(),
            layer: layer.to_string(),
            path: String::new(),
            live: None,
            desired: None,
        }];
    };
    differences(&normalise(live, ignore), &normalise(dry_run, ignore))
        .into_iter()
        .map(|(path, live, desired)| Finding { id: id.clone(), layer: layer.to_string(), path, live, desired })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> ObjectId {
        ObjectId::new("apps/v1", "Deployment", Some("hello-universe"), "ui")
    }

    fn live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ui", "resourceVersion": "7", "generation": 3, "managedFields": [{"manager": "strata"}],
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"}, "template": {"spec": {"containers": [{"name": "ui", "image": "a:1"}]}}},
            "status": {"replicas": 3}
        })
    }

    #[test]
    fn defaults_other_managers_and_server_metadata_are_not_drift() {
        // A dry-run result has the same defaults and foreign fields as live, and newer metadata.
        let mut dry = live();
        dry["metadata"]["resourceVersion"] = json!("8");
        dry["status"] = json!({"replicas": 1});
        assert_eq!(compare(&id(), "hello-universe", Some(&live()), &dry, &[]), vec![]);
    }

    #[test]
    fn contains_allows_defaults_but_not_changes() {
        let desired =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "ui", "image": "a:1"}]}}}});
        assert!(contains(&live(), &desired));
        let scaled = json!({"spec": {"replicas": 2}});
        assert!(!contains(&live(), &scaled));
        let more_containers =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "ui"}, {"name": "sidecar"}]}}}});
        assert!(!contains(&live(), &more_containers));
    }

    #[test]
    fn same_agrees_with_normalise() {
        let mut other = live();
        other["metadata"]["resourceVersion"] = json!("9");
        other["status"] = json!({});
        assert!(same(&live(), &other, &[]));
        other["spec"]["replicas"] = json!(4);
        assert!(!same(&live(), &other, &[]));
        assert!(same(&live(), &other, &["/spec/replicas".into()]));
        other["metadata"]["labels"] = json!({"a": "b"});
        assert!(!same(&live(), &other, &["/spec/replicas".into()]));
    }

    #[test]
    fn a_scaled_deployment_drifts_at_spec_replicas() {
        let mut dry = live();
        dry["spec"]["replicas"] = json!(1);
        let findings = compare(&id(), "hello-universe", Some(&live()), &dry, &[]);
        assert_eq!(
            findings,
            vec![Finding {
                id: id(),
                layer: "hello-universe".into(),
                path: "/spec/replicas".into(),
                live: Some(json!(3)),
                desired: Some(json!(1))
            }]
        );
        assert_eq!(compare(&id(), "hello-universe", Some(&live()), &dry, &["/spec/replicas".into()]), vec![]);
    }

    #[test]
    fn list_items_and_escaped_keys_get_precise_paths() {
        let mut dry = live();
        dry["spec"]["template"]["spec"]["containers"][0]["image"] = json!("a:2");
        dry["metadata"]["annotations"]["example.com/owner"] = json!("team-a");
        let paths: Vec<_> = compare(&id(), "l", Some(&live()), &dry, &[]).into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["/metadata/annotations/example.com~1owner", "/spec/template/spec/containers/0/image"]);
    }

    #[test]
    fn a_deleted_object_is_one_finding() {
        let findings = compare(&id(), "l", None, &live(), &[]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].path, "");
    }
}
