//! The `strata` command line.
//!
//! Exit codes: 0 ok, 1 invalid input (the diagnostics say what and where), 2 internal error,
//! 3 from `plan --detailed-exitcode` when something changes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use futures::stream::{self, StreamExt};
use strata::apply::{self, Action, ChangeSet, ReconcileError};
use strata::config::Config;
use strata::diag::Diagnostics;
use strata::model::DriftPolicy;
use strata::model::{Cluster, Model};
use strata::plan::{self, Side, format};
use strata::render::DesiredSet;
use strata::render::Renderer;
use strata::render::tools::SystemTools;
use strata::repo;
use strata::source::{self, GitSource, Snapshot, SourceError};
use strata::target;

#[derive(Parser)]
#[command(name = "strata", version, about = "GitOps for fleets of Kubernetes clusters built from versioned profiles")]
struct Cli {
    /// The repository: a Git repository (read at --rev, never from its working directory) or a
    /// plain directory.
    #[arg(long, global = true, default_value = ".", value_name = "PATH")]
    repo: PathBuf,
    /// Sub-directory of the repository that holds profiles/ and clusters/.
    #[arg(long, global = true, value_name = "SUBDIR")]
    path: Option<String>,
    /// Revision to read (branch, tag, SHA, HEAD~1, …). Default: HEAD.
    #[arg(long, global = true, value_name = "REV")]
    rev: Option<String>,
    /// Read the Git working directory as it is on disk instead of a commit (e.g. in a pre-commit hook).
    #[arg(long, global = true, conflicts_with = "rev")]
    worktree: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every profile and cluster, and render every cluster; report all problems at once.
    Validate,
    /// Print a cluster's desired set as multi-document YAML.
    Render {
        /// Cluster name (metadata.name in clusters/).
        cluster: String,
    },
    /// Show what changes on which cluster between two revisions.
    Plan {
        /// Revision to compare from. Default: the first parent of --head.
        #[arg(long, value_name = "REV")]
        base: Option<String>,
        /// Revision to compare to. Default: --rev, or HEAD.
        #[arg(long, value_name = "REV")]
        head: Option<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Exit 3 when any cluster changes (0 when none does).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Report the plan: a `strata/plan` commit status on the head, and with --pr the plan as
        /// one pull-request comment, updated in place on later runs (status sink from --config).
        #[arg(long, requires = "config")]
        post: bool,
        /// The pull (merge) request number the comment goes to.
        #[arg(long, requires = "post", value_name = "N")]
        pr: Option<u64>,
        /// Host config with the `status` section (forge, repository, token file).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List clusters with their profile, resolved version and tags.
    Clusters {
        /// Only clusters with this tag (`key:value`, or `key` for any value); repeat to require several.
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// List profiles, their versions, and the clusters on each.
    Profiles {
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Apply clusters' desired sets to their targets: staged server-side apply, prune, health.
    Apply {
        #[command(flatten)]
        select: Select,
        /// Validate against the cluster and show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow an empty desired set to prune everything strata applied before.
        #[arg(long)]
        allow_empty: bool,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Show live against desired for a cluster, like `kubectl diff` (exit 3 when they differ).
    Diff {
        cluster: String,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Check clusters for drift and act on it as each cluster's policy says (exit 3 when drift is reported).
    Drift {
        #[command(flatten)]
        select: Select,
        /// Override the clusters' `drift` policy.
        #[arg(long, value_enum)]
        policy: Option<PolicyArg>,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Run the daemon: watch the repository, keep every cluster equal to it, serve webhooks, the
    /// API, metrics and health. Logs go to stderr; RUST_LOG sets the level (default info).
    Run {
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Approve a cluster's pending update (asks the running daemon).
    Approve {
        cluster: String,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Who approves, for the record (default: $USER).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
    },
    /// Every cluster as the running daemon sees it: version, applied revision, sync, health, drift, pending update.
    Status {
        /// One cluster, in detail.
        cluster: Option<String>,
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// With a cluster: show its pending update's diff.
        #[arg(long, requires = "cluster")]
        diff: bool,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Stop reconciling a cluster (the running daemon keeps it as it is) until resumed.
    Suspend {
        cluster: String,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Resume reconciling a suspended cluster.
    Resume {
        cluster: String,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Which clusters a command acts on, and the host config that says how to reach them.
#[derive(clap::Args)]
struct Select {
    /// Cluster names.
    clusters: Vec<String>,
    /// Every cluster in the repository.
    #[arg(long, conflicts_with = "clusters")]
    all: bool,
    /// Clusters with this tag (repeat to require several).
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// The host config mapping target names to clusters.
    #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    Report,
    Correct,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

/// Why a command failed, which decides its exit code.
enum Failure {
    /// Invalid input, with the findings.
    Invalid(Diagnostics, Option<String>),
    /// Invalid input that is not about the repository's files (bad flags, unknown revision).
    Usage(String),
    Internal(String),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Git(message) => Failure::Internal(format!("git: {message}")),
            other => Failure::Usage(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Invalid(diags, context)) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{diags}{}", context.map(|c| format!(" {c}")).unwrap_or_default());
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Internal(message)) => {
            eprintln!("internal error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    match &cli.command {
        Command::Validate => validate(cli),
        Command::Render { cluster } => render(cli, cluster),
        Command::Plan { base, head, format, detailed_exitcode, post, pr, config } => {
            let post = if *post { Some((config.as_deref().expect("clap requires it"), *pr)) } else { None };
            run_plan(cli, base.as_deref(), head.as_deref(), *format, *detailed_exitcode, post)
        }
        Command::Clusters { tag, format } => clusters(cli, tag, *format),
        Command::Profiles { format } => profiles(cli, *format),
        Command::Apply { select, dry_run, allow_empty, format } => {
            runtime()?.block_on(apply(cli, select, *dry_run, *allow_empty, *format))
        }
        Command::Diff { cluster, config } => runtime()?.block_on(diff(cli, cluster, config)),
        Command::Drift { select, policy, format } => runtime()?.block_on(drift(cli, select, *policy, *format)),
        Command::Run { config, log_format } => daemon(config, *log_format),
        Command::Approve { cluster, config, by } => runtime()?.block_on(approve(cluster, config, by.as_deref())),
        Command::Status { cluster, tag, diff, config, format } => {
            runtime()?.block_on(status(cluster.as_deref(), tag, *diff, config, *format))
        }
        Command::Suspend { cluster, config } => runtime()?.block_on(suspend(cluster, config, true)),
        Command::Resume { cluster, config } => runtime()?.block_on(suspend(cluster, config, false)),
    }
}

fn snapshot(cli: &Cli) -> Result<Snapshot, Failure> {
    Ok(source::open(&cli.repo, cli.path.as_deref(), cli.rev.as_deref(), cli.worktree)?)
}

fn at(snapshot: &Snapshot) -> String {
    format!("at {}", snapshot.short_revision())
}

fn load(snapshot: &Snapshot) -> Result<Model, Failure> {
    repo::load(snapshot.tree.as_ref()).map_err(|d| Failure::Invalid(d, Some(at(snapshot))))
}

fn validate(cli: &Cli) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    let (model, mut diags) = repo::load_partial(snapshot.tree.as_ref());
    let tools = SystemTools::default();
    let renderer = Renderer::new(snapshot.tree.as_ref(), &model, &tools);
    let mut objects = 0;
    // Clusters that do not resolve are already reported; render all the others.
    for cluster in model.clusters.values().filter(|c| model.resolve(c).is_ok()) {
        match renderer.render(cluster) {
            Ok(set) => objects += set.object_count(),
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(Failure::Invalid(diags.sorted(), Some(at(&snapshot))));
    }
    let versions: usize = model.profiles.values().map(Vec::len).sum();
    println!(
        "ok: {} profile{} ({versions} version{}), {} cluster{} rendered to {objects} objects {}",
        model.profiles.len(),
        plural(model.profiles.len()),
        plural(versions),
        model.clusters.len(),
        plural(model.clusters.len()),
        at(&snapshot),
    );
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn find<'m>(model: &'m Model, name: &str) -> Result<&'m Cluster, Failure> {
    model.clusters.get(name).ok_or_else(|| {
        let known: Vec<_> = model.clusters.keys().map(String::as_str).collect();
        Failure::Usage(format!("no cluster named `{name}` (clusters: {})", known.join(", ")))
    })
}

fn render(cli: &Cli, name: &str) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let cluster = find(&model, name)?;
    let tools = SystemTools::default();
    let set = Renderer::new(snapshot.tree.as_ref(), &model, &tools)
        .render(cluster)
        .map_err(|d| Failure::Invalid(d, Some(at(&snapshot))))?;
    let mut out = format!(
        "# cluster {} = {}@{} {}\n# digest {}\n",
        set.cluster,
        set.profile,
        set.version,
        at(&snapshot),
        set.digest
    );
    for layer in &set.layers {
        out.push_str(&format!(
            "# layer {} ({}, {} objects) {}\n",
            layer.name,
            layer.kind,
            layer.objects.len(),
            layer.digest
        ));
    }
    out.push_str(&set.to_yaml(snapshot.revision.as_deref()));
    print(&out)
}

fn print(text: &str) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        // A closed pipe (`strata render x | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Internal(e.to_string())),
        _ => Ok(0),
    }
}

fn run_plan(
    cli: &Cli,
    base: Option<&str>,
    head: Option<&str>,
    format: PlanFormat,
    detailed: bool,
    post: Option<(&std::path::Path, Option<u64>)>,
) -> Result<u8, Failure> {
    let git = GitSource::open(&cli.repo, cli.path.as_deref())?.ok_or_else(|| {
        Failure::Usage(format!("{}: not a Git repository; plan compares two revisions", cli.repo.display()))
    })?;
    let head_rev = head.or(cli.rev.as_deref()).unwrap_or("HEAD");
    let head_snap = git.snapshot(head_rev)?;
    let base_snap = match base {
        Some(rev) => Some(git.snapshot(rev)?),
        // The first parent; a root commit is compared with an empty repository.
        None => git.snapshot(&format!("{head_rev}^")).ok(),
    };
    let head_model = match repo::load(head_snap.tree.as_ref()) {
        Ok(model) => model,
        Err(d) => {
            if let Some((config, _)) = post {
                let first = d.iter().next().map(|x| x.to_string()).unwrap_or_default();
                let first = first.split_once("]: ").map(|(_, rest)| rest.to_string()).unwrap_or(first);
                let head = head_snap.revision.as_deref().unwrap_or_default();
                post_status(
                    cli,
                    config,
                    head,
                    strata::report::State::Error,
                    &format!("does not load: {first}"),
                    None,
                    "",
                )?;
            }
            return Err(Failure::Invalid(d, Some(format!("at head {}", head_snap.short_revision()))));
        }
    };
    let base_model = match &base_snap {
        Some(s) => Some(
            repo::load(s.tree.as_ref())
                .map_err(|d| Failure::Invalid(d, Some(format!("at base {}", s.short_revision()))))?,
        ),
        None => None,
    };
    let tools = SystemTools::default();
    let base_side = base_snap.as_ref().zip(base_model.as_ref()).map(|(s, m)| Side {
        revision: s.revision.as_deref(),
        tree: s.tree.as_ref(),
        model: m,
    });
    let head_side = Side { revision: head_snap.revision.as_deref(), tree: head_snap.tree.as_ref(), model: &head_model };
    let plan = plan::plan(base_side, head_side, &tools)
        .map_err(|d| Failure::Invalid(d, Some(format!("planning {head_rev}"))))?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = match format {
        PlanFormat::Text => format::text(&plan, color),
        PlanFormat::Markdown => format::markdown(&plan),
        PlanFormat::Json => format::json(&plan),
    };
    print(&text)?;
    if let Some((config, pr)) = post {
        let head = head_snap.revision.as_deref().unwrap_or_default();
        let posted = post_status(
            cli,
            config,
            head,
            strata::report::State::Success,
            &plan.summary(),
            pr,
            &format::markdown(&plan),
        )?;
        eprintln!("{posted}");
    }
    Ok(if detailed && plan.has_changes() { 3 } else { 0 })
}

/// `plan --post`: the `strata/plan` status on `head`, and the PR comment when `pr` is given.
fn post_status(
    cli: &Cli,
    config: &std::path::Path,
    head: &str,
    state: strata::report::State,
    description: &str,
    pr: Option<u64>,
    comment: &str,
) -> Result<String, Failure> {
    use strata::config::StatusSink;
    use strata::report::{Status, notes};
    let config = load_config(config)?;
    let Some(status_config) = &config.status else {
        return Err(Failure::Usage(format!("{}: --post needs a `status` section", config.file.display())));
    };
    let status = Status::new(head, "strata/plan".into(), state, description, status_config.target_url("plan", head));
    match &status_config.sink {
        StatusSink::Notes => {
            notes::write(&cli.repo, &status).map_err(Failure::Usage)?;
            Ok(format!("posted: note on {} under {}", &head[..head.len().min(7)], notes::NOTES_REF))
        }
        StatusSink::Forge { forge, token_file } => {
            let token = strata::config::read_secret(token_file).map_err(Failure::Usage)?;
            let posted = runtime()?
                .block_on(strata::report::post_plan(forge, &token, &status, pr, comment, format::MARKDOWN_MARKER))
                .map_err(|e| Failure::Usage(format!("posting the plan: {e}")))?;
            Ok(match posted.comment {
                Some((verb, id)) => {
                    format!("posted: strata/plan status on {}; comment {id} {verb}", &head[..head.len().min(7)])
                }
                None => format!("posted: strata/plan status on {}", &head[..head.len().min(7)]),
            })
        }
    }
}

fn clusters(cli: &Cli, tags: &[String], format: ListFormat) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let rows: Vec<_> = model
        .clusters
        .values()
        .filter(|c| tags.iter().all(|t| c.has_tag(t)))
        .map(|c| {
            let resolution = model.resolve(c).expect("validated models resolve");
            serde_json::json!({
                "name": c.name,
                "profile": c.profile,
                "requested": c.version.to_string(),
                "version": resolution.profile.version.to_string(),
                "updateAvailable": resolution.update_available.map(|v| v.to_string()),
                "updates": c.updates,
                "drift": c.drift,
                "target": c.target,
                "tags": c.tags,
            })
        })
        .collect();
    match format {
        ListFormat::Json => print(&(serde_json::to_string_pretty(&rows).expect("serialises") + "\n")),
        ListFormat::Text => {
            let mut table =
                vec![["CLUSTER", "PROFILE", "VERSION", "REQUESTED", "UPDATES", "TAGS"].map(String::from).to_vec()];
            for r in &rows {
                let mut version = r["version"].as_str().unwrap_or_default().to_string();
                if let Some(newer) = r["updateAvailable"].as_str() {
                    version.push_str(&format!(" ({newer} available)"));
                }
                let tags: Vec<_> = r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
                table.push(vec![
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["profile"].as_str().unwrap_or_default().to_string(),
                    version,
                    r["requested"].as_str().unwrap_or_default().to_string(),
                    r["updates"].as_str().unwrap_or_default().to_string(),
                    tags.join(","),
                ]);
            }
            print(&columns(&table))
        }
    }
}

fn profiles(cli: &Cli, format: ListFormat) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let mut rows = Vec::new();
    for versions in model.profiles.values() {
        for profile in versions {
            let users: Vec<&str> = model
                .clusters
                .values()
                .filter(|c| model.resolve(c).is_ok_and(|r| std::ptr::eq(r.profile, profile)))
                .map(|c| c.name.as_str())
                .collect();
            rows.push(serde_json::json!({
                "name": profile.name,
                "version": profile.version.to_string(),
                "description": profile.description,
                "layers": profile.layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
                "clusters": users,
            }));
        }
    }
    match format {
        ListFormat::Json => print(&(serde_json::to_string_pretty(&rows).expect("serialises") + "\n")),
        ListFormat::Text => {
            let mut table = vec![["PROFILE", "VERSION", "LAYERS", "CLUSTERS"].map(String::from).to_vec()];
            for r in &rows {
                let join = |key: &str| {
                    let items: Vec<_> = r[key].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
                    if items.is_empty() { "-".to_string() } else { items.join(",") }
                };
                table.push(vec![
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["version"].as_str().unwrap_or_default().to_string(),
                    join("layers"),
                    join("clusters"),
                ]);
            }
            print(&columns(&table))
        }
    }
}

/// Left-aligned columns separated by two spaces, like kubectl's tables.
fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == row.len() { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // One thread: the work is waiting on the network, and a single-threaded runtime spares the
    // cross-thread wake-ups that otherwise cost more CPU than the requests themselves.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(format!("cannot start the async runtime: {e}")))
}

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
        model.clusters.values().filter(|c| select.tag.iter().all(|t| c.has_tag(t))).collect()
    } else if select.clusters.is_empty() {
        return Err(Failure::Usage("name the clusters to act on, or pass --all or --tag".into()));
    } else {
        select.clusters.iter().map(|name| find(model, name)).collect::<Result<_, _>>()?
    };
    let tools = SystemTools::default();
    let renderer = Renderer::new(snapshot.tree.as_ref(), model, &tools);
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

fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|d| Failure::Invalid(d, None))
}

fn print_change_set(out: &mut String, set: &DesiredSet, cs: &ChangeSet) {
    use std::fmt::Write as _;
    let verb = if cs.dry_run { "would apply" } else { "applied" };
    let rev = cs.revision.as_deref().map(|r| format!(" at {}", &r[..r.len().min(7)])).unwrap_or_default();
    let took = if cs.millis < 1000 { format!("{}ms", cs.millis) } else { format!("{:.1}s", cs.millis as f64 / 1000.0) };
    let _ = writeln!(out, "{}: {verb} {}@{}{rev} in {took}: {}", cs.cluster, set.profile, set.version, cs.summary());
    for o in &cs.objects {
        if o.action == Action::Unchanged {
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

async fn apply(cli: &Cli, sel: &Select, dry_run: bool, allow_empty: bool, format: ListFormat) -> Result<u8, Failure> {
    let config = load_config(&sel.config)?;
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let (selected, unprepared) = select(&model, &snapshot, sel, &config)?;
    let unprepared = report_unprepared(&unprepared, &snapshot);
    let mut options = config.apply.clone();
    options.dry_run = dry_run;
    options.allow_empty = allow_empty;
    let revision = snapshot.revision.as_deref();
    // Clusters in parallel under a bound; one cluster's failure never stops the others.
    let results: Vec<(&Selected, Result<ChangeSet, String>)> = stream::iter(selected.iter().map(|s| {
        let options = options.clone();
        async move {
            let result = match target::connect(&s.target).await {
                Ok(t) => apply::reconcile(&t, &s.set, revision, &options).await.map_err(|e| e.to_string()),
                Err(e) => Err(ReconcileError::Target(e).to_string()),
            };
            (s, result)
        }
    }))
    .buffer_unordered(config.cluster_concurrency)
    .collect()
    .await;
    let mut results = results;
    results.sort_by(|a, b| a.0.cluster.name.cmp(&b.0.cluster.name));
    let failed = unprepared || results.iter().any(|(_, r)| r.as_ref().map(ChangeSet::failed).unwrap_or(true));
    let text = match format {
        ListFormat::Json => {
            let rows: Vec<_> = results
                .iter()
                .map(|(s, r)| match r {
                    Ok(cs) => serde_json::json!({"cluster": s.cluster.name, "result": cs}),
                    Err(e) => serde_json::json!({"cluster": s.cluster.name, "error": e}),
                })
                .collect();
            serde_json::to_string_pretty(&rows).expect("serialises") + "\n"
        }
        ListFormat::Text => {
            let mut out = String::new();
            for (s, r) in &results {
                match r {
                    Ok(cs) => print_change_set(&mut out, &s.set, cs),
                    Err(e) => out.push_str(&format!("{}: failed: {e}\n", s.cluster.name)),
                }
            }
            out
        }
    };
    print(&text)?;
    Ok(if failed { 1 } else { 0 })
}

async fn diff(cli: &Cli, name: &str, config: &std::path::Path) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let sel = Select { clusters: vec![name.to_string()], all: false, tag: vec![], config: config.file.clone() };
    let (selected, unprepared) = select(&model, &snapshot, &sel, &config)?;
    if !unprepared.is_empty() {
        return Err(Failure::Invalid(unprepared, Some(at(&snapshot))));
    }
    let s = &selected[0];
    let target = target::connect(&s.target).await.map_err(|e| Failure::Usage(e.to_string()))?;
    let diffs = apply::diff(&target, &s.set, snapshot.revision.as_deref(), config.apply.concurrency)
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

async fn drift(cli: &Cli, sel: &Select, policy: Option<PolicyArg>, format: ListFormat) -> Result<u8, Failure> {
    let config = load_config(&sel.config)?;
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    let (selected, unprepared) = select(&model, &snapshot, sel, &config)?;
    let revision = snapshot.revision.as_deref();
    let mut reported = false;
    let mut failed = report_unprepared(&unprepared, &snapshot);
    let mut rows = Vec::new();
    let mut text = String::new();
    for s in &selected {
        let policy = match policy {
            Some(PolicyArg::Report) => DriftPolicy::Report,
            Some(PolicyArg::Correct) => DriftPolicy::Correct,
            None => s.cluster.drift,
        };
        let found = match target::connect(&s.target).await {
            Ok(target) => apply::detect_drift(&target, &s.set, config.apply.concurrency).await.map(|f| (target, f)),
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
    match format {
        ListFormat::Json => print(&(serde_json::to_string_pretty(&rows).expect("serialises") + "\n"))?,
        ListFormat::Text => print(&text)?,
    };
    Ok(if failed {
        1
    } else if reported {
        3
    } else {
        0
    })
}

fn daemon(config: &std::path::Path, log_format: LogFormat) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let runtime = runtime()?;
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, strata::daemon::run(config)) {
        Ok(()) => Ok(0),
        Err(e) => {
            tracing::error!(error = %e, "The daemon stopped.");
            Err(Failure::Usage(e))
        }
    }
}

/// Talks to the running daemon's local API.
async fn api(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    // With `listen: …:0` only the daemon knows its port; it writes it down.
    let address = std::fs::read_to_string(config.state_dir.join(strata::daemon::LISTEN_FILE))
        .ok()
        .map(|a| a.trim().to_string())
        .filter(|_| config.listen.port() == 0)
        .unwrap_or_else(|| config.listen.to_string());
    let mut request = hyper::Request::builder().method(method).uri(format!("http://{address}{path}"));
    if method != "GET" {
        let Some(file) = &config.api_token_file else {
            return Err(Failure::Usage(format!(
                "{}: api.token_file is not set, so the daemon takes no actions",
                config.file.display()
            )));
        };
        let token = strata::config::read_secret(file).map_err(Failure::Usage)?;
        request = request.header("authorization", format!("Bearer {token}")).header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| Failure::Internal(e.to_string()))?;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.map_err(|e| {
        Failure::Usage(format!("cannot reach the daemon at {address}: {e} (is `strata run` running with this config?)"))
    })?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| Failure::Internal(e.to_string()))?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = value["error"].as_str().map(str::to_string).unwrap_or_else(|| status.to_string());
        return Err(Failure::Usage(message));
    }
    Ok(value)
}

async fn approve(cluster: &str, config: &std::path::Path, by: Option<&str>) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let by = by.map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".into());
    let approval =
        api(&config, "POST", &format!("/api/v1/clusters/{cluster}/approve"), Some(serde_json::json!({"by": by})))
            .await?;
    let revision = approval["revision"].as_str().unwrap_or_default();
    print(&format!("{cluster}: approved {} by {by}; the daemon applies it now\n", &revision[..revision.len().min(7)]))
}

async fn suspend(cluster: &str, config: &std::path::Path, suspend: bool) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let action = if suspend { "suspend" } else { "resume" };
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    api(&config, "POST", &format!("/api/v1/clusters/{cluster}/{action}"), Some(serde_json::json!({"by": by}))).await?;
    print(&format!("{cluster}: {}\n", if suspend { "suspended" } else { "resumed" }))
}

fn short(rev: &serde_json::Value) -> String {
    rev.as_str().map(|r| r.chars().take(7).collect()).unwrap_or_else(|| "-".into())
}

async fn status(
    cluster: Option<&str>,
    tags: &[String],
    diff: bool,
    config: &std::path::Path,
    format: ListFormat,
) -> Result<u8, Failure> {
    let config = load_config(config)?;
    if let Some(name) = cluster {
        let detail = api(&config, "GET", &format!("/api/v1/clusters/{name}"), None).await?;
        if let ListFormat::Json = format {
            return print(&(serde_json::to_string_pretty(&detail).expect("serialises") + "\n"));
        }
        let c = &detail["cluster"];
        let mut out = format!(
            "{name}: {}@{} at {} — {}{}\n",
            c["profile"].as_str().unwrap_or("-"),
            c["version"].as_str().unwrap_or("-"),
            short(&c["cluster_revision"]),
            c["sync"].as_str().unwrap_or("-"),
            c["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
        );
        if let Some(p) = detail["pending"].as_object() {
            out.push_str(&format!("  {}\n", p["summary"].as_str().unwrap_or("")));
            if diff {
                out.push_str(p["diff"].as_str().unwrap_or(""));
            }
        } else if diff {
            out.push_str("  no pending update\n");
        }
        for d in detail["drift"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  drift {} {} live {} desired {}\n",
                d["object"].as_str().unwrap_or(""),
                d["path"].as_str().unwrap_or(""),
                d["live"].as_str().unwrap_or("(absent)"),
                d["desired"].as_str().unwrap_or("(absent)")
            ));
        }
        return print(&out);
    }
    let rows = api(&config, "GET", "/api/v1/clusters", None).await?;
    let rows: Vec<&serde_json::Value> = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            let have: Vec<&str> = r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
            tags.iter().all(|want| strata::model::has_tag(&have, want))
        })
        .collect();
    if let ListFormat::Json = format {
        return print(&(serde_json::to_string_pretty(&rows).expect("serialises") + "\n"));
    }
    let mut table =
        vec![["CLUSTER", "PROFILE", "REVISION", "SYNC", "HEALTH", "DRIFT", "PENDING"].map(String::from).to_vec()];
    for r in rows {
        let c = &r["cluster"];
        table.push(vec![
            c["name"].as_str().unwrap_or("").to_string(),
            format!("{}@{}", c["profile"].as_str().unwrap_or("-"), c["version"].as_str().unwrap_or("-")),
            short(&c["cluster_revision"]),
            format!(
                "{}{}",
                c["sync"].as_str().unwrap_or("-"),
                if c["suspended"] == true { " (suspended)" } else { "" }
            ),
            c["health"].as_str().unwrap_or("-").to_string(),
            c["drifted"].as_i64().unwrap_or(0).to_string(),
            r["pending"]["summary"]
                .as_str()
                .map(|_| {
                    format!(
                        "{} ({})",
                        short(&r["pending"]["head_revision"]),
                        r["pending"]["hold"]["until"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print(&columns(&table))
}
