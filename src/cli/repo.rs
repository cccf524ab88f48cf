//! Commands that read the repository: `validate`, `render`, `plan`, `clusters`, `profiles`.

use std::io::IsTerminal;

use rayon::prelude::*;

use strata::plan::{self, Side, format};
use strata::render::Renderer;
use strata::render::tools::SystemTools;
use strata::repo;
use strata::source::GitSource;

use super::{
    Failure, at, columns, did_you_mean, emit, find, load, load_config, plural, print, runtime, snapshot,
    warn_uncommitted,
};
use crate::{Cli, Output, PlanFormat};

pub fn validate(cli: &Cli) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    if !cli.worktree
        && cli.rev.is_none()
        && let Some(git) = GitSource::open(&cli.repo, cli.path.as_deref())?
    {
        warn_uncommitted(&git, "--worktree reads them");
    }
    let (model, mut diags) = repo::load_partial(snapshot.tree.as_ref());
    let tools = SystemTools::default();
    let renderer = Renderer::new(snapshot.tree.as_ref(), &model, &tools);
    // Clusters that do not resolve are already reported; render all the others, on every core.
    let clusters: Vec<_> = model.clusters.values().filter(|c| model.resolve(c).is_ok()).collect();
    let rendered: Vec<_> = clusters.par_iter().map(|cluster| renderer.check(cluster)).collect();
    // SOPS files that do not decrypt, each once (the renders of the clusters reading one say it
    // again, once per cluster).
    let undecryptable = strata::render::reads::decrypts(snapshot.tree.as_ref(), &model).err();
    let mut objects = 0;
    for result in rendered {
        match result {
            Ok(count) => objects += count,
            Err(d) if undecryptable.is_some() => {
                let said = undecryptable.as_ref().expect("checked");
                let again = |d: &strata::diag::Diagnostic| {
                    said.iter().any(|s| s.code == d.code && s.file == d.file && s.message == d.message)
                };
                diags.extend(d.into_iter().filter(|d| !again(d)).collect())
            }
            Err(d) => diags.extend(d),
        }
    }
    diags.extend(undecryptable.unwrap_or_default());
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

