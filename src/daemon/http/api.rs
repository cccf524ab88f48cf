//! The JSON API: what `strata status`, `approve`, `suspend`, `resume` and `rollout` talk to.
//!
//! In: cluster and rollout names from the path and, for actions, a JSON body `{"by": NAME,
//! "revision": REV}` (`{"by": NAME, "wave": WAVE}` for a rollout's promotion) from a client that
//! showed a bearer token (the authentication layer saw to that). Actions are recorded with the
//! token's name; `by` is kept beside it only for the shared token (`api.token_file`, named
//! `api`), whose holders say who they are with it. Out: the store's state as JSON, and actions
//! through the same functions the view uses.

use crate::daemon::store::Store as _;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::approve::{self, Refused, Seen, SelectionRefused, clean_name};
use super::auth::Viewer;
use super::guard::ConnInfo;
use super::{App, error, fleet, json_reply};
use crate::daemon::Trigger;
use crate::daemon::audit::{self, Actor, Outcome, Via};
use crate::daemon::rollouts::{self, ActError, describe};
use crate::daemon::selection::{self, Invalid, Selector};
use crate::daemon::store::now_ms;
use crate::rollout::gate::Action;

/// The head last evaluated: loaded, or rejected with its diagnostics, and the last good revision;
/// the evaluations of late (what each took together) and the clusters with something to apply.
pub async fn revision(State(app): State<Arc<App>>) -> Response {
    let shared = &app.shared;
    match shared.store.revision().await {
        Ok(revision) => {
            let mut body = json!(revision);
            if body.is_null() {
                body = json!({});
            }
            let evaluations: Vec<_> =
                shared.evaluations.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            body["evaluating"] = json!(evaluations.iter().find(|e| e.verdict == "evaluating").map(|e| &e.head));
            body["evaluations"] = json!(evaluations);
            body["reconciling"] =
                json!(shared.busy.lock().unwrap_or_else(|p| p.into_inner()).iter().collect::<Vec<_>>());
            json_reply(StatusCode::OK, &body)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Every cluster, or with `?limit=N` one page of them by name and a `continue` token for the
/// next (`?limit=N&continue=TOKEN`), as Kubernetes lists page: `{"items": […], "metadata":
/// {"continue": TOKEN, "remainingItemCount": N}}`. Without `limit` (or with `limit=0`) the
/// answer is the whole array, as before paging.
pub async fn clusters(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let shared = &app.shared;
    let (mut limit, mut token) = (0usize, None);
    for (key, value) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => match value.parse() {
                Ok(n) => limit = n,
                Err(_) => {
                    let message = format!(
                        "limit={value:?} is not a number of clusters: give limit=N (N ≥ 1), or no limit for all"
                    );
                    return error(StatusCode::BAD_REQUEST, message);
                }
            },
            "continue" if !value.is_empty() => match fleet::read_continue(&value) {
                Some(last) => token = Some(last),
                None => {
                    let message =
                        "the continue token is not one this daemon gave; list again from the start without `continue`";
                    return error(StatusCode::BAD_REQUEST, message);
                }
            },
            _ => {}
        }
    }
    if limit == 0 && token.is_none() {
        let fleet = match shared.store.fleet().await {
            Ok(f) => f,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let tags = shared.tags.lock().expect("tags lock").clone();
        let rows: Vec<Value> = fleet
            .into_iter()
            .map(|(c, pending)| {
                json!({
                    "cluster": c,
                    "tags": tags.get(&c.name).cloned().unwrap_or_default(),
                    "pending": pending.map(|p| json!({"head_revision": p.head_revision, "summary": p.summary, "hold": p.hold, "since": p.since})),
                })
            })
            .collect();
        return json_reply(StatusCode::OK, &Value::Array(rows));
    }
    let snapshot = match super::view::snapshot(&app).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let limit = if limit == 0 { usize::MAX } else { limit };
    let (range, remaining) = fleet::after(&snapshot.entries, token.as_deref(), limit);
    let items: Vec<Value> = snapshot.entries[range.clone()]
        .iter()
        .map(|e| json!({ "cluster": e.state, "tags": e.tags, "pending": e.pending }))
        .collect();
    let next = (remaining > 0).then(|| fleet::continue_token(&snapshot.entries[range.end - 1].state.name));
    json_reply(
        StatusCode::OK,
        &json!({ "items": items, "metadata": { "continue": next, "remainingItemCount": remaining } }),
    )
}

pub async fn cluster(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let store = &app.shared.store;
    let (state, pending) = match store.cluster_row(&name).await {
        Ok(Some(row)) => row,
        Ok(None) => return no_cluster(&name),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let tags = app.shared.tags.lock().expect("tags lock").get(&name).cloned().unwrap_or_default();
    let shards = &app.shared.shards;
    let shard = shards.shard_of(&name);
    let holder = match app.shared.config.state_backend {
        crate::config::StateBackend::Kubernetes => shards.view().holders.get(shard as usize).cloned().flatten(),
        crate::config::StateBackend::Sqlite => None,
    };
    // A read that fails is a 500, never an empty list that says "nothing".
    let read = async {
        Ok::<_, crate::daemon::store::StoreError>((
            store.drift(&name).await?,
            store.history(&name, crate::daemon::store::HISTORY_KEPT).await?,
            store.approvals(&name).await?,
        ))
    };
    let (drift, history, approvals) = match read.await {
        Ok(read) => read,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    json_reply(
        StatusCode::OK,
        &json!({
            "cluster": state,
            "tags": tags,
            "shard": { "index": shard, "holder": holder },
            "pending": pending.map(|p| p.shown(&state)),
            "drift": drift,
            "history": history,
            "approvals": approvals,
        }),
    )
}

fn no_cluster(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no cluster named {name:?}"))
}

#[derive(Deserialize, Default)]
struct ActionBody {
    by: Option<String>,
    revision: Option<String>,
}

pub async fn act(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    headers: axum::http::HeaderMap,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let shared = &app.shared;
    let (body, by) = match action_body::<ActionBody>(&body, |b| b.by.as_deref(), viewer.as_ref()) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let actor = actor_of(viewer.as_ref(), &by, Via::of_api(&headers), Some(conn.peer));
    match action.as_str() {
        "approve" => match approve::approve(shared, &name, body.revision.as_deref(), &actor).await {
            Ok(approval) => json_reply(StatusCode::ACCEPTED, &json!(approval)),
            Err(refused) => {
                let code = match &refused {
                    Refused::NoCluster => return no_cluster(&name),
                    Refused::MissingRevision | Refused::Malformed(_) | Refused::Ambiguous(_) => StatusCode::BAD_REQUEST,
                    Refused::Forbidden(_) => StatusCode::FORBIDDEN,
                    Refused::NothingPending | Refused::Stale { .. } | Refused::HeldByRollout { .. } => {
                        StatusCode::CONFLICT
                    }
                    Refused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                // What is pending now, for the caller to review; a read that fails says so
                // rather than "nothing pending".
                let pending = match &refused {
                    Refused::Stale { pending } => Ok(Some(pending.clone())),
                    _ => shared.store.pending(&name).await.map(|p| p.map(|p| p.head_revision)),
                };
                let message = format!("{name}: {refused}");
                match pending {
                    Ok(pending) => json_reply(code, &json!({ "error": message, "pending_revision": pending })),
                    Err(e) => {
                        json_reply(code, &json!({ "error": message, "pending_revision_unreadable": e.to_string() }))
                    }
                }
            }
        },
        "suspend" | "resume" => {
            match shared.store.cluster(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => return no_cluster(&name),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
            let suspend = action == "suspend";
            let recorded = shared.store.set_suspended(&name, suspend).await;
            let done = if suspend { "suspend" } else { "resume-cluster" };
            let entry = match &recorded {
                Ok(()) => actor.entry(done, Outcome::Done).detail(if suspend { "suspended" } else { "resumed" }),
                Err(e) => actor.entry(done, Outcome::Refused).detail(e.to_string()),
            };
            audit::record(shared, entry.cluster(&name)).await;
            match recorded {
                Ok(()) => {
                    info!(cluster = %name, by = ?by, "{}", if suspend { "Suspended." } else { "Resumed." });
                    shared.touch();
                    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("{action} of {name}")));
                    json_reply(StatusCode::OK, &json!({ "cluster": name, "suspended": suspend }))
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "actions are approve, suspend and resume"),
    }
}

/// Every rollout of the last good revision: its policy and where it stands.
pub async fn rollouts(State(app): State<Arc<App>>) -> Response {
    let shared = &app.shared;
    let policies = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let read = async {
        Ok::<_, crate::daemon::store::StoreError>((shared.store.rollouts().await?, shared.store.fleet().await?))
    };
    let (progress, fleet) = match read.await {
        Ok(read) => read,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let waiting = selection::waiting(&fleet);
    let rows: Vec<Value> = policies
        .values()
        .map(|policy| describe(policy, progress.iter().find(|p| p.rollout == policy.name), now_ms(), &waiting))
        .collect();
    json_reply(StatusCode::OK, &Value::Array(rows))
}

pub async fn rollout(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let shared = &app.shared;
    let Some(policy) = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no rollout named {name:?}"));
    };
    let read = async {
        Ok::<_, crate::daemon::store::StoreError>((shared.store.rollout(&name).await?, shared.store.fleet().await?))
    };
    match read.await {
        Ok((progress, fleet)) => {
            let waiting = selection::waiting(&fleet);
            json_reply(StatusCode::OK, &describe(&policy, progress.as_ref(), now_ms(), &waiting))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// A selection from a query string: `rollout=NAME&wave=W`, `tag=K:V` (repeated: every one),
/// `all_pending=true`.
fn selector_from_query(query: Option<&str>) -> Selector {
    let mut selector = Selector::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.trim().to_string();
        match key.as_ref() {
            "rollout" if !value.is_empty() => selector.rollout = Some(value),
            "wave" if !value.is_empty() => selector.wave = Some(value),
            "tag" if !value.is_empty() => selector.tags.push(value),
            "all_pending" => selector.all_pending = matches!(value.as_str(), "true" | "1" | "yes"),
            _ => {}
        }
    }
    selector
}

/// `GET /api/v1/approvals?…`: what an approval of the selection covers now — the count, the
/// clusters, the revision, and the digest to approve it by.
pub async fn selection(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    let selector = selector_from_query(uri.query());
    match approve::current(&app.shared, &selector).await {
        Ok(selection) => json_reply(StatusCode::OK, &selection.to_json(&selector)),
        Err(refused) => selection_refused(&refused),
    }
}

#[derive(Deserialize, Default)]
struct SelectionBody {
    by: Option<String>,
    #[serde(flatten)]
    selector: Selector,
    revision: Option<String>,
    digest: Option<String>,
    clusters: Option<Vec<String>>,
}

/// `POST /api/v1/approvals`: approves every pending update a selection covers, at the revision
/// reviewed, when the selection is exactly the one shown (its `digest`, or every name in
/// `clusters`).
pub async fn approve_selection(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (body, by) = match action_body::<SelectionBody>(&body, |b| b.by.as_deref(), viewer.as_ref()) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let seen = match (body.digest, body.clusters) {
        (Some(digest), _) => Some(Seen::Digest(digest)),
        (None, Some(names)) => Some(Seen::Clusters(names)),
        (None, None) => None,
    };
    let actor = actor_of(viewer.as_ref(), &by, Via::of_api(&headers), Some(conn.peer));
    let approved =
        approve::approve_selection(&app.shared, &body.selector, body.revision.as_deref(), seen.as_ref(), &actor);
    match approved.await {
        Ok((selection, _)) => {
            let mut answer = selection.to_json(&body.selector);
            answer["approved_by"] = json!(by);
            json_reply(StatusCode::ACCEPTED, &answer)
        }
        Err(refused) => selection_refused(&refused),
    }
}

/// A refused selection: 400 for what the request got wrong, 409 for what changed (with the
/// selection as it is now, to look at again), 404 for an unknown rollout.
pub fn selection_refused(refused: &SelectionRefused) -> Response {
    let code = match refused {
        SelectionRefused::Invalid(Invalid::NoRollout(_) | Invalid::NoWave { .. }) => StatusCode::NOT_FOUND,
        SelectionRefused::Invalid(_) | SelectionRefused::Revision(_) | SelectionRefused::MissingSeen => {
            StatusCode::BAD_REQUEST
        }
        SelectionRefused::Nothing { .. }
        | SelectionRefused::Revisions(_)
        | SelectionRefused::Stale { .. }
        | SelectionRefused::Changed { .. } => StatusCode::CONFLICT,
        SelectionRefused::Forbidden { .. } => StatusCode::FORBIDDEN,
        SelectionRefused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = json!({ "error": refused.to_string() });
    if let SelectionRefused::Stale { selection, .. } | SelectionRefused::Changed { selection } = refused {
        body["now"] = json!({
            "count": selection.clusters.len(),
            "clusters": selection.names(),
            "revisions": selection.revisions(),
            "digest": selection.digest,
        });
    }
    json_reply(code, &body)
}

#[derive(Deserialize, Default)]
struct RolloutBody {
    by: Option<String>,
    /// For `promote`: the wave the client saw waiting, and the revision being rolled out then.
    wave: Option<String>,
    revision: Option<String>,
}

/// `promote`, `pause`, `resume` or `abort` a rollout.
pub async fn act_on_rollout(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    headers: axum::http::HeaderMap,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (body, by) = match action_body::<RolloutBody>(&body, |b| b.by.as_deref(), viewer.as_ref()) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let action = match Action::parse(&action) {
        Some(Action::Promote { .. }) => Action::Promote { wave: body.wave, revision: body.revision },
        Some(action) => action,
        None => return error(StatusCode::NOT_FOUND, "rollout actions are promote, pause, resume and abort"),
    };
    act_reply(&app, &name, &action, &actor_of(viewer.as_ref(), &by, Via::of_api(&headers), Some(conn.peer))).await
}

/// The answer to a rollout action, for the API and the view alike.
pub async fn act_reply(app: &App, name: &str, action: &Action, actor: &Actor) -> Response {
    match rollouts::act(&app.shared, name, action, actor).await {
        Ok((done, progress)) => {
            json_reply(StatusCode::OK, &json!({ "rollout": name, "done": done, "progress": progress }))
        }
        Err(e) => {
            let code = match &e {
                ActError::NoRollout(_) => StatusCode::NOT_FOUND,
                ActError::Idle(_) | ActError::Refused(_) => StatusCode::CONFLICT,
                ActError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                ActError::Forbidden(_) => StatusCode::FORBIDDEN,
                ActError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, e)
        }
    }
}

/// Who acts: the viewer's identity (with its groups), recorded as `by`.
fn actor_of(viewer: Option<&Viewer>, by: &str, via: Via, from: Option<std::net::SocketAddr>) -> Actor {
    match viewer {
        Some(viewer) => Actor::of(viewer.identity(), by, via, from),
        None => Actor::new(by, via, from),
    }
}

/// The JSON body of an action (empty means all defaults) and who acts: the token's name, with
/// what `by` says beside it for the shared token.
#[allow(clippy::result_large_err)] // the error is the response, returned at once
fn action_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    by: impl Fn(&T) -> Option<&str>,
    viewer: Option<&Viewer>,
) -> Result<(T, String), Response> {
    let parsed: T = if body.iter().all(u8::is_ascii_whitespace) {
        T::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("the body is not the JSON object expected: {e}")))?
    };
    let said = match by(&parsed).map(clean_name) {
        None => None,
        Some(Some(name)) => Some(name),
        Some(None) => {
            return Err(error(StatusCode::BAD_REQUEST, "`by` must be a name of 1 to 100 printable characters"));
        }
    };
    let who = match viewer {
        Some(viewer) => viewer.saying(said.as_deref()).name().to_string(),
        None => "api".to_string(),
    };
    Ok((parsed, who))
}

/// `GET /api/v1/audit?since=&cluster=&user=&limit=`: the audit trail, newest first. `since` is
/// an RFC 3339 time (`2026-12-07T09:00:00Z`) or milliseconds since the epoch.
pub async fn audit_log(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    let mut query = audit::Query { limit: 1000, ..audit::Query::default() };
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let value = value.trim().to_string();
        match key.as_ref() {
            "since" if !value.is_empty() => match parse_since(&value) {
                Some(at) => query.since = Some(at),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "since {value:?} is not a time: give 2026-12-07T09:00:00Z or milliseconds since the epoch"
                        ),
                    );
                }
            },
            "cluster" if !value.is_empty() => query.cluster = Some(value),
            "user" if !value.is_empty() => query.user = Some(value),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=audit::Query::MOST).contains(&n) => query.limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit {value:?} is not from 1 to {}", audit::Query::MOST),
                    );
                }
            },
            _ => {}
        }
    }
    match app.shared.store.audit_log(&query).await {
        Ok(entries) => json_reply(StatusCode::OK, &json!(entries)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Milliseconds since the epoch, or an RFC 3339 time.
pub fn parse_since(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}
