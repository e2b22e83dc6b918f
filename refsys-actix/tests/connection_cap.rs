//! `ConnectionCap` on a real actix-web server: when the cap is full, a new connection is let
//! in and the oldest idle one is shut down; a connection with a request in flight is kept, and
//! the server lets go of the sockets it closed.

use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use refsys_actix::ConnectionCap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closed `stream` within `limit` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[actix_web::test]
async fn a_full_cap_closes_the_oldest_idle_connection_for_a_new_one() {
    let cap = ConnectionCap::new(3);
    let server_cap = cap.clone();
    let server = HttpServer::new(|| {
        App::new()
            .wrap(middleware::from_fn(refsys_actix::track_requests))
            .route(
                "/slow",
                web::get().to(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "done"
                }),
            )
            .route("/", web::get().to(|| async { "ok" }))
    })
    .workers(1)
    .on_connect(server_cap.on_connect())
    .max_connections(server_cap.actix_max_connections(1))
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let handle = server.run();
    let stop = handle.handle();
    actix_web::rt::spawn(handle);

    // The first connection is busy with a slow request; two more sit idle.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle_old = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut idle_new = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cap.len(), 3);
    // Past the second a new connection has to start its first request.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A fourth: the oldest idle connection goes, not the busy one, and the new one is served.
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut idle_old, Duration::from_secs(1)).await,
        "the oldest idle one was closed"
    );
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    fourth.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut slow = String::new();
    busy.read_to_string(&mut slow).await.ok();
    assert!(
        slow.starts_with("HTTP/1.1 200") && slow.ends_with("done"),
        "the busy one finished: {slow}"
    );
    assert!(
        !closed_within(&mut idle_new, Duration::from_millis(200)).await,
        "the newer idle one stays"
    );
    // A flood of idle connections: the server lets go of each one it closes, so it holds
    // about the cap's worth of sockets (two descriptors each), not the flood's.
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = fds();
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = fds();
    assert!(
        // The flood's 100 client sockets, and at most the cap's 3 connections (a socket and
        // its duplicate each) on the server's side: not the flood's 100 more.
        after <= before + 100 + 2 * 3,
        "{before} descriptors before, {after} after: the server kept the sockets it closed"
    );
    eprintln!(
        "fds: {before} before, {} after 100 more connections (100 of them the client's)",
        fds()
    );
    stop.stop(false).await;
}
