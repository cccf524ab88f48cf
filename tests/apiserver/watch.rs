//! Lists and watches: label and field selectors, the event history that watches resume from
//! (etcd's revisions, compacted to a configurable length so that tests can force `410 Gone`),
//! list snapshots at an older resourceVersion (for `continue` tokens and
//! `resourceVersionMatch=Exact`), and the open watches events are fanned out to, each a
//! newline-delimited JSON stream of `{"type": …, "object": …}`.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change as etcd records it: the object after (for a delete, its last state at the
/// delete's revision) and before.
#[derive(Clone, Debug)]
pub struct Event {
    pub revision: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
    pub kind: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// The retained events, oldest first. A watch can resume from revision R when every event
/// after R is still here.
pub struct History {
    events: VecDeque<Event>,
    limit: usize,
    /// The newest revision no longer available: resuming from anything older answers 410.
    compacted: u64,
}

pub const DEFAULT_HISTORY: usize = 10_000;

impl Default for History {
    fn default() -> Self {
        History { events: VecDeque::new(), limit: DEFAULT_HISTORY, compacted: 0 }
    }
}

impl History {
    pub fn push(&mut self, event: Event) {
        self.events.push_back(event);
        self.trim();
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.trim();
    }

    /// Forgets every event up to `revision` (etcd compaction).
    pub fn compact(&mut self, revision: u64) {
        while self.events.front().is_some_and(|e| e.revision <= revision) {
            self.events.pop_front();
        }
        self.compacted = self.compacted.max(revision);
    }

    fn trim(&mut self) {
        while self.events.len() > self.limit {
            let gone = self.events.pop_front().expect("non-empty");
            self.compacted = gone.revision;
        }
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Events after `revision`, oldest first; `None` when some of them are gone.
    pub fn since(&self, revision: u64) -> Option<impl DoubleEndedIterator<Item = &Event>> {
        (revision >= self.compacted).then(|| self.events.iter().filter(move |e| e.revision > revision))
    }
}

/// A parsed `labelSelector`.
#[derive(Clone, Debug, Default)]
pub struct LabelSelector(Vec<LabelRequirement>);

#[derive(Clone, Debug)]
enum LabelRequirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

impl LabelRequirement {
    fn key(&self) -> &str {
        match self {
            LabelRequirement::In(k, _)
            | LabelRequirement::NotIn(k, _)
            | LabelRequirement::Exists(k)
            | LabelRequirement::DoesNotExist(k)
            | LabelRequirement::Gt(k, _)
            | LabelRequirement::Lt(k, _) => k,
        }
    }

    fn values(&self) -> &[String] {
        match self {
            LabelRequirement::In(_, vs) | LabelRequirement::NotIn(_, vs) => vs,
            _ => &[],
        }
    }
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.len() <= 253
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && (!key.contains('/') || !prefix.is_empty());
    name_ok && prefix_ok
}

fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(requirements));
        }
        for part in split_top_level(text) {
            let part = part.trim();
            let bad = || format!("unable to parse requirement: found '{part}', expected: key, operator or value");
            let requirement = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_string())
            } else if let Some((key, set, negated)) = set_requirement(part) {
                let values: Vec<String> = set.split(',').map(|v| v.trim().to_string()).collect();
                if negated { LabelRequirement::NotIn(key, values) } else { LabelRequirement::In(key, values) }
            } else if let Some((key, value)) = part.split_once("!=") {
                LabelRequirement::NotIn(key.trim().into(), vec![value.trim().into()])
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                LabelRequirement::In(key.trim().into(), vec![value.trim().into()])
            } else if let Some((key, value)) = part.split_once('>') {
                LabelRequirement::Gt(key.trim().into(), value.trim().parse().map_err(|_| bad())?)
            } else if let Some((key, value)) = part.split_once('<') {
                LabelRequirement::Lt(key.trim().into(), value.trim().parse().map_err(|_| bad())?)
            } else {
                LabelRequirement::Exists(part.to_string())
            };
            let key = requirement.key();
            if !valid_label_key(key) {
                return Err(format!("unable to parse requirement: invalid label key \"{key}\""));
            }
            if let Some(v) = requirement.values().iter().find(|v| !valid_label_value(v)) {
                return Err(format!("unable to parse requirement: invalid label value: \"{v}\""));
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|w| w == v)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|v| vs.iter().all(|w| w != v)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
            LabelRequirement::Gt(k, n) => label(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            LabelRequirement::Lt(k, n) => label(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        })
    }
}

/// `key in (a,b)` / `key notin (a,b)`.
fn set_requirement(part: &str) -> Option<(String, &str, bool)> {
    let open = part.find('(')?;
    let inner = part[open + 1..].strip_suffix(')')?;
    let head = part[..open].trim_end();
    let (key, negated) =
        if let Some(key) = head.strip_suffix(" notin") { (key, true) } else { (head.strip_suffix(" in")?, false) };
    Some((key.trim().to_string(), inner, negated))
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, joined by commas.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, String, bool)>);

