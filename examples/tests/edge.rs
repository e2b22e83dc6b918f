//! The connection layer against the real binary, with its open-files limit at 1,024: floods
//! of idle, slow-header and slow-body connections do not keep `/health` from answering, such
//! connections are closed within the configured timeouts, and slow headers cannot grow the
//! process's memory.

mod support;

use std::time::{Duration, Instant};

use support::{OPEN_FILES_LIMIT, Server, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections per flood: more than the server's open-files limit.
const FLOOD: usize = 1_100;

/// How many of `wanted` connections this test process can hold for one flood: it raises its
/// own open-files limit to the hard limit, and both tests of this file run at once, so each
/// gets half of what that leaves. (A machine whose hard limit is low gets smaller floods, and
/// says so.)
fn flood_size(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = usize::try_from(limit.saturating_sub(256) / 2).unwrap_or(usize::MAX);
    if room < wanted {
        eprintln!("open-files limit {limit}: floods of {room} connections instead of {wanted}");
    }
    wanted.min(room)
}
/// The timeouts the servers here run with (seconds).
const TIMEOUT: u64 = 2;

async fn start(args: &[&str]) -> Server {
    let env = [
        (OPEN_FILES_LIMIT, "1024".to_owned()),
        ("HEADER_READ_TIMEOUT", TIMEOUT.to_string()),
        ("BODY_READ_TIMEOUT", TIMEOUT.to_string()),
        ("RATE_LIMIT_SEND_CODE", "0".to_owned()),
    ];
    let server = Server::start(&env, args).await;
    assert!(
        server.log().contains("open_files=1024"),
        "the server reads its open-files limit and logs it:\n{}",
        server.log()
    );
    server
}

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Opens `n` connections and writes `first` on each (nothing if empty). Connections the
/// server refuses or closes at once are not kept.
async fn flood(server: &Server, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let addr = addr(server);
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await
        else {
            continue;
        };
        if !first.is_empty() && stream.write_all(first).await.is_err() {
            continue;
        }
        open.push(stream);
    }
    open
}

/// `GET /health` on a new connection: the time to a full `200` answer.
async fn health(server: &Server) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("/health answers");
    assert_eq!(res.status(), 200);
    started.elapsed()
}

/// Waits until every connection of `open` was closed by the server (EOF or reset), and
/// returns how long that took; fails after `limit`.
async fn all_closed(open: Vec<TcpStream>, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(open.len());
    for mut stream in open {
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => {}
                    Err(_) => return false,
                }
            }
        }));
    }
    for task in tasks {
        assert!(
            task.await.unwrap(),
            "a connection stayed open past {limit:?}"
        );
    }
    started.elapsed()
}

/// Runs the floods against a server started with `args`; `/health` must answer within
/// `health_bound` during each.
async fn floods_do_not_keep_health_down(args: &[&str], health_bound: Duration) {
    let server = start(args).await;
    let name = if args.is_empty() { "axum" } else { "actix" };
    let idle_rss = rss_kib(server.pid()).unwrap_or_default();
    let slow_body =
        b"POST /login/send_code/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Content-Length: 16000\r\n\r\n{";
    for (kind, first) in [
        ("idle", &b""[..]),
        (
            "slow-header",
            &b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa"[..],
        ),
        ("slow-body", &slow_body[..]),
    ] {
        let wanted = flood_size(FLOOD);
        let open = flood(&server, wanted, first).await;
        let answered = health(&server).await;
        println!(
            "METRIC edge {name} {kind}: {} of {wanted} connections held, /health in {} ms",
            open.len(),
            answered.as_millis()
        );
        assert!(
            answered < health_bound,
            "{name} {kind}: /health took {answered:?}"
        );
        let closed_in = all_closed(open, Duration::from_secs(TIMEOUT + 3)).await;
        println!(
            "METRIC edge {name} {kind}: all closed by the server within {} ms",
            closed_in.as_millis()
        );
    }

    // 2,000 connections, each with 12 KiB of one unfinished header line.
    let mut line = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    line.resize(12 * 1024, b'a');
    let open = flood(&server, flood_size(2_000), &line).await;
    let rss = rss_kib(server.pid()).unwrap_or_default();
    println!(
        "METRIC edge {name} 2000 slow headers of 12 KiB: {} held, RSS {} KiB (idle {} KiB)",
        open.len(),
        rss,
        idle_rss
    );
    assert!(rss < 100 * 1024, "{name}: RSS {rss} KiB");
    assert!(health(&server).await < health_bound);
    drop(open);

    // A head over the limit is refused (431 on axum; actix-web answers 408 when the
    // header-read timeout ends it), and the connection closed.
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    let mut huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    huge.resize(64 * 1024, b'a');
    let _ = stream.write_all(&huge).await;
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(TIMEOUT + 3),
        stream.read_to_end(&mut answer),
    )
    .await
    .is_ok();
    assert!(ended, "{name}: the connection stayed open");
    let text = String::from_utf8_lossy(&answer);
    let refused = ["431", "400", "408"]
        .iter()
        .any(|status| text.starts_with(&format!("HTTP/1.1 {status}")));
    assert!(text.is_empty() || refused, "{name}: {text}");
    // An attack is not an ERROR: on actix-web, an accept that fails for want of file
    // descriptors would be one (actix-server logs it so); the cap keeps the floods within the
    // open-files limit. (axum's accept loop logs such a failure as a rate-limited WARN.)
    let log = server.log();
    assert!(!log.contains(" ERROR "), "{name}:\n{log}");
}

/// axum (`refsys_axum::serve`): a full connection cap closes the oldest idle connection for
/// each new one, so `/health` answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_holds_under_connection_floods() {
    floods_do_not_keep_health_down(&[], Duration::from_secs(1)).await;
}

/// actix-web with `refsys_actix::ConnectionCap`: the same (without it, actix-web stops
/// accepting at its cap until its timeouts free room, and `/health` waited 1.9-3.9 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_holds_under_connection_floods() {
    floods_do_not_keep_health_down(&["--framework", "actix"], Duration::from_secs(1)).await;
}
