//! The status view in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the daemon running the example. Filter by the tutorial's tag, review the pending
//! in-place edit, sign in, approve, and watch the fleet page update by itself.
//!
//! A generated fleet of 1,000 clusters (benches/support/fleet.rs), some failing and some holding
//! an update for approval: the overview first, the list paged, filtered on two tags, sorted by
//! state, and kept current by the page's refresh.
//!
//! With STRATA_SCREENSHOTS=DIR set, the fleet and pending-update pages are saved there as PNGs
//! (that is how docs/ gets its pictures).

use crate::common;
use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Repo;
use common::webdriver::{Browser, Killed};
use support::fleet;

const TOKEN: &str = "view-test-token";

fn start_daemon(repo: &Repo, dir: &Path) -> (Killed, String) {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let targets: String = [
        ("aws-cluster", "aws-cluster"),
        ("aws-staging", "aws-staging"),
        ("edge-berlin", "edge-berlin"),
        ("lab", "lab"),
    ]
    .iter()
    .map(|(t, d)| format!("  {t}: {{ directory: ./out/{d} }}\n"))
    .collect();
    std::fs::write(
        dir.join("strata.yaml"),
        format!(
            "repository: {{ url: {}, branch: main, interval: 1h }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\napi: {{ token_file: ./token }}\ntargets:\n{targets}",
            repo.path().display()
        ),
    )
    .unwrap();
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["run", "--config"])
            .arg(dir.join("strata.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let address = common::wait_until(
        "the daemon to apply the example",
        Duration::from_secs(20),
        || {
            let address = std::fs::read_to_string(dir.join("state/listen-address")).ok();
            address.filter(|_| dir.join("out/aws-cluster/hello-universe/deployment.ui.yaml").exists())
        },
        Option::is_some,
    );
    (child, format!("http://{}", address.unwrap().trim()))
}

#[test]
fn review_and_approve_a_pending_update_in_the_browser() {
    let repo = Repo::example();
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, base) = start_daemon(&repo, dir.path());
    repo.edit("profiles/aws-profile/1.0.0/profile.yaml", "replicas: 1", "replicas: 3");
    repo.commit("aws-profile 1.0.0: three replicas");

    let browser = Browser::start();
    browser.go(&format!("{base}/"));
    browser.wait("four clusters", |b| b.count("tbody tr[data-cluster]") == 4);
    browser.wait("the pending badge", |b| b.count("tr[data-cluster=aws-cluster] a.pending") == 1);

    // Filter by the tutorial's tag.
    browser.type_into("input[name=tag]", "service:hello-universe-frontend");
    browser.click("form.filters button");
    browser.wait("the filtered fleet", |b| b.url().contains("tag=service%3Ahello-universe-frontend"));
    assert_eq!(browser.count("tbody tr[data-cluster]"), 2);
    assert!(browser.text("#list tbody").contains("aws-staging"));
    browser.screenshot("fleet.png");

    // Review the pending in-place edit, side by side.
    browser.click("tr[data-cluster=aws-cluster] a.pending");
    browser.wait("the pending page", |b| b.url().ends_with("/clusters/aws-cluster/pending"));
    assert_eq!(browser.text("td.del").trim(), "replicas: 1");
    assert_eq!(browser.text("td.add").trim(), "replicas: 3");
    browser.screenshot("pending-update.png");

    // Read-only until signed in.
    assert_eq!(browser.count("#approve"), 0);
    browser.click(".approve a");
    browser.wait("the login page", |b| b.url().contains("/login"));
    browser.type_into("input[name=name]", "alice");
    browser.type_into("input[name=token]", TOKEN);
    browser.click("form.login button");
    browser.wait("back on the pending page", |b| {
        b.url().ends_with("/clusters/aws-cluster/pending") && b.count("#approve") == 1
    });

    browser.click("#approve");
    browser.wait("the cluster page", |b| b.url().ends_with("/clusters/aws-cluster"));
    let ui = dir.path().join("out/aws-cluster/hello-universe/deployment.ui.yaml");
    common::wait_for("the approved update applied", Duration::from_secs(10), || {
        std::fs::read_to_string(&ui).unwrap_or_default().contains("replicas: 3")
    });
    browser.go(&format!("{base}/clusters/aws-cluster"));
    assert!(browser.text("body").contains("alice"), "the approval is recorded with who");

    // The fleet page follows without a reload.
    browser.go(&format!("{base}/"));
    browser.wait("the fleet page", |b| b.count("tbody tr[data-cluster]") == 4);
    repo.edit("clusters/edge-berlin.yaml", "replicas: 3", "replicas: 4");
    repo.edit("profiles/edge-profile/2.0.0/profile.yaml", "replicas: 2", "replicas: 5");
    repo.commit("edge-profile 2.0.0 in place");
    browser.wait("edge-berlin's pending badge, live", |b| b.count("tr[data-cluster=edge-berlin] a.pending") == 1);
}

/// `GET path` over plain HTTP/1.1: (status, body).
fn get(base: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_string())
}

