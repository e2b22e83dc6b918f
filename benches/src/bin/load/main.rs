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

use std::collections::BTreeMap;
use std::process::ExitCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("serve") {
        serve::main(&args[1..])
    } else {
        run::main(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs after the subcommand; flags without a value map to `""`.
fn parse_flags(args: &[String]) -> Result<BTreeMap<String, String>, BoxError> {
    let mut flags = BTreeMap::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let name = arg
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{arg}`; try --help"))?;
        let value = match iter.peek() {
            Some(next) if !next.starts_with("--") => iter.next().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        flags.insert(name.to_owned(), value);
    }
    Ok(flags)
}
