//! The Postman collection, run with newman against the server binary: on the embedded default
//! always, and on PostgreSQL + Redis with the `services` feature too. Runs with the `postman`
//! feature; `NEWMAN` names the newman executable (default `newman` on `PATH`).
#![cfg(feature = "postman")]

mod support;

use std::process::Command;

use support::{Server, TEST_PHONES};

const COLLECTION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/refsys.postman_collection.json"
);

fn newman(base: &str) {
    let newman = std::env::var("NEWMAN").unwrap_or_else(|_| "newman".into());
    let output = Command::new(&newman)
        .args(["run", COLLECTION, "--bail", "--color", "off", "--env-var"])
        .arg(format!("baseUrl={base}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{newman}` (npm install -g newman): {e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "newman failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("assertions"), "{report}");
    eprintln!(
        "{}",
        report
            .lines()
            .rev()
            .take(16)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn collection_passes_against_the_embedded_server() {
    let server = Server::start(&[("TEST_PHONES", TEST_PHONES.to_owned())], &[]).await;
    tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || newman(&base)
    })
    .await
    .expect("newman ran");
}

#[cfg(feature = "services")]
#[tokio::test]
async fn collection_passes_against_postgres_and_redis() {
    let database = refsys_test_support::postgres::fresh_database().await;
    let redis = refsys_test_support::redis::fresh_prefix().await;
    let env = vec![
        ("TEST_PHONES", TEST_PHONES.to_owned()),
        ("DATABASE_URL", database.url().to_owned()),
        ("REDIS_URL", redis.url.clone()),
        ("REDIS_PREFIX", redis.prefix.clone()),
        (
            "JWT_SECRET",
            "a postman secret of at least 32 bytes!!".to_owned(),
        ),
    ];
    let server = Server::start(&env, &["--framework", "actix"]).await;
    tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || newman(&base)
    })
    .await
    .expect("newman ran");
    drop(server);
    redis.cleanup().await;
    database.drop_database().await;
}