/// A daemon on a generated fleet of `clusters`, on directory targets under /dev/shm where there is
/// one; the last three clusters' targets cannot be written (their applies fail). Returns once
/// every other cluster is applied.
fn start_fleet(clusters: usize) -> (tempfile::TempDir, Killed, String) {
    let dir = fleet::daemon_dir_with_three_failing(fleet::Shape::Overridden, clusters, "1s");
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["run", "--config"])
            .arg(dir.path().join("strata.yaml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let address = common::wait_until(
        "the daemon to start",
        Duration::from_secs(60),
        || std::fs::read_to_string(dir.path().join("state/listen-address")).ok(),
        Option::is_some,
    );
    let base = format!("http://{}", address.unwrap().trim());
    common::wait_until_with(
        "the fleet applied",
        Duration::from_secs(240).saturating_sub(started.elapsed()),
        Duration::from_millis(250),
        || get(&base, "/fragment/clusters").1,
        |overview| {
            let settled = |state: &str| {
                overview.contains(&format!("href=\"/?state={state}\"><span class=\"badge s-{state}\">{state}</span> "))
            };
            overview.contains(&format!("<strong>{clusters}</strong> clusters"))
                && !settled("new")
                && !settled("applying")
                && overview.contains("failed: 3")
        },
        String::new,
    );
    (dir, child, base)
}

#[test]
fn a_thousand_clusters_on_one_screen_overview_first_then_the_list_fifty_a_page() {
    let (dir, _daemon, base) = start_fleet(1000);

    // The first screen: totals, states, the clusters needing attention, versions per profile.
    let browser = Browser::start();
    browser.resize(1280, 1100);
    browser.go(&format!("{base}/"));
    browser.wait("the overview", |b| b.count("#overview") == 1);
    assert!(browser.text(".overview .total").contains("1000 clusters"));
    // (A failed cluster is `applying` for the moment of each retry: wait out such a moment.)
    browser.wait("three failed clusters", |b| b.text(".overview a[href=\"/?state=failed\"]").trim() == "failed 3");
    let failed = browser.text("[data-group=failed]");
    assert!(failed.contains("c00997") && failed.contains("c00999"), "{failed}");
    // p00: a quarter of its clusters pin 1.0.0, `~1.1` gives 1.1.0, and half are on 1.2.0.
    let versions = browser.text("table.versions").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(versions.contains("p00 100 1.0.0 25") && versions.contains("1.1.0 25 1.2.0 50"), "{versions}");
    browser.screenshot("fleet-overview.png");

    // The list: 50 a page, the next page in the URL.
    assert_eq!(browser.count("#list tbody tr[data-cluster]"), 50);
    assert!(browser.text("nav.pager").contains("Clusters 1–50 of 1000"), "{}", browser.text("nav.pager"));
    browser.click("nav.pager a[rel=next]");
    browser.wait("page 2", |b| b.url().ends_with("/?page=2"));
    assert_eq!(browser.count("#list tbody tr[data-cluster]"), 50);
    assert_eq!(browser.find_attribute("#list tbody tr[data-cluster]", "data-cluster"), "c00050");

    // Two tags, both required (it was a raw 400): staging (every tenth) in eu-central-1 (every sixth).
    browser.go(&format!("{base}/"));
    browser.type_into("input[name=tag]", "env:staging region:eu-central-1");
    browser.click("form.filters button");
    browser.wait("the filtered list", |b| b.url().contains("tag=env%3Astaging+region%3Aeu-central-1"));
    assert_eq!(browser.count("#list tbody tr[data-cluster]"), 34);
    assert!(browser.text("nav.pager").contains("of 34 matching, of 1000"), "{}", browser.text("nav.pager"));
    assert_eq!(browser.count("nav.pager a[rel=next]"), 0, "one page");

    // Sorted by state, failed first; the query can be shared as it is.
    browser.wait("the failed clusters first", |b| {
        b.go(&format!("{base}/?sort=state&page=1"));
        let first: Vec<String> =
            (1..=3).map(|i| b.find_attribute(&format!("#list tbody tr:nth-child({i})"), "data-cluster")).collect();
        first == ["c00997", "c00998", "c00999"]
    });
    assert_eq!(browser.count("#list tbody tr[data-cluster]"), 50);
    browser.go(&format!("{base}/?sort=state#list"));
    browser.wait("the list", |b| b.count("#list tbody tr[data-cluster]") == 50);
    browser.screenshot("fleet-list.png");

    // What the page and its refresh weigh at 1,000 clusters: a page of the list, never the fleet.
    let (code, page) = get(&base, "/");
    assert_eq!(code, 200);
    assert!(page.len() < 200_000, "the fleet page is {} bytes", page.len());
    let (_, fragment) = get(&base, "/fragment/clusters");
    assert!(fragment.len() < 100_000, "the refresh is {} bytes", fragment.len());
    assert_eq!(fragment.matches("<tr data-cluster=").count(), 50);

    // An in-place edit of p01@1.2.0, whose clusters take updates on approval (odd ones do), is
    // held on its 50 clusters: it shows up without a reload.
    browser.go(&format!("{base}/"));
    browser.wait("the overview", |b| b.count("#overview") == 1);
    fleet::edit_versions(&dir.path().join("fleet"), fleet::Shape::Overridden, &["p01/1.2.0"]);
    browser.wait("the clusters awaiting approval, live", |b| {
        b.count("[data-group=\"awaiting approval\"]") == 1
            && b.text("[data-group=\"awaiting approval\"] h3").contains(": 50")
    });
    assert!(browser.text("table.versions").contains("50 → 1.2.0"), "{}", browser.text("table.versions"));
    assert_eq!(browser.count("[data-group=\"awaiting approval\"] li"), 20, "the first 20, and a link to all");
    let all = browser.find_attribute("[data-group=\"awaiting approval\"] a.more", "href");
    assert!(all.ends_with("/?state=awaiting-approval"), "{all}");
}
