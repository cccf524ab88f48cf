//! A plan for people and programs: text (coloured on a terminal), markdown (a PR comment), JSON.
//!
//! A plan of a few clusters shows each one with its diff. Past [`PER_CLUSTER`] changed
//! clusters, text and markdown show a summary (counts by reason, pending approvals, clusters
//! held by rollouts), then the clusters in groups that get the same change
//! ([`super::group`]), largest first, each group's members folded and its diff shown once.
//! JSON keeps every cluster, with the id of its group.
//!
//! Markdown is a pull-request comment, and forges limit a comment's length: [`comment`] fits a
//! plan within a [`Fit`] — the summary first, then as many groups as fit (with their diffs while
//! those fit too), then where to find the rest.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

use super::group::{self, Group};
use super::rollouts::{RolloutPlan, WavePlan};
use super::{Action, ClusterPlan, Plan};
use crate::rollout::Cause;
use crate::rollout::policy::Approval;

/// The hidden marker a PR comment is found again by, so it is updated rather than duplicated.
pub const MARKDOWN_MARKER: &str = "<!-- strata-plan -->";

/// Plans with up to this many changed clusters show each cluster on its own, as a reviewer reads
/// them one by one; larger plans show groups.
pub const PER_CLUSTER: usize = 10;

/// GitHub's limit on a comment (65,536 characters), which `strata plan --format markdown` keeps
/// to when no forge is named.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// Where a markdown plan goes: at most `limit` characters, and, when the plan does not fit, the
/// sentence that says where the whole plan is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fit {
    /// Characters (Unicode scalar values) the comment may hold, marker included.
    pub limit: usize,
    /// `GitHub`: whose limit it is, for the note on what was left out.
    pub forge: String,
    /// Markdown: where the rest of the plan is (a URL, or what to run).
    pub rest: String,
}

impl Fit {
    /// A GitHub-sized comment whose rest is had by running strata.
    pub fn github() -> Fit {
        Fit::new(GITHUB_COMMENT_LIMIT, "GitHub", None, None)
    }

    /// A comment of `limit` characters on `forge`; the rest is at `url` (the daemon's page for
    /// the plan) or, without one, in `strata plan --format json` between `revisions`.
    pub fn new(limit: usize, forge: &str, url: Option<&str>, revisions: Option<(&str, &str)>) -> Fit {
        let run = match revisions {
            Some((base, head)) => {
                format!("strata plan --base {} --head {} --format json", short_rev(base), short_rev(head))
            }
            None => "strata plan --format json".to_string(),
        };
        let mut rest = format!("The whole plan, every cluster: `{run}` (in CI, keep its output as a build artifact).");
        if let Some(url) = url {
            rest.push_str(&format!(" The plan's status: {url}"));
        }
        Fit { limit, forge: forge.to_string(), rest }
    }
}

fn short_rev(rev: &str) -> String {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) { rev[..12].to_string() } else { rev.to_string() }
}

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

/// `aws-profile 1.1.0 → 1.2.0` within one profile; `a@1.0.0 → b@2.0.0` across profiles.
fn change_of(c: &ClusterPlan) -> String {
    if let (Some(a), Some(b)) = (&c.from, &c.to)
        && let (Some((pa, va)), Some((pb, vb))) = (a.split_once('@'), b.split_once('@'))
        && pa == pb
        && va != vb
    {
        return format!("{pa} {va} → {vb}");
    }
    transition(c)
}

fn counts(c: &ClusterPlan) -> String {
    group::counts(c)
}

fn next_step(c: &ClusterPlan) -> Option<String> {
    if let Some(window) = &c.window {
        return Some(format!("applies in its maintenance window ({window}): held while it is closed"));
    }
    c.pending.then(|| format!("held until approved (updates: manual): strata approve {}", c.cluster))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `1,234`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Where rollouts hold each cluster: the rollout, the wave's number among the used ones, their
/// count, and the wave's name.
struct Held<'p> {
    by_cluster: HashMap<&'p str, (&'p str, usize, usize, &'p str)>,
}

