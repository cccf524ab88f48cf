//! The stored objects and every way a request changes them, as kube-apiserver's registry does:
//! create, replace (PUT), merge / strategic-merge / JSON patches and server-side apply, on the
//! main resource or its `status` or `scale` subresource, with resourceVersion and UID
//! preconditions, managed fields, defaults, validation, generation, finalizers, dry-run, and
//! one event per stored change for the watches. In: parsed requests; out: objects or API errors.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use super::Logged;
use super::fields::{self, Changes, FieldSet, Scope};
use super::objects::{self, Rollout};
use super::schema::{self, Kind};
use super::watch::{self, Event, EventType, FieldSelector, Filter, History, LabelSelector, WatchBody, Watcher};

/// (group, plural, namespace, name); the namespace is empty for cluster-scoped kinds.
pub type Key = (String, String, String, String);

/// One `managedFields` entry's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerKey {
    pub manager: String,
    pub operation: &'static str,
    pub subresource: String,
}

#[derive(Clone, Debug)]
pub struct Managed {
    pub api_version: String,
    pub fields: FieldSet,
    pub time: String,
}

type Managers = BTreeMap<ManagerKey, Managed>;

#[derive(Clone, Debug)]
pub struct Stored {
    pub object: Value,
    pub managers: Managers,
}

/// A failed request, as a `Status` object.
#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: Value::Null }
    }

    fn about(mut self, kind: &Kind, name: &str) -> ApiError {
        self.details = json!({"name": name, "group": kind.group, "kind": kind.plural});
        self
    }

    pub fn status(&self) -> Value {
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code.as_u16()});
        if !self.details.is_null() {
            status["details"] = self.details.clone();
        }
        status
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", kind.qualified()))
            .about(kind, name)
    }

    pub fn no_route(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    fn conflict(kind: &Kind, name: &str, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", kind.qualified()),
        )
        .about(kind, name)
    }

    fn modified(kind: &Kind, name: &str) -> ApiError {
        ApiError::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(kind: &Kind, name: &str, errors: &[String]) -> ApiError {
        let list = if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let (field, message) = e.split_once(": ").unwrap_or(("", e));
                json!({"reason": "FieldValueInvalid", "message": message, "field": field})
            })
            .collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", kind.qualified_kind()),
        )
        .about(kind, name)
        .with_causes(causes)
    }

    fn with_causes(mut self, causes: Vec<Value>) -> ApiError {
        self.details["causes"] = Value::Array(causes);
        self
    }

    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// The in-stream or list answer to a resourceVersion that is no longer retained.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, "Expired", message)
    }

    fn too_large(requested: u64, current: u64) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        );
        e.details = json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                           "retryAfterSeconds": 1});
        e
    }
}

/// What a write does.
pub enum Op {
    /// POST to the collection.
    Create(Value),
    /// PUT.
    Replace(Value),
    Patch(PatchType, Value),
    Apply {
        config: Value,
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

pub struct Write {
    pub kind: Kind,
    pub namespace: Option<String>,
    /// From the URL; `None` for a create, which takes it from the body.
    pub name: Option<String>,
    pub subresource: String,
    /// The `fieldManager` parameter, or what the API server derives from the user agent.
    pub manager: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: fields a custom resource's schema does not declare are refused
    /// instead of pruned.
    pub strict: bool,
    pub op: Op,
}

pub struct State {
    pub kinds: Vec<Kind>,
    pub objects: BTreeMap<Key, Stored>,
    pub rollouts: BTreeMap<(String, String, String), Rollout>,
    pub log: Vec<Logged>,
    /// Added to every response, to make applies slow enough to interrupt.
    pub latency: Duration,
    pub revision: u64,
    pub uids: u64,
    pub history: History,
    pub watchers: Vec<Watcher>,
    /// Watches cut off by the black hole: open, and silent for good.
    pub frozen: Vec<Watcher>,
    /// Requests are accepted and never answered.
    pub black_hole: bool,
    /// Answers for the next requests (not watches), in order, instead of serving them.
    pub failures: std::collections::VecDeque<StatusCode>,
    pub bookmark_interval: Duration,
    /// (plural, JSON pointer, reason): writes of objects with a value there are refused.
    pub rejections: Vec<(String, String, String)>,
    /// (path fragment, how long, how many more): the next requests (watches excepted) whose
    /// path contains the fragment are held that long before they are served.
    pub stalls: Vec<(String, Duration, usize)>,
    /// Requests held by a stall so far.
    pub stalled: usize,
}

pub fn now() -> String {
    strata::daemon::store::rfc3339(strata::daemon::store::now())
}

fn rv_of(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty())
}

fn uid_of(object: &Value) -> Option<&str> {
    object["metadata"]["uid"].as_str().filter(|s| !s.is_empty())
}

fn scale_of(object: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                     "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
                     "creationTimestamp": object["metadata"]["creationTimestamp"]},
        "spec": {"replicas": object["spec"]["replicas"]},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
                   "selector": selector_text(&object["spec"]["selector"]["matchLabels"])},
    })
}

