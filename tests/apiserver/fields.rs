//! Field ownership and merging as structured-merge-diff does it for server-side apply, and
//! strategic merge patches: objects in, field sets (`FieldsV1`), merged objects and change sets
//! out. Maps are walked field by field unless atomic; associative lists (`listType=map`) by
//! item key, sets by value, atomic lists as one field. Paths name fields only through
//! `Shape`, which knows the list and map types.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::schema::{ListType, Shape};

/// One step of a field path, as `FieldsV1` spells them: `f:name`, `k:{"name":"app"}`, `v:"x"`, `i:0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    Field(String),
    /// The item's key fields as canonical JSON, keys sorted.
    Key(String),
    /// A set member as JSON.
    Value(String),
    Index(usize),
}

pub type FieldPath = Vec<Elem>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Every member of an object: leaves with their values, list items (`k:`) with `None`.
pub type Members = BTreeMap<FieldPath, Option<Value>>;

/// Which part of an object a write may own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything but identity and system metadata.
    All,
    /// Everything but status (main resource of a kind with a status subresource).
    NoStatus,
    /// Only status (the status subresource).
    Status,
}

/// Metadata the API server owns: never part of anyone's field set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

pub fn members(object: &Value, shape: &Shape, scope: Scope) -> Members {
    let mut out = Members::new();
    let Some(map) = object.as_object() else { return out };
    for (field, value) in map {
        let keep = match field.as_str() {
            "apiVersion" | "kind" => false,
            "status" => scope != Scope::NoStatus,
            _ => scope != Scope::Status,
        };
        if !keep {
            continue;
        }
        let mut path = vec![Elem::Field(field.clone())];
        let mut names = vec![field.clone()];
        if field == "metadata" {
            for (k, v) in value.as_object().into_iter().flatten() {
                if SYSTEM_METADATA.contains(&k.as_str()) {
                    continue;
                }
                path.push(Elem::Field(k.clone()));
                names.push(k.clone());
                walk(v, &mut path, &mut names, shape, &mut out);
                path.pop();
                names.pop();
            }
        } else {
            walk(value, &mut path, &mut names, shape, &mut out);
        }
    }
    out
}

pub fn field_set(members: &Members) -> FieldSet {
    members.keys().cloned().collect()
}