/// The fields kube-apiserver lets a kind be selected by, beyond `metadata.name` and `metadata.namespace`.
fn selectable(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || matches!(
            (kind, field),
            ("Secret", "type")
                | ("Namespace", "status.phase")
                | ("Job", "status.successful")
                | (
                    "Pod",
                    "spec.nodeName"
                        | "spec.restartPolicy"
                        | "spec.schedulerName"
                        | "spec.serviceAccountName"
                        | "spec.hostNetwork"
                        | "status.phase"
                        | "status.podIP"
                        | "status.nominatedNodeName"
                )
        )
}

/// Splits at commas not escaped with a backslash, and unescapes `\,`, `\=` and `\\`.
fn split_escaped(text: &str, at: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next != at {
                        parts.last_mut().unwrap().push('\\');
                    }
                    parts.last_mut().unwrap().push(next);
                }
            }
            c if c == at => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

impl FieldSelector {
    pub fn parse(text: &str, kind: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector(requirements));
        }
        for part in split_escaped(text, ',') {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if !selectable(kind, field) {
                return Err(format!("field label not supported: {field}"));
            }
            let value = value.replace("\\=", "=").replace("\\\\", "\\");
            requirements.push((field.to_string(), value, equal));
        }
        Ok(FieldSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, value, equal)| {
            let found = field.split('.').try_fold(object, |v, k| v.get(k));
            let text = match found {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (text == *value) == *equal
        })
    }

    /// The name `metadata.name=` pins, if any: a watch of one object.
    pub fn name(&self) -> Option<&str> {
        self.0.iter().find(|(f, _, eq)| f == "metadata.name" && *eq).map(|(_, v, _)| v.as_str())
    }
}

/// What a list or watch asks for.
#[derive(Clone, Debug)]
pub struct Filter {
    pub group: String,
    pub plural: String,
    /// `None` for all namespaces (and for cluster-scoped kinds).
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn covers(&self, group: &str, plural: &str, namespace: &str) -> bool {
        self.group == group && self.plural == plural && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// An open watch.
pub struct Watcher {
    pub filter: Filter,
    pub bookmarks: bool,
    pub api_version: String,
    pub kind: String,
    pub tx: UnboundedSender<Bytes>,
}

pub fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialises");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl Watcher {
    /// Sends what this watch sees of an event; false once the client has gone.
    pub fn deliver(&self, event: &Event) -> bool {
        if !self.filter.covers(&event.group, &event.plural, &event.namespace) {
            return !self.tx.is_closed();
        }
        let now = self.filter.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| self.filter.matches(p));
        // An object that stops matching leaves the watch as DELETED (its previous content at the
        // new revision); one that starts matching enters as ADDED, as the watch cache does.
        let (kind, object) = match (event.kind, before, now) {
            (EventType::Deleted, true, _) => (EventType::Deleted, event.object.clone()),
            (EventType::Deleted, false, _) => return !self.tx.is_closed(),
            (_, true, true) => (EventType::Modified, event.object.clone()),
            (_, false, true) => (EventType::Added, event.object.clone()),
            (_, true, false) => {
                let mut gone = event.prev.clone().expect("matched before");
                gone["metadata"]["resourceVersion"] = json!(event.revision.to_string());
                (EventType::Deleted, gone)
            }
            (_, false, false) => return !self.tx.is_closed(),
        };
        self.send(kind.name(), object)
    }

    pub fn send(&self, kind: &str, mut object: Value) -> bool {
        if kind != "BOOKMARK" && kind != "ERROR" {
            object["apiVersion"] = json!(self.api_version);
        }
        self.tx.send(line(kind, &object)).is_ok()
    }

    pub fn bookmark(&self, revision: u64, initial_events_end: bool) -> bool {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.send("BOOKMARK", json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": metadata}))
    }
}

/// A watch response body: events as they come, until the watch is closed or times out.
pub struct WatchBody {
    pub rx: UnboundedReceiver<Bytes>,
    pub deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WatchBody {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if let Poll::Ready(Some(bytes)) = self.rx.poll_recv(cx) {
            return Poll::Ready(Some(Frame::data(bytes)));
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Frame::data(bytes))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A `continue` token: the list's revision and the last key returned.
pub fn continue_token(revision: u64, last: &(String, String, String, String)) -> String {
    use base64::Engine as _;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{}/{}\u{0}", last.2, last.3)});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

/// The revision and the (namespace, name) to continue after.
pub fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let start = value["start"].as_str()?.strip_suffix('\u{0}')?;
    let (ns, name) = start.split_once('/')?;
    Some((value["rv"].as_u64()?, ns.to_string(), name.to_string()))
}

/// The objects a filter covers as they were at `revision`: the current ones with the events
/// after it undone. `None` when those events are no longer retained.
pub fn snapshot(
    current: BTreeMap<(String, String), Value>,
    history: &History,
    filter: &Filter,
    revision: u64,
) -> Option<BTreeMap<(String, String), Value>> {
    let mut objects = current;
    for event in history.since(revision)?.rev() {
        if !filter.covers(&event.group, &event.plural, &event.namespace) {
            continue;
        }
        let key = (event.namespace.clone(), event.name.clone());
        match &event.prev {
            Some(prev) => objects.insert(key, prev.clone()),
            None => objects.remove(&key),
        };
    }
    Some(objects)
}
