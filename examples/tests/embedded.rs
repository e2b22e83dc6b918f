//! The server binary on its embedded default: no services, one command.

mod support;

use http_suite::Client;
use serde_json::json;
use support::{Server, TEST_PHONES, rss_kib, run_to_exit};

/// The whole flow over real HTTP against the binary, on a given framework.
async fn full_flow(server: &Server) {
    let client = Client::new(&server.base);
    let alice = client.login("+375291000001", "0000").await;
    let bob = client.login("+375291000002", "0000").await;
    let alice_access = alice["access"].as_str().unwrap();
    let bob_access = bob["access"].as_str().unwrap();
    let profile = client.get("/get_profile/", Some(alice_access)).await;
    assert_eq!(profile.status, 200);
    let code = profile.str("own_invite_code");
    let applied = client
        .post_as(
            "/use_invite_code/",
            Some(bob_access),
            json!({ "invite_code": code }),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.json());
    let profile = client.get("/get_profile", Some(alice_access)).await.json();
    assert_eq!(profile["invited_users"], json!(["+375291000002"]));
    let refreshed = client
        .post(
            "/api/token/refresh/",
            json!({ "refresh": alice["refresh"] }),
        )
        .await;
    assert_eq!(refreshed.status, 200);
}

fn embedded_env() -> Vec<(&'static str, String)> {
    vec![("TEST_PHONES", TEST_PHONES.to_owned())]
}

#[tokio::test]
async fn runs_with_no_configuration_and_serves_ui_and_api() {
    let server = Server::start(&embedded_env(), &[]).await;
    let client = Client::new(&server.base);

    let page = client.get("/", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("/ui/app.js") && html.contains("/ui/style.css"));
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let asset = client.get(path, None).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(
            asset.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }
    let schema = client.get("/api/schema/", None).await;
    assert_eq!(schema.status, 200);
    assert!(
        schema.json()["openapi"]
            .as_str()
            .unwrap()
            .starts_with("3.1")
    );
    assert_eq!(client.get("/ready", None).await.status, 200);
    assert!(
        client
            .get("/health", None)
            .await
            .header("x-request-id")
            .is_some()
    );

    full_flow(&server).await;

    let log = server.log();
    assert!(log.contains("development only"), "{log}");
    assert!(log.contains("JWT_SECRET is not set"), "{log}");
    eprintln!(
        "embedded server: start-up {:?}, idle RSS {} KiB",
        server.startup,
        rss_kib(server.pid()).unwrap_or_default()
    );
}

/// Every page, asset and redirect carries the security headers; HTML pages also a CSP with
/// no inline script, `frame-ancestors 'none'` and `X-Frame-Options: DENY`.
async fn pages_carry_the_browser_safety_headers(server: &Server) {
    let client = Client::new(&server.base);
    for path in [
        "/",
        "/api/schema/swagger-ui/",
        "/ui/app.js",
        "/ui/style.css",
        "/api/schema/swagger-ui",
        "/api/schema/swagger-ui/swagger-ui-bundle.js",
    ] {
        let res = client.get(path, None).await;
        assert!(
            res.status == 200 || res.status == 308,
            "{path}: {}",
            res.status
        );
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(res.header("referrer-policy"), Some("no-referrer"), "{path}");
        let html = res
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"));
        let csp = res.header("content-security-policy");
        if html {
            let csp = csp.unwrap_or_else(|| panic!("{path}: no CSP"));
            let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
            assert!(directives.contains(&"script-src 'self'"), "{csp}");
            assert!(directives.contains(&"frame-ancestors 'none'"), "{csp}");
            assert!(
                !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
                "{csp}"
            );
            assert_eq!(res.header("x-frame-options"), Some("DENY"), "{path}");
        } else {
            assert_eq!(csp, None, "{path}: a CSP only on pages");
        }
    }
}

#[tokio::test]
async fn pages_are_safe_for_browsers_on_both_frameworks() {
    for args in [&[][..], &["--framework", "actix"][..]] {
        let server = Server::start(&embedded_env(), args).await;
        pages_carry_the_browser_safety_headers(&server).await;
    }
}

