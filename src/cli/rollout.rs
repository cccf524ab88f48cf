//! `strata rollout status|promote|pause|resume|abort`: ask the running daemon about rollouts.

use serde_json::Value;

use super::daemon::{api, named, segment};
use super::{Failure, columns, emit, load_config, print};
use crate::Output;

fn short(rev: &Value) -> String {
    rev.as_str().map(|r| r.chars().take(7).collect()).unwrap_or_else(|| "-".into())
}

/// The waves that hold clusters, with the number the daemon gives them (1-based among those).
fn used(rollout: &Value) -> Vec<(usize, &Value)> {
    rollout["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| Some((w["number"].as_u64()? as usize, w)))
        .collect()
}

/// `2 of 3 (canary)`: the wave the rollout is at.
fn at_wave(rollout: &Value) -> String {
    let used = used(rollout);
    let current = used
        .iter()
        .find(|(_, w)| matches!(w["state"].as_str(), Some("updating" | "baking" | "waits-for-promotion" | "halted")));
    match (current, rollout["state"].as_str()) {
        (_, Some("idle")) => "-".into(),
        (Some((n, w)), _) => format!("{n} of {} ({})", used.len(), w["name"].as_str().unwrap_or("")),
        (None, _) => format!("{} of {}", used.len(), used.len()),
    }
}

/// `1 updated, 1 updating, 4 waiting`: the daemon's words for its clusters' states.
fn counts(rollout: &Value) -> String {
    let mut by_state: Vec<(String, usize)> = Vec::new();
    for c in
        rollout["waves"].as_array().into_iter().flatten().flat_map(|w| w["clusters"].as_array().into_iter().flatten())
    {
        let state = c["state"].as_str().unwrap_or("?");
        match by_state.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => by_state.push((state.to_string(), 1)),
        }
    }
    if by_state.is_empty() {
        return "-".into();
    }
    by_state.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
}

fn gates(wave: &Value) -> String {
    let mut out = format!(
        "{}; maxParallel {}, bake {}",
        wave["selects"].as_str().unwrap_or(""),
        wave["maxParallel"].as_str().unwrap_or(""),
        wave["bake"].as_str().unwrap_or("")
    );
    if wave["approval"] == "manual" {
        out.push_str(", approval manual");
    }
    out
}

