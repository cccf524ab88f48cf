//! The `strata` command line.
//!
//! Exit codes: 0 ok, 1 invalid input (the diagnostics say what and where), 2 internal error,
//! 3 from `plan --detailed-exitcode` when something changes.

mod cli;

/// jemalloc rather than glibc's malloc: the daemon's work comes in bursts (an evaluation, a
/// fleet's applies, the drift checks after a start) that free far more than it holds between
/// them, and glibc keeps much of that as fragments `malloc_trim` cannot give back (at 10,000
/// clusters 214 MiB resident with glibc, 134 MiB with jemalloc; README, Memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back to the system within a second, by threads of jemalloc's own, rather
/// than waiting for the next allocation in their arena (read by jemalloc before `main`; the
/// `_RJEM_MALLOC_CONF` environment variable still overrides it, jemalloc's symbols being
/// prefixed here).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static NUL-terminated string, as jemalloc reads it.
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cli::{Failure, runtime};

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
    /// An age identity file (age-keygen's output) to decrypt the repository's SOPS files with;
    /// repeat for several. Also read: SOPS_AGE_KEY_FILE, SOPS_AGE_KEY and
    /// ~/.config/sops/age/keys.txt, as sops reads them.
    #[arg(long, global = true, value_name = "FILE")]
    age_key_file: Vec<PathBuf>,
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
        /// What to print: text, markdown (the pull-request comment), json or yaml (every
        /// cluster), name (`cluster/NAME` of each changed cluster).
        #[arg(short = 'o', long = "output", alias = "format", value_name = "FORMAT", value_enum, default_value_t = PlanFormat::Text)]
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
        /// Host config with the `status` section (forge, repository, token file); with
        /// repository.verify, the plan is marked when the head is not signed by an allowed key.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List clusters with their profile, resolved version and tags.
    Clusters {
        /// Only clusters with this tag (`key:value`, or `key` for any value); repeat to require several.
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List profiles, their versions, and the clusters on each.
    Profiles {
        /// Only this profile's versions.
        profile: Option<String>,
        #[command(flatten)]
        output: OutputArg,
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
        #[command(flatten)]
        output: OutputArg,
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
        #[command(flatten)]
        output: OutputArg,
    },
    /// Run the daemon: watch the repository, keep every cluster equal to it, serve webhooks, the
    /// API, metrics and health. Logs go to stderr; RUST_LOG sets the level (default info).
    Run {
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Replace a corrupt state database with a fresh one holding what can still be read of it
    /// (the daemon must be stopped). The damaged file is kept as strata.db.corrupt-<time>.
    RecoverState {
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Approve a cluster's pending update (asks the running daemon). Shows the update and the
    /// revision it approves, and approves exactly that revision. With --rollout (and --wave),
    /// --tag or --all-pending: every pending update that waits for approval in that selection,
    /// after showing how many and which, bound to the revision and the exact set shown.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["cluster", "rollout", "tag", "all_pending"]))]
    Approve {
        /// One cluster.
        #[arg(conflicts_with_all = ["rollout", "tag", "all_pending"])]
        cluster: Option<String>,
        /// The pending updates of this rollout's clusters that wait for their own approval.
        #[arg(long, value_name = "NAME")]
        rollout: Option<String>,
        /// Of this wave of the rollout only.
        #[arg(long, value_name = "WAVE", requires = "rollout")]
        wave: Option<String>,
        /// The pending updates of clusters with this tag (`key:value`, or `key`); repeat to require several.
        #[arg(long, value_name = "TAG")]
        tag: Vec<String>,
        /// Every pending update that waits for approval.
        #[arg(long, conflicts_with_all = ["rollout", "tag"])]
        all_pending: bool,
        /// Approve the selection shown without asking (for scripts; without a terminal it is needed).
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        /// Who approves, for the record (default: $USER).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
        /// The revision you reviewed (a commit id, or at least its first 7 hex digits); refused
        /// when the pending update is no longer at it. Default: the pending revision shown.
        #[arg(long, value_name = "REV")]
        revision: Option<String>,
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
        #[command(flatten)]
        output: OutputArg,
    },
    /// The audit trail (asks the running daemon): approvals, promotions, pauses, resumes, aborts,
    /// suspensions, sign-ins and refused attempts — who, when, what, from where, through which path.
    Audit {
        /// Only entries since then: 2026-12-07T09:00:00Z, or an age such as 90m, 24h, 7d.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries about this cluster.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// Only entries by this user (as recorded, e.g. `api (alice)`, or the identity: `api`).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        limit: usize,
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        output: OutputArg,
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
    /// Print a shell completion script: `source <(strata completion bash)`, or write it where
    /// the shell loads completions from (zsh: a `_strata` file on $fpath; fish:
    /// ~/.config/fish/completions/strata.fish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// SOPS files with age keys, without the sops binary: encrypt (a file sops and Flux read),
    /// decrypt (check that strata's keys open it).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Check that a commit (--rev, default HEAD) is signed by a key repository.verify allows, as
    /// the daemon checks before it evaluates one; with --since, every commit after that one too.
    Verify {
        /// Also verify every commit reachable from --rev and not from this one (mode all).
        #[arg(long, value_name = "REV")]
        since: Option<String>,
        /// Host config with repository.verify (the keys).
        #[arg(long, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
    /// Rollouts as the running daemon runs them: status, promote, pause, resume, abort.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
        #[arg(long, global = true, default_value = "strata.yaml", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Encrypt FILE (YAML, JSON, .env; by extension) for age recipients; prints the SOPS file.
    Encrypt {
        file: PathBuf,
        /// An age recipient (age1…, from age-keygen -y); repeat for several.
        #[arg(long = "age", value_name = "RECIPIENT", required = true)]
        age: Vec<String>,
        /// Encrypt only values under keys matching this regex, e.g. '^(data|stringData)$' for
        /// Secrets (sops' --encrypted-regex). Default: every value (sops' default).
        #[arg(long, value_name = "REGEX")]
        encrypted_regex: Option<String>,
        /// Replace FILE with the encrypted file.
        #[arg(short = 'i', long, conflicts_with = "output")]
        in_place: bool,
        /// Write the encrypted file here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check that FILE decrypts with strata's keys (--age-key-file, SOPS_AGE_KEY_FILE,
    /// SOPS_AGE_KEY) and its MAC holds; --show prints the plaintext.
    Decrypt {
        file: PathBuf,
        /// Print the plaintext (to stdout, or --output).
        #[arg(long)]
        show: bool,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Every rollout (or one, in detail): its waves, their clusters, what holds the next one.
    Status {
        rollout: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Go on now: start a wave that waits for promotion (approval: manual), or end a bake.
    Promote {
        rollout: String,
        /// The wave you expect to start; refused when another one waits.
        #[arg(long, value_name = "WAVE")]
        wave: Option<String>,
    },
    /// Start no more clusters (those being updated finish) until resumed.
    Pause { rollout: String },
    /// Go on after a pause, or after a halt (failures are forgotten, failed clusters retried).
    Resume { rollout: String },
    /// Stop for good: no cluster starts any more, and every cluster it updated returns to what it ran.
    Abort { rollout: String },
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
    Yaml,
    Name,
}

/// What a listing or status command prints, as kubectl's `-o` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people (the default).
    Text,
    /// The table with more columns.
    Wide,
    /// `kind/name` per line, for scripts.
    Name,
    Json,
    Yaml,
}

#[derive(clap::Args)]
struct OutputArg {
    /// Output format: text (default), wide, name, json or yaml.
    #[arg(short = 'o', long = "output", alias = "format", value_name = "FORMAT", value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn main() -> ExitCode {
    // A copy of this binary that renders templates for another (strata::render::engine).
    if std::env::args_os().nth(1).is_some_and(|a| a == strata::render::engine::WORKER_ARG) {
        strata::render::engine::worker_main();
    }
    strata::render::engine::isolate_with("/proc/self/exe".into());
    let cli = Cli::parse();
    let result = run(&cli);
    strata::render::engine::shutdown();
    match result {
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
        Command::Validate => cli::repo::validate(cli),
        Command::Render { cluster } => cli::repo::render(cli, cluster),
        Command::Plan { base, head, format, detailed_exitcode, post, pr, config } => {
            let post = if *post { Some((config.as_deref().expect("clap requires it"), *pr)) } else { None };
            cli::repo::plan(cli, base.as_deref(), head.as_deref(), *format, *detailed_exitcode, post, config.as_deref())
        }
        Command::Clusters { tag, output } => cli::repo::clusters(cli, tag, output.output),
        Command::Profiles { profile, output } => cli::repo::profiles(cli, profile.as_deref(), output.output),
        Command::Apply { select, dry_run, allow_empty, output } => {
            runtime()?.block_on(cli::apply::apply(cli, select, *dry_run, *allow_empty, output.output))
        }
        Command::Diff { cluster, config } => runtime()?.block_on(cli::apply::diff(cli, cluster, config)),
        Command::Drift { select, policy, output } => {
            runtime()?.block_on(cli::apply::drift(cli, select, *policy, output.output))
        }
        Command::Run { config, log_format } => cli::daemon::run(config, *log_format),
        Command::RecoverState { config } => cli::daemon::recover_state(config),
        Command::Approve { cluster: Some(cluster), config, by, revision, .. } => {
            runtime()?.block_on(cli::daemon::approve(cluster, config, by.as_deref(), revision.as_deref()))
        }
        Command::Approve { cluster: None, rollout, wave, tag, all_pending, yes, config, by, revision } => {
            let selector = strata::daemon::selection::Selector {
                rollout: rollout.clone(),
                wave: wave.clone(),
                tags: tag.clone(),
                all_pending: *all_pending,
            };
            runtime()?.block_on(cli::daemon::approve_selection(
                &selector,
                config,
                by.as_deref(),
                revision.as_deref(),
                *yes,
            ))
        }
        Command::Status { cluster, tag, diff, config, output } => {
            runtime()?.block_on(cli::daemon::status(cluster.as_deref(), tag, *diff, config, output.output))
        }
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "strata", &mut script);
            cli::print(&String::from_utf8_lossy(&script))
        }
        Command::Suspend { cluster, config } => runtime()?.block_on(cli::daemon::suspend(cluster, config, true)),
        Command::Resume { cluster, config } => runtime()?.block_on(cli::daemon::suspend(cluster, config, false)),
        Command::Audit { since, cluster, user, limit, config, output } => runtime()?.block_on(cli::daemon::audit(
            since.as_deref(),
            cluster.as_deref(),
            user.as_deref(),
            *limit,
            config,
            output.output,
        )),
        Command::Secret { command } => match command {
            SecretCommand::Encrypt { file, age, encrypted_regex, in_place, output } => {
                cli::supply::encrypt(file, age, encrypted_regex.as_deref(), *in_place, output.as_ref())
            }
            SecretCommand::Decrypt { file, show, output } => cli::supply::decrypt(cli, file, *show, output.as_ref()),
        },
        Command::Verify { since, config } => cli::supply::verify(cli, config, since.as_deref()),
        Command::Rollout { command, config } => runtime()?.block_on(async {
            match command {
                RolloutCommand::Status { rollout, output } => {
                    cli::rollout::status(rollout.as_deref(), config, output.output).await
                }
                RolloutCommand::Promote { rollout, wave } => {
                    cli::rollout::promote(rollout, wave.as_deref(), config).await
                }
                RolloutCommand::Pause { rollout } => cli::rollout::act(rollout, "pause", config).await,
                RolloutCommand::Resume { rollout } => cli::rollout::act(rollout, "resume", config).await,
                RolloutCommand::Abort { rollout } => cli::rollout::act(rollout, "abort", config).await,
            }
        }),
    }
}
