//! Delivers queued commit statuses: one at a time (writes to one repository are serialised),
//! at least `status.min_interval` apart (GitHub's secondary limits), waiting as long as a
//! rate-limited answer says, backing off while a forge is down. The queue is the store's outbox,
//! so nothing is lost across an outage or a restart.

use crate::daemon::store::Store as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::Shared;
use super::store::now_ms;
use crate::config::{Credentials, StatusSink, read_secret};
use crate::report::http::Failure;
use crate::report::{Forge, Status, notes};

pub enum Sink {
    /// Sent with the status client of [`super::network`] (replaced on SIGHUP).
    Forge {
        forge: Forge,
        token_file: PathBuf,
    },
    Notes {
        repo: PathBuf,
        remote: Option<(String, Credentials)>,
    },
}

impl Sink {
    pub fn new(config: &StatusSink, repo: PathBuf, remote: Option<(String, Credentials)>) -> Sink {
        match config {
            StatusSink::Forge { forge, token_file } => {
                Sink::Forge { forge: forge.clone(), token_file: token_file.clone() }
            }
            StatusSink::Notes => Sink::Notes { repo, remote },
        }
    }

    pub async fn deliver(&self, shared: &Shared, status: &Status) -> Result<(), Failure> {
        match self {
            Sink::Forge { forge, token_file } => {
                let token = read_secret(token_file).map_err(|e| Failure::Refused(e.to_string()))?;
                let Some(client) = shared.network.current().status.clone() else {
                    return Err(Failure::Refused("no status client is configured".into()));
                };
                client.send(forge, &forge.status_request(status), &token).await.map(|_| ())
            }
            Sink::Notes { repo, remote } => {
                let (repo, remote, status) = (repo.clone(), remote.clone(), status.clone());
                tokio::task::spawn_blocking(move || {
                    notes::write(&repo, &status).map_err(|e| Failure::Refused(e.to_string()))?;
                    if let Some((url, credentials)) = remote
                        && let Err(e) = super::git::push(&repo, &url, notes::NOTES_REF, &credentials)
                    {
                        // The note is written; the remote may just not take notes.
                        warn!(error = %e, "Status notes not pushed.");
                    }
                    Ok(())
                })
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?
            }
        }
    }
}

/// How soon the outbox is read again after the state database failed.
const STORE_RETRY: Duration = Duration::from_secs(30);

fn count(shared: &Shared, result: &str) {
    shared.metrics.result(&shared.metrics.deliveries, result);
}

pub async fn run(shared: Arc<Shared>, sink: Sink, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let min_interval = shared.config.status.as_ref().map(|s| s.min_interval).unwrap_or(Duration::from_secs(1));
    let mut last_write: Option<Instant> = None;
    // A rate limit or an outage holds every delivery to the repository, not just the one asked.
    let mut paused_until: Option<Instant> = None;
    loop {
        if let Some(until) = paused_until.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => return,
            }
        }
        let Some(due) = shared.stored("read the outbox", shared.store.due(now_ms(), 50).await) else {
            // The state database failed: look again soon rather than after the idle hour.
            paused_until = Some(Instant::now() + STORE_RETRY);
            continue;
        };
        if due.is_empty() {
            let wait = match shared.stored("read the outbox", shared.store.next_due().await) {
                Some(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64),
                Some(None) => Duration::from_secs(3600),
                None => STORE_RETRY,
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        for queued in due {
            if *stop.borrow() {
                return;
            }
            if let Some(last) = last_write {
                let gap = min_interval.saturating_sub(last.elapsed());
                if !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
            }
            let status = &queued.status;
            let result = sink.deliver(&shared, status).await;
            match &result {
                Ok(()) | Err(Failure::Later(..)) => shared.network.recovered(super::network::STATUS),
                Err(Failure::Transient(message) | Failure::Refused(message)) => {
                    shared.network.failed(super::network::STATUS, message)
                }
            }
            if result.is_ok() {
                info!(context = %status.context, revision = %status.revision, state = status.state.as_str(), "Status delivered.");
            }
            last_write = Some(Instant::now());
            match result {
                Ok(()) => {
                    count(&shared, "delivered");
                    // Not recorded: delivered again later, which the forge takes as the same status.
                    shared.stored("record a delivered status", shared.store.delivered(status).await);
                }
                Err(Failure::Later(wait, message)) => {
                    count(&shared, "rate_limited");
                    warn!(context = %status.context, revision = %status.revision, wait = ?wait, "{message}");
                    shared.stored(
                        "reschedule a status",
                        shared.store.retry(status, now_ms() + wait.as_millis() as i64, &message).await,
                    );
                    paused_until = Some(Instant::now() + wait);
                    break;
                }
                Err(Failure::Transient(message)) => {
                    count(&shared, "failed");
                    let wait = super::worker::backoff(queued.attempts + 1);
                    warn!(context = %status.context, error = %message, retry_in = ?wait, "Status delivery failed; it stays queued.");
                    shared.stored(
                        "reschedule a status",
                        shared.store.retry(status, now_ms() + wait.as_millis() as i64, &message).await,
                    );
                    paused_until = Some(Instant::now() + wait);
                    break;
                }
                Err(Failure::Refused(message)) => {
                    count(&shared, "refused");
                    error!(context = %status.context, error = %message, "Status refused by the forge; retrying in 5 minutes.");
                    shared
                        .stored("reschedule a status", shared.store.retry(status, now_ms() + 300_000, &message).await);
                }
            }
        }
    }
}
