//! The refsys HTTP load runner: starts servers, drives them over keep-alive connections from
//! 127.0.0.1, and writes a markdown table of requests/s, p50/p99 latency and peak server RSS.
//!
//! `cargo run --release -p refsys-benches --bin load -- [--smoke] [options]`; see
//! `load --help` and `benches/README.md`. `load serve ...` is the bench server this runner
//! spawns (a child process, so its RSS is its own): the axum or actix adapter over a memory,
//! SQLite or PostgreSQL user store, client rate limits off, no request logging.
//!
//! The modules: `options` (the command line), `run` (which servers, starting and seeding
//! them), `client` (the HTTP client and the scenarios' requests), `measure` (rounds,
//! latencies, RSS and CPU), `pgbench` (PostgreSQL administration and the pgbench reference),
//! `report` (the markdown tables and targets); `serve` is the bench server and `protocol`
//! what it and the runner agree on.
#![forbid(unsafe_code)]

mod client;
mod measure;
mod options;
mod pgbench;
mod protocol;
mod report;
mod run;
mod serve;

use std::process::ExitCode;

use clap::Parser as _;

use options::{Cli, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve::main(&args),
        None => run::main(&cli.run.resolve()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
