//! `refsys-server admin ...`: operator commands on the server's database, with the server's
//! configuration (environment and `.env`). Each prints what it found or changed and exits
//! non-zero when it could not do what was asked.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use refsys_core::event::{EventRecord, EventStatus, Redeliver, rfc3339};
use refsys_core::{Clock, EventId, JwtKeys, LogSender, ReferralService, SystemClock};

use crate::config::{Config, Database};

mod users;

/// The admin commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Admin {
    /// Lists event deliveries that have not gone out: failed ones and pending ones (both,
    /// unless --failed or --pending), oldest first; or queues them again.
    Events(EventsArgs),
    /// Shows a user (profile, sessions, inviter, invitee count), or deletes its account.
    User(users::UserArgs),
    /// Ends a user's sessions.
    #[command(subcommand)]
    Sessions(users::SessionsAction),
}

/// `admin events`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    action: Option<EventsAction>,
    /// Only the failed ones (past their maximum age).
    #[arg(long, conflicts_with = "pending")]
    failed: bool,
    /// Only the pending ones (due, backing off, or being delivered).
    #[arg(long)]
    pending: bool,
    /// At most this many of each status.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

/// `admin events <action>`.
#[derive(Debug, Subcommand)]
enum EventsAction {
    /// Queues events for delivery again, due now, with a fresh maximum age: one by id
    /// (whatever its status), or every failed one.
    Redeliver {
        /// The event id (`evt_...`).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        /// Every failed event.
        #[arg(long)]
        failed: bool,
    },
}

/// Runs `command` with `config`'s database.
pub(crate) async fn run(config: &Config, command: Admin) -> ExitCode {
    match execute(config, command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(config: &Config, command: Admin) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(path) = missing_sqlite_file(&config.database) {
        // The server would create it; an admin command run in the wrong place should not.
        return Err(format!(
            "DATABASE_URL: there is no database at {path} (run this where the server runs, \
             or set DATABASE_URL)"
        )
        .into());
    }
    let args = match command {
        Admin::Events(args) => args,
        Admin::User(args) => return users::user(&service(config).await?, args).await,
        Admin::Sessions(action) => return users::sessions(&service(config).await?, action).await,
    };
    let users = crate::open_users(&config.database).await?;
    if !users.keeps_event_log() {
        return Err("this store keeps no event log".into());
    }
    match args.action {
        None => {
            let statuses: &[EventStatus] = match (args.failed, args.pending) {
                (true, _) => &[EventStatus::Failed],
                (_, true) => &[EventStatus::Pending],
                _ => &[EventStatus::Failed, EventStatus::Pending],
            };
            let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
            for status in statuses {
                let records = users.events(*status, limit).await?;
                print!("{}", listing(*status, &records, limit));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(EventsAction::Redeliver { id, failed }) => {
            let which = match (id, failed) {
                (Some(id), _) => {
                    if !valid_event_id(&id) {
                        return Err(
                            format!("`{id}` is not an event id (evt_ and 32 hex digits)").into(),
                        );
                    }
                    Redeliver::One(EventId::from_string(id))
                }
                (None, _) => Redeliver::Failed,
            };
            let queued = users.redeliver_events(&which, SystemClock.now()).await?;
            match &which {
                Redeliver::One(id) if queued == 0 => {
                    eprintln!(
                        "no event {id} to queue: it is unknown (delivered events are pruned \
                         after EVENTS_RETENTION) or being delivered right now"
                    );
                    Ok(ExitCode::FAILURE)
                }
                Redeliver::One(id) => {
                    println!("queued {id} for delivery again");
                    Ok(ExitCode::SUCCESS)
                }
                Redeliver::Failed => {
                    println!("queued {queued} failed event(s) for delivery again");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// A service on the server's configuration that records events (the servers deliver
/// them) and sends no SMS.
async fn service(config: &Config) -> Result<ReferralService, Box<dyn std::error::Error>> {
    let keys = config.keys.clone().unwrap_or_else(JwtKeys::hs256_random);
    crate::build_service(config, keys, Box::new(LogSender), crate::Role::Admin).await
}

/// The path of a SQLite `DATABASE_URL` whose file does not exist (`sqlite:refsys.db`,
/// `sqlite:///abs/path.db?mode=rwc`; never an in-memory database).
fn missing_sqlite_file(database: &Database) -> Option<String> {
    let Database::Sqlite(url) = database else {
        return None;
    };
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    let in_memory = path.is_empty() || path == ":memory:" || url.contains("mode=memory");
    (!in_memory && !std::path::Path::new(path).exists()).then(|| path.to_owned())
}

/// `evt_` and 32 lowercase hex digits, as [`EventId::random`] makes them.
fn valid_event_id(id: &str) -> bool {
    id.strip_prefix("evt_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// One status's section: a heading with the count, then one line per event.
fn listing(status: EventStatus, records: &[EventRecord], limit: usize) -> String {
    let more = if records.len() >= limit {
        format!(" (the first {limit}; --limit shows more)")
    } else {
        String::new()
    };
    let mut out = format!("{} {} event(s){more}\n", records.len(), status.as_str());
    for record in records {
        let event = &record.event;
        out.push_str(&format!(
            "  {}  {:<17} user={} recorded={} attempts={}",
            event.id,
            event.data.kind(),
            event
                .data
                .user_id()
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            rfc3339::format(event.timestamp),
            record.attempts,
        ));
        if status == EventStatus::Pending {
            out.push_str(&format!(
                " next={}",
                rfc3339::format(record.next_attempt_at)
            ));
        }
        if let Some(error) = &record.last_error {
            out.push_str(&format!(" last_error={error:?}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_file_that_is_not_there_is_found_before_it_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("there.db");
        std::fs::write(&there, b"").unwrap();
        let missing = dir.path().join("missing.db");
        let sqlite = |url: String| Database::Sqlite(url);
        assert_eq!(
            missing_sqlite_file(&sqlite(format!("sqlite:{}", there.display()))),
            None
        );
        assert_eq!(
            missing_sqlite_file(&sqlite(format!("sqlite://{}?mode=rwc", missing.display()))),
            Some(missing.display().to_string())
        );
        assert_eq!(
            missing_sqlite_file(&sqlite(format!("sqlite:{}", missing.display()))),
            Some(missing.display().to_string())
        );
        assert_eq!(missing_sqlite_file(&sqlite("sqlite::memory:".into())), None);
        assert_eq!(
            missing_sqlite_file(&Database::Postgres("postgres://x/y".into())),
            None
        );
    }

    #[test]
    fn event_ids_are_checked_before_the_store_is_asked() {
        assert!(valid_event_id(&EventId::random().to_string()));
        for bad in [
            "",
            "evt_",
            "evt_0123",
            "EVT_0123456789abcdef0123456789abcdef",
            "evt_0123456789ABCDEF0123456789ABCDEF",
            "evt_0123456789abcdef0123456789abcdeg",
            "evt_0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!valid_event_id(bad), "{bad}");
        }
    }
}
