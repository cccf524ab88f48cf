//! Fleet page benchmark: `strata run` on a generated fleet (benches/support/fleet.rs, the
//! `overridden` shape, default 1,000 clusters) on directory targets, the last three unwritable
//! (their applies fail), and once the fleet is applied an in-place edit that holds an update
//! for approval on the clusters of p01@1.2.0 (a twentieth of the fleet).
//!
//! Measures, over loopback, for the first page (`/`), a filtered and sorted page, the page's
//! refresh (`/fragment/clusters`: 200 and 304), a page of the API (`?limit=500`) and `/metrics`:
//! the size of the answer, the time the daemon says it spent (`Server-Timing`, where it says)
//! and the time to the last byte. "cold": the fleet's snapshot is read again from the state
//! (each request after a state change, as the first viewer after one sees it); "warm": the
//! snapshot is shared (every other viewer, every refresh). Medians of 15.
//!
//! `cargo bench --bench view` (`-- --clusters N --shape light` for a fleet of one object per
//! cluster, as for 100,000 clusters).

mod support;

use support::fleet;
use support::{applied_count, git};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// GETs `path`: (status, bytes, server time in ms from Server-Timing, time to the last byte).
fn get(address: &str, path: &str, headers: &str) -> (u16, usize, Option<f64>, Duration) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head[9..12].parse().unwrap_or(0);
    let server = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("server-timing").then(|| v.trim().strip_prefix("app;dur=")?.parse().ok())?
    });
    (code, body.len(), server, took)
}

fn etag(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .unwrap_or("")
        .trim()
        .to_string()
}

struct Measure {
    bytes: usize,
    server: Option<f64>,
    wall: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// `runs` requests of `path`; before each, `cold` waits out the snapshot's age so that the
/// fleet is read from the state again.
fn measure(address: &str, path: &str, headers: &str, cold: bool, runs: usize) -> Measure {
    let (mut servers, mut walls, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        if cold {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let (code, size, server, wall) = get(address, path, headers);
        assert!(code == 200 || code == 304, "{path}: {code}");
        bytes = size;
        if let Some(s) = server {
            servers.push(s);
        }
        walls.push(wall.as_secs_f64() * 1e3);
    }
    Measure { bytes, server: (!servers.is_empty()).then(|| median(&mut servers)), wall: median(&mut walls) }
}

fn start(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--config"])
        .arg(dir.join("strata.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let clusters: usize = arg("--clusters").and_then(|n| n.parse().ok()).unwrap_or(1000);
    let shape = arg("--shape").map_or(fleet::Shape::Overridden, |s| fleet::Shape::parse(&s).expect("a shape"));
    assert!(shape != fleet::Shape::Shared, "the shared fleet has no p01@1.2.0 to hold");
    let dir = fleet::daemon_dir_with_three_failing(shape, clusters, "2s");
    let repo = dir.path().join("fleet");

    let started = Instant::now();
    let mut child = start(dir.path());
    let address = loop {
        if let Ok(address) = std::fs::read_to_string(dir.path().join("state/listen-address")) {
            break address.trim().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    while applied_count(&address) < clusters - 3 {
        assert!(started.elapsed() < Duration::from_secs(1800), "the fleet was not applied in time");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("{clusters} clusters ({}) applied in {:.1}s", shape.name(), started.elapsed().as_secs_f64());
    fleet::edit_versions(&repo, shape, &["p01/1.2.0"]);
    let held = clusters.div_ceil(10) / 2;
    let wanted = format!("awaiting approval: {held}<");
    let edited = Instant::now();
    loop {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        use std::io::{Read, Write};
        let _ = write!(stream, "GET /fragment/clusters HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        if body.contains(&wanted) {
            break;
        }
        assert!(edited.elapsed() < Duration::from_secs(600), "the edit was not held on {held} clusters");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));

    let tag_page = "/?tag=env:prod&tag=region:eu-west-1&sort=state&page=2";
    let fragment_etag = etag(&address, "/fragment/clusters");
    let not_modified = format!("If-None-Match: {fragment_etag}\r\n");
    let rows: [(&str, &str, &str, bool); 9] = [
        ("first page `/`, cold", "/", "", true),
        ("first page `/`, warm", "/", "", false),
        ("two tags, by state, page 2, warm", tag_page, "", false),
        ("refresh `/fragment/clusters`, cold", "/fragment/clusters", "", true),
        ("refresh `/fragment/clusters`, warm", "/fragment/clusters", "", false),
        ("refresh, nothing changed (304)", "/fragment/clusters", &not_modified, false),
        ("API page `?limit=500`, warm", "/api/v1/clusters?limit=500", "", false),
        ("API, whole fleet (unpaged)", "/api/v1/clusters", "", false),
        ("`/metrics`, warm", "/metrics", "", false),
    ];
    println!("| {clusters} clusters | bytes | server (Server-Timing) | to the last byte |");
    println!("| --- | --- | --- | --- |");
    for (what, path, headers, cold) in rows {
        let runs = if cold { 7 } else { 15 };
        let m = measure(&address, path, headers, cold, runs);
        println!(
            "| {what} | {} | {} | {:.1} ms |",
            m.bytes,
            m.server.map_or("-".to_string(), |s| format!("{s:.1} ms")),
            m.wall
        );
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    git(&repo, &["log", "-1", "--format=%h"]);
}
