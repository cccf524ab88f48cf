use super::*;

fn load(text: &str) -> Result<Config, Diagnostics> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.yaml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

#[test]
fn targets_of_each_kind_with_paths_relative_to_the_file() {
    let config = load(
        "targets:\n  aws: {kubeconfig: kube/aws.yaml, context: aws}\n  lab: {directory: /srv/lab}\n  here: {in_cluster: true}\napply: {health_timeout: 90s, concurrency: 4}\n",
    )
    .unwrap();
    match &config.targets["aws"] {
        TargetConfig::Kubeconfig { path, context } => {
            assert!(path.ends_with("kube/aws.yaml") && path.is_absolute());
            assert_eq!(context.as_deref(), Some("aws"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(config.targets["lab"], TargetConfig::Directory("/srv/lab".into()));
    assert_eq!(config.targets["here"], TargetConfig::InCluster);
    assert_eq!(config.apply.health_timeout, Duration::from_secs(90));
    assert_eq!(config.apply.concurrency, 4);
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
}

#[test]
fn the_daemon_sections() {
    let config = load(
        "repository: {url: https://git.example.com/platform/fleet.git, branch: prod, path: fleet, interval: 2m, credentials: {token_file: /run/credentials/strata/git-token}}\nstate_dir: /var/lib/strata\nlisten: 0.0.0.0:9000\ndrift: {interval: 10m}\nprune_removed_clusters: true\n",
    )
    .unwrap();
    let repo = config.repository.unwrap();
    assert_eq!(repo.location, RepoLocation::Remote("https://git.example.com/platform/fleet.git".into()));
    assert_eq!(repo.branch, "prod");
    assert_eq!(repo.path.as_deref(), Some("fleet"));
    assert_eq!(repo.interval, Duration::from_secs(120));
    assert_eq!(repo.credentials.token_file.as_deref(), Some(Path::new("/run/credentials/strata/git-token")));
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/strata"));
    assert_eq!(config.drift_interval, Duration::from_secs(600));
    assert!(config.prune_removed_clusters);
    let local = load("repository: {url: ../fleet}\n").unwrap().repository.unwrap();
    assert!(matches!(local.location, RepoLocation::Local(p) if p.ends_with("fleet")));
    let scp = load("repository: {url: 'git@github.com:platform/fleet.git'}\n").unwrap().repository.unwrap();
    assert!(matches!(scp.location, RepoLocation::Remote(_)));
}

#[test]
fn decryption_keys_and_signed_commits() {
    let config = load(
        "repository:\n  url: ../fleet\n  verify: { mode: all, ssh_allowed_signers: keys/allowed_signers, gpg_keyring: /etc/strata/keyring.asc }\ndecryption: { age_key_files: [age.key, /etc/strata/old.key] }\n",
    )
    .unwrap();
    let verify = config.repository.unwrap().verify.unwrap();
    assert_eq!(verify.mode, VerifyMode::All);
    assert!(verify.ssh_allowed_signers.unwrap().ends_with("keys/allowed_signers"));
    assert_eq!(verify.gpg_keyring.as_deref(), Some(Path::new("/etc/strata/keyring.asc")));
    assert_eq!(config.decryption.age_key_files.len(), 2);
    assert!(config.decryption.age_key_files[0].ends_with("age.key"));
    let head = load("repository: { url: ., verify: { ssh_allowed_signers: s } }\n").unwrap();
    assert_eq!(head.repository.unwrap().verify.unwrap().mode, VerifyMode::Head, "head is the default");

    // What cannot work is said on its line, with what to write.
    let errors = |text: &str| load(text).unwrap_err().to_string();
    let e = errors("repository:\n  url: .\n  verify: { mode: tip, ssh_allowed_signers: s }\n");
    assert!(e.contains("strata.yaml:3") && e.contains("`tip` is not a mode") && e.contains("head"), "{e}");
    let e = errors("repository:\n  url: .\n  verify: { mode: head }\n");
    assert!(e.contains("names no key") && e.contains("ssh_allowed_signers: FILE"), "{e}");
    let e = errors("decryption: {}\n");
    assert!(e.contains("decryption names no age key") && e.contains("age-keygen"), "{e}");
    let e = errors("decryption: { secret: sops-age }\n");
    assert!(e.contains("needs Kubernetes mode"), "{e}");
}

#[test]
fn status_sinks() {
    let config = load("status: {provider: github, api: 'https://github.example.com/api/v3/', repo: p/f, token_file: t, target_url: 'http://s/{cluster}'}\n").unwrap();
    let status = config.status.unwrap();
    match &status.sink {
        StatusSink::Forge { forge, token_file } => {
            assert_eq!(forge.api, "https://github.example.com/api/v3");
            assert!(token_file.ends_with("t"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status.target_url("aws", "r").as_deref(), Some("http://s/aws"));
    assert_eq!(load("status: {provider: git-notes}\n").unwrap().status.unwrap().sink, StatusSink::Notes);
    let e = load("status: {provider: gitlab}\n").unwrap_err().to_string();
    assert!(e.contains("status needs `repo` and `token_file`"), "{e}");
}

#[test]
fn ambiguous_targets_and_bad_durations_are_reported_with_lines() {
    let e = load("targets:\n  x: {kubeconfig: a, directory: b}\napply:\n  health_timeout: soon\n").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("strata.yaml:2: target `x` must be exactly one kind of target"), "{text}");
    assert!(text.contains("strata.yaml:4: health_timeout `soon` is not a duration"), "{text}");
}

#[test]
fn the_audit_trail_is_kept_a_year_unless_configured_and_never_less_than_a_day() {
    let defaults = load("targets: {}\n").unwrap();
    assert_eq!(defaults.audit, AuditConfig::default());
    assert_eq!(defaults.audit.retention, Duration::from_secs(365 * 86_400));
    let set = load("targets: {}\naudit: { retention: 30d, max_entries: 5000 }\n").unwrap();
    assert_eq!((set.audit.retention, set.audit.max_entries), (Duration::from_secs(30 * 86_400), 5000));
    let text = load("targets: {}\naudit:\n  retention: 1h\n  max_entries: 0\n").unwrap_err().to_string();
    assert!(text.contains("strata.yaml:3: audit.retention is shorter than a day"), "{text}");
    assert!(text.contains("strata.yaml:4: audit.max_entries: 0 would keep no audit trail"), "{text}");
    let text = load("targets: {}\naudit: { keep: 1d }\n").unwrap_err().to_string();
    assert!(text.contains("keep"), "{text}");
}

#[test]
fn the_shipped_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["systemd/strata.yaml", "docs/strata.yaml"] {
        Config::load(&root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn proxy_and_tls_keys() {
    let config = load(
        "proxy: { url: 'http://proxy.corp:3128', no_proxy: '.corp.example, 10.0.0.0/8', username: strata, password_file: proxy-password }\nrepository: { url: 'https://git.corp.example/fleet.git', ca_file: corp-ca.pem, client_cert_file: c.pem, client_key_file: k.pem }\nstatus: { provider: gitea, api: 'https://git.corp.example', repo: p/f, token_file: t, ca_file: /etc/ca.pem, system_roots: false }\n",
    )
    .unwrap();
    let proxy = config.proxy.unwrap();
    assert_eq!(proxy.url, "http://proxy.corp:3128");
    assert_eq!(proxy.no_proxy, [".corp.example", "10.0.0.0/8"]);
    assert!(proxy.password_file.unwrap().ends_with("proxy-password"));
    let tls = config.repository.unwrap().tls;
    assert!(tls.ca_file.unwrap().is_absolute() && tls.system_roots);
    assert!(tls.client_key_file.unwrap().ends_with("k.pem"));
    let status = config.status.unwrap().tls;
    assert_eq!((status.ca_file.as_deref(), status.system_roots), (Some(Path::new("/etc/ca.pem")), false));
    let listed = load("proxy: { url: 'http://p:3128', no_proxy: [localhost, '::1'] }\n").unwrap();
    assert_eq!(listed.proxy.unwrap().no_proxy, ["localhost", "::1"]);

    let e = load("repository: { url: 'https://g/f.git', client_cert_file: c.pem }\nstatus: { provider: github, repo: p/f, token_file: t, system_roots: false }\nproxy: { url: 'socks5://p:1080', username: u }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("strata.yaml:1: repository: client_cert_file and client_key_file go together"), "{e}");
    assert!(e.contains("strata.yaml:2: status: system_roots: false trusts nothing without a ca_file"), "{e}");
    assert!(e.contains("strata.yaml:3: proxy: username and password_file go together"), "{e}");
    assert!(e.contains("strata.yaml:3: proxy.url: `socks5://` proxies are not supported"), "{e}");
}

#[test]
fn named_tokens_and_sign_in_through_a_provider() {
    let config = load(
        "api:\n  token_file: shared\n  tokens:\n    - { name: ci, token_file: /run/ci, groups: [deployers] }\nauth:\n  write_groups: [deployers]\n  oidc: { issuer: 'https://login.example.com/realms/corp', client_id: strata, client_secret_file: secret, scopes: [groups, openid] }\nview: { require_token: true, public_url: 'https://strata.example.com' }\n",
    )
    .unwrap();
    let names: Vec<(&str, bool)> = config.api_tokens.iter().map(|t| (t.name.as_str(), t.shared)).collect();
    assert_eq!(names, [("api", true), ("ci", false)]);
    assert_eq!(config.api_tokens[1].groups, ["deployers"]);
    assert!(config.api_token_file.as_ref().unwrap().ends_with("shared"), "the CLI sends the shared token");
    assert_eq!(config.auth.write_groups.as_deref(), Some(&["deployers".to_string()][..]));
    let oidc = config.auth.oidc.unwrap();
    assert_eq!(oidc.redirect_url, "https://strata.example.com/login/oidc/callback", "from view.public_url");
    assert_eq!(oidc.scopes, ["openid", "groups"]);
    assert_eq!(oidc.groups_claim, "groups");
    assert!(oidc.client_secret_file.unwrap().ends_with("secret"));
    // Only named tokens: the CLI sends the first.
    let config =
        load("api: { tokens: [{ name: ops, token_file: ops-token }] }\nview: { require_token: true }\n").unwrap();
    assert!(config.api_token_file.unwrap().ends_with("ops-token"));
    // A provider alone is enough for require_token.
    assert!(load("auth: { oidc: { issuer: 'https://i', client_id: c, redirect_url: 'https://s/login/oidc/callback' } }\nview: { require_token: true }\n").is_ok());

    for (text, expected) in [
        ("api: { token_file: t, tokens: [{ name: api, token_file: u }] }\n", "two tokens named `api`"),
        ("api: { tokens: [{ name: ci, token_file: a }, { name: ci, token_file: b }] }\n", "two tokens named `ci`"),
        ("api: { tokens: [{ name: 'c i', token_file: a }] }\n", "`c i` is not a token name"),
        (
            "auth: { oidc: { issuer: 'http://login.example.com', client_id: c, redirect_url: 'https://s/login/oidc/callback' } }\n",
            "is not an https URL",
        ),
        ("auth: { oidc: { issuer: 'https://i', client_id: c } }\n", "needs redirect_url or view.public_url"),
        (
            "auth: { oidc: { issuer: 'https://i', client_id: c, redirect_url: 'https://s/callback' } }\n",
            "must be an http(s) URL ending in /login/oidc/callback",
        ),
        ("view: { require_token: true }\n", "needs api.token_file, api.tokens or auth.oidc"),
    ] {
        let e = load(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{expected}\n{e}");
    }
}

#[test]
fn the_view_and_the_listener() {
    let config = load(
        "api: { token_file: t }\nview: { require_token: true, public_url: 'https://Strata.Example.com/' }\nlistener: { allowed_hosts: ['strata.internal:8080', 'Other.example'], header_timeout: 5s, request_timeout: 1m, max_connections: 100, max_connections_per_client: 10, max_body_bytes_in_flight: 8MiB }\n",
    )
    .unwrap();
    assert!(config.view.require_token);
    assert_eq!(config.view.public_url, Some(PublicUrl { https: true, host: "strata.example.com".into(), port: 443 }));
    let l = &config.listener;
    assert_eq!(l.allowed_hosts, ["strata.internal:8080", "other.example"]);
    assert_eq!((l.header_timeout, l.request_timeout), (Duration::from_secs(5), Duration::from_secs(60)));
    assert_eq!((l.max_connections, l.max_connections_per_client), (100, 10));
    assert_eq!(l.max_body_bytes_in_flight, 8 << 20);
    let defaults = load("{}\n").unwrap();
    assert_eq!(defaults.listener.header_timeout, Duration::from_secs(10));
    assert_eq!(defaults.listener.max_body_bytes_in_flight, 16 << 20);
    let plain = load("view: { public_url: 'http://10.0.0.5:9477' }\n").unwrap().view.public_url.unwrap();
    assert_eq!(plain, PublicUrl { https: false, host: "10.0.0.5".into(), port: 9477 });
}

#[test]
fn view_and_listener_mistakes_are_reported_with_lines() {
    let e = load(
        "view:\n  require_token: true\n  public_url: 'https://strata.example.com/strata'\nlistener:\n  allowed_hosts: ['https://x', 'a b', 'u@x']\n  max_body_bytes_in_flight: 10KiB\n  header_timeout: 0s\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "view.require_token needs api.token_file",
        "strata.yaml:3: view.public_url `https://strata.example.com/strata` must not have a path",
        "strata.yaml:5: listener.allowed_hosts: `https://x` is not a host",
        "listener.allowed_hosts: `a b` is not a host",
        "listener.allowed_hosts: `u@x` is not a host",
        "strata.yaml:6: listener.max_body_bytes_in_flight `10KiB` is not a size",
        "listener.header_timeout must be longer than 0",
    ] {
        assert!(e.contains(expected), "{expected}\n{e}");
    }
    for bad in ["ftp://x", "strata.example.com", "https://user:pw@x"] {
        let e = load(&format!("view: {{ public_url: '{bad}' }}\n")).unwrap_err().to_string();
        assert!(e.contains("view.public_url"), "{bad}: {e}");
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("16MiB"), Some(16 << 20));
    assert_eq!(parse_size("512KiB"), Some(512 << 10));
    assert_eq!(parse_size("1048576"), Some(1 << 20));
    assert_eq!(parse_size("16MB"), None);
    assert_eq!(parse_size("MiB"), None);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("m"), None);
    // Past u64 seconds once multiplied: a diagnostic, not an overflow.
    assert_eq!(parse_duration("9999999999999999h"), None);
    assert_eq!(parse_duration("999999999999999999m"), None);
    assert_eq!(parse_duration("99999999999999999999s"), None);
}

#[test]
fn kubernetes_mode_state_and_shards() {
    let config = load(
        "kubernetes: { kubeconfig: mgmt.yaml, context: mgmt, namespace: strata }\nstate: { backend: kubernetes }\nshards: 8\nleases: { duration: 20s, renew_deadline: 12s, retry_period: 3s }\n",
    )
    .unwrap();
    let kubernetes = config.kubernetes.unwrap();
    assert!(
        matches!(&kubernetes.connection, TargetConfig::Kubeconfig { path, context } if path.is_absolute() && context.as_deref() == Some("mgmt"))
    );
    assert_eq!((kubernetes.namespace.as_deref(), kubernetes.cluster_secrets), (Some("strata"), true));
    assert_eq!(config.state_backend, StateBackend::Kubernetes);
    assert_eq!(
        config.sharding,
        Sharding {
            shards: 8,
            lease_duration: Duration::from_secs(20),
            renew_deadline: Duration::from_secs(12),
            retry_period: Duration::from_secs(3)
        }
    );
    // The shared state alone means running in the management cluster.
    let config = load("state: { backend: kubernetes }\n").unwrap();
    assert_eq!(config.kubernetes.unwrap().connection, TargetConfig::InCluster);
    let config = load("targets: {}\n").unwrap();
    assert_eq!((config.state_backend, config.kubernetes, config.sharding.shards), (StateBackend::Sqlite, None, 1));
}

#[test]
fn kubernetes_mode_mistakes_are_reported_with_lines() {
    for (text, expected) in [
        ("state: { backend: etcd }\n", "strata.yaml:1: state.backend `etcd` is not a backend"),
        ("shards: 4\n", "strata.yaml:1: shards need the shared state: state: { backend: kubernetes }"),
        ("state: { backend: kubernetes }\nshards: 0\n", "strata.yaml:2: shards: 0 is not from 1 to 1024"),
        ("state: { backend: kubernetes }\nshards: 5000\n", "shards: 5000 is not from 1 to 1024"),
        ("kubernetes: { context: x }\n", "kubernetes.context needs kubernetes.kubeconfig"),
        ("kubernetes: { namespace: Strata_System }\n", "kubernetes.namespace `Strata_System` is not a namespace name"),
        ("leases: { duration: 1500ms }\n", "leases.duration must be a whole number of seconds"),
        (
            "leases: { duration: 10s, renew_deadline: 10s }\n",
            "leases.renew_deadline must be shorter than leases.duration",
        ),
        (
            "leases: { duration: 15s, renew_deadline: 10s, retry_period: 10s }\n",
            "leases.retry_period must be longer than 0 and shorter",
        ),
    ] {
        let e = load(text).unwrap_err().to_string();
        assert!(e.contains(expected), "{expected}\n{e}");
    }
}
