//! `strata run`, and the commands that ask the running daemon: `status`, `approve`, `suspend`, `resume`
//! (`rollout …` is in [`super::rollout`]).

use std::io::IsTerminal;

use strata::config::Config;

use super::{Failure, columns, did_you_mean, emit, load_config, print, runtime, tally};
use crate::{LogFormat, Output};

pub fn run(config: &std::path::Path, log_format: LogFormat) -> Result<u8, Failure> {
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
            Err(Failure::Usage(e.to_string()))
        }
    }
}

/// `strata recover-state`: moves a corrupt state database aside and starts a fresh one with what
/// could be salvaged. The next `strata run` takes what each cluster runs from its inventory.
pub fn recover_state(config: &std::path::Path) -> Result<u8, Failure> {
    use strata::daemon::store;
    let config = load_config(config)?;
    let _lock = store::lock(&config.state_dir).map_err(|e| Failure::Usage(e.to_string()))?;
    let recovery = store::recover(&config.state_dir).map_err(|e| Failure::Internal(e.to_string()))?;
    let path = config.state_dir.join(store::FILE);
    let Some(moved) = recovery.moved_to else {
        return print(&format!("{}: passes its integrity check; nothing to recover\n", path.display()));
    };
    let mut out = format!("{}: corrupt; moved to {}\nsalvaged:\n", path.display(), moved.display());
    for (table, rows, complete) in &recovery.salvaged {
        let note = if *complete { "" } else { " (the rest was unreadable)" };
        out.push_str(&format!("  {table}: {rows} row{}{note}\n", super::plural(*rows)));
    }
    out.push_str(
        "lost: drift findings, apply history, pending updates and delivered-status records (the daemon finds and\n\
         derives them again); start the daemon: clusters it no longer knows take what they run from their inventories\n",
    );
    print(&out)
}

/// Talks to the running daemon's local API. The API token goes with every request when there is
/// one (reads need it with `view.require_token`).
pub async fn api(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    // With `listen: …:0` only the daemon knows its port; it writes it down.
    let address = std::fs::read_to_string(config.state_dir.join(strata::daemon::LISTEN_FILE))
        .ok()
        .map(|a| a.trim().to_string())
        .filter(|_| config.listen.port() == 0)
        .unwrap_or_else(|| config.listen.to_string());
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .header("accept", "application/json")
        .header(strata::daemon::audit::CLIENT_HEADER, "cli");
    match &config.api_token_file {
        Some(file) => {
            let token = strata::config::read_secret(file).map_err(|e| Failure::Usage(e.to_string()))?;
            request = request.header("authorization", format!("Bearer {token}"));
        }
        None if method != "GET" => {
            return Err(Failure::Usage(format!(
                "{}: api.token_file is not set, so the daemon takes no actions",
                config.file.display()
            )));
        }
        None => {}
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| Failure::Internal(e.to_string()))?;
    // A daemon on this machine is reached directly; one elsewhere by the host's proxy rules.
    let local = address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback() || a.ip().is_unspecified());
    let (settings, timeouts) = (strata::net::Settings::daemon(), strata::net::Timeouts::DAEMON);
    let client = if local {
        strata::net::Client::local(settings, timeouts)
    } else {
        strata::net::Network::new(config.proxy.as_ref())
            .map_err(|e| Failure::Usage(format!("{}: {e}", config.file.display())))?
            .plain_client(settings, timeouts)
    };
    let (parts, bytes) = client.exchange(request).await.map_err(|e| {
        Failure::Usage(format!("cannot reach the daemon at {address}: {e} (is `strata run` running with this config?)"))
    })?;
    let status = parts.status;
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = value["error"].as_str().map(str::to_string).unwrap_or_else(|| status.to_string());
        return Err(Failure::Usage(message));
    }
    Ok(value)
}

