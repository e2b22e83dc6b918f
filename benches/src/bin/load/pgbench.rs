//! PostgreSQL for the runner: administration through `psql` (the servers' databases are
//! created and dropped per run) and the pgbench reference runs of the profile's SQL, the
//! ceiling the PostgreSQL profile is measured against.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::BoxError;
use crate::options::Options;
use crate::report::Report;
use crate::run::Live;

/// How to reach PostgreSQL as an administrator (psql/pgbench, trust auth), and the servers'
/// URL options.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct PgAdmin {
    /// PostgreSQL host for psql, pgbench and the servers.
    #[arg(long = "pg-host", value_name = "H", default_value = "127.0.0.1")]
    host: String,
    /// PostgreSQL port.
    #[arg(long = "pg-port", value_name = "P", default_value = "5432")]
    port: String,
    /// PostgreSQL user (trust auth).
    #[arg(long = "pg-user", value_name = "U", default_value = "postgres")]
    user: String,
    /// The database psql connects to, to create and drop the servers' databases.
    #[arg(long = "pg-db", value_name = "D", default_value = "test")]
    db: String,
    /// The servers' `sslmode` (`disable`: TLS on loopback would measure the cipher).
    #[arg(long = "pg-sslmode", value_name = "M", default_value = "disable")]
    sslmode: String,
}

impl PgAdmin {
    /// Runs `sql` in the admin database.
    pub(crate) fn psql(&self, sql: &str) -> Result<(), BoxError> {
        let output = Command::new("psql")
            .args([
                "-h", &self.host, "-p", &self.port, "-U", &self.user, "-d", &self.db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .stdin(Stdio::null())
            .output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("psql: {}", String::from_utf8_lossy(&output.stderr).trim()).into())
        }
    }

    /// The servers' URL of the database `db`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{db}?sslmode={}",
            self.user, self.host, self.port, self.sslmode
        )
    }

    /// Creates the database `db` (for one server).
    pub(crate) fn create_database(&self, db: &str) -> Result<(), BoxError> {
        self.psql(&format!("CREATE DATABASE {db}"))
    }

    /// Drops the database `db`, closing its connections.
    pub(crate) fn drop_database(&self, db: &str) -> Result<(), BoxError> {
        self.psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    }
}

/// One pgbench run, for the report.
#[derive(Clone, Debug)]
pub(crate) struct PgbenchResult {
    pub(crate) framework: String,
    pub(crate) store: String,
    pub(crate) clients: usize,
    /// Statements each client sends before it waits for their answers (1: no pipeline).
    pub(crate) pipeline: usize,
    /// Statements per second (pgbench's tps times `pipeline`).
    pub(crate) rate: f64,
    pub(crate) latency_ms: f64,
}

/// pgbench with the profile's SQL on `server`'s database, with 10 clients (the server's
/// connection budget) and with as many as the HTTP load has connections: the ceiling.
/// Then, for reference, 10 clients that pipeline [`PIPELINE`] statements at a time, as
/// `PgUserStore` does under load.
pub(crate) fn pgbench_ceiling(
    options: &Options,
    server: &Live<'_>,
    pg_db: &str,
    tmp: &Path,
    report: &mut Report,
) {
    for (clients, pipeline) in [(10, 1), (options.connections, 1), (10, PIPELINE)] {
        let user = server.seeded.profile_user_id;
        match pgbench(options, pg_db, user, clients, pipeline, tmp) {
            Ok((tps, latency_ms)) => {
                let rate = tps * pipeline as f64;
                eprintln!(
                    "load:   pgbench -c {clients}, pipeline {pipeline}: {rate:.0} statements/s, \
                     {latency_ms:.2} ms"
                );
                report.pgbench.push(PgbenchResult {
                    framework: server.target.framework.clone(),
                    store: server.target.store.clone(),
                    clients,
                    pipeline,
                    rate,
                    latency_ms,
                });
            }
            Err(e) => report.notes.push(format!("pgbench failed: {e}")),
        }
    }
}

/// The exact SQL of `PgUserStore::profile`, for pgbench.
const PROFILE_SQL: &str = "SELECT u.phone, u.invite_code, inviter.invite_code, \
    ARRAY(SELECT g.phone FROM users g WHERE g.invited_by = u.id ORDER BY g.activation_seq) \
    FROM users u LEFT JOIN users inviter ON inviter.id = u.invited_by WHERE u.id = :uid;";

/// How deep the reference pgbench run pipelines: `PgUserStore`'s threshold for opening
/// another connection.
pub(crate) const PIPELINE: usize = 8;

/// One pgbench run of the profile SQL for `user_id` on `db`; its tps and average latency (ms).
fn pgbench(
    options: &Options,
    db: &str,
    user_id: i64,
    clients: usize,
    pipeline: usize,
    tmp: &Path,
) -> Result<(f64, f64), BoxError> {
    let script = tmp.join("profile.sql");
    let statements = if pipeline > 1 {
        format!(
            "\\startpipeline\n{}\\endpipeline\n",
            format!("{PROFILE_SQL}\n").repeat(pipeline)
        )
    } else {
        format!("{PROFILE_SQL}\n")
    };
    std::fs::write(&script, format!("\\set uid {user_id}\n{statements}"))?;
    let secs = options.duration.as_secs().max(1).to_string();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pg = &options.pg;
    let output = Command::new("pgbench")
        .args(["-h", &pg.host, "-p", &pg.port, "-U", &pg.user])
        .args(["-n", "-M", "prepared", "-c", &clients.to_string()])
        .args(["-j", &threads.min(clients).to_string(), "-T", &secs, "-f"])
        .arg(&script)
        .arg(db)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{}{}", text, String::from_utf8_lossy(&output.stderr)).into());
    }
    let number_after = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        line.split('=')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let tps = number_after("tps").ok_or("pgbench printed no tps")?;
    let latency = number_after("latency average").unwrap_or(0.0);
    Ok((tps, latency))
}
