//! The report: the rows a run measured ([`Row`], [`Report`]) and their markdown, the main
//! table with its ratios (vs `/health`, actix / axum), the pgbench and baseline tables, and
//! the targets.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::Scenario;
use crate::options::Options;
use crate::pgbench::{PIPELINE, PgbenchResult};
use crate::run::{BASELINE, EVENTS, ServerKind, Target};

/// One measured (server, framework, store, scenario).
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) server: ServerKind,
    pub(crate) framework: String,
    pub(crate) store: String,
    pub(crate) scenario: Scenario,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    /// Each round's p99 and p99.9, ms, in round order: a bad round shows here even when
    /// the pooled percentiles hide it.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// VmHWM of the server process after this scenario, MiB.
    pub(crate) peak_rss_mib: Option<f64>,
    /// CPU time (user + system) per op in the measured phase: the server's, the runner's.
    pub(crate) server_cpu_us: Option<f64>,
    pub(crate) runner_cpu_us: Option<f64>,
    pub(crate) failed: Option<String>,
    pub(crate) note: Option<String>,
}

impl Row {
    /// An empty row of `target`, for the `/health` scenario.
    pub(crate) fn base(target: &Target) -> Row {
        Row {
            server: target.server.clone(),
            framework: target.framework.clone(),
            store: target.store.clone(),
            scenario: Scenario::Health,
            ops: 0,
            errors: 0,
            rate: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            rounds: Vec::new(),
            peak_rss_mib: None,
            server_cpu_us: None,
            runner_cpu_us: None,
            failed: None,
            note: None,
        }
    }
}

/// Everything a run measured, and the notes on what it could not.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) pgbench: Vec<PgbenchResult>,
    pub(crate) notes: Vec<String>,
}

/// `text` made safe for one markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "/").replace('\n', " ")
}

