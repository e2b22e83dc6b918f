//! Measurement: the rounds that alternate the servers and scenarios of a group
//! ([`measure_group`]), the warm-up, what a server did summed over the rounds ([`Tally`]),
//! latency percentiles ([`Outcome`]), and the server's and runner's CPU time and peak RSS
//! from `/proc`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::BoxError;
use crate::client::{Ctx, Scenario, fresh_users, phase};
use crate::options::Options;
use crate::pgbench::pgbench_ceiling;
use crate::protocol::LOGIN_POOL_START;
use crate::report::{Report, Row};
use crate::run::{Live, ServerKind};

/// What one server did in one scenario, summed over the rounds.
#[derive(Default)]
struct Tally {
    outcome: Outcome,
    /// Each round's p99 and p99.9, ms, in round order.
    rounds: Vec<(f64, f64)>,
    server_ticks: Option<u64>,
    runner_ticks: Option<u64>,
    failed: Option<String>,
}

impl Tally {
    fn add(&mut self, outcome: Result<Outcome, BoxError>, server: u64, runner: u64) {
        match outcome {
            Ok(mut outcome) => {
                self.rounds
                    .push((outcome.percentile_ms(99.0), outcome.percentile_ms(99.9)));
                let total = &mut self.outcome;
                total.ops += outcome.ops;
                total.errors += outcome.errors;
                total.elapsed += outcome.elapsed;
                total.latencies_us.append(&mut outcome.latencies_us);
                total.first_error = total.first_error.take().or(outcome.first_error);
                total.exhausted |= outcome.exhausted;
                self.server_ticks = Some(self.server_ticks.unwrap_or(0) + server);
                self.runner_ticks = Some(self.runner_ticks.unwrap_or(0) + runner);
            }
            Err(e) => self.failed = Some(e.to_string()),
        }
    }

    /// The row of `scenario` on `server`: rates, percentiles, CPU per op, peak RSS.
    fn into_row(self, server: &Live<'_>, scenario: Scenario) -> Row {
        let mut row = Row {
            scenario,
            peak_rss_mib: peak_rss_mib(server.process.child.id()),
            ..Row::base(server.target)
        };
        if let Some(failed) = self.failed {
            row.failed = Some(failed);
            return row;
        }
        let mut outcome = self.outcome;
        // Each round's latencies are sorted; all of them together are not.
        outcome.latencies_us.sort_unstable();
        row.ops = outcome.ops;
        row.errors = outcome.errors;
        row.rate = outcome.ops as f64 / outcome.elapsed.as_secs_f64().max(1e-9);
        row.p50_ms = outcome.percentile_ms(50.0);
        row.p99_ms = outcome.percentile_ms(99.0);
        row.p999_ms = outcome.percentile_ms(99.9);
        row.rounds = self.rounds;
        // Clock ticks are 1/100 s on Linux.
        let per_op = |ticks: Option<u64>| {
            (outcome.ops > 0).then(|| ticks.unwrap_or(0) as f64 * 10_000.0 / outcome.ops as f64)
        };
        row.server_cpu_us = per_op(self.server_ticks);
        row.runner_cpu_us = per_op(self.runner_ticks);
        if let Some(error) = outcome.first_error {
            row.note = Some(format!("first error: {error}"));
        } else if outcome.exhausted {
            row.note = Some(format!(
                "all {} users used in {:.1} s",
                outcome.ops,
                outcome.elapsed.as_secs_f64()
            ));
        }
        row
    }
}

