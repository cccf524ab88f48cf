//! Enterprise networks end to end: a Git server (`git http-backend`) and a forge stand-in behind
//! TLS with certificates from a CA made in the test, a forward proxy that records what passes, the
//! real `strata run` (Git fetches, commit statuses, SIGHUP) and `strata plan --post`. Each broken
//! setting must be understood from strata's message alone.

use crate::apiserver;
use crate::common;
use crate::forge;
use crate::githttp;
use crate::netlab;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Repo;
use common::daemon::Daemon;
use netlab::{Ca, Pem, Proxy};

const GIT_TOKEN: &str = "git-token-123";
const FORGE_TOKEN: &str = "forge-token-456";
const PROXY_PASSWORD: &str = "proxy-pass-789";

/// A CA, the example fleet in a bare repository, and files for tokens, in one temporary directory.
struct Lab {
    dir: tempfile::TempDir,
    ca: Ca,
    work: Repo,
    head: String,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(&dir.path().join("pki"), "Strata Test CA");
        let work = Repo::example();
        let head = work.commit("start");
        let bare = dir.path().join("repos/fleet.git");
        let cloned = Command::new("git").args(["clone", "-q", "--bare"]).arg(work.path()).arg(&bare).status().unwrap();
        assert!(cloned.success());
        std::fs::write(dir.path().join("git-token"), format!("{GIT_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("forge-token"), format!("{FORGE_TOKEN}\n")).unwrap();
        Lab { dir, ca, work, head }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `git http-backend` over TLS with `pem`; `clients` makes it require a client certificate.
    fn git_server(&self, pem: &Pem, clients: Option<&Ca>) -> githttp::GitHttp {
        let tls = netlab::server_config(pem, clients);
        githttp::GitHttp::start_with(self.path("repos"), "x-access-token", GIT_TOKEN, Some(tls))
    }

    /// The usual server certificate: for localhost and 127.0.0.1.
    fn localhost(&self) -> Pem {
        self.ca.server("strata-test-server", &["localhost", "127.0.0.1"])
    }

    /// `repository:` for `url` (`https://HOST:PORT`), with more keys (`ca_file: …`).
    fn repository(&self, url: &str, extra: &str) -> String {
        format!(
            "repository: {{ url: '{url}/fleet.git', branch: main, interval: 1h, credentials: {{ token_file: {} }}{extra} }}\n",
            self.path("git-token").display()
        )
    }

    fn status(&self, forge: &forge::Forge, extra: &str) -> String {
        format!(
            "status: {{ provider: github, api: '{}', repo: platform/fleet, token_file: {}, min_interval: 10ms{extra} }}\n",
            forge.url.replace("127.0.0.1", "localhost"),
            self.path("forge-token").display()
        )
    }

    fn ca_file(&self) -> String {
        format!(", ca_file: {}", self.ca.cert.display())
    }
}

/// `https://127.0.0.1:PORT` → `https://localhost:PORT` (the name the certificates are for).
fn by_name(url: &str) -> String {
    url.replace("127.0.0.1", "localhost")
}

/// `/readyz`: (status, body).
fn readyz(daemon: &Daemon) -> (u16, String) {
    daemon.get("/readyz")
}

/// The `/readyz` line about the repository, once there is one.
fn repository_problem(daemon: &Daemon) -> String {
    daemon.wait_for("a repository problem in /readyz", Duration::from_secs(20), |d| {
        readyz(d).1.contains("repository: failing since")
    });
    let text = readyz(daemon).1;
    text.lines().find(|l| l.starts_with("repository:")).unwrap().to_string()
}

fn applied(daemon: &Daemon) -> bool {
    common::daemon::file(&daemon.out("aws-cluster/hello-universe/deployment.ui.yaml")).contains("replicas: 1")
}

const TARGETS: &str = "targets:\n  aws-cluster: { directory: ./out/aws-cluster }\n  aws-staging: { directory: ./out/aws-staging }\n  edge-berlin: { directory: ./out/edge-berlin }\n  lab: { directory: ./out/lab }\n";

#[test]
fn an_unknown_ca_is_named_everywhere_and_ca_file_with_sighup_fixes_it() {
    let lab = Lab::new();
    let server = lab.git_server(&lab.localhost(), None);
    let url = by_name(&server.url);
    let daemon = Daemon::start_config(&format!("{}{TARGETS}", lab.repository(&url, "")), &[]);

    let problem = repository_problem(&daemon);
    let port = url.rsplit(':').next().unwrap();
    assert!(
        problem.contains(&format!(
            "GET https://localhost:{port}/fleet.git/info/refs?service=git-upload-pack: TLS: the certificate of localhost is not trusted: it is for \"CN=strata-test-server\", issued by \"CN=Strata Test CA, O=strata tests\", and no trusted CA vouches for that issuer; add the issuer's CA certificate (PEM) to repository.ca_file"
        )),
        "{problem}"
    );
    assert_eq!(readyz(&daemon).0, 200, "serving the last good revision, even if there is none yet");
    let message = problem.split_once("): ").unwrap().1;
    assert!(daemon.log().contains(message), "the log says the same:\n{}", daemon.log());
    let status = daemon.strata(&["status"]);
    assert!(status.stdout.contains(message), "strata status says the same:\n{}", status.stdout);
    let (_, page) = daemon.get("/");
    assert!(page.contains("Network problems") && page.contains("is not trusted"), "the view says it too");
    assert!(!daemon.log().contains(GIT_TOKEN), "the token is never logged");

    daemon.reload(&format!("{}{TARGETS}", lab.repository(&url, &lab.ca_file())));
    daemon.wait_for("the fleet applied after SIGHUP", Duration::from_secs(20), applied);
    daemon.wait_for("the problem cleared", Duration::from_secs(5), |d| readyz(d).1 == "ready\n");
    assert!(daemon.log().contains("SIGHUP: proxy and TLS material reloaded"));
}

#[test]
fn a_server_that_requires_a_client_certificate_gets_the_configured_one() {
    let lab = Lab::new();
    let clients = Ca::new(&lab.path("client-pki"), "Strata Client CA");
    let server = lab.git_server(&lab.localhost(), Some(&clients));
    let url = by_name(&server.url);
    let daemon = Daemon::start_config(&format!("{}{TARGETS}", lab.repository(&url, &lab.ca_file())), &[]);
    let problem = repository_problem(&daemon);
    assert!(
        problem.contains("TLS: localhost requires a client certificate")
            && problem
                .ends_with("and none is configured; set repository.client_cert_file and repository.client_key_file"),
        "{problem}"
    );

    // A certificate from a CA the server does not trust: refused, and said so.
    let stranger = Ca::new(&lab.path("stranger-pki"), "Someone Else").client("strata");
    let with = |pem: &Pem| {
        format!("{}, client_cert_file: {}, client_key_file: {}", lab.ca_file(), pem.cert.display(), pem.key.display())
    };
    daemon.reload(&format!("{}{TARGETS}", lab.repository(&url, &with(&stranger))));
    daemon.wait_for("the certificate refused", Duration::from_secs(20), |d| {
        readyz(d).1.contains("refused the client certificate from repository.client_cert_file")
    });

    daemon.reload(&format!("{}{TARGETS}", lab.repository(&url, &with(&clients.client("strata")))));
    daemon.wait_for("the fleet applied over mutual TLS", Duration::from_secs(20), applied);
}

#[test]
fn fetches_and_statuses_go_through_the_proxy_except_for_no_proxy_hosts() {
    let lab = Lab::new();
    let pem = lab.localhost();
    let server = lab.git_server(&pem, None);
    let forge = forge::Forge::start_with(Some(netlab::server_config(&pem, None)));
    let proxy = Proxy::start();
    let config = format!(
        "{}{}{TARGETS}",
        lab.repository(&by_name(&server.url), &lab.ca_file()),
        lab.status(&forge, &lab.ca_file())
    );
    let daemon = Daemon::start_config(&config, &[("HTTPS_PROXY", &proxy.url)]);
    daemon.wait_for("applied through the proxy", Duration::from_secs(20), applied);
    daemon.wait_for("statuses through the proxy", Duration::from_secs(20), |_| {
        forge.statuses().iter().any(|s| s.path.ends_with(&lab.head) && s.body["state"] == "success")
    });
    let git = by_name(&server.url).replace("https://", "");
    let api = by_name(&forge.url).replace("https://", "");
    assert!(proxy.saw(&git), "the fetch went through the proxy: {:?}", proxy.seen());
    assert!(proxy.saw(&api), "statuses went through the proxy: {:?}", proxy.seen());
    assert!(proxy.seen().iter().all(|t| t.method == "CONNECT"), "HTTPS is tunnelled: {:?}", proxy.seen());
    assert!(proxy.seen().iter().all(|t| t.proxy_authorization.is_none()));
    drop(daemon);

    // NO_PROXY (lower case, with a CIDR range) sends 127.0.0.1 around the proxy.
    let before = proxy.seen().len();
    forge.clear();
    let config = format!(
        "{}{}{TARGETS}",
        lab.repository(&server.url, &lab.ca_file()),
        lab.status(&forge, &lab.ca_file()).replace("localhost", "127.0.0.1")
    );
    let direct =
        Daemon::start_config(&config, &[("https_proxy", &proxy.url), ("no_proxy", "corp.example, 127.0.0.0/8")]);
    direct.wait_for("applied directly", Duration::from_secs(20), applied);
    direct.wait_for("statuses sent directly", Duration::from_secs(20), |_| !forge.statuses().is_empty());
    assert_eq!(proxy.seen().len(), before, "nothing went through the proxy: {:?}", &proxy.seen()[before..]);
}

#[test]
fn a_dead_proxy_and_one_that_wants_credentials_are_named_and_proxy_config_wins() {
    let lab = Lab::new();
    let server = lab.git_server(&lab.localhost(), None);
    let url = by_name(&server.url);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead_url = format!("http://{dead}");
    let repository = lab.repository(&url, &lab.ca_file());
    let daemon = Daemon::start_config(&format!("{repository}{TARGETS}"), &[("HTTPS_PROXY", &dead_url)]);
    let problem = repository_problem(&daemon);
    assert!(
        problem.ends_with(&format!(
            "cannot connect to the proxy {dead} (from HTTPS_PROXY): connection refused; check HTTPS_PROXY, or add localhost to NO_PROXY if it is reachable directly"
        )),
        "{problem}"
    );
    drop(daemon);

    // `proxy:` in strata.yaml wins over the (dead) environment; the wrong password is refused.
    let proxy = Proxy::start_with(Some(("strata", PROXY_PASSWORD)));
    let password = lab.path("proxy-password");
    std::fs::write(&password, "wrong\n").unwrap();
    let proxied = |extra: &str| format!("proxy: {{ url: '{}'{extra} }}\n{repository}{TARGETS}", proxy.url);
    let with_auth = format!(", username: strata, password_file: {}", password.display());
    let daemon = Daemon::start_config(&proxied(""), &[("HTTPS_PROXY", &dead_url)]);
    let problem = repository_problem(&daemon);
    let address = proxy.url.trim_start_matches("http://");
    assert!(
        problem.ends_with(&format!(
            "the proxy {address} (from proxy.url in strata.yaml) requires authentication (407 Proxy Authentication Required); set proxy.username and proxy.password_file"
        )),
        "{problem}"
    );
    daemon.reload(&proxied(&with_auth));
    daemon.wait_for("the credentials refused", Duration::from_secs(20), |d| {
        readyz(d).1.contains(&format!(
            "the proxy {address} (from proxy.url in strata.yaml) refused the credentials (407 Proxy Authentication Required); check proxy.username and proxy.password_file"
        ))
    });
    std::fs::write(&password, format!("{PROXY_PASSWORD}\n")).unwrap();
    daemon.reload(&proxied(&with_auth));
    daemon.wait_for("applied through the authenticating proxy", Duration::from_secs(20), applied);
    assert!(proxy.seen().iter().any(|t| t.answered == 200 && t.proxy_authorization.is_some()));
    assert!(!daemon.log().contains(PROXY_PASSWORD) && !daemon.log().contains("wrong"), "no password in the log");
}

/// `strata plan --post` of the lab's head to the forge at `api`, with more `status` settings
/// (`extra`) and the environment `env` (no proxy unless it says so).
fn post(lab: &Lab, api: &str, extra: &str, env: &[(&str, &str)]) -> common::Run {
    let config = lab.path("plan.yaml");
    std::fs::write(
        &config,
        format!(
            "status: {{ provider: github, api: '{api}', repo: platform/fleet, token_file: {}{extra} }}\n",
            lab.path("forge-token").display()
        ),
    )
    .unwrap();
    let mut all = vec![("HTTPS_PROXY", ""), ("https_proxy", ""), ("NO_PROXY", ""), ("no_proxy", "")];
    all.extend_from_slice(env);
    lab.work.strata_env(&["plan", "--post", "--config", config.to_str().unwrap()], &all)
}

#[test]
fn plan_post_names_each_certificate_and_proxy_problem() {
    let lab = Lab::new();
    let forge = forge::Forge::start_with(Some(netlab::server_config(&lab.localhost(), None)));
    let api = by_name(&forge.url);
    let host_port = api.trim_start_matches("https://").to_string();

    let unknown = post(&lab, &api, "", &[]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("TLS: the certificate of localhost is not trusted: it is for \"CN=strata-test-server\", issued by \"CN=Strata Test CA, O=strata tests\"")
            && unknown.stderr.contains("add the issuer's CA certificate (PEM) to status.ca_file"),
        "{}",
        unknown.stderr
    );
    assert!(!unknown.stderr.contains(FORGE_TOKEN));

    let proxy = Proxy::start();
    let through = post(&lab, &api, &lab.ca_file(), &[("HTTPS_PROXY", &proxy.url)]);
    assert_eq!(through.code, 0, "{}", through.stderr);
    assert!(proxy.saw(&host_port), "{:?}", proxy.seen());
    assert!(forge.statuses().iter().any(|s| s.body["context"] == "strata/plan"));

    // Trusting ca_file alone (no system roots) is enough for a private forge.
    let alone = post(&lab, &api, &format!("{}, system_roots: false", lab.ca_file()), &[]);
    assert_eq!(alone.code, 0, "{}", alone.stderr);

    let other =
        forge::Forge::start_with(Some(netlab::server_config(&lab.ca.server("other", &["other.example"]), None)));
    let mismatch = post(&lab, &by_name(&other.url), &lab.ca_file(), &[]);
    assert!(
        mismatch.stderr.contains("TLS: the certificate localhost presented \"CN=other\" (issued by \"CN=Strata Test CA, O=strata tests\") is for other.example, not localhost; use one of those names in status.api, or have the certificate reissued for localhost"),
        "{}",
        mismatch.stderr
    );

    let old =
        forge::Forge::start_with(Some(netlab::server_config(&lab.ca.expired_server("old", &["localhost"]), None)));
    let expired = post(&lab, &by_name(&old.url), &lab.ca_file(), &[]);
    assert!(
        expired.stderr.contains("TLS: the certificate of localhost \"CN=old\" (issued by \"CN=Strata Test CA, O=strata tests\") expired on Fri, 01 Jan 2021 00:00:00 +0000; have it renewed on the server"),
        "{}",
        expired.stderr
    );

    let picky = Proxy::start_with(Some(("strata", PROXY_PASSWORD)));
    let auth = post(&lab, &api, &lab.ca_file(), &[("HTTPS_PROXY", &picky.url)]);
    assert!(
        auth.stderr.contains(&format!(
            "the proxy {} (from HTTPS_PROXY) requires authentication (407 Proxy Authentication Required); set the user:password in HTTPS_PROXY",
            picky.url.trim_start_matches("http://")
        )),
        "{}",
        auth.stderr
    );
    let with_user = picky.url.replace("http://", &format!("http://strata:{PROXY_PASSWORD}@"));
    let authorised = post(&lab, &api, &lab.ca_file(), &[("https_proxy", &with_user)]);
    assert_eq!(authorised.code, 0, "{}", authorised.stderr);
    assert!(!authorised.stderr.contains(PROXY_PASSWORD));

    let refused = post(&lab, "https://forge.corp.example", "", &[("HTTPS_PROXY", &proxy.url)]);
    assert!(
        refused.stderr.contains(&format!(
            "the proxy {} (from HTTPS_PROXY) refused to open a tunnel to forge.corp.example:443 (403 Forbidden); have the proxy allow it, or add forge.corp.example to NO_PROXY if it is reachable directly",
            proxy.url.trim_start_matches("http://")
        )),
        "{}",
        refused.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = post(&lab, &format!("https://{closed}"), "", &[]);
    assert!(
        down.stderr.contains(&format!(
            "cannot connect to {closed}: connection refused; check the host and port in status.api and that the server is up"
        )),
        "{}",
        down.stderr
    );
    let unknown_host = post(&lab, "https://forge.invalid", "", &[]);
    assert!(
        unknown_host.stderr.contains("cannot resolve the host name forge.invalid")
            && unknown_host.stderr.contains("check the host in status.api and this machine's DNS"),
        "{}",
        unknown_host.stderr
    );
}

#[test]
fn kubernetes_targets_follow_the_kubeconfigs_proxy_url() {
    let server = apiserver::ApiServer::start();
    let proxy = Proxy::start_with(Some(("strata", PROXY_PASSWORD)));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let proxy_url = proxy.url.replace("http://", &format!("http://strata:{PROXY_PASSWORD}@"));
    let with_proxy = text.replace(
        &format!("    server: {}\n", server.url()),
        &format!("    server: {}\n    proxy-url: {proxy_url}\n", server.url()),
    );
    assert_ne!(text, with_proxy);
    std::fs::write(&kubeconfig, with_proxy).unwrap();
    let config = dir.path().join("strata.yaml");
    std::fs::write(&config, format!("targets:\n  aws-cluster: {{ kubeconfig: {} }}\n", kubeconfig.display())).unwrap();
    let repo = Repo::example();
    // NO_PROXY does not apply to a kubeconfig's proxy-url (as with kubectl).
    let run = repo.strata_env(
        &["apply", "aws-cluster", "--config", config.to_str().unwrap()],
        &[("NO_PROXY", "127.0.0.1"), ("HTTPS_PROXY", ""), ("HTTP_PROXY", "")],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let authority = server.url().replace("http://", "");
    assert!(proxy.saw(&authority), "{:?}", proxy.seen());
    assert!(proxy.seen().iter().all(|t| t.method != "CONNECT"), "plain HTTP goes in absolute form");
    assert!(proxy.seen().iter().all(|t| t.answered == 0), "with the credentials from proxy-url: {:?}", proxy.seen());
    assert!(!run.stdout.contains(PROXY_PASSWORD) && !run.stderr.contains(PROXY_PASSWORD));
    assert_eq!(server.names("deployments"), ["hello-universe/ui"]);
}
