//! The status view in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the daemon running the example. Filter by the tutorial's tag, review the pending
//! in-place edit, sign in, approve, and watch the fleet page update by itself.
//!
//! With STRATA_SCREENSHOTS=DIR set, the fleet and pending-update pages are saved there as PNGs
//! (that is how docs/ gets its pictures).

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Repo;
use common::webdriver::{Browser, Killed};

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
    let started = Instant::now();
    loop {
        if let Ok(address) = std::fs::read_to_string(dir.join("state/listen-address")) {
            let base = format!("http://{}", address.trim());
            if dir.join("out/aws-cluster/hello-universe/deployment.ui.yaml").exists() {
                return (child, base);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the daemon did not apply the example");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    assert!(browser.text("tbody").contains("aws-staging"));
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
    let started = Instant::now();
    while !std::fs::read_to_string(&ui).unwrap_or_default().contains("replicas: 3") {
        assert!(started.elapsed() < Duration::from_secs(10), "the approved update was not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
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