/// A cluster name as one path segment of an API URL.
pub fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn approve(
    cluster: &str,
    config: &std::path::Path,
    by: Option<&str>,
    revision: Option<&str>,
) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let by = by.map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".into());
    let path = format!("/api/v1/clusters/{}", segment(cluster));
    // What is pending, shown before it is approved: the approval names exactly this revision.
    let detail = api(&config, "GET", &path, None).await?;
    let Some(pending) = detail["pending"].as_object() else {
        return Err(Failure::Usage(format!("{cluster}: there is no pending update to approve")));
    };
    let head = pending["head_revision"].as_str().unwrap_or_default();
    let base = pending["base_revision"].as_str().unwrap_or_default();
    let revision = revision.unwrap_or(head);
    let Some(diff) = pending["diff"].as_str() else {
        let why = pending["diff_stale"].as_str().unwrap_or("its diff is not known yet");
        return Err(Failure::Usage(format!(
            "{cluster}: {why}; approve once it is shown (strata status {cluster} --diff)"
        )));
    };
    let objects: Vec<&str> = diff.lines().filter_map(|l| l.strip_prefix("+++ head/")).collect();
    // The summary ends in how to approve ("— approve: strata approve …"), which is being done.
    let summary = pending["summary"].as_str().unwrap_or("pending update");
    let mut shown = format!(
        "{cluster}: {} (base {} → head {})\n",
        summary.split(" — ").next().unwrap_or(summary),
        &base[..base.len().min(7)],
        &head[..head.len().min(7)],
    );
    for object in &objects {
        shown.push_str(&format!("  ~ {object}\n"));
    }
    shown.push_str(&format!("approving {revision} (see it whole: strata status {cluster} --diff)\n"));
    print(&shown)?;
    let approval =
        api(&config, "POST", &format!("{path}/approve"), Some(serde_json::json!({"by": by, "revision": revision})))
            .await?;
    let approved = approval["revision"].as_str().unwrap_or_default();
    print(&format!("{cluster}: approved {} by {by}; the daemon applies it now\n", &approved[..approved.len().min(7)]))
}

/// At most this many names are listed before asking.
const NAMES_LISTED: usize = 10;

/// `strata approve --rollout NAME [--wave W] | --tag T… | --all-pending`: shows what the
/// selection covers (how many, the first names, the revision), asks — unless `yes` — and
/// approves exactly that: the daemon refuses when the selection changed since it was shown.
pub async fn approve_selection(
    selector: &strata::daemon::selection::Selector,
    config: &std::path::Path,
    by: Option<&str>,
    revision: Option<&str>,
    yes: bool,
) -> Result<u8, Failure> {
    use std::io::BufRead;
    let config = load_config(config)?;
    let by = by.map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".into());
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(rollout) = &selector.rollout {
        query.append_pair("rollout", rollout);
    }
    if let Some(wave) = &selector.wave {
        query.append_pair("wave", wave);
    }
    for tag in &selector.tags {
        query.append_pair("tag", tag);
    }
    if selector.all_pending {
        query.append_pair("all_pending", "true");
    }
    let shown = api(&config, "GET", &format!("/api/v1/approvals?{}", query.finish()), None).await?;
    let selects = shown["selects"].as_str().unwrap_or_default().to_string();
    let names: Vec<&str> =
        shown["clusters"].as_array().into_iter().flatten().filter_map(|c| c["cluster"].as_str()).collect();
    if names.is_empty() {
        return Err(Failure::Usage(format!(
            "{selects}: no pending update waits for approval (strata status lists what is pending)"
        )));
    }
    let Some(pending) = shown["revision"].as_str() else {
        let revisions: Vec<&str> =
            shown["revisions"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        return Err(Failure::Usage(format!(
            "{selects}: the pending updates are at {} revisions ({}); review and approve each (narrow with --tag, or per cluster)",
            revisions.len(),
            revisions.iter().map(|r| &r[..r.len().min(7)]).collect::<Vec<_>>().join(", ")
        )));
    };
    if let Some(reviewed) = revision
        && !pending.starts_with(&reviewed.to_ascii_lowercase())
    {
        return Err(Failure::Usage(format!(
            "{selects}: the pending updates are at {}, not {reviewed}; review that revision (strata status CLUSTER --diff) and approve it",
            &pending[..7.min(pending.len())]
        )));
    }
    let count = names.len();
    let mut listed = names.iter().take(NAMES_LISTED).copied().collect::<Vec<_>>().join(", ");
    if count > NAMES_LISTED {
        listed.push_str(&format!(", … ({} more)", count - NAMES_LISTED));
    }
    print(&format!(
        "{selects}: {count} pending update{} at {} wait{} for approval: {listed}\n(see each: strata status CLUSTER --diff)\n",
        super::plural(count),
        &pending[..pending.len().min(7)],
        if count == 1 { "s" } else { "" },
    ))?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::Usage(format!(
                "{selects}: not approved: confirm on a terminal, or add --yes to approve these {count} without asking"
            )));
        }
        eprint!("approve these {count} at {}? [y/N] ", &pending[..pending.len().min(7)]);
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(|e| Failure::Internal(e.to_string()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::Usage(format!("{selects}: nothing approved")));
        }
    }
    let mut body = serde_json::to_value(selector).expect("a selector serialises");
    body["by"] = serde_json::json!(by);
    body["revision"] = serde_json::json!(pending);
    body["digest"] = shown["digest"].clone();
    let done = api(&config, "POST", "/api/v1/approvals", Some(body)).await?;
    let approved = done["count"].as_u64().unwrap_or(0);
    print(&format!(
        "{selects}: approved {approved} pending update{} at {} by {by}; the daemon applies them now\n",
        if approved == 1 { "" } else { "s" },
        &pending[..pending.len().min(7)]
    ))
}

