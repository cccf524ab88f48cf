//! Apply benchmark: a 200-object desired set applied to the API server stand-in of `tests/`
//! over HTTP on 127.0.0.1, by `strata apply` and by `kubectl apply --server-side` of the same
//! rendered objects, in one run.
//!
//! For each tool: a cold apply into a fresh server (everything created), then an unchanged
//! re-apply; each is a fresh process, timed end to end (median of the runs), and the server
//! counts the requests. Run with `cargo bench --bench apply` (`-- --runs N` for more runs,
//! `-- --latency MS` to delay every answer of the server as a remote one would be,
//! `-- --strata PATH` to measure another build of strata).

#[path = "../tests/apiserver/mod.rs"]
mod apiserver;
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};
use support::{git, write};

use apiserver::ApiServer;

const LAYERS: usize = 4;
/// Per layer: a Namespace, then this many apps of ConfigMap + Deployment + Service, plus a
/// ServiceAccount: 1 + 16 * 3 + 1 = 50 objects per layer, 200 in all.
const APPS: usize = 16;

fn generate(root: &Path) {
    let mut profile = String::from(
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: bench, version: 1.0.0 }\nspec:\n  layers:\n",
    );
    for l in 0..LAYERS {
        let _ = writeln!(
            profile,
            "    - {{ name: l{l}, type: manifests, source: packs/l{l}, namespace: bench-l{l}, values: {{ replicas: 2 }} }}"
        );
        let mut text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: bench-l{l} }}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{ name: runner }}\n"
        );
        for a in 0..APPS {
            let _ = write!(
                text,
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: app{a}-config }}\ndata: {{ LOG_LEVEL: info, INDEX: \"{a}\" }}\n\
                 ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: app{a}, labels: {{ app: app{a} }} }}\n\
                 spec:\n  replicas: {{{{ values.replicas }}}}\n  selector: {{ matchLabels: {{ app: app{a} }} }}\n  template:\n    metadata: {{ labels: {{ app: app{a} }} }}\n    spec:\n      serviceAccountName: runner\n      containers:\n        - {{ name: app, image: \"registry.example.com/app:1.{a}\", ports: [{{ containerPort: 8080 }}] }}\n\
                 ---\napiVersion: v1\nkind: Service\nmetadata: {{ name: app{a} }}\nspec: {{ selector: {{ app: app{a} }}, ports: [{{ port: 80, targetPort: 8080 }}] }}\n"
            );
        }
        write(root, &format!("packs/l{l}/objects.yaml"), &text);
    }
    write(root, "profiles/bench/1.0.0/profile.yaml", &profile);
    write(
        root,
        "clusters/bench.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: bench }\nspec:\n  profile: { name: bench, version: 1.0.0 }\n",
    );
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "bench"]);
}

fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let out = command.output().expect("runs");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        command,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Counts {
    requests: usize,
    writes: usize,
}

fn counts(server: &ApiServer) -> Counts {
    let log = server.requests();
    Counts { requests: log.len(), writes: log.iter().filter(|r| r.is_write()).count() }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize =
        args.iter().position(|a| a == "--runs").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(5);
    // `--serve DIR SECONDS`: only run the stand-in API server, with its kubeconfig in DIR (for profiling).
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let server = ApiServer::start();
        let kubeconfig = server.kubeconfig(Path::new(&args[i + 1]));
        eprintln!("serving {} (kubeconfig {})", server.url(), kubeconfig.display());
        std::thread::sleep(Duration::from_secs(args[i + 2].parse().unwrap()));
        return;
    }
    let latency = Duration::from_millis(
        args.iter()
            .position(|a| a == "--latency")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    );
    let strata: String = args
        .iter()
        .position(|a| a == "--strata")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_strata").to_string());
    let strata = strata.as_str();
    let repo = tempfile::tempdir().unwrap();
    generate(repo.path());

    // The same objects for kubectl: strata's rendering, written to a file.
    let rendered = repo.path().join("rendered.yaml");
    let out = Command::new(strata).args(["render", "bench", "--repo"]).arg(repo.path()).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&rendered, &out.stdout).unwrap();
    let objects = String::from_utf8_lossy(&out.stdout).matches("\n---\n").count();

    let mut rows = Vec::new();
    for tool in ["strata", "kubectl"] {
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        let (mut cold_counts, mut warm_counts) = (None, None);
        for _ in 0..runs {
            let server = ApiServer::start();
            server.set_latency(latency);
            let dir = tempfile::tempdir().unwrap();
            let kubeconfig = server.kubeconfig(dir.path());
            let config = dir.path().join("strata.yaml");
            std::fs::write(&config, format!("targets:\n  bench: {{ kubeconfig: {} }}\n", kubeconfig.display()))
                .unwrap();
            let run = || {
                let mut c = if tool == "strata" {
                    let mut c = Command::new(strata);
                    c.args(["apply", "bench", "--repo"]).arg(repo.path()).arg("--config").arg(&config);
                    c
                } else {
                    let mut c = Command::new("kubectl");
                    c.arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["apply", "--server-side", "--field-manager=strata", "--validate=false", "-f"])
                        .arg(&rendered);
                    c
                };
                timed(&mut c)
            };
            server.clear_requests();
            cold.push(run());
            cold_counts = Some(counts(&server));
            server.clear_requests();
            warm.push(run());
            warm_counts = Some(counts(&server));
        }
        rows.push((tool, median(cold), median(warm), cold_counts.unwrap(), warm_counts.unwrap()));
    }
    println!(
        "{objects} objects, {runs} runs each, {}ms per answer, median wall time per process (requests / writes seen by the server)",
        latency.as_millis()
    );
    println!(
        "{:<8} {:>12} {:>18} {:>14} {:>18}",
        "tool", "cold apply", "requests/writes", "re-apply", "requests/writes"
    );
    for (tool, cold, warm, c, w) in &rows {
        println!(
            "{tool:<8} {:>10.0}ms {:>11}/{:<6} {:>12.0}ms {:>11}/{:<6}",
            cold.as_secs_f64() * 1e3,
            c.requests,
            c.writes,
            warm.as_secs_f64() * 1e3,
            w.requests,
            w.writes
        );
    }
    let (s, k) = (&rows[0], &rows[1]);
    println!(
        "kubectl / strata: cold {:.1}x, re-apply {:.1}x",
        k.1.as_secs_f64() / s.1.as_secs_f64(),
        k.2.as_secs_f64() / s.2.as_secs_f64()
    );
}