impl<'p> Held<'p> {
    fn new(plan: &'p Plan) -> Held<'p> {
        let mut by_cluster = HashMap::new();
        for r in &plan.rollouts {
            let used = r.used().count();
            for (n, wave) in r.used().enumerate() {
                for c in &wave.clusters {
                    by_cluster.entry(c.cluster.as_str()).or_insert((
                        r.rollout.as_str(),
                        n + 1,
                        used,
                        wave.name.as_str(),
                    ));
                }
            }
        }
        Held { by_cluster }
    }

    /// `rollout default, wave 2 of 3 (canary)`: where a rollout holds `cluster`.
    fn of(&self, cluster: &str) -> Option<String> {
        let (rollout, n, used, wave) = self.by_cluster.get(cluster)?;
        Some(format!("rollout {rollout}, wave {n} of {used} ({wave})"))
    }

    fn count(&self) -> usize {
        self.by_cluster.len()
    }

    /// Where the members of a group go out: `rollout default, wave 2 of 3 (canary)` when all in
    /// one wave, else `rollout default: 5 in wave 1 of 3 (canary), 635 in wave 2 of 3 (main)`,
    /// with those no rollout holds counted too. `None` when no rollout holds any.
    fn of_group(&self, members: &[&ClusterPlan]) -> Option<String> {
        // (rollout, wave n) → (count, used, name), in order of first appearance.
        let mut waves: Vec<((&str, usize), usize, usize, &str)> = Vec::new();
        let mut free = 0;
        for m in members {
            match self.by_cluster.get(m.cluster.as_str()) {
                Some(&(rollout, n, used, name)) => match waves.iter_mut().find(|w| w.0 == (rollout, n)) {
                    Some(w) => w.1 += 1,
                    None => waves.push(((rollout, n), 1, used, name)),
                },
                None => free += 1,
            }
        }
        if waves.is_empty() {
            return None;
        }
        if waves.len() == 1 && free == 0 {
            let ((rollout, n), _, used, name) = waves[0];
            return Some(format!("rollout {rollout}, wave {n} of {used} ({name})"));
        }
        waves.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parts: Vec<String> = Vec::new();
        let mut current = "";
        for ((rollout, n), count, used, name) in &waves {
            let wave = format!("{} in wave {n} of {used} ({name})", thousands(*count));
            if *rollout != current {
                parts.push(format!("rollout {rollout}: {wave}"));
                current = rollout;
            } else {
                parts.push(wave);
            }
        }
        let mut out = parts.join(", ");
        if free > 0 {
            out.push_str(&format!("; {} held by no rollout", thousands(free)));
        }
        Some(out)
    }
}

/// `aws-staging, aws-prod-a: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)`, one
/// line per distinct change in the wave; past five clusters, `640 clusters: … — c0001, c0002,
/// c0003, … c0640`.
fn wave_changes(wave: &WavePlan, quote: &str) -> Vec<String> {
    // (from, to, cause): the clusters that share one line.
    type Line<'a> = (Option<&'a str>, &'a str, Cause);
    let mut groups: Vec<(Line, Vec<&str>)> = Vec::new();
    let mut index: HashMap<(Option<&str>, &str, &str), usize> = HashMap::new();
    for c in &wave.clusters {
        let key = (c.from.as_deref(), c.to.as_str(), c.cause);
        match index.get(&(key.0, key.1, key.2.label())) {
            Some(&i) => groups[i].1.push(&c.cluster),
            None => {
                index.insert((key.0, key.1, key.2.label()), groups.len());
                groups.push((key, vec![&c.cluster]));
            }
        }
    }
    groups
        .into_iter()
        .map(|((from, to, cause), names)| {
            let change = match from {
                Some(from) if from != to => format!("{from} → {to}"),
                _ => to.to_string(),
            };
            if names.len() <= group::LISTED {
                format!("{}: {change} ({cause})", names.join(", "))
            } else {
                format!(
                    "{} clusters: {change} ({cause}) — {}",
                    thousands(names.len()),
                    group::fold(names.iter().copied(), quote)
                )
            }
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

/// `unchanged: a, b` or `unchanged: 9,950 clusters — c00001, c00002, c00003, … c09999`.
fn unchanged_line(plan: &Plan) -> Option<String> {
    let unchanged: Vec<&str> = plan.clusters.iter().filter(|c| !c.changed()).map(|c| c.cluster.as_str()).collect();
    match unchanged.len() {
        0 => None,
        n if n <= group::LISTED => Some(format!("unchanged: {}", unchanged.join(", "))),
        n => Some(format!("unchanged: {} clusters — {}", thousands(n), group::fold(unchanged.iter().copied(), ""))),
    }
}

/// The summary under the title of a grouped plan: `10,000 changes in 6 groups · 5,000 pending
/// approval · 640 held by rollouts · 0 unchanged`.
fn overview(plan: &Plan, groups: &[Group], held: &Held) -> String {
    let changed: usize = groups.iter().map(Group::len).sum();
    let pending = plan.changed().filter(|c| c.pending).count();
    let unchanged = plan.clusters.len() - changed;
    format!(
        "{} cluster{} change{} in {} group{} · {} pending approval · {} held by rollouts · {} unchanged",
        thousands(changed),
        plural(changed),
        if changed == 1 { "s" } else { "" },
        thousands(groups.len()),
        plural(groups.len()),
        thousands(pending),
        thousands(held.count()),
        thousands(unchanged)
    )
}

/// The versions a group's members could move to beyond their pins: `1.3.0 for 12 of them`.
fn updates_available(members: &[&ClusterPlan]) -> Vec<String> {
    let mut versions: Vec<(&str, usize)> = Vec::new();
    for m in members {
        if let Some(v) = &m.update_available {
            match versions.iter_mut().find(|(x, _)| x == v) {
                Some((_, n)) => *n += 1,
                None => versions.push((v, 1)),
            }
        }
    }
    versions
        .into_iter()
        .map(|(v, n)| if n == members.len() { v.to_string() } else { format!("{v} for {} of them", thousands(n)) })
        .collect()
}

/// `640 clusters: aws-profile 1.1.0 → 1.2.0 (upgrade), +0 ~6 -0 — c0001, c0002, c0003, … c0640
/// (full list in the JSON plan)`; `c0042: p00@1.2.0 (override), +0 ~1 -0` for a group of one.
fn group_title(g: &Group, quote: &str) -> String {
    let c = g.first();
    let reasons: Vec<&str> = c.reasons.iter().map(|r| r.label()).collect();
    let reasons = if c.pending { format!("pending update: {}", reasons.join(" + ")) } else { reasons.join(" + ") };
    let what = format!("{} ({reasons}), {}", change_of(c), counts(c));
    if g.len() == 1 {
        return format!("{quote}{}{quote}: {what}", c.cluster);
    }
    let mut out = format!(
        "{} clusters: {what} — {}",
        thousands(g.len()),
        group::fold(g.members.iter().map(|m| m.cluster.as_str()), quote)
    );
    if g.len() > group::LISTED {
        out.push_str(" (full list in the JSON plan)");
    }
    out
}

/// What to do about a group's pending update; `quote` marks the command (backticks in markdown).
fn group_step(g: &Group, quote: &str) -> Option<String> {
    let c = g.first();
    if let Some(window) = &c.window {
        return Some(format!("applies in its maintenance window ({window}): held while it is closed"));
    }
    if !c.pending {
        return None;
    }
    let (who, each) = if g.len() == 1 {
        (c.cluster.as_str(), String::new())
    } else {
        (group::PLACEHOLDER, format!(" for each of the {} clusters", thousands(g.len())))
    };
    Some(format!("held until approved (updates: manual): {quote}strata approve {who}{quote}{each}"))
}

/// Human-readable plan; `color` adds ANSI colours (for a terminal).
pub fn text(plan: &Plan, color: bool) -> String {
    if plan.changed().count() > PER_CLUSTER {
        return text_grouped(plan, color);
    }
    let p = Paint(color);
    let held = Held::new(plan);
    let mut out = String::new();
    let _ = writeln!(out, "{} {} → {}", p.bold("strata plan"), short(&plan.base), short(&plan.head));
    let _ = writeln!(out, "{}\n", plan.summary());
    text_rollouts(&mut out, plan, &p);
    for c in plan.changed() {
        let describe = if c.pending { p.yellow(&c.describe()) } else { p.cyan(&c.describe()) };
        let _ = writeln!(out, "{}  {}  {}  {}", p.bold(&c.cluster), describe, transition(c), p.dim(&counts(c)));
        if let Some(wave) = held.of(&c.cluster) {
            let _ = writeln!(out, "  {}", p.yellow(&format!("goes out with {wave}")));
        }
        if let Some(step) = next_step(c) {
            let _ = writeln!(out, "  {}", p.yellow(&step));
        }
        text_objects(&mut out, &c.objects, |o| o.id.to_string(), &p);
        if let Some(v) = &c.update_available {
            let _ = writeln!(out, "  {}", p.dim(&format!("update available: {v} (outside what the cluster pins)")));
        }
        out.push('\n');
    }
    if let Some(line) = unchanged_line(plan) {
        let _ = writeln!(out, "{}", p.dim(&line));
    }
    out
}

fn text_rollouts(out: &mut String, plan: &Plan, p: &Paint) {
    for r in &plan.rollouts {
        let _ = writeln!(out, "{} ({}): {}", p.bold(&format!("rollout {}", r.rollout)), r.file, rollout_summary(r));
        for (n, wave) in r.used().enumerate() {
            let _ =
                writeln!(out, "  {}  {}; {}", p.bold(&format!("{}. {}", n + 1, wave.name)), wave.selects, gates(wave));
            for line in wave_changes(wave, "") {
                let _ = writeln!(out, "       {line}");
            }
        }
        let idle: Vec<&str> = r.waves.iter().filter(|w| w.clusters.is_empty()).map(|w| w.name.as_str()).collect();
        if !idle.is_empty() {
            let _ = writeln!(out, "  {}", p.dim(&format!("no cluster of this change in: {}", idle.join(", "))));
        }
        out.push('\n');
    }
}

fn text_objects(
    out: &mut String,
    objects: &[super::ObjectChange],
    name: impl Fn(&super::ObjectChange) -> String,
    p: &Paint,
) {
    for o in objects {
        let line = match o.action {
            Action::Added => p.green(&format!("+ {}", name(o))),
            Action::Changed => p.yellow(&format!("~ {}", name(o))),
            Action::Removed => p.red(&format!("- {}", name(o))),
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
}

/// The text plan of many clusters: summary, rollouts, then groups largest first.
fn text_grouped(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let held = Held::new(plan);
    let groups = group::groups(plan);
    let mut out = String::new();
    let _ = writeln!(out, "{} {} → {}", p.bold("strata plan"), short(&plan.base), short(&plan.head));
    let _ = writeln!(out, "{}", plan.summary());
    let _ = writeln!(out, "{}\n", overview(plan, &groups, &held));
    text_rollouts(&mut out, plan, &p);
    for g in &groups {
        let c = g.first();
        let title = group_title(g, "");
        let title = if c.pending { p.yellow(&title) } else { title };
        let _ = writeln!(out, "{} {title}", p.bold(&format!("group {} ·", g.id)));
        if let Some(wave) = held.of_group(&g.members) {
            let _ = writeln!(out, "  {}", p.yellow(&format!("goes out with {wave}")));
        }
        if let Some(step) = group_step(g, "") {
            let _ = writeln!(out, "  {}", p.yellow(&step));
        }
        match g.same_diff_as {
            Some(earlier) => {
                let _ = writeln!(out, "  {}", p.dim(&format!("objects and diff as group {earlier}")));
            }
            None => {
                if !g.same_context {
                    let _ = writeln!(
                        out,
                        "  {}",
                        p.dim(&format!("(context lines as on {}; they differ between the clusters)", c.cluster))
                    );
                }
                text_objects(&mut out, &g.objects(), |o| g.object_name(o), &p);
            }
        }
        for v in updates_available(&g.members) {
            let whose = if g.len() == 1 { "the cluster pins" } else { "they pin" };
            let _ = writeln!(out, "  {}", p.dim(&format!("update available: {v} (outside what {whose})")));
        }
        out.push('\n');
    }
    if let Some(line) = unchanged_line(plan) {
        let _ = writeln!(out, "{}", p.dim(&line));
    }
    out
}

/// A pull-request comment that fits GitHub (65,536 characters); see [`comment`].
pub fn markdown(plan: &Plan) -> String {
    comment(plan, &Fit::github())
}

/// Characters, as forges count a comment's length.
fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Room kept for the note on what was left out.
const NOTE_ROOM: usize = 1_000;

/// A pull-request comment of at most `fit.limit` characters: the summary, the rollouts' waves,
/// then the clusters (one by one, or in groups for larger plans) with their diffs folded away;
/// what does not fit is left out, and a note says so and where the rest is.
pub fn comment(plan: &Plan, fit: &Fit) -> String {
    let out = if plan.changed().count() > PER_CLUSTER {
        markdown_grouped(plan, fit)
    } else {
        markdown_per_cluster(plan, fit)
    };
    debug_assert!(chars(&out) <= fit.limit.max(NOTE_ROOM), "{} > {}", chars(&out), fit.limit);
    out
}

fn markdown_rollouts(out: &mut String, plan: &Plan) {
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
                wave_changes(wave, "`").join("<br>")
            );
        }
        out.push('\n');
    }
}

fn cut_note(fit: &Fit, what: &str) -> String {
    format!(
        "_{what}, to keep this comment within {}'s {} characters. {}_\n\n",
        fit.forge,
        thousands(fit.limit),
        fit.rest
    )
}

/// A plan of a few clusters: a table of them, the rollouts, each cluster's diff.
fn markdown_per_cluster(plan: &Plan, fit: &Fit) -> String {
    let held = Held::new(plan);
    let budget = fit.limit.saturating_sub(NOTE_ROOM);
    let mut out = String::new();
    let _ = writeln!(out, "{MARKDOWN_MARKER}");
    let _ = writeln!(out, "### strata plan: {}", plan.summary());
    let _ = writeln!(out, "`{}` → `{}`\n", short(&plan.base), short(&plan.head));
    let changed: Vec<_> = plan.changed().collect();
    if !changed.is_empty() {
        out.push_str("| Cluster | Change | Profile | Objects |\n|---|---|---|---|\n");
        for c in &changed {
            let mut change = if c.pending { format!("⏸ {}", c.describe()) } else { c.describe() };
            if let Some(wave) = held.of(&c.cluster) {
                change.push_str(&format!(" · {wave}"));
            }
            let _ = writeln!(out, "| `{}` | {} | {} | {} |", c.cluster, change, transition(c), counts(c));
        }
        out.push('\n');
    }
    markdown_rollouts(&mut out, plan);
    let mut used = chars(&out);
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
        markdown_objects(&mut section, &c.objects, |o| o.id.to_string());
        section.push_str("\n</details>\n\n");
        let size = chars(&section);
        if used + size > budget {
            truncated = true;
            let line = format!("- `{}`: {} ({}) — diff left out for size\n\n", c.cluster, c.describe(), counts(c));
            used += chars(&line);
            out.push_str(&line);
        } else {
            used += size;
            out.push_str(&section);
        }
    }
    if truncated {
        out.push_str(&cut_note(fit, "Some diffs were left out"));
    }
    let unchanged = plan.clusters.len() - changed.len();
    if unchanged > 0 {
        let _ = writeln!(out, "{unchanged} cluster{} unchanged.", if unchanged == 1 { "" } else { "s" });
    }
    out
}

/// Objects as a diff block (or, without diffs, as a list).
fn markdown_objects(
    section: &mut String,
    objects: &[super::ObjectChange],
    name: impl Fn(&super::ObjectChange) -> String,
) {
    let diffs: Vec<_> = objects.iter().filter(|o| !o.diff.is_empty()).collect();
    if diffs.is_empty() {
        for o in objects {
            let sign = if o.action == Action::Added { "+" } else { "-" };
            let _ = writeln!(section, "- `{sign} {}` (layer {})", name(o), o.layer);
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
}

/// A group's one line in a comment: number, members, change, where it is held.
fn markdown_group_line(g: &Group, held: &Held) -> String {
    let mut line = format!("**Group {}** · {}", g.id, group_title(g, "`"));
    if g.first().pending {
        line = format!("⏸ {line}");
    }
    if let Some(wave) = held.of_group(&g.members) {
        line.push_str(&format!(" · goes out with {wave}"));
    }
    line
}

/// A group in full: its line, what to do, its diff folded away.
fn markdown_group(g: &Group, line: &str) -> String {
    let mut section = format!("<details><summary>{}</summary>\n\n", inline_html(line));
    if let Some(step) = group_step(g, "`") {
        let _ = writeln!(section, "**Pending update** — {step}\n");
    }
    match g.same_diff_as {
        Some(earlier) => {
            let _ = writeln!(section, "Objects and diff as group {earlier}.");
        }
        None => {
            if !g.same_context {
                let _ = writeln!(
                    section,
                    "Context lines as on `{}`; they differ between the clusters.\n",
                    g.first().cluster
                );
            }
            let objects = g.objects();
            markdown_objects(&mut section, &objects, |o| g.object_name(o));
        }
    }
    for v in updates_available(&g.members) {
        let _ = writeln!(section, "\nUpdate available: {v} (outside what they pin).");
    }
    section.push_str("\n</details>\n\n");
    section
}

/// Markdown emphasis and code spans as HTML, for inside `<summary>` (where GitHub renders no
/// markdown).
fn inline_html(line: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let mut bold = false;
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("**") && !code {
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
            rest = &rest[2..];
            continue;
        }
        match c {
            '`' => {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A plan of many clusters: summary, rollouts, then each group as one line — with its diff
/// while that fits — largest first, as many as fit.
fn markdown_grouped(plan: &Plan, fit: &Fit) -> String {
    let held = Held::new(plan);
    let groups = group::groups(plan);
    let budget = fit.limit.saturating_sub(NOTE_ROOM);
    let mut head = String::new();
    let _ = writeln!(head, "{MARKDOWN_MARKER}");
    let _ = writeln!(head, "### strata plan: {}", plan.summary());
    let _ = writeln!(head, "`{}` → `{}`\n", short(&plan.base), short(&plan.head));
    let _ = writeln!(head, "**{}**\n", overview(plan, &groups, &held));
    let mut rollouts = String::new();
    markdown_rollouts(&mut rollouts, plan);
    let mut used = chars(&head);
    // Rollouts only when they leave room for the groups' lines (they list names too).
    let with_rollouts = used + chars(&rollouts) <= budget / 2;
    if with_rollouts {
        used += chars(&rollouts);
    }
    // First every group's line, as many as fit; then, in order, their diffs while those fit.
    let lines: Vec<String> = groups.iter().map(|g| markdown_group_line(g, &held)).collect();
    let mut shown = 0;
    for line in &lines {
        let size = chars(line) + 4;
        if used + size > budget {
            break;
        }
        used += size;
        shown += 1;
    }
    let mut full: Vec<Option<String>> = vec![None; shown];
    for (i, g) in groups.iter().take(shown).enumerate() {
        let section = markdown_group(g, &lines[i]);
        let size = chars(&section);
        let line = chars(&lines[i]) + 4;
        if used - line + size <= budget {
            used = used - line + size;
            full[i] = Some(section);
        }
    }
    let mut out = head;
    if with_rollouts {
        out.push_str(&rollouts);
    }
    if !groups.is_empty() {
        out.push_str("#### Changes, largest group first\n\n");
    }
    let mut short_lines = 0;
    for (i, section) in full.into_iter().enumerate() {
        match section {
            Some(section) => out.push_str(&section),
            None => {
                short_lines += 1;
                let _ = write!(out, "- {}\n\n", lines[i]);
            }
        }
    }
    let left: &[Group] = &groups[shown..];
    if !left.is_empty() {
        let clusters: usize = left.iter().map(Group::len).sum();
        let pending: usize = left.iter().filter(|g| g.first().pending).map(Group::len).sum();
        let pending =
            if pending > 0 { format!(", {} of them pending approval", thousands(pending)) } else { String::new() };
        out.push_str(&cut_note(
            fit,
            &format!(
                "**{} more group{} ({} cluster{}{pending}) are not shown**",
                thousands(left.len()),
                plural(left.len()),
                thousands(clusters),
                plural(clusters)
            ),
        ));
    } else if short_lines > 0 {
        out.push_str(&cut_note(fit, "Diffs of the groups listed without one were left out"));
    }
    if !with_rollouts && !plan.rollouts.is_empty() {
        out.push_str(&format!("_The rollouts' waves were left out for size. {}_\n\n", fit.rest));
    }
    if let Some(line) = unchanged_line(plan) {
        let _ = writeln!(out, "{}", line.replacen("unchanged: ", "Unchanged: ", 1));
    }
    out
}

#[derive(Serialize)]
struct JsonCluster<'a> {
    #[serde(flatten)]
    cluster: &'a ClusterPlan,
    /// The group of clusters with the same change (as text and markdown number them).
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<usize>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    summary: String,
    base: &'a Option<String>,
    head: &'a Option<String>,
    clusters: Vec<JsonCluster<'a>>,
    #[serde(skip_serializing_if = "none")]
    rollouts: &'a [RolloutPlan],
}

fn none(rollouts: &&[RolloutPlan]) -> bool {
    rollouts.is_empty()
}

/// Every cluster, as the plan has it, with its group's id.
pub fn json(plan: &Plan) -> String {
    let groups = group::groups(plan);
    let ids = group::ids(&groups);
    let clusters =
        plan.clusters.iter().map(|c| JsonCluster { cluster: c, group: ids.get(c.cluster.as_str()).copied() }).collect();
    let json =
        JsonPlan { summary: plan.summary(), base: &plan.base, head: &plan.head, clusters, rollouts: &plan.rollouts };
    serde_json::to_string_pretty(&json).expect("plans serialise") + "\n"
}