fn selector_text(labels: &Value) -> String {
    let pairs: Vec<String> =
        labels.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.join(",")
}

/// What a write on a subresource may change: status only through `/status`, everything but
/// status through the main resource of a kind that has the subresource.
fn scoped(kind: &Kind, subresource: &str, old: &Value, mut new: Value) -> Value {
    let keep_status_of = |target: &mut Value, source: &Value| match source.get("status") {
        Some(status) => target["status"] = status.clone(),
        None => {
            if let Some(map) = target.as_object_mut() {
                map.remove("status");
            }
        }
    };
    match subresource {
        "status" => {
            let mut out = old.clone();
            keep_status_of(&mut out, &new);
            out
        }
        "" if kind.status => {
            keep_status_of(&mut new, old);
            new
        }
        _ => new,
    }
}

fn scope_of(kind: &Kind, subresource: &str) -> Scope {
    match subresource {
        "status" => Scope::Status,
        _ if kind.status => Scope::NoStatus,
        _ => Scope::All,
    }
}

/// Everything generation does not count: metadata, and status where it has a subresource
/// (custom resources without one count status changes, as kube-apiserver does).
fn generation_relevant(kind: &Kind, object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if kind.status || !kind.is_custom() {
            m.remove("status");
        }
    }
    o
}

impl State {
    pub fn new(kinds: Vec<Kind>) -> State {
        State {
            kinds,
            objects: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            log: Vec::new(),
            latency: Duration::ZERO,
            revision: 0,
            uids: 0,
            history: History::default(),
            watchers: Vec::new(),
            frozen: Vec::new(),
            black_hole: false,
            failures: Default::default(),
            bookmark_interval: Duration::from_secs(60),
            rejections: Vec::new(),
            stalls: Vec::new(),
            stalled: 0,
        }
    }

    pub fn key(kind: &Kind, namespace: Option<&str>, name: &str) -> Key {
        let ns = if kind.namespaced { namespace.unwrap_or("default") } else { "" };
        (kind.group.clone(), kind.plural.clone(), ns.to_string(), name.to_string())
    }

    pub fn get(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> Option<&Stored> {
        self.objects.get(&Self::key(kind, namespace, name))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(String::new(), "namespaces".into(), String::new(), ns.to_string()))
    }

    fn require_namespace(&self, kind: &Kind, ns: &str) -> Result<(), ApiError> {
        if !kind.namespaced || self.namespace_exists(ns) {
            return Ok(());
        }
        let namespaces = self.kinds.iter().find(|k| k.plural == "namespaces").expect("built in").clone();
        Err(ApiError::not_found(&namespaces, ns))
    }