impl Report {
    /// The successful row of (server, framework, store, scenario), if any.
    fn find(
        &self,
        server: &ServerKind,
        framework: &str,
        store: &str,
        scenario: Scenario,
    ) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.server == *server
                && r.framework == framework
                && r.store == store
                && r.scenario == scenario
                && r.failed.is_none()
        })
    }

    /// The report as markdown: the table, the pgbench and baseline tables, the targets.
    pub(crate) fn markdown(&self, options: &Options, took: Duration) -> String {
        let mut md = String::new();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(
            md,
            "Run: {}{} connections, {:.1} s warm-up + {:.1} s measured per scenario and server, \
             in {} rounds that alternate the frameworks, {cpus} CPUs \
             (load generator, server and database share them), took {:.0} s.\n",
            if options.smoke { "**smoke**, " } else { "" },
            options.connections,
            options.warmup.as_secs_f64(),
            options.duration.as_secs_f64(),
            options.rounds.max(1),
            took.as_secs_f64()
        );
        md.push_str(
            "| server | framework | store | scenario | ops/s | p50 ms | p99 ms | errors | vs /health | actix / axum | peak RSS MiB | server CPU µs/op | runner CPU µs/op |\n\
             | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            let what = format!(
                "| {} | {} | {} | {}",
                row.server.name(),
                row.framework,
                row.store,
                row.scenario.name()
            );
            if let Some(why) = &row.failed {
                let _ = writeln!(md, "{what} | failed: {} | | | | | | | | |", cell(why));
                continue;
            }
            let health = self
                .find(&row.server, &row.framework, &row.store, Scenario::Health)
                .filter(|h| h.rate > 0.0);
            let vs_health = match (row.scenario, health) {
                (Scenario::Health, _) | (_, None) => String::new(),
                (_, Some(h)) => format!("{:.0} %", 100.0 * row.rate / h.rate),
            };
            let actix_vs_axum = if row.framework == "actix" {
                self.find(&row.server, "axum", &row.store, row.scenario)
                    .filter(|a| a.rate > 0.0)
                    .map_or(String::new(), |a| format!("{:.2}", row.rate / a.rate))
            } else {
                String::new()
            };
            let note = row
                .note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({})", cell(n)));
            let _ = writeln!(
                md,
                "{what}{} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                note,
                row.rate,
                row.p50_ms,
                row.p99_ms,
                row.errors,
                vs_health,
                actix_vs_axum,
                row.peak_rss_mib
                    .map_or(String::new(), |m| format!("{m:.1}")),
                row.server_cpu_us
                    .map_or(String::new(), |c| format!("{c:.0}")),
                row.runner_cpu_us
                    .map_or(String::new(), |c| format!("{c:.0}"))
            );
        }
        if !self.pgbench.is_empty() {
            md.push_str(
                "\nPostgreSQL ceiling: pgbench running the exact profile SQL (`-M prepared`) \
                 against the same database and user:\n\n\
                 | database of | store | pgbench clients | pipeline depth | statements/s | latency ms |\n\
                 | --- | --- | ---: | ---: | ---: | ---: |\n",
            );
            for p in &self.pgbench {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.0} | {:.2} |",
                    p.framework, p.store, p.clients, p.pipeline, p.rate, p.latency_ms
                );
            }
            md.push_str(
                "\nThe ceiling is the best run without a pipeline; pipelined pgbench is a \
                 reference for what PostgreSQL does with pipelined reads (latency is per \
                 pipeline).\n",
            );
        }
        self.tail_table(&mut md);
        self.baseline_table(&mut md);
        self.events_table(&mut md);
        md.push_str("\nTargets:\n\n");
        for line in self.targets(options.seed_users) {
            let _ = writeln!(md, "- {line}");
        }
        for note in &self.notes {
            let _ = writeln!(md, "- note: {note}");
        }
        md
    }

    /// Each row's tail, round by round: p99 and p99.9 of every round, and the worst.
    fn tail_table(&self, md: &mut String) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| row.failed.is_none() && !row.rounds.is_empty())
            .collect();
        if rows.is_empty() {
            return;
        }
        md.push_str(
            "\nThe tail, round by round (ms; rounds in the order they ran):\n\n\
             | server | framework | store | scenario | p99 per round | p99.9 per round | worst p99 | worst p99.9 | p99.9 pooled |\n\
             | --- | --- | --- | --- | --- | --- | ---: | ---: | ---: |\n",
        );
        let list = |values: &mut dyn Iterator<Item = f64>| {
            values
                .map(|ms| format!("{ms:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        for row in rows {
            let worst =
                |pick: fn(&(f64, f64)) -> f64| row.rounds.iter().map(pick).fold(0.0, f64::max);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                row.server.name(),
                row.framework,
                row.store,
                row.scenario.name(),
                list(&mut row.rounds.iter().map(|r| r.0)),
                list(&mut row.rounds.iter().map(|r| r.1)),
                worst(|r| r.0),
                worst(|r| r.1),
                row.p999_ms,
            );
        }
    }

    /// This build's rows beside the baseline's from the same rounds (`--baseline`).
    fn baseline_table(&self, md: &mut String) {
        let mut rows = self.rows.iter().filter_map(|old| {
            let framework = old.framework.strip_suffix(BASELINE)?;
            let new = self.find(&old.server, framework, &old.store, old.scenario)?;
            (old.failed.is_none() && old.rate > 0.0).then_some((new, old))
        });
        let Some(first) = rows.next() else { return };
        md.push_str(
            "\nThis build beside the baseline (`--baseline`), same rounds:\n\n\
             | framework | store | scenario | ops/s | baseline ops/s | ratio | server CPU µs/op | baseline µs/op |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        );
        pair_rows(md, std::iter::once(first).chain(rows));
    }

    /// Each events-on row with its events-off row (`axum (events)` beside `axum`, same
    /// rounds).
    fn events_pairs(&self) -> Vec<(&Row, &Row)> {
        self.rows
            .iter()
            .filter_map(|on| {
                let framework = on.framework.strip_suffix(EVENTS)?;
                let off = self.find(&on.server, framework, &on.store, on.scenario)?;
                (on.failed.is_none() && on.rate > 0.0 && off.rate > 0.0).then_some((on, off))
            })
            .collect()
    }

    /// The cost of events: each scenario with events on beside events off.
    fn events_table(&self, md: &mut String) {
        let pairs = self.events_pairs();
        if pairs.is_empty() {
            return;
        }
        md.push_str(
            "\nEvents on (recorded in each change's transaction, delivered to a counting \
             handler) beside events off, same rounds:\n\n\
             | framework | store | scenario | ops/s on | ops/s off | on / off | server CPU µs/op on | off |\n\
             | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
        );
        pair_rows(md, pairs);
    }

    /// The targets of issue 6, met or missed, and the comparisons beside them.
    fn targets(&self, seed_users: usize) -> Vec<String> {
        let mark = |ok: bool| if ok { "met" } else { "**missed**" };
        let mut lines = Vec::new();
        let bench = ServerKind::Bench;
        for framework in ["axum", "actix"] {
            if let (Some(p), Some(h)) = (
                self.find(&bench, framework, "memory", Scenario::Profile),
                self.find(&bench, framework, "memory", Scenario::Health),
            ) {
                let ratio = p.rate / h.rate;
                lines.push(format!(
                    "{} — {framework}: profile on memory = {:.0} % of /health (target ≥ 70 %)",
                    mark(ratio >= 0.70),
                    100.0 * ratio
                ));
            }
            {
                let store = "postgres";
                let of_this = |p: &&PgbenchResult| p.framework == framework && p.store == store;
                let ceiling = self
                    .pgbench
                    .iter()
                    .filter(of_this)
                    .filter(|p| p.pipeline == 1)
                    .map(|p| p.rate)
                    .fold(0.0, f64::max);
                let pipelined = self
                    .pgbench
                    .iter()
                    .filter(of_this)
                    .filter(|p| p.pipeline > 1)
                    .map(|p| p.rate)
                    .fold(0.0, f64::max);
                if let Some(p) = self.find(&bench, framework, store, Scenario::Profile)
                    && ceiling > 0.0
                {
                    let ratio = p.rate / ceiling;
                    lines.push(format!(
                        "{} — {framework}: profile on {store} = {:.0} % of the pgbench ceiling \
                         ({:.0} of {:.0}/s; target ≥ 60 %)",
                        mark(ratio >= 0.60),
                        100.0 * ratio,
                        p.rate,
                        ceiling
                    ));
                    if let Some(bare) = self.find(&bench, framework, store, Scenario::BareStore) {
                        lines.push(format!(
                            "for comparison — {framework}: a bare handler reading the same \
                             profile from the store = {:.0} % of the pgbench ceiling \
                             ({:.0}/s; the endpoint = {:.0} % of it)",
                            100.0 * bare.rate / ceiling,
                            bare.rate,
                            100.0 * p.rate / bare.rate.max(1e-9)
                        ));
                    }
                    if pipelined > 0.0 {
                        lines.push(format!(
                            "for comparison — {framework}: profile on {store} = {:.0} % of \
                             pipelined pgbench ({PIPELINE} statements deep, {pipelined:.0} \
                             statements/s)",
                            100.0 * p.rate / pipelined
                        ));
                    }
                }
            }
            if let Some(p) = self.find(&bench, framework, "memory", Scenario::Profile)
                && let Some(rss) = p.peak_rss_mib
            {
                lines.push(format!(
                        "{} — {framework}: peak RSS with the memory store, {seed_users} seeded users, after \
                         profile load = {rss:.1} MiB (target ≤ 50 MiB)",
                        mark(rss <= 50.0)
                    ));
            }
        }
        let mut worst: Option<(f64, String)> = None;
        let mut pairs = 0;
        for row in self.rows.iter().filter(|r| {
            r.framework == "actix"
                && r.failed.is_none()
                && !matches!(r.scenario, Scenario::Bare | Scenario::BareStore)
        }) {
            if let Some(axum) = self.find(&row.server, "axum", &row.store, row.scenario)
                && axum.rate > 0.0
                && row.rate > 0.0
            {
                pairs += 1;
                let ratio = row.rate / axum.rate;
                let off = (ratio.max(1.0 / ratio)) - 1.0;
                if worst.as_ref().is_none_or(|(w, _)| off > *w) {
                    worst = Some((
                        off,
                        format!(
                            "{} {} {}: actix/axum = {ratio:.2}",
                            row.server.name(),
                            row.store,
                            row.scenario.name()
                        ),
                    ));
                }
            }
        }
        if let Some((off, which)) = worst {
            lines.push(format!(
                "{} — actix vs axum within 10 % on all {pairs} scenarios; the widest gap: {which}",
                mark(off <= 0.10)
            ));
        }
        // The frameworks' own difference, for comparison: no refsys code in it.
        for actix in self
            .rows
            .iter()
            .filter(|r| r.framework == "actix" && r.scenario == Scenario::Bare)
        {
            if let Some(axum) = self.find(&actix.server, "axum", &actix.store, Scenario::Bare)
                && axum.rate > 0.0
            {
                lines.push(format!(
                    "for comparison — bare framework handlers ({} store's servers): actix/axum = {:.2}",
                    actix.store,
                    actix.rate / axum.rate
                ));
            }
        }
        // Issue 16: the writes with events on within 15 % of events off.
        for (on, off) in self.events_pairs() {
            if matches!(on.scenario, Scenario::Login | Scenario::Invite) {
                let ratio = on.rate / off.rate;
                lines.push(format!(
                    "{} — {} on {} with events on = {:.0} % of events off (target ≥ 85 %)",
                    mark(ratio >= 0.85),
                    on.scenario.name(),
                    on.store,
                    100.0 * ratio
                ));
            }
        }
        lines
    }
}

