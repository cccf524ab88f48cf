//! How reconciling runs: `apply` (bounds and timeouts of one cluster's apply, clusters at once,
//! namespaces repositories may write to), `render` (template time limits), `drift` (how often
//! live objects are checked, and whether they are watched) and `audit` (how long the trail is
//! kept).

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::reader::Reader;
use crate::apply::Options;
use crate::render::engine::Limits;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApply {
    concurrency: Option<usize>,
    clusters: Option<usize>,
    health_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    allow_namespaces: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRender {
    template_timeout: Option<Spanned<String>>,
    layer_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    interval: Option<Spanned<String>>,
    resync: Option<Spanned<String>>,
    watch: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    retention: Option<Spanned<String>>,
    #[serde(default)]
    max_entries: Option<Spanned<u64>>,
}

/// How long the audit trail is kept, and how many entries at most (the oldest go first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub retention: Duration,
    pub max_entries: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention: Duration::from_secs(365 * 86_400), max_entries: 1_000_000 }
    }
}

/// The settings `apply` holds.
pub(super) struct Apply {
    pub options: Options,
    pub allow_namespaces: Vec<String>,
    pub cluster_concurrency: usize,
    pub reconcile_timeout: Duration,
}

/// `apply`: the apply's options; the reconcile timeout is by default the health timeout and ten
/// minutes more.
pub(super) fn apply(cx: &mut Reader, raw: RawApply) -> Apply {
    let mut options = Options::default();
    if let Some(n) = raw.concurrency {
        options.concurrency = n.max(1);
    }
    options.health_timeout = cx.duration(&raw.health_timeout, "health_timeout", options.health_timeout);
    let reconcile_timeout =
        cx.duration(&raw.timeout, "apply.timeout", options.health_timeout + Duration::from_secs(600));
    Apply {
        options,
        allow_namespaces: raw.allow_namespaces,
        cluster_concurrency: raw.clusters.unwrap_or(4).max(1),
        reconcile_timeout,
    }
}

/// `render`: how long templates may render.
pub(super) fn render(cx: &mut Reader, raw: &RawRender) -> Limits {
    let defaults = Limits::default();
    Limits {
        template: cx.duration(&raw.template_timeout, "render.template_timeout", defaults.template),
        layer: cx.duration(&raw.layer_timeout, "render.layer_timeout", defaults.layer),
    }
}

/// The settings `drift` holds.
pub(super) struct Drift {
    pub interval: Duration,
    pub resync: Duration,
    pub watch: bool,
}

/// `drift`: checked every five minutes where nothing watches, watched with an hourly resync
/// elsewhere.
pub(super) fn drift(cx: &mut Reader, raw: &RawDrift) -> Drift {
    Drift {
        interval: cx.duration(&raw.interval, "drift.interval", Duration::from_secs(300)),
        resync: cx.duration(&raw.resync, "drift.resync", Duration::from_secs(3600)),
        watch: raw.watch.unwrap_or(true),
    }
}

/// `audit`: kept a year unless configured, never less than a day, and never zero entries.
pub(super) fn audit(cx: &mut Reader, raw: &RawAudit) -> AuditConfig {
    let defaults = AuditConfig::default();
    let retention = cx.duration(&raw.retention, "audit.retention", defaults.retention);
    let max_entries = match &raw.max_entries {
        Some(n) if n.value == 0 => {
            cx.schema(
                n.referenced.line() as usize,
                "audit.max_entries: 0 would keep no audit trail",
                "give the most entries to keep, e.g. audit: { max_entries: 1000000 } (the default)",
            );
            defaults.max_entries
        }
        Some(n) => n.value,
        None => defaults.max_entries,
    };
    if retention < Duration::from_secs(86_400) {
        cx.schema(
            raw.retention.as_ref().map_or(0, |r| r.referenced.line() as usize),
            "audit.retention is shorter than a day",
            "keep the audit trail a day at least, e.g. audit: { retention: 365d } (the default)",
        );
    }
    AuditConfig { retention: retention.max(Duration::from_secs(86_400)), max_entries }
}
