//! The command line of the runner: [`Options`], what a run is told to do, from its flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::pgbench::PgAdmin;
use crate::{BoxError, parse_flags};

/// What one run is told to do.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) smoke: bool,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) rounds: usize,
    pub(crate) connections: usize,
    pub(crate) max_ops: u64,
    pub(crate) seed_users: usize,
    pub(crate) login_pool: usize,
    pub(crate) frameworks: Vec<String>,
    pub(crate) stores: Vec<String>,
    pub(crate) example_server: Option<PathBuf>,
    /// Another build's `load` binary whose bench servers run beside this one's (`--baseline`).
    pub(crate) baseline: Option<PathBuf>,
    pub(crate) pg: PgAdmin,
    pub(crate) pgbench: bool,
    pub(crate) out: PathBuf,
}

const HELP: &str = "\
usage: load [--smoke] [--duration SECS] [--warmup SECS] [--rounds N] [--connections N]
            [--frameworks axum,actix] [--stores memory,sqlite,postgres]
            [--example-server PATH | --no-example-server] [--no-pgbench]
            [--pg-host H] [--pg-port P] [--pg-user U] [--pg-db D] [--pg-sslmode M]
            [--baseline PATH] [--out FILE]

--baseline PATH: also start PATH (the `load` binary of another build) as a bench server
beside each of this build's, measured in the same rounds; rows `<framework> (baseline)`
and a `this build / baseline` table.";

/// The options of `load [flags]`.
pub(crate) fn options(args: &[String]) -> Result<Options, BoxError> {
    let flags = parse_flags(args)?;
    if flags.contains_key("help") {
        return Err(HELP.into());
    }
    let smoke = flags.contains_key("smoke");
    let secs = |name: &str, default: f64| -> Result<Duration, BoxError> {
        let secs = flags.get(name).map_or(Ok(default), |v| v.parse::<f64>())?;
        Ok(Duration::from_secs_f64(secs.clamp(0.05, 120.0)))
    };
    let list = |name: &str, default: &str| -> Vec<String> {
        flags
            .get(name)
            .map_or(default, String::as_str)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let default_example = PathBuf::from("target/release/refsys-server");
    let example_server = if smoke || flags.contains_key("no-example-server") {
        None
    } else {
        Some(
            flags
                .get("example-server")
                .map_or(default_example, PathBuf::from),
        )
    };
    let pg_flag = |name: &str, default: &str| {
        flags
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    Ok(Options {
        smoke,
        duration: secs("duration", if smoke { 0.3 } else { 5.0 })?,
        warmup: secs("warmup", if smoke { 0.1 } else { 1.0 })?,
        rounds: flags
            .get("rounds")
            .map_or(Ok(if smoke { 1 } else { 4 }), |v| v.parse())?,
        connections: flags
            .get("connections")
            .map_or(Ok(if smoke { 2 } else { 32 }), |v| v.parse())?,
        max_ops: if smoke { 50 } else { 2_000_000 },
        seed_users: if smoke { 100 } else { 10_000 },
        login_pool: if smoke { 400 } else { 60_000 },
        frameworks: list("frameworks", "axum,actix"),
        stores: list(
            "stores",
            if smoke {
                "memory,sqlite"
            } else {
                "memory,sqlite,postgres"
            },
        ),
        example_server,
        baseline: flags.get("baseline").map(PathBuf::from),
        pg: PgAdmin {
            host: pg_flag("pg-host", "127.0.0.1"),
            port: pg_flag("pg-port", "5432"),
            user: pg_flag("pg-user", "postgres"),
            db: pg_flag("pg-db", "test"),
            sslmode: pg_flag("pg-sslmode", "disable"),
        },
        pgbench: !smoke && !flags.contains_key("no-pgbench"),
        out: PathBuf::from(pg_flag("out", "target/refsys-bench/results.md")),
    })
}