pub async fn suspend(cluster: &str, config: &std::path::Path, suspend: bool) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let action = if suspend { "suspend" } else { "resume" };
    let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    api(
        &config,
        "POST",
        &format!("/api/v1/clusters/{}/{action}", segment(cluster)),
        Some(serde_json::json!({"by": by})),
    )
    .await?;
    print(&format!("{cluster}: {}\n", if suspend { "suspended" } else { "resumed" }))
}

fn short(rev: &serde_json::Value) -> String {
    rev.as_str().map(|r| r.chars().take(7).collect()).unwrap_or_else(|| "-".into())
}

/// `GET path` of a named thing; when the daemon does not know the name, the error says which
/// known names (from `list`, their names at `key`) are close to it.
pub async fn named(
    config: &Config,
    path: &str,
    name: &str,
    list: &str,
    key: &str,
    what: &str,
) -> Result<serde_json::Value, Failure> {
    match api(config, "GET", path, None).await {
        Ok(v) => Ok(v),
        Err(Failure::Usage(message)) if message.starts_with("no ") => {
            let Ok(known) = api(config, "GET", list, None).await else { return Err(Failure::Usage(message)) };
            let names: Vec<&str> = known
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|row| key.split('.').try_fold(row, |v, k| v.get(k)).and_then(|v| v.as_str()))
                .collect();
            let hint = did_you_mean(name, names.into_iter(), what);
            Err(Failure::Usage(format!("{message}{hint}")))
        }
        Err(e) => Err(e),
    }
}

pub async fn status(
    cluster: Option<&str>,
    tags: &[String],
    diff: bool,
    config: &std::path::Path,
    output: Output,
) -> Result<u8, Failure> {
    let config = load_config(config)?;
    if let Some(name) = cluster {
        let path = format!("/api/v1/clusters/{}", segment(name));
        let detail = named(&config, &path, name, "/api/v1/clusters", "cluster.name", "strata status").await?;
        match output {
            Output::Json | Output::Yaml | Output::Name => {
                return emit(output, &detail, || vec![format!("cluster/{name}")], |_| String::new());
            }
            Output::Text | Output::Wide => {}
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
                match p["diff"].as_str() {
                    Some(text) => out.push_str(text),
                    None => out.push_str(&format!("  ({})\n", p["diff_stale"].as_str().unwrap_or("no diff"))),
                }
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
            tags.iter().all(|want| strata::names::has_tag(&have, want))
        })
        .collect();
    if matches!(output, Output::Json | Output::Yaml | Output::Name) {
        let value = serde_json::Value::Array(rows.iter().map(|r| (*r).clone()).collect());
        let names =
            || rows.iter().map(|r| format!("cluster/{}", r["cluster"]["name"].as_str().unwrap_or(""))).collect();
        return emit(output, &value, names, |_| String::new());
    }
    let wide = output == Output::Wide;
    let mut header = vec!["CLUSTER", "PROFILE", "REVISION", "SYNC", "HEALTH", "DRIFT", "PENDING"];
    if wide {
        header.extend(["APPLIED", "MESSAGE"]);
    }
    let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for r in &rows {
        let c = &r["cluster"];
        let mut row = vec![
            c["name"].as_str().unwrap_or("").to_string(),
            format!("{}@{}", c["profile"].as_str().unwrap_or("-"), c["version"].as_str().unwrap_or("-")),
            short(&c["cluster_revision"]),
            format!(
                "{}{}",
                c["sync"].as_str().unwrap_or("-"),
                if c["suspended"] == true { " (suspended)" } else { "" }
            ),
            c["health"].as_str().unwrap_or("unknown").to_string(),
            c["drifted"].as_i64().unwrap_or(0).to_string(),
            r["pending"]["summary"]
                .as_str()
                .map(|_| {
                    let hold = &r["pending"]["hold"];
                    let why = match hold["until"].as_str().unwrap_or("") {
                        "rollout" => format!(
                            "rollout {}, wave {}",
                            hold["rollout"].as_str().unwrap_or(""),
                            hold["wave"].as_str().unwrap_or("")
                        ),
                        other => other.to_string(),
                    };
                    format!("{} ({why})", short(&r["pending"]["head_revision"]))
                })
                .unwrap_or_else(|| "-".into()),
        ];
        if wide {
            row.push(c["applied_at"].as_i64().map(strata::daemon::store::rfc3339).unwrap_or_else(|| "-".into()));
            row.push(c["message"].as_str().unwrap_or("-").lines().next().unwrap_or("-").to_string());
        }
        table.push(row);
    }
    let mut out = columns(&table);
    let waiting: Vec<&str> = rows
        .iter()
        .filter(|r| r["pending"]["hold"]["until"] == "approval")
        .filter_map(|r| r["cluster"]["name"].as_str())
        .collect();
    if !waiting.is_empty() {
        let mut listed = waiting.iter().take(NAMES_LISTED).copied().collect::<Vec<_>>().join(", ");
        if waiting.len() > NAMES_LISTED {
            listed.push_str(&format!(", … ({} more)", waiting.len() - NAMES_LISTED));
        }
        let all = if tags.is_empty() {
            "--all-pending".to_string()
        } else {
            tags.iter().map(|t| format!("--tag {t}")).collect::<Vec<_>>().join(" ")
        };
        out.push_str(&format!(
            "{} pending update{} wait{} for approval: {listed} (strata approve {all})\n",
            waiting.len(),
            super::plural(waiting.len()),
            if waiting.len() == 1 { "s" } else { "" },
        ));
    }
    let revision = api(&config, "GET", "/api/v1/revision", None).await?;
    if revision["verdict"] == "rejected" {
        // The first diagnostic, after the "does not load:" line; a crash is a single line.
        let text = revision["message"].as_str().unwrap_or("");
        let why = text.lines().nth(1).unwrap_or(text);
        out.push_str(&format!(
            "revision {} rejected, clusters keep what they run (last good: {}): {why}\n",
            short(&revision["head"]),
            short(&revision["last_good"])
        ));
    }
    out.push_str(&problems(&config).await);
    print(&out)?;
    // One line of counts by sync state (stderr: the table stays what scripts read).
    eprintln!("{}", tally("cluster", rows.iter().map(|r| sync_state(&r["cluster"]))));
    Ok(0)
}

