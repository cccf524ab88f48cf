//! Commands that act on clusters through their targets: `apply`, `diff`, `drift`.

use futures::stream::{self, StreamExt};
use strata::apply::{self, Action, ChangeSet, ReconcileError};
use strata::config::Config;
use strata::diag::Diagnostics;
use strata::model::{Cluster, DriftPolicy, Model};
use strata::render::tools::SystemTools;
use strata::render::{DesiredSet, Renderer};
use strata::source::Snapshot;
use strata::target;

use super::{Failure, at, emit, find, load, load_config, print, snapshot_with, tally};
use crate::{Cli, Output, PolicyArg, Select};

/// The clusters a command acts on, rendered, each with its target config. Clusters that do not
/// render or have no target come back as diagnostics, so the others can still be acted on.
struct Selected<'m> {
    cluster: &'m Cluster,
    target: strata::config::TargetConfig,
    set: DesiredSet,
}

fn select<'m>(
    model: &'m Model,
    snapshot: &Snapshot,
    select: &Select,
    config: &Config,
) -> Result<(Vec<Selected<'m>>, Diagnostics), Failure> {
    let clusters: Vec<&Cluster> = if select.all || (select.clusters.is_empty() && !select.tag.is_empty()) {
        model.clusters.values().map(|c| &**c).filter(|c| select.tag.iter().all(|t| c.has_tag(t))).collect()
    } else if select.clusters.is_empty() {
        return Err(Failure::Usage("name the clusters to act on, or pass --all or --tag".into()));
    } else {
        select.clusters.iter().map(|name| find(model, name)).collect::<Result<_, _>>()?
    };
    let tools = SystemTools::default();
    let settings = super::render_settings(Some(config));
    let renderer = Renderer::new(snapshot.tree.as_ref(), model, &tools).with_settings(&settings);
    let mut diags = Diagnostics::new();
    let mut out = Vec::new();
    for cluster in clusters {
        let target = config.target(&cluster.name, &cluster.target).cloned();
        match (renderer.render(cluster), target) {
            (Ok(set), Ok(target)) => out.push(Selected { cluster, target, set }),
            (set, target) => {
                if let Err(d) = set {
                    diags.extend(d);
                }
                if let Err(d) = target {
                    diags.push(d);
                }
            }
        }
    }
    Ok((out, diags.sorted()))
}

/// Reports clusters that could not be prepared; whether there were any.
fn report_unprepared(diags: &Diagnostics, snapshot: &Snapshot) -> bool {
    if diags.is_empty() {
        return false;
    }
    eprintln!("{diags} {} (those clusters were left alone)", at(snapshot));
    true
}

/// One cluster's apply; `wide` lists the unchanged objects too.
fn print_change_set(out: &mut String, set: &DesiredSet, cs: &ChangeSet, wide: bool) {
    use std::fmt::Write as _;
    let verb = if cs.dry_run { "would apply" } else { "applied" };
    let rev = cs.revision.as_deref().map(|r| format!(" at {}", &r[..r.len().min(7)])).unwrap_or_default();
    let took = if cs.millis < 1000 { format!("{}ms", cs.millis) } else { format!("{:.1}s", cs.millis as f64 / 1000.0) };
    let _ = writeln!(out, "{}: {verb} {}@{}{rev} in {took}: {}", cs.cluster, set.profile, set.version, cs.summary());
    for o in &cs.objects {
        if o.action == Action::Unchanged && !wide {
            continue;
        }
        let layer = if o.layer.is_empty() { String::new() } else { format!("  (layer {})", o.layer) };
        let message = o.message.as_deref().map(|m| format!("  {m}")).unwrap_or_default();
        let _ = writeln!(out, "  {:<10}  {}{layer}  {}ms{message}", o.action.to_string(), o.id, o.millis);
    }
    for (id, health) in &cs.unhealthy {
        let _ = writeln!(
            out,
            "  unhealthy   {id}: {}",
            serde_json::to_value(health).map(|v| v["reason"].to_string()).unwrap_or_default()
        );
    }
}

/// The host's proxy and trust material for reaching targets.
fn network(config: &strata::config::Config) -> Result<strata::net::Network, Failure> {
    strata::net::Network::new(config.proxy.as_ref())
        .map_err(|e| Failure::Usage(format!("{}: {e}", config.file.display())))
}