/// Measures the live servers of one group side by side: the read scenarios share rounds,
/// each write scenario has rounds of its own, and every round gives each server and scenario
/// an equal slice of `--duration`, alternating which goes first. After the reads, the
/// pgbench reference on each bench server's PostgreSQL database.
pub(crate) async fn measure_group(
    options: &Options,
    live: &mut [Live<'_>],
    tmp: &Path,
    report: &mut Report,
) -> Result<(), BoxError> {
    let Some(first) = live.first() else {
        return Ok(());
    };
    let scenarios: &[Scenario] = match first.target.server {
        ServerKind::Bench => &[
            Scenario::Bare,
            Scenario::BareStore,
            Scenario::Health,
            Scenario::Profile,
            Scenario::Login,
            Scenario::Invite,
        ],
        // The example server keeps its per-IP limits on (10 send_code a minute): no login
        // load until it has a knob for them.
        ServerKind::Example => &[Scenario::Health, Scenario::Profile],
    };
    let rounds = options.rounds.max(1);
    let slice = options.duration.div_f64(rounds as f64);
    // The bare handler, `/health` and the profile read nothing but the seeded state, so
    // they share rounds too: their ratios are as steady as actix / axum.
    let reads = scenarios
        .iter()
        .take_while(|s| {
            matches!(
                s,
                Scenario::Bare | Scenario::BareStore | Scenario::Health | Scenario::Profile
            )
        })
        .count();
    let (reads, writes) = scenarios.split_at(reads);
    let groups: Vec<&[Scenario]> = std::iter::once(reads)
        .filter(|g| !g.is_empty())
        .chain(writes.chunks(1))
        .collect();
    for group in groups {
        // contexts[server][scenario], warmed up.
        let mut contexts: Vec<Vec<Arc<Ctx>>> = Vec::new();
        for server in live.iter_mut() {
            let mut mine = Vec::new();
            for &scenario in group {
                mine.push(prepare(options, server, scenario).await?);
            }
            contexts.push(mine);
        }
        let mut tallies: Vec<Vec<Tally>> = contexts
            .iter()
            .map(|c| c.iter().map(|_| Tally::default()).collect())
            .collect();
        for round in 0..rounds {
            // Alternate which server and which scenario go first.
            let mut servers: Vec<usize> = (0..live.len()).collect();
            let mut steps: Vec<usize> = (0..group.len()).collect();
            if round % 2 == 1 {
                servers.reverse();
                steps.reverse();
            }
            for &i in &servers {
                for &j in &steps {
                    let (server, ctx) = (&live[i], &contexts[i][j]);
                    ctx.budget.store(options.max_ops, Ordering::Relaxed);
                    let pid = server.process.child.id();
                    let before = (cpu_ticks(pid), cpu_ticks(std::process::id()));
                    let outcome = phase(server.process.addr, options, ctx, slice, true).await;
                    let after = (cpu_ticks(pid), cpu_ticks(std::process::id()));
                    let delta = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
                    tallies[i][j].add(
                        outcome,
                        delta(before.0, after.0).unwrap_or(0),
                        delta(before.1, after.1).unwrap_or(0),
                    );
                }
            }
        }
        for (j, &scenario) in group.iter().enumerate() {
            for (i, server) in live.iter_mut().enumerate() {
                let tally = std::mem::take(&mut tallies[i][j]);
                let row = tally.into_row(server, scenario);
                eprintln!(
                    "load:   {:<6} {:<34} {:>9.0}/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  rss {:.1} MiB",
                    server.target.framework,
                    scenario.name(),
                    row.rate,
                    row.p50_ms,
                    row.p99_ms,
                    row.errors,
                    row.peak_rss_mib.unwrap_or(0.0)
                );
                if scenario == Scenario::Login {
                    server.login_rate = (row.ops > 0).then_some(row.rate);
                    server.tokens = contexts[i][j]
                        .collected
                        .lock()
                        .map(|mut t| std::mem::take(&mut *t))
                        .unwrap_or_default();
                }
                report.rows.push(row);
            }
        }
        if group.contains(&Scenario::Profile) && options.pgbench {
            for server in live.iter() {
                if let (ServerKind::Bench, Some(pg_db)) = (&server.target.server, &server.pg_db) {
                    pgbench_ceiling(options, server, pg_db, tmp, report);
                }
            }
        }
    }
    Ok(())
}

/// The context of `scenario` on `server`, warmed up (unrecorded, with at most a fifth of
/// a phone or token pool); `use_invite_code` first gets enough fresh users.
async fn prepare(
    options: &Options,
    server: &mut Live<'_>,
    scenario: Scenario,
) -> Result<Arc<Ctx>, BoxError> {
    if scenario == Scenario::Invite && server.target.server == ServerKind::Bench {
        // Every op needs a user who has not applied a code yet. Logins made some; top
        // up to what the scenario can use: `use_invite_code` has run at up to 4x the
        // login rate, plus a quarter for luck.
        let window = (options.warmup + options.duration).as_secs_f64();
        let wanted = server
            .login_rate
            .map_or(10_000.0, |rate| 4.0 * rate * window * 1.25);
        let wanted = (wanted as usize).clamp(200, 1_000_000);
        if let Some(missing) = wanted.checked_sub(server.tokens.len()) {
            let minted = fresh_users(server.process.addr, missing).await?;
            server.tokens.extend(minted);
        }
    }
    let ctx = Arc::new(Ctx {
        scenario,
        profile_auth: server.seeded.profile_auth.clone(),
        profile_user_id: server.seeded.profile_user_id.to_string(),
        hub_code: server.seeded.hub_code.clone(),
        phones_end: LOGIN_POOL_START + options.login_pool,
        next_phone: AtomicUsize::new(LOGIN_POOL_START),
        collected: Mutex::new(Vec::new()),
        invite_tokens: std::mem::take(&mut server.tokens),
        next_token: AtomicUsize::new(0),
        budget: AtomicU64::new(0),
    });
    let warmup_budget = match scenario {
        Scenario::Login => options.login_pool as u64 / 5,
        Scenario::Invite => ctx.invite_tokens.len() as u64 / 5,
        Scenario::Bare | Scenario::BareStore | Scenario::Health | Scenario::Profile => {
            options.max_ops
        }
    };
    ctx.budget
        .store(warmup_budget.min(options.max_ops), Ordering::Relaxed);
    let _ = phase(server.process.addr, options, &ctx, options.warmup, false).await;
    Ok(ctx)
}

/// What one load phase did: ops, errors, time, each op's latency (µs, sorted: each phase
/// sorts its own).
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) first_error: Option<String>,
    pub(crate) exhausted: bool,
}

impl Outcome {
    /// The `p`-th percentile of the latencies, ms.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
    }
}

/// utime + stime of process `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at `) `.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmHWM of process `pid` (its peak RSS), MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
