//! Pull requests: the daemon plans every new pull-request head and posts the plan, as
//! `strata plan --post` would.

use crate::daemon::store::Store as _;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::Shared;
use super::evaluate::first_problem;
use super::git::RepoSource;
use crate::diag::Diagnostics;
use crate::plan;
use crate::render::tools::SystemTools;

/// Why a pull request's plan could not be made: said as its commit status.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error(transparent)]
    Repository(#[from] super::git::GitError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The head's repository does not load: its first problem is said.
    #[error("does not load: {}", first_problem(.0))]
    Load(Diagnostics),
    /// The base's repository does not load.
    #[error("{0}")]
    Base(Diagnostics),
    #[error("does not render: {}", first_problem(.0))]
    Render(Diagnostics),
}

/// Posts a plan for every pull-request head that changed since it was last planned. Heads seen on
/// the first fetch are taken as a baseline, so old (possibly closed) pull requests are left alone.
pub async fn plan_pull_requests(shared: &Arc<Shared>, source: &Arc<Mutex<RepoSource>>, base: &str) {
    let heads = source.lock().unwrap_or_else(|p| p.into_inner()).pull_heads();
    let Some(baseline) =
        shared.stored("read the pull-request baseline", shared.store.meta("pull-requests-baseline").await)
    else {
        return;
    };
    let baseline = baseline.is_none();
    for (number, head) in heads {
        let key = format!("pull-request:{number}");
        let Some(planned) = shared.stored("read a pull request's head", shared.store.meta(&key).await) else {
            continue;
        };
        if planned.as_deref() == Some(head.as_str()) {
            continue;
        }
        if baseline {
            shared.stored("record a pull request's head", shared.store.set_meta(&key, &head).await);
            continue;
        }
        let planned = {
            let (source, base, head) = (source.clone(), base.to_string(), head.clone());
            // A key of this plan's own, not the daemon's: whoever opens a pull request chooses
            // the values it hashes, and must not be able to compare them with the markers the
            // view and the API show for the values the clusters run.
            let settings = shared.render.with_redactor(crate::redact::Redactor::random());
            // The comment fits the forge's limit; it says where the rest of the plan is.
            let fit = crate::report::plan_fit(shared.config.status.as_ref(), Some(&base), &head);
            let verify = shared.config.repository.as_ref().and_then(|r| r.verify.clone());
            tokio::task::spawn_blocking(move || -> Result<(String, String), PlanError> {
                // SOPS files stay encrypted: the pull request's author could route a decrypted
                // value into an object the plan shows unredacted (a ConfigMap).
                let git = source.lock().unwrap_or_else(|p| p.into_inner()).git_source()?;
                let git = git.with_keys(Arc::new(crate::source::sops::Keys::opaque()));
                let (b, h) = (git.snapshot(&base)?, git.snapshot(&head)?);
                let hm = crate::repo::load(h.tree.as_ref()).map_err(PlanError::Load)?;
                let changes = git.changes(&b, &h)?;
                let bm = crate::repo::load_reusing(b.tree.as_ref(), &hm, &changes).map_err(PlanError::Base)?;
                let tools = SystemTools::default();
                let plan = plan::plan(
                    Some(plan::Side { revision: Some(&base), tree: b.tree.as_ref(), model: &bm }),
                    plan::Side { revision: Some(&head), tree: h.tree.as_ref(), model: &hm },
                    Some(&changes),
                    &tools,
                    &settings,
                )
                .map_err(PlanError::Render)?;
                // The plan runs whoever signed; it says when the daemon would not evaluate the head.
                let unsigned = verify.and_then(|v| {
                    let v = crate::config::Verify { mode: crate::config::VerifyMode::Head, ..v };
                    match crate::verify::check(&v, git.path(), &head, None) {
                        Err(crate::verify::Failure::Refused(r)) => Some(r),
                        _ => None,
                    }
                });
                Ok(match unsigned {
                    Some(r) => {
                        let warning = format!(
                            "> [!WARNING]\n> unsigned head: {r} — the daemon does not evaluate a commit like this one\n\n"
                        );
                        // The warning and the plan together fit the forge's limit.
                        let mut fit = fit;
                        fit.limit = fit.limit.saturating_sub(warning.chars().count());
                        (
                            format!("{} (head not signed by an allowed key)", plan.summary()),
                            format!("{warning}{}", crate::plan::format::comment(&plan, &fit)),
                        )
                    }
                    None => (plan.summary(), crate::plan::format::comment(&plan, &fit)),
                })
            })
            .await
        };
        let Some(status_config) = &shared.config.status else { return };
        let crate::config::StatusSink::Forge { forge, token_file } = &status_config.sink else { return };
        let (state, description, comment) = match planned {
            Ok(Ok((summary, markdown))) => (crate::report::State::Success, summary, Some(markdown)),
            Ok(Err(problem)) => (crate::report::State::Error, problem.to_string(), None),
            Err(e) => (crate::report::State::Error, e.to_string(), None),
        };
        let status = crate::report::Status::new(
            &head,
            "strata/plan".into(),
            state,
            &description,
            status_config.target_url("plan", &head),
        );
        let token = match crate::config::read_secret(token_file) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "Cannot post a pull-request plan.");
                return;
            }
        };
        let marker = crate::plan::format::MARKDOWN_MARKER;
        let Some(client) = shared.network.current().status.clone() else { return };
        let (pr, markdown) = match &comment {
            Some(markdown) => (Some(number), markdown.as_str()),
            None => (None, ""),
        };
        let posted = crate::report::post_plan(&client, forge, &token, &status, pr, markdown, marker).await;
        match posted {
            Ok(_) => {
                info!(pull_request = number, head = %head, "Plan posted.");
                shared.stored("record a pull request's head", shared.store.set_meta(&key, &head).await);
            }
            Err(e) => {
                warn!(pull_request = number, error = %e, "Posting a pull-request plan failed; trying again on the next fetch.")
            }
        }
    }
    if baseline {
        shared.stored("record the pull-request baseline", shared.store.set_meta("pull-requests-baseline", "1").await);
    }
}