/// How one cluster's apply ended, for the summary line.
fn outcome(result: &Result<ChangeSet, ReconcileError>) -> &'static str {
    match result {
        Err(_) => "failed",
        Ok(cs) if cs.failed() => "failed",
        Ok(cs) if cs.objects.iter().all(|o| o.action == Action::Unchanged) => "unchanged",
        Ok(cs) if cs.dry_run => "would change",
        Ok(_) => "applied",
    }
}

/// A progress bar on stderr while many clusters are applied, when stderr is a terminal (never
/// in logs or pipes).
fn progress(clusters: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if clusters < 2 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(clusters as u64), indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} clusters, {elapsed} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

pub async fn apply(cli: &Cli, sel: &Select, dry_run: bool, allow_empty: bool, output: Output) -> Result<u8, Failure> {
    let config = load_config(&sel.config)?;
    let snapshot = snapshot_with(cli, &config)?;
    let model = load(&snapshot)?;
    let (selected, unprepared) = select(&model, &snapshot, sel, &config)?;
    let unprepared = report_unprepared(&unprepared, &snapshot);
    let mut options = config.apply.clone();
    options.dry_run = dry_run;
    options.allow_empty = allow_empty;
    let revision = snapshot.revision.as_deref();
    let network = network(&config)?;
    let network = &network;
    let bar = progress(selected.len());
    let failures = std::cell::Cell::new(0usize);
    // Clusters in parallel under a bound; one cluster's failure never stops the others.
    let results: Vec<(&Selected, Result<ChangeSet, ReconcileError>)> = stream::iter(selected.iter().map(|s| {
        let options = options.clone();
        async move {
            let result = match target::connect(&s.target, network).await {
                Ok(t) => apply::reconcile(&t, &s.set, revision, &options).await,
                Err(e) => Err(ReconcileError::Target(e)),
            };
            (s, result)
        }
    }))
    .buffer_unordered(config.cluster_concurrency)
    .inspect(|(_, result)| {
        if let Some(bar) = &bar {
            if outcome(result) == "failed" {
                failures.set(failures.get() + 1);
                bar.set_message(format!("({} failed)", failures.get()));
            }
            bar.inc(1);
        }
    })
    .collect()
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut results = results;
    results.sort_by(|a, b| a.0.cluster.name.cmp(&b.0.cluster.name));
    let failed = unprepared || results.iter().any(|(_, r)| r.as_ref().map(ChangeSet::failed).unwrap_or(true));
    let rows: Vec<_> = results
        .iter()
        .map(|(s, r)| match r {
            Ok(cs) => serde_json::json!({"cluster": s.cluster.name, "result": cs}),
            // The JSON says what the text says: the error's message.
            Err(e) => serde_json::json!({"cluster": s.cluster.name, "error": e.to_string()}),
        })
        .collect();
    // `-o name`: the clusters applied without a failure; failures go to stderr.
    let names = || {
        results
            .iter()
            .filter_map(|(s, r)| match outcome(r) {
                "failed" => {
                    eprintln!(
                        "{}: failed{}",
                        s.cluster.name,
                        r.as_ref().err().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    None
                }
                _ => Some(format!("cluster/{}", s.cluster.name)),
            })
            .collect()
    };
    let table = |wide: bool| {
        let mut out = String::new();
        for (s, r) in &results {
            match r {
                Ok(cs) => print_change_set(&mut out, &s.set, cs, wide),
                Err(e) => out.push_str(&format!("{}: failed: {e}\n", s.cluster.name)),
            }
        }
        out
    };
    emit(output, &serde_json::Value::Array(rows), names, table)?;
    // After many clusters, one line of counts (on stderr: stdout stays one block per cluster).
    if matches!(output, Output::Text | Output::Wide) && (sel.all || results.len() > 1) {
        eprintln!("{}", tally("cluster", results.iter().map(|(_, r)| outcome(r))));
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn diff(cli: &Cli, name: &str, config: &std::path::Path) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let snapshot = snapshot_with(cli, &config)?;
    let model = load(&snapshot)?;
    let sel = Select { clusters: vec![name.to_string()], all: false, tag: vec![], config: config.file.clone() };
    let (selected, unprepared) = select(&model, &snapshot, &sel, &config)?;
    if !unprepared.is_empty() {
        return Err(Failure::Invalid(unprepared, Some(at(&snapshot))));
    }
    let s = &selected[0];
    let target = target::connect(&s.target, &network(&config)?).await.map_err(|e| Failure::Usage(e.to_string()))?;
    let diffs = apply::diff(&target, &s.set, snapshot.revision.as_deref(), &config.apply)
        .await
        .map_err(|e| Failure::Usage(format!("{name}: {e}")))?;
    let mut out = String::new();
    for (id, layer, live, desired) in &diffs {
        let layer = if layer.is_empty() { "pruned".to_string() } else { format!("layer {layer}") };
        out.push_str(&format!("{id} ({layer})\n"));
        out.push_str(
            &similar::TextDiff::from_lines(live.as_str(), desired.as_str())
                .unified_diff()
                .context_radius(3)
                .header(&format!("live/{id}"), &format!("desired/{id}"))
                .to_string(),
        );
    }
    print(&out)?;
    Ok(if diffs.is_empty() { 0 } else { 3 })
}

pub async fn drift(cli: &Cli, sel: &Select, policy: Option<PolicyArg>, output: Output) -> Result<u8, Failure> {
    let config = load_config(&sel.config)?;
    let snapshot = snapshot_with(cli, &config)?;
    let model = load(&snapshot)?;
    let (selected, unprepared) = select(&model, &snapshot, sel, &config)?;
    let revision = snapshot.revision.as_deref();
    let mut reported = false;
    let mut failed = report_unprepared(&unprepared, &snapshot);
    let mut rows = Vec::new();
    let mut text = String::new();
    let network = network(&config)?;
    for s in &selected {
        let policy = match policy {
            Some(PolicyArg::Report) => DriftPolicy::Report,
            Some(PolicyArg::Correct) => DriftPolicy::Correct,
            None => s.cluster.drift,
        };
        let found = match target::connect(&s.target, &network).await {
            Ok(target) => apply::detect_drift(&target, &s.set, &config.apply).await.map(|f| (target, f)),
            Err(e) => Err(e),
        };
        let (target, findings) = match found {
            Ok(found) => found,
            Err(e) => {
                failed = true;
                text.push_str(&format!("{}: failed: {e}\n", s.cluster.name));
                rows.push(serde_json::json!({"cluster": s.cluster.name, "error": e.to_string()}));
                continue;
            }
        };
        if findings.is_empty() {
            text.push_str(&format!("{}: no drift\n", s.cluster.name));
            rows.push(serde_json::json!({"cluster": s.cluster.name, "findings": []}));
            continue;
        }
        text.push_str(&format!(
            "{}: {} drifted field{}\n",
            s.cluster.name,
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        ));
        for f in &findings {
            if f.path.is_empty() {
                text.push_str(&format!("  {} (layer {}): deleted\n", f.id, f.layer));
            } else {
                let show = |v: &Option<serde_json::Value>| {
                    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into())
                };
                text.push_str(&format!(
                    "  {} (layer {}): {}: live {} desired {}\n",
                    f.id,
                    f.layer,
                    f.path,
                    show(&f.live),
                    show(&f.desired)
                ));
            }
        }
        let corrected = if policy == DriftPolicy::Correct {
            match apply::reconcile(&target, &s.set, revision, &config.apply).await {
                Ok(cs) => {
                    failed |= cs.failed();
                    text.push_str(&format!("  corrected: {}\n", cs.summary()));
                    Some(serde_json::to_value(&cs).expect("serialises"))
                }
                Err(e) => {
                    failed = true;
                    text.push_str(&format!("  correction failed: {e}\n"));
                    None
                }
            }
        } else {
            reported = true;
            None
        };
        rows.push(serde_json::json!({"cluster": s.cluster.name, "policy": policy, "findings": findings, "corrected": corrected}));
    }
    // `-o name`: the clusters that drifted.
    let names = || {
        rows.iter()
            .filter(|r| r["findings"].as_array().is_some_and(|f| !f.is_empty()))
            .map(|r| format!("cluster/{}", r["cluster"].as_str().unwrap_or_default()))
            .collect()
    };
    emit(output, &serde_json::Value::Array(rows.clone()), names, |_| text.clone())?;
    Ok(if failed {
        1
    } else if reported {
        3
    } else {
        0
    })
}