/// A cluster's state for the summary line: its sync state, or `suspended`.
fn sync_state(c: &serde_json::Value) -> &str {
    if c["suspended"] == true { "suspended" } else { c["sync"].as_str().unwrap_or("unknown") }
}

/// What the daemon's network is failing at (from `/readyz`), one line each.
async fn problems(config: &Config) -> String {
    let Ok(readiness) = api(config, "GET", "/readyz", None).await else { return String::new() };
    readiness["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}: failing since {}: {}\n",
                p["source"].as_str().unwrap_or("?"),
                p["since"].as_str().unwrap_or("?"),
                p["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// `strata audit`: the daemon's audit trail, newest first, as a table or `-o json|yaml`.
pub async fn audit(
    since: Option<&str>,
    cluster: Option<&str>,
    user: Option<&str>,
    limit: usize,
    config: &std::path::Path,
    output: Output,
) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(since) = since {
        // An age (90m, 24h, 7d) counts back from now; anything else is a time for the daemon.
        let at = match strata::config::parse_duration(since) {
            Some(age) => (strata::daemon::store::now_ms() - age.as_millis() as i64).to_string(),
            None => since.to_string(),
        };
        query.append_pair("since", &at);
    }
    if let Some(cluster) = cluster {
        query.append_pair("cluster", cluster);
    }
    if let Some(user) = user {
        query.append_pair("user", user);
    }
    query.append_pair("limit", &limit.to_string());
    let entries = api(&config, "GET", &format!("/api/v1/audit?{}", query.finish()), None).await?;
    let rows: Vec<&serde_json::Value> = entries.as_array().into_iter().flatten().collect();
    let names = || rows.iter().map(|e| format!("audit/{}", e["at"])).collect();
    let table = |wide: bool| {
        let mut header = vec!["WHEN", "WHO", "ACTION", "OUTCOME", "WHAT", "REVISION", "VIA", "FROM"];
        if wide {
            header.push("DETAIL");
        }
        let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for e in &rows {
            let what = match (e["cluster"].as_str(), e["rollout"].as_str()) {
                (Some(c), _) => format!("cluster/{c}"),
                (None, Some(r)) => format!("rollout/{r}"),
                (None, None) => "-".into(),
            };
            let mut row = vec![
                e["at"].as_i64().map(|ms| strata::daemon::store::rfc3339(ms.div_euclid(1000))).unwrap_or_default(),
                e["who"].as_str().unwrap_or("-").to_string(),
                e["action"].as_str().unwrap_or("-").to_string(),
                e["outcome"].as_str().unwrap_or("-").to_string(),
                what,
                short(&e["revision"]),
                e["via"].as_str().unwrap_or("-").to_string(),
                e["from"].as_str().unwrap_or("-").to_string(),
            ];
            if wide {
                row.push(e["detail"].as_str().unwrap_or("").to_string());
            }
            table.push(row);
        }
        if rows.is_empty() {
            return "no audit entries match\n".to_string();
        }
        columns(&table)
    };
    emit(output, &entries, names, table)
}