/// One table row per (row, the row it is compared with): framework, store, scenario, both
/// rates, their ratio and both server CPU figures.
fn pair_rows<'a>(md: &mut String, pairs: impl IntoIterator<Item = (&'a Row, &'a Row)>) {
    let cpu = |row: &Row| {
        row.server_cpu_us
            .map_or(String::new(), |c| format!("{c:.0}"))
    };
    for (row, other) in pairs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {} |",
            row.framework,
            row.store,
            row.scenario.name(),
            row.rate,
            other.rate,
            row.rate / other.rate,
            cpu(row),
            cpu(other)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad round shows in the tail table though the pooled p99 hides it.
    #[test]
    fn the_tail_table_shows_each_round_and_the_worst() {
        let target = Target {
            server: ServerKind::Bench,
            framework: "actix".to_owned(),
            store: "postgres".to_owned(),
        };
        let row = Row {
            scenario: Scenario::Profile,
            rate: 40_000.0,
            p99_ms: 3.1,
            p999_ms: 9.5,
            rounds: vec![(3.0, 5.5), (61.25, 7555.0), (3.4, 6.0)],
            ..Row::base(&target)
        };
        let failed = Row {
            failed: Some("refused".to_owned()),
            rounds: vec![(1.0, 1.0)],
            ..row.clone()
        };
        let report = Report {
            rows: vec![row, failed],
            ..Report::default()
        };
        let mut md = String::new();
        report.tail_table(&mut md);
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with("| bench")).collect();
        assert_eq!(
            lines,
            [
                "| bench | actix | postgres | GET /get_profile/ (10 invitees) | 3.00 / 61.25 / 3.40 \
              | 5.50 / 7555.00 / 6.00 | 61.25 | 7555.00 | 9.50 |"
            ],
            "{md}"
        );
        // Nothing measured by rounds: no table.
        let mut empty = String::new();
        Report::default().tail_table(&mut empty);
        assert_eq!(empty, "");
    }
}
