//! The web UI end to end in headless Chromium, against the real server binary: log in with a
//! test phone, see a wrong code explained, apply an invite code as a second user, see the
//! invitee on the first user's profile, page through 52 invitees where the profile lists
//! one, survive an access-token expiry (transparent
//! refresh), sign out another device and every other one, change the phone number (a taken
//! one refused, a free one taken) and delete the account after a code, and answer a
//! proof-of-work human check. Screenshots land in
//! `target/ui-screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian packages `chromium`, `chromium-driver`); runs
//! with the `browser` feature (`.ci/run` installs them).
#![cfg(feature = "browser")]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use support::{Server, TEST_PHONES, free_port};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client, tempfile::TempDir) {
    let port = free_port();
    let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (apt-get install chromium chromium-driver)");
    let driver = Driver(driver);
    let profile = tempfile::tempdir().expect("a profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1000,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let started = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                panic!("chromedriver did not start a session: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    (driver, client, profile)
}

/// Waits until `css` matches a displayed element and returns its text.
async fn visible_text(client: &Client, css: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.is_displayed().await.unwrap_or(false)
        {
            let text = element.text().await.unwrap_or_default();
            if !text.trim().is_empty() {
                return text;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "`{css}` never showed text"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_screen(client: &Client, screen: &str) {
    let css = format!("#{screen}:not([hidden])");
    let found = client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&css))
        .await;
    if let Err(e) = found {
        let shot = screenshot(client, &format!("failed-{screen}.png")).await;
        panic!("screen {screen} never showed ({e}); see {}", shot.display());
    }
}

async fn fill(client: &Client, css: &str, text: &str) {
    let input = client.find(Locator::Css(css)).await.expect(css);
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("click");
}

async fn login(client: &Client, base: &str, phone: &str, code: &str) {
    client.goto(base).await.expect("open the UI");
    wait_for_screen(client, "screen-phone").await;
    fill(client, "#phone", phone).await;
    click(client, "#send-code").await;
    wait_for_screen(client, "screen-code").await;
    fill(client, "#code", code).await;
    click(client, "#verify-code").await;
    wait_for_screen(client, "screen-profile").await;
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

fn ui_env() -> Vec<(&'static str, String)> {
    vec![
        ("TEST_PHONES", format!("{TEST_PHONES},+375291000004:0000")),
        // Short access tokens, so the test sees the UI refresh one transparently.
        ("ACCESS_TOKEN_TTL", "3".to_owned()),
        // Alice logs in twice within a minute, and three more times for the sessions.
        ("OTP_RESEND_COOLDOWN", "1".to_owned()),
        ("RATE_LIMIT_SEND_CODE_PER_PHONE", "20".to_owned()),
        // ... and the phone change and deletion send more codes from this one address.
        ("RATE_LIMIT_SEND_CODE", "0".to_owned()),
    ]
}

/// Logs `phone` in through the API, as another device would; its refresh token.
async fn api_login(base: &str, phone: &str, code: &str) -> String {
    let http = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the resend cooldown
    let sent = http
        .post(format!("{base}/login/send_code/"))
        .header("user-agent", "OtherDevice/1.0")
        .json(&serde_json::json!({ "phone": phone }))
        .send()
        .await
        .expect("send_code");
    assert_eq!(sent.status(), 200);
    let login: serde_json::Value = http
        .post(format!("{base}/login/verify_code/"))
        .header("user-agent", "OtherDevice/1.0")
        .json(&serde_json::json!({ "phone": phone, "code": code }))
        .send()
        .await
        .expect("verify_code")
        .json()
        .await
        .expect("a login");
    login["refresh"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

/// Whether `refresh` still refreshes.
async fn refreshes(base: &str, refresh: &str) -> bool {
    reqwest::Client::new()
        .post(format!("{base}/api/token/refresh/"))
        .json(&serde_json::json!({ "refresh": refresh }))
        .send()
        .await
        .expect("refresh")
        .status()
        == 200
}

/// Waits until the session list shows `n` sessions.
async fn wait_for_sessions(client: &Client, n: usize) {
    let started = Instant::now();
    loop {
        let items = client
            .find_all(Locator::Css("#session-list li"))
            .await
            .unwrap_or_default();
        if items.len() == n {
            return;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let shot = screenshot(client, "failed-sessions.png").await;
            panic!(
                "{} sessions listed, not {n}; see {}",
                items.len(),
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn web_ui_on_the_embedded_default() {
    let server = Server::start(&ui_env(), &[]).await;
    web_ui_login_invite_and_transparent_refresh(&server, "embedded").await;
    web_ui_phone_change_and_deletion(&server, "embedded").await;
}

/// A user with more invitees than the profile lists (`PROFILE_INVITEES_LIMIT=1`, 52
/// invitees) sees the oldest one and "Show all 52"; the UI then pages through
/// `GET /api/invitees/` (50 a page) to every invitee, oldest first, and the button goes.
#[tokio::test]
async fn web_ui_pages_through_invitees() {
    const INVITEES: usize = 52;
    let guests: Vec<String> = (0..INVITEES).map(|i| format!("+3752920{:05}", i)).collect();
    let phones: Vec<String> = std::iter::once("+375291000001:0000".to_owned())
        .chain(guests.iter().map(|p| format!("{p}:0000")))
        .collect();
    let env = [
        ("TEST_PHONES", phones.join(",")),
        ("PROFILE_INVITEES_LIMIT", "1".to_owned()),
        // The owner logs in through the API, then in the browser.
        ("OTP_RESEND_COOLDOWN", "1".to_owned()),
        ("RATE_LIMIT_SEND_CODE", "0".to_owned()),
        ("RATE_LIMIT_VERIFY_CODE", "0".to_owned()),
    ];
    let server = Server::start(&env, &[]).await;
    let http = reqwest::Client::new();
    let log_in = |phone: String| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            let sent = http
                .post(format!("{base}/login/send_code/"))
                .json(&serde_json::json!({ "phone": phone }))
                .send()
                .await
                .expect("send_code");
            assert_eq!(sent.status(), 200);
            let login: serde_json::Value = http
                .post(format!("{base}/login/verify_code/"))
                .json(&serde_json::json!({ "phone": phone, "code": "0000" }))
                .send()
                .await
                .expect("verify_code")
                .json()
                .await
                .expect("a login");
            login["access"]
                .as_str()
                .expect("an access token")
                .to_owned()
        }
    };
    let owner = log_in("+375291000001".to_owned()).await;
    let profile: serde_json::Value = http
        .get(format!("{}/get_profile/", server.base))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("profile")
        .json()
        .await
        .expect("a profile");
    let code = profile["own_invite_code"]
        .as_str()
        .expect("a code")
        .to_owned();
    for guest in &guests {
        let access = log_in(guest.clone()).await;
        let applied = http
            .post(format!("{}/use_invite_code/", server.base))
            .bearer_auth(&access)
            .json(&serde_json::json!({ "invite_code": code }))
            .send()
            .await
            .expect("use_invite_code");
        assert_eq!(applied.status(), 200);
    }

    let (_driver, client, _profile) = browser().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login(&client, &server.base, "+375291000001", "0000").await;
    assert_eq!(visible_text(&client, "#invited-count").await, "(52)");
    let listed = |client: Client| async move {
        let items = client
            .find_all(Locator::Css("#invited-list li"))
            .await
            .expect("the list");
        let mut texts = Vec::new();
        for item in items {
            texts.push(item.text().await.expect("an item's text"));
        }
        texts
    };
    let shown = listed(client.clone()).await;
    assert_eq!(shown, [guests[0].clone()], "the profile lists the oldest");
    assert_eq!(visible_text(&client, "#invitees-more").await, "Show all 52");
    click(&client, "#invitees-more").await;
    wait_for_text(&client, "#invitees-more", "Show more").await;
    let shown = listed(client.clone()).await;
    assert_eq!(shown.len(), 50, "{shown:?}");
    assert_eq!(
        visible_text(&client, "#invitees-status").await,
        "Showing 50 of 52."
    );
    click(&client, "#invitees-more").await;
    let started = Instant::now();
    let shown = loop {
        let shown = listed(client.clone()).await;
        if shown.len() == INVITEES {
            break shown;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{shown:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (item, guest) in shown.iter().zip(&guests) {
        assert!(item.starts_with(&format!("{guest} (joined ")), "{item}");
    }
    let more = client.find(Locator::Css("#invitees-more")).await.unwrap();
    assert!(
        !more.is_displayed().await.unwrap(),
        "no page after the last"
    );
    wait_for_text(&client, "#invitees-status", "Showing 52 of 52.").await;
    let focused = client.active_element().await.expect("the focused element");
    assert_eq!(
        focused.text().await.unwrap(),
        shown[50],
        "the keyboard is on the first of the new rows"
    );
    screenshot(&client, "embedded-invitees-paged.png").await;
    client.close().await.expect("close the browser");
}

#[cfg(feature = "services")]
#[tokio::test]
async fn web_ui_on_postgres_and_redis() {
    let database = refsys_test_support::postgres::fresh_database().await;
    let redis = refsys_test_support::redis::fresh_prefix().await;
    let mut env = ui_env();
    env.extend([
        ("DATABASE_URL", database.url().to_owned()),
        ("REDIS_URL", redis.url.clone()),
        ("REDIS_PREFIX", redis.prefix.clone()),
        (
            "JWT_SECRET",
            "a browser-test secret of 32+ bytes!!".to_owned(),
        ),
    ]);
    let server = Server::start(&env, &["--framework", "actix"]).await;
    web_ui_login_invite_and_transparent_refresh(&server, "postgres-redis").await;
    web_ui_phone_change_and_deletion(&server, "postgres-redis").await;
    drop(server);
    redis.cleanup().await;
    database.drop_database().await;
}

/// Under SMS-budget pressure (here always: `HUMAN_CHECK_AT=0`), `send_code` answers 428 with a
/// proof of work at the default difficulty; the UI solves it with WebCrypto, resends, and the
/// user logs in as usual.
#[tokio::test]
async fn web_ui_answers_the_human_check() {
    let mut env = ui_env();
    env.push(("HUMAN_CHECK_AT", "0".to_owned()));
    let server = Server::start(&env, &[]).await;
    let (_driver, client, _profile) = browser().await;
    let phone = "+375291234567";
    client.goto(&server.base).await.expect("open the UI");
    wait_for_screen(&client, "screen-phone").await;
    fill(&client, "#phone", phone).await;
    let started = Instant::now();
    click(&client, "#send-code").await;
    wait_for_screen(&client, "screen-code").await;
    eprintln!(
        "METRIC browser proof of work (16 bits) solved and code sent in {:?}",
        started.elapsed()
    );
    let log = server.log();
    assert!(
        log.contains("status=428"),
        "the server asked for the check:\n{log}"
    );
    let code = log
        .lines()
        .rev()
        .find(|line| line.contains("verification code") && line.contains(phone))
        .and_then(|line| line.split("code=").nth(1))
        .map(|rest| {
            rest.trim_start_matches('"')
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|code| code.len() == 4)
        .expect("the code in the log");
    fill(&client, "#code", &code).await;
    click(&client, "#verify-code").await;
    wait_for_screen(&client, "screen-profile").await;
    assert_eq!(visible_text(&client, "#profile-phone").await, phone);
    screenshot(&client, "human-check-profile.png").await;
    client.close().await.expect("close the browser");
}

/// Waits until `text` shows in `css`, and returns what shows.
async fn wait_for_text(client: &Client, css: &str, text: &str) -> String {
    let started = Instant::now();
    loop {
        let shown = visible_text(client, css).await;
        if shown.contains(text) {
            return shown;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let shot = screenshot(client, "failed-text.png").await;
            panic!(
                "`{css}` shows {shown:?}, never {text:?}; see {}",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Carol changes her number: a number Bob has is refused in plain words after both codes;
/// a free one moves her account. Then she deletes it: a wrong code is explained, the right
/// one signs her out for good, and her number signs up anew.
async fn web_ui_phone_change_and_deletion(server: &Server, config: &str) {
    let (_driver, client, _profile) = browser().await;
    let carol = "+375291000003";
    login(&client, &server.base, carol, "0000").await;
    assert_eq!(visible_text(&client, "#profile-phone").await, carol);

    for (to, refused) in [("+375 29 100-00-02", true), ("+375291000004", false)] {
        tokio::time::sleep(Duration::from_millis(1100)).await; // the resend cooldown
        fill(&client, "#new-phone", to).await;
        click(&client, "#phone-change-start").await;
        wait_for_screen(&client, "current-code-form").await;
        fill(&client, "#current-code", "0000").await;
        click(&client, "#phone-change-send").await;
        wait_for_screen(&client, "new-code-form").await;
        let shown = visible_text(&client, "#new-phone-shown").await;
        assert_eq!(shown, to);
        fill(&client, "#new-code", "0000").await;
        click(&client, "#phone-change-verify").await;
        if refused {
            let error = visible_text(&client, "#phone-change-error").await;
            assert!(error.contains("Another account"), "{error}");
            wait_for_screen(&client, "phone-change-form").await;
        }
    }
    wait_for_text(&client, "#profile-phone", "+375291000004").await;
    let said = visible_text(&client, "#notice").await;
    assert!(said.contains("+375291000004"), "{said}");
    screenshot(&client, &format!("{config}-phone-changed.png")).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    click(&client, "#delete-start").await;
    wait_for_screen(&client, "delete-form").await;
    fill(&client, "#delete-code", "1234").await;
    click(&client, "#delete-confirm").await;
    let error = visible_text(&client, "#delete-error").await;
    assert!(
        error.contains("not right") && !error.contains('{'),
        "{error}"
    );
    fill(&client, "#delete-code", "0000").await;
    click(&client, "#delete-confirm").await;
    wait_for_screen(&client, "screen-phone").await;
    let said = visible_text(&client, "#notice").await;
    assert!(said.contains("deleted"), "{said}");
    screenshot(&client, &format!("{config}-account-deleted.png")).await;
    // The number signs up as somebody new: no code applied, nobody invited.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login(&client, &server.base, "+375291000004", "0000").await;
    let invited = visible_text(&client, "#invited-list").await;
    assert!(invited.contains("Nobody"), "{invited}");
    client.close().await.expect("close the browser");
}

async fn web_ui_login_invite_and_transparent_refresh(server: &Server, config: &str) {
    let (_driver, client, _profile) = browser().await;

    // A wrong code is explained in plain words, with the tries left.
    client.goto(&server.base).await.expect("open the UI");
    wait_for_screen(&client, "screen-phone").await;
    fill(&client, "#phone", "+375 29 100-00-01").await;
    click(&client, "#send-code").await;
    wait_for_screen(&client, "screen-code").await;
    fill(&client, "#code", "1234").await;
    click(&client, "#verify-code").await;
    let error = visible_text(&client, "#code-error").await;
    assert!(error.contains('4') && !error.contains('{'), "{error}");
    // The resend button counts down the cooldown.
    let resend = client.find(Locator::Css("#resend")).await.unwrap();
    assert!(
        !resend.is_enabled().await.unwrap(),
        "resend is disabled during the cooldown"
    );

    // The right code logs in.
    fill(&client, "#code", "0000").await;
    click(&client, "#verify-code").await;
    wait_for_screen(&client, "screen-profile").await;
    assert_eq!(
        visible_text(&client, "#profile-phone").await,
        "+375291000001"
    );
    let alice_code = visible_text(&client, "#own-code").await;
    assert_eq!(alice_code.len(), 6, "{alice_code}");
    screenshot(&client, &format!("{config}-profile-alice.png")).await;

    // Bob applies Alice's code (typed in lower case).
    click(&client, "#logout").await;
    wait_for_screen(&client, "screen-phone").await;
    login(&client, &server.base, "+375291000002", "0000").await;
    fill(&client, "#invite-input", &alice_code.to_lowercase()).await;
    click(&client, "#apply-invite").await;
    let started = Instant::now();
    while visible_text(&client, "#activated-code").await != alice_code {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the code was not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alice's profile lists Bob; her access token expires meanwhile and is refreshed.
    click(&client, "#logout").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login(&client, &server.base, "+375291000001", "0000").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    client.refresh().await.expect("reload");
    wait_for_screen(&client, "screen-profile").await;
    let invited = visible_text(&client, "#invited-list").await;
    assert!(invited.contains("+375291000002"), "{invited}");
    let counted = visible_text(&client, "#invited-count").await;
    assert_eq!(counted, "(1)");
    screenshot(&client, &format!("{config}-profile-with-invitee.png")).await;

    // Applying her own code is refused in plain words.
    fill(&client, "#invite-input", &alice_code).await;
    click(&client, "#apply-invite").await;
    let error = visible_text(&client, "#invite-error").await;
    assert!(
        !error.contains("own_invite_code") && !error.contains('{'),
        "{error}"
    );
    assert!(
        server.log().contains("/api/token/refresh/"),
        "the UI refreshed its token"
    );

    // Where Alice is signed in: this browser, then another device too; she signs that one
    // out, then two more "everywhere else".
    wait_for_sessions(&client, 1).await;
    let this_device = visible_text(&client, "#session-list li").await;
    assert!(this_device.contains("this device"), "{this_device}");
    let other = api_login(&server.base, "+375291000001", "0000").await;
    client.refresh().await.expect("reload");
    wait_for_screen(&client, "screen-profile").await;
    wait_for_sessions(&client, 2).await;
    let listed = visible_text(&client, "#session-list").await;
    assert!(listed.contains("OtherDevice/1.0"), "{listed}");
    screenshot(&client, &format!("{config}-sessions.png")).await;
    click(&client, ".revoke-session").await;
    wait_for_sessions(&client, 1).await;
    assert!(
        !refreshes(&server.base, &other).await,
        "that device is signed out"
    );
    let others = [
        api_login(&server.base, "+375291000001", "0000").await,
        api_login(&server.base, "+375291000001", "0000").await,
    ];
    client.refresh().await.expect("reload");
    wait_for_screen(&client, "screen-profile").await;
    wait_for_sessions(&client, 3).await;
    click(&client, "#revoke-others").await;
    wait_for_sessions(&client, 1).await;
    let said = visible_text(&client, "#notice").await;
    assert!(said.contains("2 other devices"), "{said}");
    for refresh in &others {
        assert!(!refreshes(&server.base, refresh).await);
    }
    // This browser is still signed in.
    client.refresh().await.expect("reload");
    wait_for_screen(&client, "screen-profile").await;
    wait_for_sessions(&client, 1).await;

    // Swagger UI works under the pages' Content-Security-Policy (no inline script): it loads
    // the document and lists every operation.
    let swagger = format!("{}/api/schema/swagger-ui/", server.base);
    client.goto(&swagger).await.expect("open Swagger UI");
    let title = visible_text(&client, ".swagger-ui .info .title").await;
    assert!(title.contains("refsys"), "{title}");
    let operations = client
        .find_all(Locator::Css(".swagger-ui .opblock"))
        .await
        .expect("operations");
    assert!(operations.len() >= 9, "{} operations", operations.len());
    screenshot(&client, &format!("{config}-swagger-ui.png")).await;

    client.close().await.expect("close the browser");
}
