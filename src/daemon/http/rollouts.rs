//! The status view's rollout pages: every rollout; one rollout's waves as progress bars with
//! their clusters, what holds the next wave, and a Promote button.
//!
//! In: the rollout policies of the last good revision and their progress in the store; from the
//! browser, a promotion form carrying the session's CSRF token, and the wave and revision the
//! page showed (a promotion of anything else is refused, as an approval of an unreviewed
//! revision is). Out: HTML from `rollouts.html` and `rollout.html`; promotions go through
//! [`crate::daemon::rollouts::act`], as the API's do.

use crate::daemon::store::Store as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use minijinja::value::Serde;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::App;
use super::approve;
use super::auth::Viewer;
use super::guard::ConnInfo;
use super::view::{Link, Rev, redirect, rev, segment, signed_in_form, who};
use crate::daemon::audit::{Actor, Via};
use crate::daemon::rollouts::{self, ActError, describe};
use crate::daemon::selection::{self, Selector};
use crate::daemon::store::now_ms;
use crate::rollout::gate::{Action, ClusterRun};

#[derive(Serialize)]
pub(super) struct Row {
    rollout: String,
    file: String,
    state: &'static str,
    rev: Rev,
    total: usize,
    updated: usize,
    next: Option<String>,
}

pub async fn list(State(app): State<Arc<App>>, Extension(viewer): Extension<Option<Viewer>>) -> Response {
    let shared = &app.shared;
    let who = who(&viewer);
    let policies = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let progress = match shared.store.rollouts().await {
        Ok(p) => p,
        Err(e) => return app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e.to_string(), None),
    };
    let rows: Vec<Row> = policies
        .values()
        .map(|policy| {
            let p = progress.iter().find(|p| p.rollout == policy.name);
            Row {
                rollout: policy.name.clone(),
                file: policy.file.clone(),
                state: p.map_or("idle", |p| p.state.as_str()),
                rev: rev(shared, p.map(|p| p.revision.as_str())),
                total: p.map_or(0, |p| p.clusters.len()),
                updated: p.map_or(0, |p| p.count(ClusterRun::Updated)),
                next: p.map(|p| p.next.clone()),
            }
        })
        .collect();
    app.pages.page(
        StatusCode::OK,
        "rollouts.html",
        context! { title => "rollouts", who => Serde(who), rollouts => Serde(rows) },
    )
}

fn no_rollout(app: &App, name: &str, who: &Option<super::view::Who>) -> Response {
    let message = format!("No rollout named {name:?} in the repository.");
    app.pages.message(StatusCode::NOT_FOUND, "not found", who, &message, Some(Link::to("/rollouts", "The rollouts")))
}

pub async fn page(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Path(name): Path<String>,
) -> Response {
    let shared = &app.shared;
    let who = who(&viewer);
    let Some(policy) = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).get(&name).cloned() else {
        return no_rollout(&app, &name, &who);
    };
    let progress = match shared.store.rollout(&name).await {
        Ok(p) => p,
        Err(e) => return app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e.to_string(), None),
    };
    let fleet = match shared.store.fleet().await {
        Ok(f) => f,
        Err(e) => return app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e.to_string(), None),
    };
    let mut described = describe(&policy, progress.as_ref(), now_ms(), &selection::waiting(&fleet));
    // Each wave whose clusters wait for their own approval gets one form for all of them, bound
    // to the selection as it is now (its revision and digest).
    for wave in described["waves"].as_array_mut().into_iter().flatten() {
        if wave["awaitingApproval"].is_null() {
            continue;
        }
        let selector = Selector {
            rollout: Some(name.clone()),
            wave: wave["name"].as_str().map(str::to_string),
            ..Selector::default()
        };
        if let Ok(selection) = approve::current(shared, &selector).await {
            let mut json = selection.to_json(&selector);
            if let Some(v) = &viewer {
                let actor = Actor::of(v.identity(), v.name(), Via::View, None);
                json["forbidden"] = serde_json::json!(approve::forbidden_in(shared, &selection, &actor).await);
            }
            wave["selection"] = json;
        }
    }
    let promote_forbidden = match viewer.as_ref().filter(|_| !described["promotion"].is_null()) {
        Some(v) => {
            let actor = Actor::of(v.identity(), v.name(), Via::View, None);
            let wave = described["promotion"]["starts"].as_str();
            rollouts::promotion_refused(shared, &name, wave, &actor).await.unwrap_or_else(|e| Some(e.to_string()))
        }
        None => None,
    };
    app.pages.page(
        StatusCode::OK,
        "rollout.html",
        context! {
            promote_forbidden,
            title => format!("rollout {name}"),
            here => format!("/rollouts/{}", segment(&name)),
            who => Serde(who),
            revision => Serde(rev(shared, progress.as_ref().map(|p| p.revision.as_str()))),
            r => Serde(described),
        },
    )
}

#[derive(Deserialize)]
pub struct PromoteForm {
    csrf: Option<String>,
    wave: Option<String>,
    revision: Option<String>,
}

