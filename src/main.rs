//! The `strata` command line.
//!
//! Exit codes: 0 ok, 1 invalid input (the diagnostics say what and where), 2 internal error,
//! 3 from `plan --detailed-exitcode` when something changes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use strata::diag::Diagnostics;
use strata::model::{Cluster, Model};
use strata::plan::{self, Side, format};
use strata::render::Renderer;
use strata::render::tools::SystemTools;
use strata::repo;
use strata::source::{self, GitSource, Snapshot, SourceError};

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
        Command::Plan { base, head, format, detailed_exitcode } => {
            run_plan(cli, base.as_deref(), head.as_deref(), *format, *detailed_exitcode)
        }
        Command::Clusters { tag, format } => clusters(cli, tag, *format),
        Command::Profiles { format } => profiles(cli, *format),
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
    let head_model = repo::load(head_snap.tree.as_ref())
        .map_err(|d| Failure::Invalid(d, Some(format!("at head {}", head_snap.short_revision()))))?;
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
    Ok(if detailed && plan.has_changes() { 3 } else { 0 })
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
