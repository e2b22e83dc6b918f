//! [`ConnectionCap`]: a connection cap for actix-web that closes the oldest idle connection
//! for each new one.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// A cap on open connections that, when full, closes the oldest idle connection for each new
/// one.
///
/// actix-web's own cap ([`HttpServer::max_connections`](actix_web::HttpServer::max_connections))
/// stops accepting when it is reached, so a flood of idle or slow connections keeps everyone
/// else out until its timeouts free room. With a `ConnectionCap` the flood costs the attacker
/// its own oldest connections instead: every new connection is let in, and if that makes one
/// too many, the oldest connection with no request in flight (past a second's grace to send
/// its first one), or else the oldest of all, is shut down.
///
/// It needs three lines: the middleware, the connect hook, and actix-web's own cap above it:
///
/// ```no_run
/// use actix_web::{App, HttpServer, middleware};
/// use refsys_actix::ConnectionCap;
///
/// # async fn run() -> std::io::Result<()> {
/// let cap = ConnectionCap::new(4_000);
/// HttpServer::new(|| App::new().wrap(middleware::from_fn(refsys_actix::track_requests)))
///     .on_connect(cap.on_connect())
///     .workers(2)
///     .max_connections(cap.actix_max_connections(2))
///     .bind("127.0.0.1:8000")?
///     .run()
///     .await
/// # }
/// ```
///
/// Each connection the cap holds costs one more file descriptor (a duplicate of the socket,
/// which is what lets the cap shut it down), and actix-web may hold a quarter more connections
/// before the evicted ones are gone: keep `max` below the open-files limit, less what the
/// process needs, divided by 2.25. It can only close plain TCP connections on Unix: TLS
/// streams (which `on_connect` sees as another type), connections on other platforms and any
/// whose socket could not be duplicated are counted but never chosen, so with only those the
/// cap closes nothing.
#[derive(Clone, Debug)]
pub struct ConnectionCap {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    max: usize,
    next: AtomicUsize,
    open: Mutex<BTreeMap<usize, Held>>,
}

/// A connection the cap holds: its requests in flight, and a handle to shut it down.
#[derive(Debug)]
struct Held {
    in_flight: Arc<AtomicUsize>,
    since: Instant,
    #[cfg(unix)]
    socket: Option<std::net::TcpStream>,
}

/// The cap's mark on one connection, kept in the connection's data: it leaves the registry
/// when actix-web drops the connection.
#[derive(Debug)]
pub struct ConnectionSlot {
    id: usize,
    in_flight: Arc<AtomicUsize>,
    registry: Arc<Registry>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.registry.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
    }
}