pub async fn promote(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PromoteForm>,
) -> Response {
    let refused = |viewer: &Viewer| {
        warn!(rollout = ?name, user = ?viewer.name(), "Promotion refused: the form failed the CSRF check.");
    };
    let (viewer, who) =
        match signed_in_form(&app, viewer, &conn, &headers, form.csrf.as_deref(), "promote", refused).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
    let here = format!("/rollouts/{}", segment(&name));
    // The wave and revision the page showed: what the person decided on.
    let action = Action::Promote {
        wave: form.wave.filter(|w| !w.is_empty()),
        revision: Some(form.revision.unwrap_or_default()).filter(|r| !r.is_empty()),
    };
    let actor = Actor::of(viewer.identity(), viewer.name(), Via::View, Some(conn.peer));
    match rollouts::act(&app.shared, &name, &action, &actor).await {
        Ok(_) => redirect(&here, None),
        Err(ActError::NoRollout(_)) => no_rollout(&app, &name, &who),
        Err(e @ (ActError::Refused(_) | ActError::Idle(_))) => {
            let message = format!("Not promoted: {e}.");
            app.pages.message(StatusCode::CONFLICT, "not promoted", &who, &message, Some(Link::to(&here, "Look again")))
        }
        Err(ActError::Forbidden(why)) => {
            let message = format!("Not promoted: {why}.");
            app.pages.message(StatusCode::FORBIDDEN, "not promoted", &who, &message, Some(Link::to(&here, "Back")))
        }
        Err(e) => app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::view::{Pages, Who};
    use super::*;
    use crate::rollout::gate::{Before, Change, Health, Member, Running, gate};
    use crate::rollout::policy::Approval;
    use crate::rollout::policy::testing::{rollout, wave};

    #[test]
    fn a_rollout_page_shows_waves_as_progress_bars_and_a_promote_form_with_the_session_token() {
        let mut staging = wave("staging", "env:staging");
        staging.bake = Duration::from_secs(600);
        let mut prod = wave("prod", "");
        prod.approval = Approval::Manual;
        let policy = rollout(vec![staging, prod]);
        let tags = [vec!["env:staging".to_string()], vec!["env:prod".to_string()]];
        let running = |digest: &str| Running {
            before: Before {
                profile_revision: "r0".into(),
                cluster_revision: "r0".into(),
                digest: digest.into(),
                what: "web@1.0.0".into(),
            },
            health: Health::Healthy,
            applied_at: None,
        };
        let change = Change { cause: crate::rollout::Cause::NewVersion, to: "web@1.1.0".into(), target: "new".into() };
        let members = |staged: bool| {
            vec![
                Member {
                    name: "<stage>",
                    tags: &tags[0],
                    change: (!staged).then(|| change.clone()),
                    running: Some(running(if staged { "new" } else { "old" })),
                    drift_at: None,
                    awaits_approval: false,
                },
                Member {
                    name: "prod-1",
                    tags: &tags[1],
                    change: Some(change.clone()),
                    running: Some(running("old")),
                    drift_at: None,
                    awaits_approval: false,
                },
            ]
        };
        let head = "0123456789abcdef0123456789abcdef01234567";
        let first = gate(&policy, head, &members(false), None, 1_000).progress.unwrap();
        let baking = gate(&policy, head, &members(true), Some(&first), 2_000).progress.unwrap();
        let described = describe(&policy, Some(&baking), 3_000, &Default::default());
        let r = Rev { short: "0123456".into(), full: head.into(), url: None };
        let who = Some(Who { name: "alice".into(), csrf: Some("the-csrf".into()), cannot: None });
        let html = Pages::new()
            .render(
                "rollout.html",
                context! {
                promote_forbidden => None::<String>, title => "t", here => "/rollouts/default", who => Serde(who), revision => Serde(r), r => Serde(described) },
            )
            .unwrap();
        assert!(html.contains("<progress max=\"1\" value=\"1\">1 of 1</progress> 1 of 1 updated"), "{html}");
        assert!(html.contains("baking until 1970-01-01T00:10:02Z"), "{html}");
        assert!(html.contains("&lt;stage&gt;") && !html.contains("<stage>"), "escaped: {html}");
        assert!(html.contains("name=\"csrf\" value=\"the-csrf\""), "{html}");
        assert!(
            html.contains("name=\"wave\" value=\"prod\"")
                && html.contains(&format!("name=\"revision\" value=\"{head}\""))
        );
        assert!(html.contains("Promote: start wave prod"), "{html}");

        // Signed out: no form, a way to sign in.
        let idle = describe(&policy, None, 0, &Default::default());
        let rows = vec![Row {
            rollout: "default".into(),
            file: "rollouts/default.yaml".into(),
            state: "idle",
            rev: Rev { short: "-".into(), full: String::new(), url: None },
            total: 0,
            updated: 0,
            next: None,
        }];
        let list = Pages::new()
            .render("rollouts.html", context! { title => "t", who => Serde(None::<Who>), rollouts => Serde(rows) })
            .unwrap();
        assert!(list.contains("href=\"/rollouts/default\"") && list.contains("nothing to roll out"), "{list}");
        let page = Pages::new()
            .render(
                "rollout.html",
                context! { promote_forbidden => None::<String>, title => "t", here => "/rollouts/default", who => Serde(None::<Who>), revision => Serde(Rev { short: "-".into(), full: String::new(), url: None }), r => Serde(idle) },
            )
            .unwrap();
        assert!(page.contains("Nothing to roll out") && !page.contains("<form"), "{page}");
    }
}