    /// The object with `metadata.managedFields`, as the API shows it in `kind`'s version.
    pub fn render(&self, stored: &Stored, kind: &Kind) -> Value {
        let mut object = stored.object.clone();
        object["apiVersion"] = json!(kind.api_version());
        let managed: Vec<Value> = stored
            .managers
            .iter()
            .filter(|(_, m)| !m.fields.is_empty())
            .map(|(key, m)| {
                let mut entry = json!({"manager": key.manager, "operation": key.operation, "apiVersion": m.api_version,
                                       "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields::fields_v1(&m.fields)});
                if !key.subresource.is_empty() {
                    entry["subresource"] = json!(key.subresource);
                }
                entry
            })
            .collect();
        object["metadata"]["managedFields"] = Value::Array(managed);
        object
    }

    pub fn read(&self, kind: &Kind, namespace: Option<&str>, name: &str, subresource: &str) -> Result<Value, ApiError> {
        let stored = self.get(kind, namespace, name).ok_or_else(|| ApiError::not_found(kind, name))?;
        Ok(match subresource {
            "scale" => scale_of(&stored.object),
            _ => self.render(stored, kind),
        })
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn kind_of(&self, group: &str, plural: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.group == group && k.plural == plural)
    }

    /// Records a change, tells the watches, and stores (or forgets) the object.
    fn commit(&mut self, key: Key, stored: Option<Stored>, prev: Option<Value>, revision: u64) -> Value {
        let kind = self.kind_of(&key.0, &key.1).expect("stored kinds are served").clone();
        let (event_type, object) = match &stored {
            Some(s) => (if prev.is_some() { EventType::Modified } else { EventType::Added }, self.render(s, &kind)),
            None => {
                let mut gone = prev.clone().expect("a delete has a previous object");
                gone["metadata"]["resourceVersion"] = json!(revision.to_string());
                (EventType::Deleted, gone)
            }
        };
        let event = Event {
            revision,
            group: key.0.clone(),
            plural: key.1.clone(),
            namespace: key.2.clone(),
            name: key.3.clone(),
            kind: event_type,
            object: object.clone(),
            prev,
        };
        self.watchers.retain(|w| w.deliver(&event));
        self.history.push(event);
        match stored {
            Some(s) => {
                self.objects.insert(key, s);
            }
            None => {
                self.objects.remove(&key);
            }
        }
        object
    }

    pub fn write(&mut self, w: Write) -> Result<(StatusCode, Value), ApiError> {
        let kind = w.kind.clone();
        let sub = w.subresource.as_str();
        let shape = kind.shape();
        let name = match (&w.name, &w.op) {
            (Some(name), _) => name.clone(),
            (None, Op::Create(body)) => {
                match (body["metadata"]["name"].as_str(), body["metadata"]["generateName"].as_str()) {
                    (Some(name), _) if !name.is_empty() => name.to_string(),
                    (_, Some(prefix)) if !prefix.is_empty() => {
                        let suffix: String =
                            (0..5).map(|_| b"bcdfghjklmnpqrstvwxz2456789"[fastrand::usize(..27)] as char).collect();
                        format!("{prefix}{suffix}")
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &kind,
                            "",
                            &["metadata.name: Required value: name or generateName is required".into()],
                        ));
                    }
                }
            }
            (None, _) => return Err(ApiError::method_not_allowed()),
        };
        let ns = kind.namespaced.then(|| w.namespace.clone().unwrap_or_else(|| "default".into()));
        let key = Self::key(&kind, ns.as_deref(), &name);
        let existing = self.objects.get(&key).cloned();
        let scope = scope_of(&kind, sub);
        let skeleton = || {
            let mut o = json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {"name": name}});
            if let Some(ns) = &ns {
                o["metadata"]["namespace"] = json!(ns);
            }
            o
        };
        let body_namespace_matches =
            |body: &Value| body["metadata"]["namespace"].as_str().is_none_or(|b| ns.as_deref().is_none_or(|n| n == b));
        let name_matches = |body: &Value| -> Result<(), ApiError> {
            match body["metadata"]["name"].as_str() {
                Some(n) if n == name => Ok(()),
                other => Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    other.unwrap_or("")
                ))),
            }
        };
        let check_kind = |body: &Value| -> Result<(), ApiError> {
            if sub == "scale" {
                return Ok(());
            }
            if let Some(v) = body["apiVersion"].as_str().filter(|v| *v != kind.api_version()) {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({})",
                    kind.api_version()
                )));
            }
            if let Some(k) = body["kind"].as_str().filter(|k| *k != kind.kind) {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    kind.kind
                )));
            }
            Ok(())
        };
        // Decoding a body strictly refuses what a custom resource's schema does not declare.
        let strictly_decoded = |body: &Value| -> Result<(), ApiError> {
            let Some(schema) = kind.custom.as_ref().filter(|_| w.strict) else { return Ok(()) };
            match schema::prune_and_validate(schema, &mut body.clone()).unknown.first() {
                Some(field) => Err(ApiError::bad_request(format!(
                    "{k} in version \"{v}\" cannot be handled as a {k}: strict decoding error: unknown field \"{field}\"",
                    k = kind.kind,
                    v = kind.version
                ))),
                None => Ok(()),
            }
        };
        let mut managers = existing.as_ref().map(|s| s.managers.clone()).unwrap_or_default();
        let manager_key =
            |operation| ManagerKey { manager: w.manager.clone(), operation, subresource: sub.to_string() };
        // Apply computes ownership from the configuration; the others from what changed.
        let mut applied = false;
        let (new, created) = match w.op {
            Op::Create(body) => {
                strictly_decoded(&body)?;
                if existing.is_some() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{} \"{name}\" already exists", kind.qualified()),
                    )
                    .about(&kind, &name));
                }
                check_kind(&body)?;
                if !body_namespace_matches(&body) {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                if rv_of(&body).is_some() {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "resourceVersion should not be set on objects to be created",
                    ));
                }
                self.require_namespace(&kind, ns.as_deref().unwrap_or(""))?;
                let mut object = body;
                if kind.status {
                    // Create cannot set status where status is a subresource.
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
                (object, true)
            }
            Op::Replace(body) => {
                strictly_decoded(&body)?;
                check_kind(&body)?;
                name_matches(&body)?;
                if !body_namespace_matches(&body) {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                match &existing {
                    None if kind.create_on_update && sub.is_empty() => {
                        if rv_of(&body).is_some() {
                            return Err(ApiError::not_found(&kind, &name));
                        }
                        self.require_namespace(&kind, ns.as_deref().unwrap_or(""))?;
                        (body, true)
                    }
                    None => return Err(ApiError::not_found(&kind, &name)),
                    Some(stored) => {
                        self.preconditions(&kind, &name, &stored.object, &body, true)?;
                        let new = if sub == "scale" {
                            let mut o = stored.object.clone();
                            o["spec"]["replicas"] = body["spec"]["replicas"].clone();
                            o
                        } else {
                            scoped(&kind, sub, &stored.object, body)
                        };
                        (new, false)
                    }
                }
            }
            Op::Patch(patch_type, patch) => {
                let Some(stored) = &existing else { return Err(ApiError::not_found(&kind, &name)) };
                let current = if sub == "scale" { scale_of(&stored.object) } else { stored.object.clone() };
                let mut patched = current.clone();
                match patch_type {
                    PatchType::Merge => fields::merge_patch(&mut patched, &patch),
                    PatchType::Strategic if kind.is_custom() => {
                        return Err(ApiError::unsupported_media(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        ));
                    }
                    PatchType::Strategic => fields::strategic_merge(&mut patched, &patch, &shape),
                    PatchType::Json => {
                        let ops: json_patch::Patch =
                            serde_json::from_value(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
                        json_patch::patch(&mut patched, &ops)
                            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "", e.to_string()))?;
                    }
                }
                if patched["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        patched["metadata"]["name"].as_str().unwrap_or("")
                    )));
                }
                if sub != "scale" {
                    strictly_decoded(&patched)?;
                }
                self.preconditions(&kind, &name, &current, &patched, false)?;
                let new = if sub == "scale" {
                    let mut o = stored.object.clone();
                    o["spec"]["replicas"] = patched["spec"]["replicas"].clone();
                    o
                } else {
                    scoped(&kind, sub, &stored.object, patched)
                };
                (new, false)
            }
            Op::Apply { mut config, force } => {
                check_kind(&config)?;
                // The name may be left out: the object's is the URL's.
                if config["metadata"]["name"].is_string() || existing.is_none() {
                    name_matches(&config)?;
                }
                if !body_namespace_matches(&config) {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                let problems = fields::check_keys(&config, &shape);
                if !problems.is_empty() {
                    return Err(ApiError::invalid(&kind, &name, &problems));
                }
                objects::normalize(&kind, &mut config)?;
                // A configuration is typed by the schema before its fields are owned: what the
                // schema does not declare is dropped (or, strictly validated, refused).
                if let Some(schema) = &kind.custom {
                    let unknown = schema::prune_and_validate(schema, &mut config).unknown;
                    if let Some(field) = unknown.first().filter(|_| w.strict) {
                        return Err(ApiError::bad_request(format!(
                            "failed to create typed patch object ({}, Kind={}): .{field}: field not declared in schema",
                            kind.api_version(),
                            kind.kind
                        )));
                    }
                }
                if let Some(rv) = rv_of(&config) {
                    match &existing {
                        Some(s) if rv_of(&s.object) == Some(rv) => {}
                        Some(_) => return Err(ApiError::modified(&kind, &name)),
                        None => return Err(ApiError::not_found(&kind, &name)),
                    }
                }
                if existing.is_none() {
                    if !sub.is_empty() {
                        return Err(ApiError::not_found(&kind, &name));
                    }
                    self.require_namespace(&kind, ns.as_deref().unwrap_or(""))?;
                }
                let live = existing.as_ref().map(|s| s.object.clone()).unwrap_or_else(skeleton);
                // The system's metadata in a configuration is a precondition at most, never data.
                if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.retain(|k, _| {
                        !matches!(
                            k.as_str(),
                            "resourceVersion"
                                | "uid"
                                | "creationTimestamp"
                                | "generation"
                                | "managedFields"
                                | "selfLink"
                                | "deletionTimestamp"
                                | "deletionGracePeriodSeconds"
                        )
                    });
                }
                let config = match sub {
                    "scale" => json!({"spec": {"replicas": config["spec"]["replicas"]}}),
                    _ => scoped(&kind, sub, &live, config),
                };
                let config_set = fields::field_set(&fields::members(&config, &shape, scope));
                let mut merged = live.clone();
                fields::merge(&mut merged, &config, &shape);
                let applier = manager_key("Apply");
                let last = managers.get(&applier).map(|m| m.fields.clone()).unwrap_or_default();
                for path in last.difference(&config_set) {
                    if !managers.iter().any(|(k, m)| *k != applier && m.fields.contains(path)) {
                        fields::remove(&mut merged, path, &shape);
                    }
                }
                let changes =
                    Changes::between(&fields::members(&live, &shape, scope), &fields::members(&merged, &shape, scope));
                let touched = changes.touched();
                let conflicts: Vec<(ManagerKey, FieldSet)> = managers
                    .iter()
                    .filter(|(k, _)| **k != applier)
                    .map(|(k, m)| (k.clone(), m.fields.intersection(&touched).cloned().collect::<FieldSet>()))
                    .filter(|(_, c)| !c.is_empty())
                    .collect();
                if !conflicts.is_empty() && !force {
                    return Err(apply_conflict(&kind, &name, &conflicts));
                }
                let time = now();
                for (k, m) in managers.iter_mut() {
                    if *k == applier {
                        continue;
                    }
                    let before = m.fields.len();
                    // Without force there were no conflicts, so only forced takeovers lose anything to `touched`.
                    m.fields.retain(|f| !(changes.removed.contains(f) || touched.contains(f)));
                    if m.fields.len() != before {
                        m.time = time.clone();
                    }
                }
                let unchanged = managers.get(&applier).is_some_and(|m| m.fields == config_set);
                if !unchanged {
                    managers.insert(
                        applier,
                        Managed { api_version: kind.api_version(), fields: config_set, time: time.clone() },
                    );
                }
                managers.retain(|_, m| !m.fields.is_empty());
                applied = true;
                (merged, existing.is_none())
            }
        };
        let updater = (!applied).then(|| manager_key("Update"));
        let (code, object) = self.finish(&kind, key, existing, new, managers, updater, created, w.dry_run)?;
        Ok((code, if sub == "scale" { scale_of(&object) } else { object }))
    }

    /// resourceVersion and UID preconditions carried by a replacement or a patched object.
    fn preconditions(
        &self,
        kind: &Kind,
        name: &str,
        current: &Value,
        new: &Value,
        replace: bool,
    ) -> Result<(), ApiError> {
        if let Some(uid) = uid_of(new).filter(|u| Some(*u) != uid_of(current)) {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(current).unwrap_or("")
                ),
            ));
        }
        match rv_of(new) {
            Some(rv) if Some(rv) != rv_of(current) => Err(ApiError::modified(kind, name)),
            Some(_) => Ok(()),
            None if replace && !kind.unconditional_update => Err(ApiError::invalid(
                kind,
                name,
                &["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update".into()],
            )),
            None => Ok(()),
        }
    }

    /// Identity, system metadata, normalisation, defaults, validation, ownership of an update,
    /// generation, the controller, then stores (unless dry-run or a no-op) and tells watches.
    /// What a rejection rule (`ApiServer::reject`) refuses in `object`, quoting the value as
    /// OpenAPI schema validation does: `spec.password: Invalid value: "…": <reason>`.
    fn refusal(&self, kind: &Kind, object: &Value) -> Option<String> {
        let (_, pointer, reason) = self
            .rejections
            .iter()
            .find(|(plural, pointer, _)| *plural == kind.plural && object.pointer(pointer).is_some())?;
        let value = match object.pointer(pointer)? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let field = pointer.trim_start_matches('/').replace('/', ".");
        Some(format!("{field}: Invalid value: {value:?}: {reason}"))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        kind: &Kind,
        key: Key,
        existing: Option<Stored>,
        mut new: Value,
        mut managers: Managers,
        updater: Option<ManagerKey>,
        created: bool,
        dry_run: bool,
    ) -> Result<(StatusCode, Value), ApiError> {
        let name = key.3.clone();
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        new["metadata"]["name"] = json!(name);
        let meta = new["metadata"].as_object_mut().expect("object");
        if kind.namespaced {
            meta.insert("namespace".into(), json!(key.2));
        } else {
            meta.remove("namespace");
        }
        meta.remove("managedFields");
        for field in [
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match existing.as_ref().and_then(|s| s.object["metadata"].get(field)) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        objects::normalize(kind, &mut new)?;
        objects::default(&kind.kind, &mut new);
        let mut errors = match &kind.custom {
            Some(schema) => schema::prune_and_validate(schema, &mut new).errors,
            None => objects::validate(&kind.kind, &new),
        };
        if kind.kind == "CustomResourceDefinition" {
            errors.extend(schema::validate_crd(&new));
        }
        errors.extend(self.refusal(kind, &new));
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, &name, &errors));
        }
        let before = existing.as_ref().map(|s| s.object.clone()).unwrap_or(Value::Null);
        if let Some(updater) = updater {
            let shape = kind.shape();
            let scope = scope_of(kind, &updater.subresource);
            let changes =
                Changes::between(&fields::members(&before, &shape, scope), &fields::members(&new, &shape, scope));
            if !changes.is_empty() {
                let time = now();
                let touched: FieldSet = changes.touched().union(&changes.removed).cloned().collect();
                for (_, m) in managers.iter_mut().filter(|(k, _)| **k != updater) {
                    let count = m.fields.len();
                    m.fields.retain(|f| !touched.contains(f));
                    if m.fields.len() != count {
                        m.time = time.clone();
                    }
                }
                let entry = managers.entry(updater).or_insert_with(|| Managed {
                    api_version: kind.api_version(),
                    fields: FieldSet::new(),
                    time: time.clone(),
                });
                entry.fields.extend(changes.touched());
                entry.fields.retain(|f| !changes.removed.contains(f));
                entry.time = time;
                managers.retain(|_, m| !m.fields.is_empty());
            }
        }
        if kind.generation {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(0);
            let changed = generation_relevant(kind, &new) != generation_relevant(kind, &before);
            new["metadata"]["generation"] = json!(if created {
                1
            } else if changed {
                generation + 1
            } else {
                generation.max(1)
            });
        }
        let rollout =
            self.rollouts.get(&(kind.plural.clone(), key.2.clone(), name.clone())).copied().unwrap_or(Rollout::Ready);
        objects::simulate_controller(&kind.kind, &mut new, rollout);
        if created {
            self.uids += 1;
            new["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uids));
            new["metadata"]["creationTimestamp"] = json!(now());
        }
        let same_fields = |a: &Managers, b: &Managers| {
            a.len() == b.len() && a.iter().zip(b).all(|((ka, ma), (kb, mb))| ka == kb && ma.fields == mb.fields)
        };
        if let Some(stored) = &existing
            && stored.object == new
            && same_fields(&stored.managers, &managers)
        {
            return Ok((StatusCode::OK, self.render(stored, kind)));
        }
        let mut stored = Stored { object: new, managers };
        if dry_run {
            return Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, self.render(&stored, kind)));
        }
        // Removing the last finalizer of an object being deleted completes the delete.
        let finalized = stored.object["metadata"]["deletionTimestamp"].is_string()
            && stored.object["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        let revision = self.next_revision();
        stored.object["metadata"]["resourceVersion"] = json!(revision.to_string());
        let prev = existing.as_ref().map(|s| self.render(s, kind));
        if finalized {
            let shown = self.commit(key.clone(), Some(stored), prev, revision);
            let revision = self.next_revision();
            self.commit(key, None, Some(shown.clone()), revision);
            return Ok((StatusCode::OK, shown));
        }
        if kind.kind == "CustomResourceDefinition" {
            self.register_crd(&stored.object);
        }
        let shown = self.commit(key, Some(stored), prev, revision);
        Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, shown))
    }

    fn register_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or("");
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or("");
        self.kinds.retain(|k| !(k.is_custom() && k.group == group && k.plural == plural));
        self.kinds.extend(schema::crd_kinds(crd));
    }

    /// DELETE of one object, with `DeleteOptions` preconditions and finalizers.
    pub fn delete(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<(StatusCode, Value), ApiError> {
        let key = Self::key(kind, namespace, name);
        let Some(stored) = self.objects.get(&key).cloned() else { return Err(ApiError::not_found(kind, name)) };
        let pre = &options["preconditions"];
        if let Some(uid) = pre["uid"].as_str().filter(|u| Some(*u) != uid_of(&stored.object)) {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(&stored.object).unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = pre["resourceVersion"].as_str().filter(|r| Some(*r) != rv_of(&stored.object)) {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    rv_of(&stored.object).unwrap_or("")
                ),
            ));
        }
        let shown = self.render(&stored, kind);
        if dry_run {
            return Ok((StatusCode::OK, shown));
        }
        let finalizers = stored.object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if finalizers {
            if stored.object["metadata"]["deletionTimestamp"].is_string() {
                return Ok((StatusCode::ACCEPTED, shown));
            }
            let mut marked = stored.clone();
            marked.object["metadata"]["deletionTimestamp"] = json!(now());
            marked.object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let revision = self.next_revision();
            marked.object["metadata"]["resourceVersion"] = json!(revision.to_string());
            let object = self.commit(key, Some(marked), Some(shown), revision);
            return Ok((StatusCode::ACCEPTED, object));
        }
        if kind.kind == "Namespace" {
            let inside: Vec<Key> = self.objects.keys().filter(|k| k.2 == name).cloned().collect();
            for k in inside {
                self.remove(k);
            }
        }
        if kind.kind == "CustomResourceDefinition" {
            let (group, plural) =
                (stored.object["spec"]["group"].clone(), stored.object["spec"]["names"]["plural"].clone());
            let instances: Vec<Key> =
                self.objects.keys().filter(|k| json!(k.0) == group && json!(k.1) == plural).cloned().collect();
            for k in instances {
                self.remove(k);
            }
            self.kinds.retain(|k| !(k.is_custom() && json!(k.group) == group && json!(k.plural) == plural));
            // Watches of a kind that is no longer served end.
            self.watchers.retain(|w| !(json!(w.filter.group) == group && json!(w.filter.plural) == plural));
        }
        let object = self.remove(key);
        // Custom resources and namespaces answer with the object; built-in kinds with a Status.
        if kind.is_custom() || kind.kind == "Namespace" {
            return Ok((StatusCode::OK, object));
        }
        Ok((
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": object["metadata"]["uid"]}}),
        ))
    }

    fn remove(&mut self, key: Key) -> Value {
        let stored = self.objects.get(&key).cloned().expect("present");
        let kind = self.kind_of(&key.0, &key.1).expect("served").clone();
        let shown = self.render(&stored, &kind);
        let revision = self.next_revision();
        self.commit(key, None, Some(shown), revision)
    }

    /// DELETE of a collection: every object the selectors match.
    pub fn delete_collection(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        q: &BTreeMap<String, String>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let filter = self.filter(kind, namespace, q)?;
        let keys: Vec<Key> = self
            .objects
            .iter()
            .filter(|(k, s)| filter.covers(&k.0, &k.1, &k.2) && filter.matches(&s.object))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for k in keys {
            let (_, object) = self.delete(kind, Some(&k.2), &k.3, &Value::Null, dry_run)?;
            items.push(object);
        }
        Ok(json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
                  "metadata": {"resourceVersion": self.revision.to_string()}, "items": items}))
    }

    pub fn filter(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        q: &BTreeMap<String, String>,
    ) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), &kind.kind)
            .map_err(ApiError::bad_request)?;
        Ok(Filter {
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            namespace: if kind.namespaced { namespace.map(str::to_string) } else { None },
            labels,
            fields,
        })
    }

    fn current(&self, filter: &Filter, kind: &Kind) -> BTreeMap<(String, String), Value> {
        self.objects
            .iter()
            .filter(|(k, _)| filter.covers(&k.0, &k.1, &k.2))
            .map(|(k, s)| ((k.2.clone(), k.3.clone()), self.render(s, kind)))
            .collect()
    }

    /// A list: at the current revision, or at an older one for `continue` and
    /// `resourceVersionMatch=Exact`; paged by `limit`.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>, q: &BTreeMap<String, String>) -> Result<Value, ApiError> {
        let filter = self.filter(kind, namespace, q)?;
        let rv = q.get("resourceVersion").filter(|v| !v.is_empty());
        let rv_match = q.get("resourceVersionMatch").filter(|v| !v.is_empty());
        let list_options_invalid = |e: &str| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("ListOptions.meta.k8s.io \"\" is invalid: {e}"),
            )
        };
        if rv_match.is_some() && rv.is_none() {
            return Err(list_options_invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        let continued = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(_) if rv.is_some() => {
                return Err(list_options_invalid(
                    "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
                ));
            }
            Some(token) => {
                Some(watch::parse_continue(token).ok_or_else(|| ApiError::bad_request("invalid continue token"))?)
            }
            None => None,
        };
        let requested = match rv {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                list_options_invalid(&format!(
                    "resourceVersion: Invalid value: \"{v}\": must be a non-negative integer"
                ))
            })?),
            None => None,
        };
        let revision = match (&continued, requested, rv_match.map(String::as_str)) {
            (Some((r, _, _)), _, _) => *r,
            (None, Some(r), Some("Exact")) => {
                if r > self.revision {
                    return Err(ApiError::too_large(r, self.revision));
                }
                r
            }
            (None, Some(r), _) if r > self.revision => return Err(ApiError::too_large(r, self.revision)),
            _ => self.revision,
        };
        let objects = if revision == self.revision {
            self.current(&filter, kind)
        } else {
            let expired = || match continued {
                Some(_) => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ),
                None => ApiError::expired(format!(
                    "too old resource version: {revision} ({})",
                    self.history.compacted() + 1
                )),
            };
            watch::snapshot(self.current(&filter, kind), &self.history, &filter, revision).ok_or_else(expired)?
        };
        let after = continued.map(|(_, ns, name)| (ns, name));
        let mut matching = objects
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .filter(|(_, o)| filter.matches(o))
            .map(|(k, mut o)| {
                o["apiVersion"] = json!(kind.api_version());
                (k, o)
            });
        // resourceVersion=0 is served from the watch cache, which ignores limit.
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0 && !(rv.is_some_and(|v| v == "0") && continued_is_none(q)));
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        let items: Vec<Value> = match limit {
            Some(limit) => {
                let page: Vec<((String, String), Value)> = matching.by_ref().take(limit).collect();
                let rest = matching.count();
                if rest > 0 {
                    let (ns, last) = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
                    metadata["continue"] =
                        json!(watch::continue_token(revision, &(kind.group.clone(), kind.plural.clone(), ns, last)));
                    if q.get("labelSelector").is_none_or(|s| s.is_empty())
                        && q.get("fieldSelector").is_none_or(|s| s.is_empty())
                    {
                        metadata["remainingItemCount"] = json!(rest);
                    }
                }
                page.into_iter().map(|(_, o)| o).collect()
            }
            None => matching.map(|(_, o)| o).collect(),
        };
        Ok(
            json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": metadata, "items": items}),
        )
    }

    /// Opens a watch: what it starts with (synthetic ADDED events, or the history since the
    /// requested revision, or an ERROR), then every matching change until closed.
    pub fn watch(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        q: &BTreeMap<String, String>,
    ) -> Result<WatchBody, ApiError> {
        let filter = self.filter(kind, namespace, q)?;
        let flag = |name: &str| q.get(name).map(|v| v == "true" || v == "1");
        let bookmarks = flag("allowWatchBookmarks").unwrap_or(false);
        let send_initial = flag("sendInitialEvents");
        let rv = q.get("resourceVersion").filter(|v| !v.is_empty()).cloned();
        let rv_match = q.get("resourceVersionMatch").filter(|v| !v.is_empty()).cloned();
        let invalid = |e: &str| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("ListOptions.meta.k8s.io \"\" is invalid: {e}"),
            )
        };
        if send_initial == Some(true) {
            if rv_match.as_deref() != Some("NotOlderThan") {
                return Err(invalid(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !bookmarks {
                return Err(invalid(
                    "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is specified",
                ));
            }
        } else if rv_match.is_some() {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        let requested = match rv.as_deref() {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                invalid(&format!("resourceVersion: Invalid value: \"{v}\": must be a non-negative integer"))
            })?),
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).filter(|t| *t > 0);
        let body = WatchBody { rx, deadline: timeout.map(|t| Box::pin(tokio::time::sleep(Duration::from_secs(t)))) };
        let watcher = Watcher { filter, bookmarks, api_version: kind.api_version(), kind: kind.kind.clone(), tx };
        let error = |e: ApiError| {
            watcher.send("ERROR", e.status());
        };
        let initial = match (send_initial, requested) {
            (Some(true), _) => true,
            (Some(false), _) => false,
            (None, None | Some(0)) => true,
            (None, Some(_)) => false,
        };
        if let Some(r) = requested.filter(|r| *r > self.revision) {
            error(ApiError::too_large(r, self.revision));
            return Ok(body);
        }
        if initial {
            for object in self.current(&watcher.filter, kind).into_values().filter(|o| watcher.filter.matches(o)) {
                watcher.send("ADDED", object);
            }
            if send_initial == Some(true) {
                watcher.bookmark(self.revision, true);
            }
        } else if let Some(r) = requested.filter(|r| *r > 0) {
            let Some(events) = self.history.since(r) else {
                error(ApiError::expired(format!("too old resource version: {r} ({})", self.history.compacted() + 1)));
                return Ok(body);
            };
            for event in events {
                watcher.deliver(event);
            }
        }
        if self.black_hole {
            self.frozen.push(watcher);
        } else {
            self.watchers.push(watcher);
        }
        Ok(body)
    }

    pub fn send_bookmarks(&mut self) {
        let revision = self.revision;
        self.watchers.retain(|w| !w.bookmarks || w.bookmark(revision, false));
    }
}

fn continued_is_none(q: &BTreeMap<String, String>) -> bool {
    q.get("continue").is_none_or(|c| c.is_empty())
}

/// 409 for an apply that would change fields other managers own, as kube-apiserver words it.
fn apply_conflict(kind: &Kind, name: &str, conflicts: &[(ManagerKey, FieldSet)]) -> ApiError {
    let mut lines = Vec::new();
    let mut causes = Vec::new();
    for (manager, paths) in conflicts {
        let who = if manager.subresource.is_empty() {
            format!("\"{}\" using {}", manager.manager, kind.api_version())
        } else {
            format!("\"{}\" with subresource \"{}\" using {}", manager.manager, manager.subresource, kind.api_version())
        };
        for path in paths {
            let field = fields::describe(path);
            lines.push(format!("conflict with {who}: {field}"));
            causes.push(
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": field}),
            );
        }
    }
    let count = lines.len();
    let message =
        format!("Apply failed with {count} conflict{}: {}", if count == 1 { "" } else { "s" }, lines.join("\n"));
    ApiError::new(StatusCode::CONFLICT, "Conflict", message).about(kind, name).with_causes(causes)
}
