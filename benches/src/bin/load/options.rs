//! The command line (clap): `load [options]` runs the benchmarks, `load serve ...` is one
//! bench server; [`Options`] is what a run is told to do, the `--smoke` defaults filled in.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pgbench::PgAdmin;

/// The refsys HTTP load runner: starts the servers, drives them over keep-alive connections
/// from 127.0.0.1 and writes a markdown table of requests/s, p50/p99 latency, peak server RSS
/// and CPU per request, with the ratios and targets (see benches/README.md).
#[derive(Debug, Parser)]
#[command(
    name = "load",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// One bench server on 127.0.0.1 (the runner starts these as child processes): the refsys
    /// adapter over a user store, client rate limits off, plus the bench-only routes.
    Serve(ServeArgs),
}

/// The flags of `load serve`, as the runner (this build's or another's, `--baseline`)
/// passes them.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The web framework.
    #[arg(long, value_enum)]
    pub(crate) framework: Framework,
    /// The user store: `memory`, `sqlite:PATH` or a `postgres://` URL.
    #[arg(long, value_name = "STORE")]
    pub(crate) store: String,
    /// The port on 127.0.0.1.
    #[arg(long, value_name = "PORT")]
    pub(crate) port: u16,
    /// How many test phones (`+37529 1 000 000` and up, fixed code) the policy holds.
    #[arg(long, value_name = "N")]
    pub(crate) test_phones: usize,
    /// Users put straight into the store before serving (not test phones).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) seed_users: usize,
    /// Record events and deliver them to a handler that counts them (the library's own
    /// cost: the event in each change's transaction, claiming and settling).
    #[arg(long)]
    pub(crate) events: bool,
}

/// The frameworks of the bench server.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Framework {
    Axum,
    Actix,
}

/// The runner's flags. Those whose default depends on `--smoke` are `Option`s.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A few seconds in all (CI): tiny load runs, no example server, no pgbench; fails if any
    /// row failed, erred or did nothing.
    #[arg(long)]
    smoke: bool,
    /// Measured seconds per scenario and server, split over the rounds [default: 5; 0.3 with
    /// --smoke].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Warm-up seconds per scenario and server [default: 1; 0.1 with --smoke].
    #[arg(long, value_name = "SECS")]
    warmup: Option<f64>,
    /// Rounds that alternate the frameworks [default: 4; 1 with --smoke].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Keep-alive connections per server [default: 32; 2 with --smoke].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// The frameworks, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "axum,actix"
    )]
    frameworks: Vec<String>,
    /// The stores, comma-separated [default: memory,sqlite,postgres; memory,sqlite with
    /// --smoke].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    stores: Option<Vec<String>>,
    /// The example server's binary, measured on the sqlite and postgres stores too (not with
    /// --smoke).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/release/refsys-server"
    )]
    example_server: PathBuf,
    /// Measure the bench server only.
    #[arg(long)]
    no_example_server: bool,
    /// No `axum (events)` bench server beside the others on SQLite and PostgreSQL (events
    /// recorded and delivered to a counting handler).
    #[arg(long)]
    no_events: bool,
    /// No pgbench reference runs (there are none with --smoke).
    #[arg(long)]
    no_pgbench: bool,
    #[command(flatten)]
    pg: PgAdmin,
    /// Also start PATH (the `load` binary of another build) as a bench server beside each of
    /// this build's, measured in the same rounds: rows `<framework> (baseline)` and a
    /// `this build / baseline` table.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// Where the table is written.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/refsys-bench/results.md"
    )]
    out: PathBuf,
}

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
    /// An `axum (events)` bench server on the SQLite and PostgreSQL stores.
    pub(crate) events: bool,
    pub(crate) pg: PgAdmin,
    pub(crate) pgbench: bool,
    pub(crate) out: PathBuf,
}

impl RunArgs {
    /// The options, with the defaults of a full run or of `--smoke`.
    pub(crate) fn resolve(self) -> Options {
        let smoke = self.smoke;
        let secs = |secs: Option<f64>, default: f64| {
            Duration::from_secs_f64(secs.unwrap_or(default).clamp(0.05, 120.0))
        };
        let list = |items: Vec<String>| -> Vec<String> {
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let default_stores = if smoke {
            "memory,sqlite"
        } else {
            "memory,sqlite,postgres"
        };
        Options {
            smoke,
            duration: secs(self.duration, if smoke { 0.3 } else { 5.0 }),
            warmup: secs(self.warmup, if smoke { 0.1 } else { 1.0 }),
            rounds: self.rounds.unwrap_or(if smoke { 1 } else { 4 }),
            connections: self.connections.unwrap_or(if smoke { 2 } else { 32 }),
            max_ops: if smoke { 50 } else { 2_000_000 },
            seed_users: if smoke { 100 } else { 10_000 },
            login_pool: if smoke { 400 } else { 60_000 },
            frameworks: list(self.frameworks),
            stores: list(
                self.stores
                    .unwrap_or_else(|| default_stores.split(',').map(str::to_owned).collect()),
            ),
            example_server: (!smoke && !self.no_example_server).then_some(self.example_server),
            baseline: self.baseline,
            events: !self.no_events,
            pg: self.pg,
            pgbench: !smoke && !self.no_pgbench,
            out: self.out,
        }
    }
}
