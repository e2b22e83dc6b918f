//! The README's embedding examples are `examples/embed_axum.rs` and `examples/embed_actix.rs`
//! word for word, and each, built and run as it is, completes a login: the code it logs
//! verifies, and the access token opens the app's own handler.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const PHONE: &str = "+375291234567";

#[test]
fn the_readme_examples_are_the_example_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "two Rust blocks in the README");
    for (block, file) in blocks.iter().zip(["embed_axum.rs", "embed_actix.rs"]) {
        let source = std::fs::read_to_string(root.join("examples").join(file)).unwrap();
        assert_eq!(*block, source, "README block and examples/{file} differ");
    }
}

/// A running example; killed when dropped.
struct Example {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Example {
    /// Starts the example binary that `cargo test` built next to this test.
    fn start(name: &str) -> Example {
        let deps = std::env::current_exe().unwrap();
        let path = deps
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: run `cargo test -p refsys-server` (it builds the examples)",
            path.display()
        );
        let mut child = Command::new(path)
            .env_clear()
            .env("JWT_SECRET", "an example secret of at least 32 bytes")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        Example { child, lines }
    }

    /// The code the example's `LogSender` logged for [`PHONE`].
    fn logged_code(&self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the example logs the code");
            if line.contains(PHONE)
                && let Some(rest) = line.split("code=").nth(1)
            {
                return rest
                    .trim_matches('"')
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

async fn login_through(name: &str, port: u16) {
    let example = Example::start(name);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut sent = None;
    for _ in 0..100 {
        match post(
            &client,
            &format!("{base}/login/send_code/"),
            json!({ "phone": PHONE }),
        )
        .await
        {
            Ok(response) => {
                sent = Some(response.status());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(sent.map(|s| s.as_u16()), Some(200), "{name}: send_code");
    let code = example.logged_code();
    assert_eq!(code.len(), 4, "{name}: a 4-digit code in the log");
    let verified = post(
        &client,
        &format!("{base}/login/verify_code/"),
        json!({ "phone": PHONE, "code": code }),
    )
    .await
    .unwrap();
    let login: Value = serde_json::from_slice(&verified.bytes().await.unwrap()).unwrap();
    let access = login["access"].as_str().expect("tokens");
    let me = client
        .get(format!("{base}/api/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200, "{name}: /api/me");
    let me: Value = serde_json::from_slice(&me.bytes().await.unwrap()).unwrap();
    assert_eq!(me["user_id"], login["user_id"], "{name}");
    let anonymous = client.get(format!("{base}/api/me")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401, "{name}");
}

#[tokio::test]
async fn the_axum_example_completes_a_login() {
    login_through("embed_axum", 8001).await;
}

#[tokio::test]
async fn the_actix_example_completes_a_login() {
    login_through("embed_actix", 8002).await;
}