fn walk(value: &Value, path: &mut FieldPath, names: &mut Vec<String>, shape: &Shape, out: &mut Members) {
    match value {
        Value::Object(map) if !map.is_empty() && !shape.atomic_map(names) => walk_fields(map, path, names, shape, out),
        Value::Array(items) => match shape.list_type(names) {
            ListType::Atomic => {
                out.insert(path.clone(), Some(value.clone()));
            }
            ListType::Set => {
                for item in items {
                    path.push(Elem::Value(item.to_string()));
                    out.insert(path.clone(), Some(item.clone()));
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(item_elem(item, &keys, shape).unwrap_or(Elem::Index(i)));
                    out.insert(path.clone(), None);
                    if let Some(fields) = item.as_object() {
                        walk_fields(fields, path, names, shape, out);
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone(), Some(value.clone()));
        }
    }
}

fn walk_fields(
    map: &Map<String, Value>,
    path: &mut FieldPath,
    names: &mut Vec<String>,
    shape: &Shape,
    out: &mut Members,
) {
    for (k, child) in map {
        path.push(Elem::Field(k.clone()));
        names.push(k.clone());
        walk(child, path, names, shape, out);
        path.pop();
        names.pop();
    }
}

/// An associative list item's key, its missing key fields defaulted; `None` when a key field
/// is missing with no default.
fn item_elem(item: &Value, keys: &[String], shape: &Shape) -> Option<Elem> {
    let mut parts = Vec::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        let value = item.get(k).cloned().or_else(|| shape.key_default(k))?;
        parts.push(format!("{}:{}", Value::String(k.clone()), value));
    }
    Some(Elem::Key(format!("{{{}}}", parts.join(","))))
}

/// Problems with an applied configuration's associative lists: items without their key, and
/// the same key twice.
pub fn check_keys(config: &Value, shape: &Shape) -> Vec<String> {
    fn visit(value: &Value, names: &mut Vec<String>, shape: &Shape, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !shape.atomic_map(names) => {
                for (k, child) in map {
                    names.push(k.clone());
                    visit(child, names, shape, out);
                    names.pop();
                }
            }
            Value::Array(items) => {
                if let ListType::Map(keys) = shape.list_type(names) {
                    let mut seen = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        match item_elem(item, &keys, shape) {
                            None => out.push(format!(
                                ".{}: element {i}: associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                                names.join("."),
                                keys.iter().find(|k| item.get(*k).is_none()).cloned().unwrap_or_default()
                            )),
                            Some(e) if !seen.insert(e.clone()) => out.push(format!(
                                ".{}: duplicate entries for key {}",
                                names.join("."),
                                describe(&[e])
                            )),
                            Some(_) => {}
                        }
                        if item.is_object() {
                            visit(item, names, shape, out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    visit(config, &mut Vec::new(), shape, &mut out);
    out
}

/// What changed between two objects' members.
#[derive(Default, Debug)]
pub struct Changes {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Changes {
    pub fn between(old: &Members, new: &Members) -> Changes {
        let mut changes = Changes::default();
        for (path, value) in new {
            match old.get(path) {
                None => {
                    changes.added.insert(path.clone());
                }
                Some(before) if before != value => {
                    changes.modified.insert(path.clone());
                }
                Some(_) => {}
            }
        }
        changes.removed = old.keys().filter(|p| !new.contains_key(*p)).cloned().collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// Added or modified: what another manager must not own unless forced.
    pub fn touched(&self) -> FieldSet {
        self.added.union(&self.modified).cloned().collect()
    }
}

/// An applied configuration merged over the live object.
pub fn merge(live: &mut Value, config: &Value, shape: &Shape) {
    merge_at(live, config, &mut Vec::new(), shape);
}

fn merge_at(live: &mut Value, config: &Value, names: &mut Vec<String>, shape: &Shape) {
    match (&mut *live, config) {
        (Value::Object(l), Value::Object(c)) if !shape.atomic_map(names) => {
            for (k, cv) in c {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge_at(lv, cv, names, shape),
                    None => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let elem = |item: &Value, i: usize, keys: &[String]| item_elem(item, keys, shape).unwrap_or(Elem::Index(i));
            match shape.list_type(names) {
                ListType::Atomic => *l = c.clone(),
                ListType::Set => {
                    let merged = merge_list(l, c, |v, _| Elem::Value(v.to_string()), |l, r| r.or(l).cloned().unwrap());
                    *l = merged;
                }
                ListType::Map(keys) => {
                    let merged = merge_list(
                        l,
                        c,
                        |v, i| elem(v, i, &keys),
                        |l, r| match (l, r) {
                            (Some(l), Some(r)) => {
                                let mut out = l.clone();
                                merge_at(&mut out, r, names, shape);
                                out
                            }
                            (l, r) => r.or(l).cloned().unwrap(),
                        },
                    );
                    *l = merged;
                }
            }
        }
        (l, c) => *l = c.clone(),
    }
}

/// structured-merge-diff's list merge: items of both sides merged, in the configuration's
/// order for the items it names, live-only items kept where they stood.
fn merge_list(
    lhs: &[Value],
    rhs: &[Value],
    elem: impl Fn(&Value, usize) -> Elem,
    mut merge_item: impl FnMut(Option<&Value>, Option<&Value>) -> Value,
) -> Vec<Value> {
    let lpe: Vec<Elem> = lhs.iter().enumerate().map(|(i, v)| elem(v, i)).collect();
    let rpe: Vec<Elem> = rhs.iter().enumerate().map(|(i, v)| elem(v, i)).collect();
    let lobs: HashMap<&Elem, &Value> = lpe.iter().zip(lhs).collect();
    let robs: HashMap<&Elem, &Value> = rpe.iter().zip(rhs).collect();
    let shared: Vec<&Elem> = rpe.iter().filter(|pe| lobs.contains_key(pe)).collect();
    let mut next_shared = 0;
    let mut merged_rhs: BTreeSet<&Elem> = BTreeSet::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    while li < lpe.len() || ri < rpe.len() {
        if li < lpe.len() && ri < rpe.len() {
            let pe = &lpe[li];
            if *pe == rpe[ri] {
                merged_rhs.insert(pe);
                out.push(merge_item(lobs.get(pe).copied(), robs.get(pe).copied()));
                li += 1;
                ri += 1;
                if shared.get(next_shared) == Some(&pe) {
                    next_shared += 1;
                }
                continue;
            }
            if robs.contains_key(pe) && shared.get(next_shared).is_some_and(|s| *s != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpe.len() {
            let pe = &lpe[li];
            if !robs.contains_key(pe) {
                out.push(merge_item(Some(&lhs[li]), None));
                li += 1;
                continue;
            } else if merged_rhs.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ri < rpe.len() {
            let pe = &rpe[ri];
            merged_rhs.insert(pe);
            out.push(merge_item(lobs.get(pe).copied(), robs.get(pe).copied()));
            ri += 1;
            if shared.get(next_shared) == Some(&pe) {
                next_shared += 1;
            }
        }
    }
    out
}

/// Removes the field or list item at `path`; a no-op when it is not there.
pub fn remove(object: &mut Value, path: &[Elem], shape: &Shape) {
    let mut names = Vec::new();
    remove_at(object, path, &mut names, shape);
}

fn remove_at(node: &mut Value, path: &[Elem], names: &mut Vec<String>, shape: &Shape) {
    let Some((first, rest)) = path.split_first() else { return };
    match first {
        Elem::Field(name) => {
            let Some(map) = node.as_object_mut() else { return };
            if rest.is_empty() {
                map.remove(name);
            } else if let Some(child) = map.get_mut(name) {
                names.push(name.clone());
                remove_at(child, rest, names, shape);
                names.pop();
            }
        }
        Elem::Key(_) | Elem::Value(_) | Elem::Index(_) => {
            let list_type = shape.list_type(names);
            let Some(items) = node.as_array_mut() else { return };
            let position = items.iter().enumerate().position(|(i, item)| {
                let this = match (&list_type, first) {
                    (ListType::Map(keys), _) => item_elem(item, keys, shape).unwrap_or(Elem::Index(i)),
                    (ListType::Set, _) => Elem::Value(item.to_string()),
                    (ListType::Atomic, _) => Elem::Index(i),
                };
                this == *first
            });
            let Some(i) = position else { return };
            if rest.is_empty() {
                items.remove(i);
            } else {
                remove_at(&mut items[i], rest, names, shape);
            }
        }
    }
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elem::Field(name) => write!(f, "f:{name}"),
            Elem::Key(key) => write!(f, "k:{key}"),
            Elem::Value(value) => write!(f, "v:{value}"),
            Elem::Index(i) => write!(f, "i:{i}"),
        }
    }
}

/// A field set as `metadata.managedFields[].fieldsV1`: `.` marks a member that also has members below it.
pub fn fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for elem in path {
            node = node.entry(elem.to_string()).or_insert_with(|| json!({})).as_object_mut().expect("object");
        }
        let has_children = set.range(path.clone()..).nth(1).is_some_and(|next| next.starts_with(path));
        if has_children {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// A path as conflict messages show it: `.spec.containers[name="app"].image`.
pub fn describe(path: &[Elem]) -> String {
    let mut out = String::new();
    for elem in path {
        match elem {
            Elem::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Elem::Key(key) => {
                let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Elem::Value(value) => out.push_str(&format!("[={value}]")),
            Elem::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A strategic merge patch over an object. Lists kube-apiserver merges by key (the first key
/// of the list's server-side-apply keys, which is its `patchMergeKey`) are merged item by item,
/// sets are unioned, other lists replaced; `$patch: delete|replace`, `$retainKeys` and
/// `$deleteFromPrimitiveList/<field>` are honoured, `$setElementOrder/<field>` is accepted.
pub fn strategic_merge(live: &mut Value, patch: &Value, shape: &Shape) {
    strategic_at(live, patch, &mut Vec::new(), shape);
}

fn strategic_at(live: &mut Value, patch: &Value, names: &mut Vec<String>, shape: &Shape) {
    let Some(p) = patch.as_object() else {
        *live = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = p.clone();
            replaced.remove("$patch");
            *live = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *live = Value::Null;
            return;
        }
        _ => {}
    }
    if !live.is_object() {
        *live = json!({});
    }
    let l = live.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) = (l.get_mut(field), v.as_array()) {
                items.retain(|item| !gone.contains(item));
            }
            continue;
        }
        names.push(k.clone());
        if v.is_null() {
            l.remove(k);
        } else if v.is_object() && !shape.atomic_map(names) {
            let child = l.entry(k.clone()).or_insert_with(|| json!({}));
            strategic_at(child, v, names, shape);
            if child.is_null() {
                l.remove(k);
            }
        } else if let (Some(items), Some(Value::Array(existing))) = (v.as_array(), l.get_mut(k)) {
            match shape.list_type(names) {
                ListType::Map(keys) => strategic_list(existing, items, &keys[0], names, shape),
                ListType::Set => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                ListType::Atomic => *existing = items.clone(),
            }
        } else {
            let mut value = v.clone();
            strip_directives(&mut value);
            l.insert(k.clone(), value);
        }
        names.pop();
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        l.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn strategic_list(existing: &mut Vec<Value>, items: &[Value], key: &str, names: &mut Vec<String>, shape: &Shape) {
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *existing = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
        return;
    }
    for item in items {
        let position = existing.iter().position(|e| e.get(key).is_some() && e.get(key) == item.get(key));
        match (position, item.get("$patch").and_then(Value::as_str)) {
            (Some(i), Some("delete")) => {
                existing.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_at(&mut existing[i], item, names, shape),
            (None, _) => {
                let mut value = item.clone();
                strip_directives(&mut value);
                existing.push(value);
            }
        }
    }
}

/// Directives left in a value that lands as is (a new field or item) are not data.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 7386 merge patch: `null` removes, objects merge, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if let (Some(existing), true) = (t.get_mut(k), v.is_object()) {
                    if !existing.is_object() {
                        *existing = json!({});
                    }
                    merge_patch(existing, v);
                } else {
                    let mut value = v.clone();
                    if value.is_object() {
                        let mut fresh = json!({});
                        merge_patch(&mut fresh, &value);
                        value = fresh;
                    }
                    t.insert(k.clone(), value);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
