//! [`serve`]: axum's `serve` with the connection limits it lacks.
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no connection cap: a client
//! that opens connections and sends nothing, or sends headers slowly, holds them forever. This
//! accept loop on hyper has a header-read timeout that also bounds idle keep-alive connections
//! (hyper starts it again after each response), a cap on the request head's size (longer heads
//! get 431), and a cap on open connections that, when full, closes the oldest connection with
//! no request in flight (or else the oldest of all) to let the new one in. A flood of idle or
//! slow connections then costs the attacker its own oldest connections, never the server's
//! ability to answer. The body-read timeout is the router's own
//! ([`ClientLimits::body_read_timeout`](refsys_core::ClientLimits::body_read_timeout)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The connection limits [`serve`] enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Time to receive a request's headers, counted from the connection's start or from the
    /// end of the previous response (so it is also the idle keep-alive timeout). Default 10 s.
    pub header_read_timeout: Duration,
    /// Open connections at most; keep it below the process's open-files limit. Default 10,000.
    pub max_connections: usize,
    /// Bytes of a request head (request line and headers) at most; a longer head gets 431.
    /// Default 16 KiB (hyper's minimum is 8 KiB).
    pub max_head_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_head_bytes: 16 * 1024,
        }
    }
}

/// The open connections, oldest first.
#[derive(Debug)]
struct Connections {
    max: usize,
    next: AtomicUsize,
    open: Mutex<BTreeMap<usize, Slot>>,
    empty: Notify,
}

#[derive(Debug)]
struct Slot {
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// A connection's place in [`Connections`]: its requests in flight, and the signal to close.
struct Admitted {
    id: usize,
    in_flight: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

impl Connections {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            max: max.max(1),
            next: AtomicUsize::new(0),
            open: Mutex::new(BTreeMap::new()),
            empty: Notify::new(),
        })
    }

    /// Registers a new connection; if the cap is reached, first closes the oldest connection
    /// with no request in flight, or else the oldest of all.
    fn admit(&self) -> Admitted {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.max {
            let victim = open
                .iter()
                .find(|(_, slot)| slot.in_flight.load(Ordering::Relaxed) == 0)
                .or_else(|| open.iter().next())
                .map(|(id, _)| *id);
            if let Some(slot) = victim.and_then(|id| open.remove(&id)) {
                slot.close.notify_one();
            }
        }
        open.insert(
            id,
            Slot {
                in_flight: Arc::clone(&in_flight),
                close: Arc::clone(&close),
            },
        );
        Admitted {
            id,
            in_flight,
            close,
        }
    }

    /// Forgets a connection that ended.
    fn leave(&self, id: usize) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&id);
        if open.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// How many connections are open.
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until every connection has ended, or `limit` has passed.
    pub(crate) async fn drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.len() > 0 && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.empty.notified()).await;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to 30 s). Requests carry [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as
/// with `into_make_service_with_connect_info`; HTTP/1 upgrades (WebSocket) work. HTTP/2 is
/// not served. When the connection cap is full, finding the connection to close scans the
/// open ones (cheap for thousands, noticeable for hundreds of thousands).
///
/// ```no_run
/// # async fn run(app: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
/// refsys_axum::serve(listener, app, refsys_axum::ServeLimits::default(), std::future::pending()).await
/// # }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service as _;

    let connections = Connections::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_errors = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: wait a moment, let connections end.
                    accept_errors.warn(&error);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let admitted = connections.admit();
        let in_flight = Arc::clone(&admitted.in_flight);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = InFlight::enter(&in_flight);
            let mut app = app.clone();
            async move {
                let response = app.call(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (connections, mut stop) = (Arc::clone(&connections), stop_rx.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = admitted.close.notified() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            connections.leave(admitted.id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    connections.drained(Duration::from_secs(30)).await;
    Ok(())
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs a repeating error at most once every 10 s, with how many were not logged.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, error: &std::io::Error) {
        if self
            .last
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            self.skipped += 1;
            return;
        }
        tracing::warn!(%error, skipped = self.skipped, "cannot accept connections");
        self.last = Some(Instant::now());
        self.skipped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cap_closes_the_oldest_idle_connection_first() {
        let connections = Connections::new(3);
        let a = connections.admit();
        let b = connections.admit();
        let c = connections.admit();
        // a is busy; b is the oldest idle one.
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        let d = connections.admit();
        assert_eq!(connections.len(), 3);
        let closed = |slot: &Admitted| {
            let notified = slot.close.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        assert!(closed(&b), "the oldest idle connection is closed");
        assert!(!closed(&a) && !closed(&c) && !closed(&d));
        // All busy: the oldest of all goes.
        for slot in [&c, &d] {
            slot.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let _e = connections.admit();
        assert!(closed(&a));
        assert_eq!(connections.len(), 3);
        connections.leave(a.id);
        connections.leave(b.id);
        assert_eq!(
            connections.len(),
            3,
            "closed connections were already forgotten"
        );
    }
}