pub fn render(cli: &Cli, name: &str) -> Result<u8, Failure> {
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

pub fn plan(
    cli: &Cli,
    base: Option<&str>,
    head: Option<&str>,
    format: PlanFormat,
    detailed: bool,
    post: Option<(&std::path::Path, Option<u64>)>,
    config: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let git = GitSource::open(&cli.repo, cli.path.as_deref())?
        .ok_or_else(|| {
            Failure::Usage(format!("{}: not a Git repository; plan compares two revisions", cli.repo.display()))
        })?
        .with_keys(super::keys(cli)?);
    let head_rev = head.or(cli.rev.as_deref()).unwrap_or("HEAD");
    if head.is_none() && cli.rev.is_none() {
        warn_uncommitted(
            &git,
            "plan compares commits: commit them to plan them (`strata validate --worktree` checks them)",
        );
    }
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
    // What the two trees differ in decides what is read twice and what is rendered at all.
    let changes = base_snap.as_ref().map(|s| git.changes(s, &head_snap)).transpose()?;
    let base_model = match base_snap.as_ref().zip(changes.as_ref()) {
        Some((s, changes)) => Some(
            repo::load_reusing(s.tree.as_ref(), &head_model, changes)
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
    // A key of this process's own: markers compare within this plan only.
    let host = config.map(super::load_config).transpose()?;
    // With repository.verify in the host config: whether the daemon would evaluate this head.
    let unsigned = host.as_ref().and_then(|h| h.repository.as_ref()?.verify.clone()).and_then(|verify| {
        let verify = strata::config::Verify { mode: strata::config::VerifyMode::Head, ..verify };
        let head = head_snap.revision.as_deref()?;
        match strata::verify::check(&verify, &cli.repo, head, None) {
            Ok(_) => None,
            Err(strata::verify::Failure::Refused(r)) => Some(format!(
                "unsigned head: {r} — the daemon does not evaluate it (this plan shows what it would do if it did)"
            )),
            Err(other) => Some(format!("head signature not checked: {other}")),
        }
    });
    let settings = super::render_settings(host.as_ref());
    let plan = plan::plan(base_side, head_side, changes.as_ref(), &tools, &settings)
        .map_err(|d| Failure::Invalid(d, Some(format!("planning {head_rev}"))))?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = match format {
        PlanFormat::Text => format::text(&plan, color),
        // A GitHub-sized comment (the smallest limit of the common forges but Bitbucket's;
        // `--post` fits the configured forge) whose rest is this plan's JSON.
        PlanFormat::Markdown => {
            let revisions = base_snap.as_ref().and_then(|s| s.revision.as_deref()).zip(head_snap.revision.as_deref());
            // Room for the unsigned-head warning put before it.
            let warning = unsigned.as_ref().map_or(0, |mark| mark.chars().count() + 20);
            let limit = format::GITHUB_COMMENT_LIMIT.saturating_sub(warning);
            format::comment(&plan, &format::Fit::new(limit, "GitHub", None, revisions))
        }
        PlanFormat::Json => format::json(&plan),
        PlanFormat::Yaml => {
            strata::yaml::to_string(&serde_json::from_str(&format::json(&plan)).expect("the JSON plan parses"))
        }
        PlanFormat::Name => plan.changed().map(|c| format!("cluster/{}\n", c.cluster)).collect(),
    };
    let text = match (&unsigned, format) {
        (Some(mark), PlanFormat::Text) => format!("! {mark}\n{text}"),
        (Some(mark), PlanFormat::Markdown) => format!("> [!WARNING]\n> {mark}\n\n{text}"),
        (Some(mark), _) => {
            eprintln!("warning: {mark}");
            text
        }
        (None, _) => text,
    };
    print(&text)?;
    if let Some((config, pr)) = post {
        let head = head_snap.revision.as_deref().unwrap_or_default();
        // Fitted to the forge's limit on a comment; what does not fit is in the JSON plan.
        let base = base_snap.as_ref().and_then(|s| s.revision.as_deref());
        let status = host.as_ref().and_then(|h| h.status.as_ref());
        let comment = format::comment(&plan, &strata::report::plan_fit(status, base, head));
        let posted = post_status(cli, config, head, strata::report::State::Success, &plan.summary(), pr, &comment)?;
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
            notes::write(&cli.repo, &status).map_err(|e| Failure::Usage(e.to_string()))?;
            Ok(format!("posted: note on {} under {}", &head[..head.len().min(7)], notes::NOTES_REF))
        }
        StatusSink::Forge { forge, token_file } => {
            let token = strata::config::read_secret(token_file).map_err(|e| Failure::Usage(e.to_string()))?;
            let setup = |e: strata::net::SetupError| Failure::Usage(format!("{}: {e}", config.file.display()));
            let network = strata::net::Network::new(config.proxy.as_ref()).map_err(setup)?;
            let posted = runtime()?.block_on(async {
                // Built inside the runtime: the client's connections live on it.
                let client = strata::report::http::Client::for_status(&network, &status_config.tls).map_err(setup)?;
                strata::report::post_plan(&client, forge, &token, &status, pr, comment, format::MARKDOWN_MARKER)
                    .await
                    .map_err(|e| Failure::Usage(format!("posting the plan: {e}")))
            })?;
            Ok(match posted.comment {
                Some((verb, id)) => {
                    format!("posted: strata/plan status on {}; comment {id} {verb}", &head[..head.len().min(7)])
                }
                None => format!("posted: strata/plan status on {}", &head[..head.len().min(7)]),
            })
        }
    }
}

pub fn clusters(cli: &Cli, tags: &[String], output: Output) -> Result<u8, Failure> {
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
    let names = || rows.iter().map(|r| format!("cluster/{}", r["name"].as_str().unwrap_or_default())).collect();
    let table = |wide: bool| {
        let mut header = vec!["CLUSTER", "PROFILE", "VERSION", "REQUESTED", "UPDATES"];
        if wide {
            header.extend(["DRIFT", "TARGET"]);
        }
        header.push("TAGS");
        let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for r in &rows {
            let text = |key: &str| r[key].as_str().unwrap_or_default().to_string();
            let mut version = text("version");
            if let Some(newer) = r["updateAvailable"].as_str() {
                version.push_str(&format!(" ({newer} available)"));
            }
            let tags: Vec<_> = r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
            let mut row = vec![text("name"), text("profile"), version, text("requested"), text("updates")];
            if wide {
                row.push(text("drift"));
                row.push(if r["target"].is_string() { text("target") } else { r["target"].to_string() });
            }
            row.push(tags.join(","));
            table.push(row);
        }
        columns(&table)
    };
    emit(output, &serde_json::Value::Array(rows.clone()), names, table)
}

pub fn profiles(cli: &Cli, only: Option<&str>, output: Output) -> Result<u8, Failure> {
    let snapshot = snapshot(cli)?;
    let model = load(&snapshot)?;
    if let Some(name) = only
        && !model.profiles.contains_key(name)
    {
        let known = model.profiles.keys().map(String::as_str);
        return Err(Failure::Usage(format!(
            "no profile named `{name}`{}",
            did_you_mean(name, known, "strata profiles")
        )));
    }
    // Which version each cluster resolves to, once.
    let mut users: std::collections::HashMap<(&str, String), Vec<&str>> = std::collections::HashMap::new();
    for c in model.clusters.values() {
        if let Ok(r) = model.resolve(c) {
            users.entry((r.profile.name.as_str(), r.profile.version.to_string())).or_default().push(c.name.as_str());
        }
    }
    let mut rows = Vec::new();
    for versions in model.profiles.values().filter(|v| only.is_none_or(|o| v.first().is_some_and(|p| p.name == o))) {
        for profile in versions {
            let on: &[&str] =
                users.get(&(profile.name.as_str(), profile.version.to_string())).map(Vec::as_slice).unwrap_or(&[]);
            rows.push(serde_json::json!({
                "name": profile.name,
                "version": profile.version.to_string(),
                "description": profile.description,
                "layers": profile.layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
                "clusters": on,
            }));
        }
    }
    let names = || {
        rows.iter()
            .map(|r| {
                format!(
                    "profile/{}@{}",
                    r["name"].as_str().unwrap_or_default(),
                    r["version"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    let table = |wide: bool| {
        let mut header = vec!["PROFILE", "VERSION", "LAYERS", "CLUSTERS"];
        if wide {
            header.push("DESCRIPTION");
        }
        let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for r in &rows {
            let items = |key: &str| -> Vec<&str> {
                r[key].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect()
            };
            let join = |items: Vec<&str>| if items.is_empty() { "-".to_string() } else { items.join(",") };
            let clusters = items("clusters");
            // Past a few clusters, how many and the first of them: a line per version at any size.
            let on = if clusters.len() <= strata::plan::group::LISTED {
                join(clusters)
            } else {
                format!(
                    "{} ({})",
                    super::thousands(clusters.len()),
                    strata::plan::group::fold(clusters.iter().copied(), "").replace(", ", ",")
                )
            };
            let mut row = vec![
                r["name"].as_str().unwrap_or_default().to_string(),
                r["version"].as_str().unwrap_or_default().to_string(),
                join(items("layers")),
                on,
            ];
            if wide {
                row.push(r["description"].as_str().unwrap_or("-").to_string());
            }
            table.push(row);
        }
        columns(&table)
    };
    emit(output, &serde_json::Value::Array(rows.clone()), names, table)
}