fn detail(r: &Value) -> String {
    let name = r["rollout"].as_str().unwrap_or("");
    let profiles: Vec<&str> = r["profiles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut out = format!(
        "rollout {name} ({}): {}{} — governs {}; on failure: {} at {} failed cluster(s){}\n",
        r["file"].as_str().unwrap_or(""),
        r["state"].as_str().unwrap_or(""),
        r["revision"].as_str().map(|rev| format!(" at {}", &rev[..rev.len().min(7)])).unwrap_or_default(),
        if profiles.is_empty() { "every profile".to_string() } else { profiles.join(", ") },
        r["onFailure"].as_str().unwrap_or(""),
        r["failureThreshold"],
        if r["failOnDrift"] == true { ", drift counts" } else { "" },
    );
    out.push_str(&format!("next: {}\n", r["next"].as_str().unwrap_or("nothing to roll out")));
    for (n, wave) in used(r) {
        let mut state = wave["state"].as_str().unwrap_or("").replace('-', " ");
        if let Some(until) = wave["bakeUntil"].as_i64() {
            state.push_str(&format!(" until {}", strata::daemon::store::rfc3339(until.div_euclid(1000))));
        }
        out.push_str(&format!(
            "{n}. {}  {state} — {} of {} updated{}{}  ({})\n",
            wave["name"].as_str().unwrap_or(""),
            wave["updated"],
            wave["total"],
            match wave["failed"].as_u64() {
                Some(f) if f > 0 => format!(", {f} failed"),
                _ => String::new(),
            },
            match wave["awaitingApproval"]["count"].as_u64() {
                Some(a) => format!(", {a} awaiting approval"),
                None => String::new(),
            },
            gates(wave)
        ));
        if let Some(approve) = wave["awaitingApproval"]["approve"].as_str() {
            out.push_str(&format!("   approve them: {approve}\n"));
        }
        let rows: Vec<Vec<String>> = wave["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let to = c["to"].as_str().unwrap_or("");
                let change = match c["before"].as_str() {
                    Some(before) if before != to => format!("{before} → {to}"),
                    _ => to.to_string(),
                };
                vec![
                    format!("     {}", c["cluster"].as_str().unwrap_or("")),
                    match c["awaitsApproval"] == true {
                        true => format!("{} (awaits approval)", c["state"].as_str().unwrap_or("")),
                        false => c["state"].as_str().unwrap_or("").to_string(),
                    },
                    change,
                    c["message"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        out.push_str(&columns(&rows));
    }
    let idle: Vec<&str> = r["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["total"] == 0)
        .filter_map(|w| w["name"].as_str())
        .collect();
    if !idle.is_empty() && r["state"] != "idle" {
        out.push_str(&format!("no cluster of this change in: {}\n", idle.join(", ")));
    }
    out
}

pub async fn status(name: Option<&str>, config: &std::path::Path, output: Output) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let answer = match name {
        Some(name) => {
            let path = format!("/api/v1/rollouts/{}", segment(name));
            named(&config, &path, name, "/api/v1/rollouts", "rollout", "strata rollout status").await?
        }
        None => api(&config, "GET", "/api/v1/rollouts", None).await?,
    };
    let rows = match name {
        Some(_) => vec![answer.clone()],
        None => answer.as_array().cloned().unwrap_or_default(),
    };
    let names = || rows.iter().map(|r| format!("rollout/{}", r["rollout"].as_str().unwrap_or(""))).collect();
    if name.is_some() && matches!(output, Output::Text | Output::Wide) {
        return print(&detail(&answer));
    }
    if rows.is_empty() && matches!(output, Output::Text | Output::Wide) {
        return print("no rollout policy in the repository (rollouts/*.yaml)\n");
    }
    let table = |wide: bool| {
        let mut header = vec!["ROLLOUT", "STATE", "REVISION", "WAVE", "CLUSTERS", "NEXT"];
        if wide {
            header.extend(["FILE", "ON FAILURE"]);
        }
        let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for r in &rows {
            let mut row = vec![
                r["rollout"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
                short(&r["revision"]),
                at_wave(r),
                counts(r),
                r["next"].as_str().unwrap_or("-").to_string(),
            ];
            if wide {
                row.push(r["file"].as_str().unwrap_or("-").to_string());
                row.push(r["onFailure"].as_str().unwrap_or("-").to_string());
            }
            table.push(row);
        }
        columns(&table)
    };
    emit(output, &answer, names, table)
}

/// Shows what a promotion does now, then asks for exactly that (the wave and the revision seen).
pub async fn promote(name: &str, wave: Option<&str>, config: &std::path::Path) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let path = format!("/api/v1/rollouts/{}", segment(name));
    let r = api(&config, "GET", &path, None).await?;
    let Some(promotion) = r["promotion"].as_object() else {
        let why = r["next"].as_str().unwrap_or("nothing is rolling out");
        return Err(Failure::Usage(format!("{name}: nothing waits for promotion ({why})")));
    };
    let starts = promotion["starts"].as_str();
    let wave = wave.or(starts);
    print(&format!("{name} at {}: {}\n", short(&r["revision"]), r["next"].as_str().unwrap_or("")))?;
    let body = serde_json::json!({ "by": by(), "wave": wave, "revision": r["revision"] });
    let done = api(&config, "POST", &format!("{path}/promote"), Some(body)).await?;
    print(&format!("{name}: {}\n", done["done"].as_str().unwrap_or("promoted")))
}

/// `pause`, `resume` or `abort`.
pub async fn act(name: &str, action: &str, config: &std::path::Path) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let path = format!("/api/v1/rollouts/{}/{action}", segment(name));
    let done = api(&config, "POST", &path, Some(serde_json::json!({ "by": by() }))).await?;
    print(&format!("{name}: {}\n", done["done"].as_str().unwrap_or(action)))
}

fn by() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}