impl ConnectionCap {
    /// A cap of `max` open connections (at least 1).
    pub fn new(max: usize) -> Self {
        ConnectionCap {
            inner: Arc::new(Registry {
                max: max.max(1),
                next: AtomicUsize::new(0),
                open: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The hook for [`HttpServer::on_connect`](actix_web::HttpServer::on_connect): registers
    /// each new plain-TCP connection, closing the oldest idle one when the cap is full.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        let registry = Arc::clone(&self.inner);
        move |connection, data| {
            let stream = connection.downcast_ref::<actix_web::rt::net::TcpStream>();
            let slot = registry.admit(stream);
            data.insert(slot);
        }
    }

    /// The per-worker value for [`HttpServer::max_connections`](actix_web::HttpServer::max_connections)
    /// with `workers` workers: a quarter more than the cap (and 16), so that actix-web accepts
    /// the new connections this cap must see to make room, but pauses for a moment, rather
    /// than run out of file descriptors, when a flood arrives faster than closed connections
    /// are let go. A flood then holds at most `max × 1.25 + 16` sockets plus the cap's `max`
    /// duplicates: size `max` to the open-files limit, less what the process needs, / 2.25.
    pub fn actix_max_connections(&self, workers: usize) -> usize {
        let max = self.inner.max;
        (max + max / 4 + 16).div_ceil(workers.max(1))
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registry {
    fn admit(self: &Arc<Self>, stream: Option<&actix_web::rt::net::TcpStream>) -> ConnectionSlot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        let held = Held {
            in_flight: Arc::clone(&in_flight),
            since: now,
            #[cfg(unix)]
            socket: stream.and_then(duplicate),
        };
        #[cfg(not(unix))]
        let _ = stream;
        let victim = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let victim = if open.len() >= self.max {
                // Only a connection the cap can shut down leaves it.
                let closable = || open.iter().filter(|(_, held)| held.can_close());
                let oldest = closable()
                    .find(|(_, held)| held.is_idle(now))
                    .or_else(|| closable().next())
                    .map(|(id, _)| *id);
                oldest.and_then(|id| open.remove(&id))
            } else {
                None
            };
            open.insert(id, held);
            victim
        };
        if let Some(victim) = victim {
            victim.close();
        }
        ConnectionSlot {
            id,
            in_flight,
            registry: Arc::clone(self),
        }
    }
}

/// How long a new connection has to start its first request before it counts as idle.
/// Workers register connections in parallel, so one accepted a moment ago (a person's, while
/// a flood of busy connections is being let in) would otherwise be the idle one to close.
const GRACE: Duration = Duration::from_secs(1);

impl Held {
    /// Whether the cap holds a handle to shut this connection down with (a plain TCP
    /// connection on Unix whose socket could be duplicated).
    fn can_close(&self) -> bool {
        #[cfg(unix)]
        return self.socket.is_some();
        #[cfg(not(unix))]
        return false;
    }

    /// Idle: no request in flight, and past its [`GRACE`].
    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && now.duration_since(self.since) >= GRACE
    }

    /// Shuts the connection down: actix-web sees it end and drops it.
    fn close(self) {
        #[cfg(unix)]
        if let Some(socket) = self.socket {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A second handle on the connection's socket, to shut it down with.
#[cfg(unix)]
fn duplicate(stream: &actix_web::rt::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// Middleware (`App::wrap(middleware::from_fn(track_requests))`) that marks a connection
/// busy while one of its requests is being handled, so that a full [`ConnectionCap`] closes
/// idle connections first. Does nothing without a cap.
pub async fn track_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let busy = request
        .conn_data::<ConnectionSlot>()
        .map(|slot| Busy::new(Arc::clone(&slot.in_flight)));
    let response = next.call(request).await;
    drop(busy);
    response
}

/// One request in flight on a connection, until dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(in_flight: Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(in_flight)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(cap: &ConnectionCap) -> Vec<usize> {
        cap.inner.open.lock().unwrap().keys().copied().collect()
    }

    fn age_all(cap: &ConnectionCap) {
        for held in cap.inner.open.lock().unwrap().values_mut() {
            held.since -= GRACE;
        }
    }

    /// A connection the cap can close: a real loopback socket in its entry.
    fn admit_closable(cap: &ConnectionCap, listener: &std::net::TcpListener) -> ConnectionSlot {
        let slot = cap.inner.admit(None);
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        cap.inner
            .open
            .lock()
            .unwrap()
            .get_mut(&slot.id)
            .unwrap()
            .socket = Some(socket);
        slot
    }

    #[test]
    fn a_full_cap_evicts_the_oldest_idle_connection_first() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cap = ConnectionCap::new(2);
        let a = admit_closable(&cap, &listener);
        let b = admit_closable(&cap, &listener);
        let _a_busy = Busy::new(Arc::clone(&a.in_flight));
        // Full; b is idle but within its grace: the oldest of all (a, busy) goes.
        let c = admit_closable(&cap, &listener);
        assert_eq!(open(&cap), [b.id, c.id]);
        // Past the grace, the oldest idle one goes (b), not the older busy one (c).
        age_all(&cap);
        let _c_busy = Busy::new(Arc::clone(&c.in_flight));
        let d = admit_closable(&cap, &listener);
        assert_eq!(open(&cap), [c.id, d.id]);
        // No idle one past its grace (d is new): the oldest of all (c) goes.
        let e = admit_closable(&cap, &listener);
        assert_eq!(open(&cap), [d.id, e.id]);
        // A connection actix-web drops leaves.
        drop(e);
        assert_eq!(cap.len(), 1);
        drop((a, b, c, d));
        assert!(cap.is_empty());
    }

    #[test]
    fn connections_it_cannot_close_are_never_chosen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cap = ConnectionCap::new(2);
        let tls = cap.inner.admit(None);
        let plain = admit_closable(&cap, &listener);
        age_all(&cap);
        // Full: the older, idle one cannot be closed, so the closable one goes.
        let next = cap.inner.admit(None);
        assert_eq!(open(&cap), [tls.id, next.id]);
        // Nothing closable left: the cap lets the new one in and closes nothing.
        let more = cap.inner.admit(None);
        assert_eq!(open(&cap), [tls.id, next.id, more.id]);
        drop(plain);
    }
}
