//! The accept loop: TCP connections in, HTTP/1.1 connections served by the router, within bounds.
//!
//! - at most `listener.max_connections` connections at once: past that, accepting waits (the
//!   kernel's backlog holds newcomers) instead of taking descriptors the daemon needs for Git,
//!   SQLite and the clusters;
//! - at most `listener.max_connections_per_client` from one address: more are closed at once;
//! - a request head must arrive within `listener.header_timeout`, which also ends idle
//!   keep-alive connections, so half-sent requests cannot hold connections for ever;
//! - an answer that the client stops reading is given up after `listener.request_timeout`
//!   without progress, so a reader that never reads cannot keep a page in memory;
//! - a failing `accept` (out of descriptors: EMFILE, ENFILE) backs off, 10 ms doubling to 1 s,
//!   instead of spinning on a listener that stays readable.

use crate::backoff::{Backoff, Jitter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

use super::App;
use super::guard::{ConnInfo, client_key};

/// Request heads (and the body bytes that come with them) are read into a buffer of at most this.
const MAX_HEAD: usize = 64 * 1024;

/// Open connections per client address.
struct Clients {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of a client, given back when dropped.
struct Slot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().expect("clients lock");
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { clients: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().expect("clients lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long to wait after the `failures`-th failed accept in a row: 10 ms doubling to 1 s.
fn backoff(failures: u32) -> Duration {
    const ACCEPT: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), Jitter::None);
    ACCEPT.delay(failures)
}

pub async fn serve(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let limits = app.shared.config.listener.clone();
    super::auth::reload_on_sighup(&app);
    let router = super::router(app);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(Clients { limit: limits.max_connections_per_client, open: Mutex::new(HashMap::new()) });
    let mut failures = 0u32;
    // Under a descriptor exhaustion that comes and goes, one warning a minute is enough.
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if failures > 0 {
                    debug!(failures, "Accepting connections again.");
                    failures = 0;
                }
                accepted
            }
            Err(e) => {
                failures += 1;
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(std::time::Instant::now());
                    warn!(error = %e, "Cannot accept a connection (out of file descriptors?); backing off.");
                }
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        let Some(slot) = clients.enter(client_key(peer.ip())) else {
            debug!(client = %peer.ip(), "Too many connections from one client; closed.");
            continue;
        };
        let Ok(local) = stream.local_addr() else { continue };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let (header_timeout, write_timeout) = (limits.header_timeout, limits.request_timeout);
        tokio::spawn(async move {
            let _held = (permit, slot);
            let conn = ConnInfo { peer, local };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(conn);
                router.clone().oneshot(req)
            });
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(write_timeout));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(Box::pin(stream)), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_to_a_second() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(7), Duration::from_millis(640));
        assert_eq!(backoff(8), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn clients_get_their_share_of_connections() {
        let clients = Arc::new(Clients { limit: 2, open: Mutex::new(HashMap::new()) });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = clients.enter(ip).unwrap();
        let _b = clients.enter(ip).unwrap();
        assert!(clients.enter(ip).is_none());
        assert!(clients.enter("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(clients.enter(ip).is_some());
    }
}
