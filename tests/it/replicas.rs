//! Sessions across replicas without affinity: three `strata run` replicas in Kubernetes mode (the
//! API server stand-in as management cluster) behind a round-robin reverse proxy written here,
//! which sends each request to the next replica. Signed in through one, the view and the
//! approval work through the others; signed out through a third, the session is refused by all
//! within the revocation record's refresh bound; a token rotated on one replica ends the
//! sessions it opened on all. Every request the replicas make is one the shipped Role allows.

use crate::apiserver;
use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Repo;
use common::daemon::{Daemon, TOKEN, local, session_cookie};
use common::kubemode::{APP_PROFILE, KubeMode, app_repo};
use common::kubernetes::{self, NAMESPACE};
use serde_json::Value;

const PROFILE: &str = APP_PROFILE;
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
/// The revocation record's refresh ([`strata::daemon::http::revoke::TTL`]) and some slack.
const REVOKED_WITHIN: Duration = Duration::from_secs(5 + 3);

/// A reverse proxy on 127.0.0.1 that sends each request to the next backend in turn (one request
/// per connection) and notes which backend answered it.
struct RoundRobin {
    port: u16,
    served: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RoundRobin {
    /// Serves on `listener` (bound before the replicas started: its address is their public URL).
    fn start(listener: TcpListener, backends: Vec<String>) -> RoundRobin {
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (served, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (log, stopping) = (served.clone(), stop.clone());
        let next = AtomicUsize::new(0);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((mut client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let request = read_request(&mut client);
                let index = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                log.lock().unwrap().push(index);
                let Ok(mut backend) = TcpStream::connect(&backends[index]) else {
                    let _ =
                        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                };
                backend.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                backend.write_all(&request).unwrap();
                let mut answer = Vec::new();
                let _ = backend.read_to_end(&mut answer);
                let _ = client.write_all(&answer);
            }
        });
        RoundRobin { port, served, stop, thread: Some(thread) }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One request through the proxy: (status, head, body).
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.host()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.host());
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (code, head.to_string(), body.to_string())
    }

    /// Which backend the last request went to.
    fn last(&self) -> usize {
        *self.served.lock().unwrap().last().unwrap()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A whole request: the head, and as many body bytes as Content-Length says.
fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return data;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return data;
        }
    }
}

fn attribute<'a>(html: &'a str, from: &str, name: &str) -> Option<&'a str> {
    let rest = &html[html.find(from)?..];
    let at = rest.find(&format!("{name}=\""))? + name.len() + 2;
    Some(&rest[at..at + rest[at..].find('"')?])
}

#[track_caller]
fn wait(what: &str, timeout: Duration, replicas: &[Daemon], done: impl FnMut() -> bool) {
    common::wait_until_with(what, timeout, common::POLL, done, |held| *held, || Daemon::logs_of(replicas));
}

struct World {
    kube: KubeMode,
    repo: Repo,
}

impl World {
    fn new() -> World {
        let kube = KubeMode::start();
        // What the replicas ask is checked against their Role; the test's own setup is not theirs.
        kube.mgmt.clear_requests();
        let repo = app_repo();
        repo.write(
            "clusters/c0.yaml",
            "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: c0 }\nspec:\n  profile: { name: app, version: \"1.0.0\" }\n  target: workload\n  updates: manual\n",
        );
        World { kube, repo }
    }

    /// A replica behind the proxy at `public`, not waited for.
    fn replica(&self, public: &str) -> Daemon {
        let extra =
            format!("{}view: {{ require_token: true, public_url: 'http://{public}' }}\n", self.kube.replica_config(1));
        let mut daemon = Daemon::configure(&local(&self.repo), &self.kube.workload_target(), &extra);
        daemon.launch();
        daemon
    }

    fn state(&self, cluster: &str) -> Value {
        self.kube.state(cluster)
    }
}

/// The session cookie sent straight to each replica: the status of each answer.
fn each(replicas: &[Daemon], public: &str, cookie: &str) -> Vec<u16> {
    replicas
        .iter()
        .map(|d| d.raw_to("GET", "/api/v1/clusters", &[("Host", public)], &[("Cookie", cookie)], "").0)
        .collect()
}