/// Requests the HTTP layer cannot parse get 400 and leave no ERROR line in the log: the
/// mistake is the client's.
#[tokio::test]
async fn malformed_requests_are_not_logged_as_errors() {
    use std::io::{Read, Write};
    for args in [&[][..], &["--framework", "actix"][..]] {
        let server = Server::start(&embedded_env(), args).await;
        let addr = server.base.trim_start_matches("http://").to_owned();
        for request in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            b"POST /login/send_code/ HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        ] {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            stream.write_all(request).unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 400"), "{args:?}: {text}");
        }
        // A request after them: once its line is in the log, theirs (if any) are too.
        assert_eq!(
            Client::new(&server.base).get("/health", None).await.status,
            200
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !server.log().contains("/health") {
            assert!(std::time::Instant::now() < deadline, "no request line");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let log = server.log();
        assert!(!log.contains(" ERROR "), "{args:?}:\n{log}");
    }
}

/// `CORS_ALLOWED_ORIGINS` lets exactly the listed origins' pages call the API; a typeless
/// cross-site POST is refused whatever the origin.
#[tokio::test]
async fn cors_allowed_origins_on_both_frameworks() {
    let mut env = embedded_env();
    env.push(("CORS_ALLOWED_ORIGINS", "https://app.example".to_owned()));
    for args in [&[][..], &["--framework", "actix"][..]] {
        let server = Server::start(&env, args).await;
        let client = Client::new(&server.base);
        for (origin, status, allowed) in [
            ("https://app.example", 204, Some("https://app.example")),
            ("https://evil.example", 405, None),
        ] {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ];
            let res = client
                .request("OPTIONS", "/login/verify_code/", &headers, None)
                .await;
            assert_eq!(res.status, status, "{args:?} {origin}");
            assert_eq!(res.header("access-control-allow-origin"), allowed);
        }
        let typeless = client
            .request(
                "POST",
                "/login/send_code/",
                &[("origin", "https://app.example")],
                Some(br#"{"phone": "+375291000001"}"#.to_vec()),
            )
            .await;
        assert_eq!(typeless.status, 415, "{args:?}");
    }
}

#[tokio::test]
async fn actix_serves_the_same_flow() {
    let server = Server::start(&embedded_env(), &["--framework", "actix"]).await;
    full_flow(&server).await;
    let page = Client::new(&server.base).get("/", None).await;
    assert_eq!(page.status, 200);
    assert!(server.log().contains("Actix"));
}

#[tokio::test]
async fn logs_carry_no_tokens_and_no_full_phone_numbers() {
    let mut env = embedded_env();
    env.push(("LOG_FORMAT", "json".into()));
    let server = Server::start(&env, &[]).await;
    let client = Client::new(&server.base);
    let login = client.login("+375291000001", "0000").await;
    // An ordinary phone: the dev LogSender line is the one place its number and code appear.
    let sent = client
        .post("/login/send_code/", json!({ "phone": "+375 29 555-12-34" }))
        .await;
    assert_eq!(sent.status, 200);
    let _ = client.get("/get_profile/", login["access"].as_str()).await;
    // Wait for the last request's log line (the log arrives through a pipe), with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = server.log();
        let last = log
            .lines()
            .find(|line| line.contains("latency_ms") && line.contains("/get_profile/"));
        if last.is_some() {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request line for /get_profile/: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for token in [
        login["access"].as_str().unwrap(),
        login["refresh"].as_str().unwrap(),
    ] {
        assert!(!log.contains(token), "a token leaked into the log");
    }
    for line in log.lines() {
        if line.contains("+375291000001") {
            panic!("a full test phone number is in the log: {line}");
        }
        if line.contains("+375295551234") {
            assert!(
                line.contains("LogSender"),
                "phone outside the dev sender line: {line}"
            );
        }
        if line.contains("\"request\"") || line.contains("request_id") {
            assert!(line.contains("latency_ms"), "{line}");
        }
    }
    assert!(log.contains("LogSender"), "{log}");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&embedded_env(), &[]).await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn bad_configuration_stops_the_server_with_one_line_naming_the_variable() {
    for (var, value) in [
        ("OTP_MAX_ATTEMPTS", "0"),
        ("DATABASE_URL", "mysql://nope"),
        ("JWT_SECRET", "too short"),
        ("ALLOWED_REGIONS", "BY,QQ"),
        ("REFSYS_BIND", "not-an-address"),
    ] {
        let (status, output) = run_to_exit(&[(var, value)], &[]);
        assert!(!status.success(), "{var}={value} should stop the server");
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{var}: {output}");
        assert!(lines[0].contains(var), "{var}: {output}");
    }
    let (status, output) = run_to_exit(&[("REFSYS_ENV", "production")], &[]);
    assert!(!status.success());
    assert!(output.contains("JWT_SECRET"), "{output}");
    let (status, output) = run_to_exit(&[], &["--framework", "rocket"]);
    assert!(!status.success());
    assert!(output.contains("REFSYS_FRAMEWORK"), "{output}");
}
