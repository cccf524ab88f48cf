//! A plan for people and programs: text (coloured on a terminal), markdown (a PR comment), JSON.

use std::fmt::Write;

use serde::Serialize;

use super::{Action, ClusterPlan, Plan};
use crate::rollout::Cause;
use crate::rollout::plan::{RolloutPlan, WavePlan};
use crate::rollout::policy::Approval;

/// The hidden marker a PR comment is found again by, so it is updated rather than duplicated.
pub const MARKDOWN_MARKER: &str = "<!-- strata-plan -->";

/// GitHub refuses comments over 65,536 characters; diffs past this budget are cut with a note.
const MARKDOWN_BUDGET: usize = 60_000;

struct Paint(bool);

impl Paint {
    fn code(&self, code: &str, text: &str) -> String {
        if self.0 { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
    fn bold(&self, t: &str) -> String {
        self.code("1", t)
    }
    fn green(&self, t: &str) -> String {
        self.code("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.code("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.code("33", t)
    }
    fn cyan(&self, t: &str) -> String {
        self.code("36", t)
    }
    fn dim(&self, t: &str) -> String {
        self.code("2", t)
    }
}

fn short(rev: &Option<String>) -> String {
    rev.as_deref().map(|r| r.chars().take(7).collect()).unwrap_or_else(|| "(empty)".to_string())
}

fn transition(c: &ClusterPlan) -> String {
    match (&c.from, &c.to) {
        (Some(a), Some(b)) if a == b => a.clone(),
        (Some(a), Some(b)) => format!("{a} → {b}"),
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    }
}

fn counts(c: &ClusterPlan) -> String {
    format!("+{} ~{} -{}", c.count(Action::Added), c.count(Action::Changed), c.count(Action::Removed))
}

fn next_step(c: &ClusterPlan) -> Option<String> {
    c.pending.then(|| format!("held until approved (updates: manual): strata approve {}", c.cluster))
}

/// `rollout default, wave 2 of 3 (canary)`: where a rollout holds `cluster`.
fn held(plan: &Plan, cluster: &str) -> Option<String> {
    plan.rollouts.iter().find_map(|r| {
        let (n, wave) = r.wave_of(cluster)?;
        Some(format!("rollout {}, wave {n} of {} ({wave})", r.rollout, r.used().count()))
    })
}

/// `aws-staging, aws-prod-a: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)`, one
/// line per distinct change in the wave.
fn wave_changes(wave: &WavePlan) -> Vec<String> {
    // (from, to, cause): the clusters that share one line.
    type Line<'a> = (Option<&'a str>, &'a str, Cause);
    let mut groups: Vec<(Line, Vec<&str>)> = Vec::new();
    for c in &wave.clusters {
        let key = (c.from.as_deref(), c.to.as_str(), c.cause);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&c.cluster),
            None => groups.push((key, vec![&c.cluster])),
        }
    }
    groups
        .into_iter()
        .map(|((from, to, cause), names)| {
            let change = match from {
                Some(from) if from != to => format!("{from} → {to}"),
                _ => to.to_string(),
            };
            format!("{}: {change} ({cause})", names.join(", "))
        })
        .collect()
}

/// `maxParallel 1, bake 10m, approval manual`.
fn gates(wave: &WavePlan) -> String {
    let mut out = format!("maxParallel {}, bake {}", wave.max_parallel, wave.bake);
    if wave.approval == Approval::Manual {
        out.push_str(", approval manual");
    }
    out
}

/// `5 clusters in 3 waves; on failure: halt (at 1 failed cluster)`.
fn rollout_summary(r: &RolloutPlan) -> String {
    let n = r.cluster_count();
    let waves = r.used().count();
    format!(
        "{n} cluster{} in {waves} wave{}; on failure: {} (at {} failed cluster{})",
        if n == 1 { "" } else { "s" },
        if waves == 1 { "" } else { "s" },
        r.on_failure,
        r.failure_threshold,
        if r.failure_threshold == 1 { "" } else { "s" }
    )
}

/// Human-readable plan; `color` adds ANSI colours (for a terminal).
pub fn text(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let _ = writeln!(out, "{} {} → {}", p.bold("strata plan"), short(&plan.base), short(&plan.head));
    let _ = writeln!(out, "{}\n", plan.summary());
    for r in &plan.rollouts {
        let _ = writeln!(out, "{} ({}): {}", p.bold(&format!("rollout {}", r.rollout)), r.file, rollout_summary(r));
        for (n, wave) in r.used().enumerate() {
            let _ =
                writeln!(out, "  {}  {}; {}", p.bold(&format!("{}. {}", n + 1, wave.name)), wave.selects, gates(wave));
            for line in wave_changes(wave) {
                let _ = writeln!(out, "       {line}");
            }
        }
        let idle: Vec<&str> = r.waves.iter().filter(|w| w.clusters.is_empty()).map(|w| w.name.as_str()).collect();
        if !idle.is_empty() {
            let _ = writeln!(out, "  {}", p.dim(&format!("no cluster of this change in: {}", idle.join(", "))));
        }
        out.push('\n');
    }
    for c in plan.changed() {
        let describe = if c.pending { p.yellow(&c.describe()) } else { p.cyan(&c.describe()) };
        let _ = writeln!(out, "{}  {}  {}  {}", p.bold(&c.cluster), describe, transition(c), p.dim(&counts(c)));
        if let Some(wave) = held(plan, &c.cluster) {
            let _ = writeln!(out, "  {}", p.yellow(&format!("goes out with {wave}")));
        }
        if let Some(step) = next_step(c) {
            let _ = writeln!(out, "  {}", p.yellow(&step));
        }
        for o in &c.objects {
            let line = match o.action {
                Action::Added => p.green(&format!("+ {}", o.id)),
                Action::Changed => p.yellow(&format!("~ {}", o.id)),
                Action::Removed => p.red(&format!("- {}", o.id)),
            };
            let _ = writeln!(out, "  {line}  {}", p.dim(&format!("(layer {})", o.layer)));
            if o.action == Action::Changed {
                for l in o.diff.lines().skip(2) {
                    let l = if l.starts_with('+') {
                        p.green(l)
                    } else if l.starts_with('-') {
                        p.red(l)
                    } else if l.starts_with("@@") {
                        p.cyan(l)
                    } else {
                        l.to_string()
                    };
                    let _ = writeln!(out, "      {l}");
                }
            }
        }
        if let Some(v) = &c.update_available {
            let _ = writeln!(out, "  {}", p.dim(&format!("update available: {v} (outside what the cluster pins)")));
        }
        out.push('\n');
    }
    let unchanged: Vec<_> = plan.clusters.iter().filter(|c| !c.changed()).map(|c| c.cluster.as_str()).collect();
    if !unchanged.is_empty() {
        let _ = writeln!(out, "{}", p.dim(&format!("unchanged: {}", unchanged.join(", "))));
    }
    out
}

/// A pull-request comment: summary table, then each cluster's diff folded away.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{MARKDOWN_MARKER}");
    let _ = writeln!(out, "### strata plan: {}", plan.summary());
    let _ = writeln!(out, "`{}` → `{}`\n", short(&plan.base), short(&plan.head));
    let changed: Vec<_> = plan.changed().collect();
    if !changed.is_empty() {
        out.push_str("| Cluster | Change | Profile | Objects |\n|---|---|---|---|\n");
        for c in &changed {
            let mut change = if c.pending { format!("⏸ {}", c.describe()) } else { c.describe() };
            if let Some(wave) = held(plan, &c.cluster) {
                change.push_str(&format!(" · {wave}"));
            }
            let _ = writeln!(out, "| `{}` | {} | {} | {} |", c.cluster, change, transition(c), counts(c));
        }
        out.push('\n');
    }
    for r in &plan.rollouts {
        let _ = writeln!(out, "#### Rollout `{}` ({}): {}\n", r.rollout, r.file, rollout_summary(r));
        out.push_str("| Wave | Selects | Gates | Clusters |\n|---|---|---|---|\n");
        for (n, wave) in r.used().enumerate() {
            let _ = writeln!(
                out,
                "| {}. {} | {} | {} | {} |",
                n + 1,
                wave.name,
                wave.selects,
                gates(wave),
                wave_changes(wave).join("<br>")
            );
        }
        out.push('\n');
    }
    let mut truncated = false;
    for c in &changed {
        let mut section = String::new();
        let _ = writeln!(
            section,
            "<details><summary><code>{}</code>: {} ({})</summary>\n",
            c.cluster,
            c.describe(),
            counts(c)
        );
        if let Some(step) = next_step(c) {
            let _ = writeln!(section, "**Pending update** — {step}\n");
        }
        let diffs: Vec<_> = c.objects.iter().filter(|o| !o.diff.is_empty()).collect();
        if diffs.is_empty() {
            for o in &c.objects {
                let sign = if o.action == Action::Added { "+" } else { "-" };
                let _ = writeln!(section, "- `{sign} {}` (layer {})", o.id, o.layer);
            }
        } else {
            section.push_str("```diff\n");
            for o in diffs {
                section.push_str(&o.diff);
                if !o.diff.ends_with('\n') {
                    section.push('\n');
                }
            }
            section.push_str("```\n");
        }
        section.push_str("\n</details>\n\n");
        if out.len() + section.len() > MARKDOWN_BUDGET {
            truncated = true;
            let _ = writeln!(out, "- `{}`: {} ({}) — diff left out for size\n", c.cluster, c.describe(), counts(c));
        } else {
            out.push_str(&section);
        }
    }
    if truncated {
        out.push_str("_Some diffs were left out to fit a comment; run `strata plan` locally to see them all._\n\n");
    }
    let unchanged = plan.clusters.len() - changed.len();
    if unchanged > 0 {
        let _ = writeln!(out, "{unchanged} cluster{} unchanged.", if unchanged == 1 { "" } else { "s" });
    }
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    summary: String,
    #[serde(flatten)]
    plan: &'a Plan,
}

pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&JsonPlan { summary: plan.summary(), plan }).expect("plans serialise") + "\n"
}
