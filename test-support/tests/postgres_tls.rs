//! `PgUserStore` over TLS, against a private PostgreSQL server this test starts with `ssl=on`
//! and a certificate signed by a CA it makes (openssl), on a free port of 127.0.0.1. The server
//! is stopped when the test ends, however it ends.
//!
//! Needs the PostgreSQL server binaries (`/usr/lib/postgresql/<version>/bin`, Debian's
//! layout, or the directory in `PG_BIN`) and the `openssl` command; without the binaries the
//! test says so and passes. As root (CI), the server runs as the `postgres` user.
#![cfg(feature = "postgres")]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use refsys_core::postgres::PgUserStore;
use refsys_core::{InviteCode, StoreError, UserStore};

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`, or `PG_BIN`.
fn server_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL server of this test's own, in a temporary directory; stopped on drop.
struct PrivateServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl PrivateServer {
    /// Makes the certificates, initializes the cluster and starts it with TLS on.
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            dir,
            port,
            as_root,
        };
        let at = server.dir.path();
        make_certificates(at);
        if as_root {
            // initdb and postgres refuse to run as root.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(at));
        }
        run(server
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(at.join("data")));
        let config = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.pem'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\nmax_connections = 30\n",
            dir = at.display()
        );
        let conf = at.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&config);
        std::fs::write(&conf, text).expect("postgresql.conf");
        run(server
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(at.join("data"))
            .arg("-l")
            .arg(at.join("log"))
            .arg("start"));
        server
    }

    /// `program` of the server binaries, as the `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .status();
        if !matches!(stopped, Ok(status) if status.success()) {
            eprintln!("could not stop the private PostgreSQL server: {stopped:?}");
        }
    }
}

/// Runs `command`, panicking with its output if it fails.
fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate it signed for `localhost` and 127.0.0.1
/// (`server.pem`, `server.key`), in `dir`. P-256 keys: quick to make.
fn make_certificates(dir: &Path) {
    let openssl = |args: &str| {
        run(Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace()))
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=refsys-test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
    ));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .expect("server.ext");
    openssl(&format!(
        "req {key} -keyout server.key -out server.csr -subj /CN=localhost"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.pem",
    );
    // PostgreSQL refuses a key that others may read.
    run(Command::new("chmod").arg("600").arg(dir.join("server.key")));
}

/// Whether the store's connection uses TLS, as the server sees it.
async fn over_tls(store: &PgUserStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

#[tokio::test]
async fn the_store_speaks_tls_as_sslmode_says() {
    // A test that cannot run fails: the `postgres` feature promises this check.
    let bin = server_binaries().expect(
        "PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/<version>/bin or \
         PG_BIN, to start a private server with TLS",
    );
    let server = PrivateServer::start(bin);
    let ca = server.dir.path().join("ca.pem");

    // require: encrypted, the certificate not checked. A login and a profile round trip.
    let store = PgUserStore::connect(&server.url("127.0.0.1", "sslmode=require"))
        .await
        .expect("connect with sslmode=require");
    store.migrate().await.expect("migrate over TLS");
    let phone = refsys_core::testing::phone(1);
    let user = store
        .find_or_create(
            &phone,
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
        .await
        .expect("login over TLS")
        .user;
    let profile = store
        .profile(user.id, usize::MAX)
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(profile.phone, phone);
    assert!(over_tls(&store).await, "sslmode=require did not use TLS");

    // verify-full: the certificate is checked against our CA and must name the host.
    let url = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let verified = PgUserStore::connect(&server.url("localhost", &url))
        .await
        .expect("connect with sslmode=verify-full");
    let again = verified
        .find_or_create(
            &phone,
            &InviteCode::generate,
            refsys_core::Change::recorded(refsys_core::testing::start()),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.user.id, user.id);
    assert!(
        over_tls(&verified).await,
        "sslmode=verify-full did not use TLS"
    );

    // Without our CA the certificate is not trusted: verification really happens.
    let untrusted = PgUserStore::connect(&server.url("localhost", "sslmode=verify-full")).await;
    match &untrusted {
        Err(StoreError::Unavailable(cause)) => assert!(
            cause.to_lowercase().contains("certificate"),
            "refused for another reason than the certificate: {cause}"
        ),
        other => panic!("verify-full trusted an unknown CA: {other:?}"),
    }

    // disable: in the clear (so `over_tls` tells the difference).
    let plain = PgUserStore::connect(&server.url("127.0.0.1", "sslmode=disable"))
        .await
        .expect("connect with sslmode=disable");
    assert!(!over_tls(&plain).await);

    // The server turns TLS off: sslmode=require refuses to connect in the clear.
    sqlx::query("ALTER SYSTEM SET ssl = off")
        .execute(plain.pool())
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(plain.pool())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PgUserStore::connect(&server.url("127.0.0.1", "sslmode=require")).await {
            Err(StoreError::Unavailable(cause)) => {
                assert!(cause.contains("TLS"), "{cause}");
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                // The server has not reloaded its configuration yet.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("sslmode=require against a server without TLS: {other:?}"),
        }
    }
    drop((store, verified, plain));
    drop(server);
}