#[test]
fn a_session_opened_through_one_replica_works_on_all_and_ends_on_all() {
    let world = World::new();
    let first = world.repo.commit("start");
    // The proxy's address first: it is the view's public URL in every replica's config.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let public = listener.local_addr().unwrap().to_string();
    let replicas: Vec<Daemon> = (0..3).map(|_| world.replica(&public)).collect();
    for daemon in &replicas {
        daemon.wait_for("the daemon to be ready", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    }
    let backends: Vec<String> = replicas.iter().map(|d| d.address().unwrap().trim().to_string()).collect();
    let proxy = RoundRobin::start(listener, backends);
    wait("c0 applied", Duration::from_secs(60), &replicas, || {
        world.state("c0")["status"]["clusterRevision"] == first.as_str()
    });
    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    wait("c0's update held", Duration::from_secs(60), &replicas, || {
        world.state("c0")["status"]["pending"]["headRevision"] == second.as_str()
    });

    // Sign in through one replica...
    let (code, head, body) = proxy.send("POST", "/login", &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    assert_eq!(code, 303, "{body}");
    let signed_in_at = proxy.last();
    let cookie = session_cookie(&head);
    assert!(cookie.starts_with("strata_session=v1."), "{cookie}");
    // ...read the pending update through the next, and approve it through the one after.
    let (code, _, page) = proxy.send("GET", "/clusters/c0/pending", &[("Cookie", &cookie)], "");
    assert_eq!(code, 200, "{page}");
    let read_at = proxy.last();
    assert!(page.contains("signed in as api (alice)"), "{page}");
    let csrf = attribute(&page, "name=\"csrf\"", "value").unwrap().to_string();
    let origin = format!("http://{public}");
    let (code, _, body) = proxy.send(
        "POST",
        "/clusters/c0/approve",
        &[FORM, ("Cookie", &cookie), ("Origin", &origin)],
        &format!("csrf={csrf}&revision={second}"),
    );
    assert_eq!(code, 303, "{body}");
    let approved_at = proxy.last();
    assert_eq!([signed_in_at, read_at, approved_at].iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    assert_eq!(world.state("c0")["spec"]["approvals"][0]["by"], "api (alice)");
    wait("c0 applied", Duration::from_secs(60), &replicas, || {
        world.state("c0")["status"]["clusterRevision"] == second.as_str()
    });
    // Every replica takes the session as it is.
    assert_eq!(each(&replicas, &public, &cookie), [200, 200, 200]);

    // Signed out through the next replica: refused by every replica within the bound.
    let (code, _, body) =
        proxy.send("POST", "/logout", &[FORM, ("Cookie", &cookie), ("Origin", &origin)], &format!("csrf={csrf}"));
    assert_eq!(code, 303, "{body}");
    let out_at = Instant::now();
    wait("the session refused by every replica", REVOKED_WITHIN, &replicas, || {
        each(&replicas, &public, &cookie) == [401, 401, 401]
    });
    eprintln!("signed out everywhere after {:?}", out_at.elapsed());
    // A new sign-in right after works everywhere (it read the record fresh).
    let (code, head, _) = proxy.send("POST", "/login", &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    assert_eq!(code, 303);
    let again = session_cookie(&head);
    assert_eq!(each(&replicas, &public, &again), [200, 200, 200]);
    // Someone else's sign-out leaves alice's session alone.
    let (_, head, _) = proxy.send("POST", "/login", &[FORM], &format!("name=bob&token={TOKEN}&next=%2F"));
    let bob = session_cookie(&head);
    let (_, _, page) = proxy.send("GET", "/", &[("Cookie", &bob)], "");
    let bob_csrf = attribute(&page, "name=\"csrf\"", "value").unwrap().to_string();
    let (code, _, _) =
        proxy.send("POST", "/logout", &[FORM, ("Cookie", &bob), ("Origin", &origin)], &format!("csrf={bob_csrf}"));
    assert_eq!(code, 303);
    // Each replica refusing bob has read the revocations since his sign-out, alice's among them
    // had it ended hers.
    wait("bob's session refused by every replica", REVOKED_WITHIN, &replicas, || {
        each(&replicas, &public, &bob) == [401, 401, 401]
    });
    assert_eq!(each(&replicas, &public, &again), [200, 200, 200]);

    // The token is rotated, and one replica is told (SIGHUP): the sessions it opened end on all,
    // the others too though they still hold the old token.
    std::fs::write(replicas[0].token_file(), "rotated-token\n").unwrap();
    replicas[0].hangup();
    wait("sessions of the old token refused everywhere", REVOKED_WITHIN, &replicas, || {
        each(&replicas, &public, &again) == [401, 401, 401]
    });

    // Everything the replicas asked of the management cluster is allowed by the shipped Role.
    let rules = kubernetes::shipped_role();
    for request in world.kube.mgmt.requests() {
        kubernetes::role_allows(&rules, &request.method, &request.path, &request.query, request.watch)
            .unwrap_or_else(|e| panic!("not allowed by deploy/kubernetes/rbac.yaml: {e}"));
    }
    if apiserver::Transport::from_env() == apiserver::Transport::Tls {
        assert!(world.kube.mgmt.requests().iter().all(|r| r.version == "HTTP/2.0"), "STRATA_APISERVER=h2: HTTP/2 only");
    }
    // The session key and the revocation record are where the docs say.
    assert!(world.kube.mgmt.object("secrets", Some(NAMESPACE), "strata-session-key").is_some());
    assert!(world.kube.mgmt.object("configmaps", Some(NAMESPACE), "strata-sessions").is_some());
}
