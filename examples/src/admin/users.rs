//! `admin user ...` and `admin sessions ...`: an operator's view of one user, ending its
//! sessions, deleting its account. They run on a service built with the server's
//! configuration, so the rules are the server's: a deletion is the self-service one without
//! the code, revocations are shared with the running servers through the OTP store (Redis),
//! and events are recorded for the servers to deliver.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use refsys_core::event::rfc3339;
use refsys_core::{ReferralService, SessionsRevoked, UserId};

/// `admin user`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    action: Option<UserAction>,
    /// The user: a phone (`+375291234567`) or an id (`42`).
    #[arg(required = true)]
    who: Option<String>,
}

/// `admin user <action>`.
#[derive(Debug, Subcommand)]
enum UserAction {
    /// Deletes the account, as the user can with a code: its phone and sessions are erased,
    /// every session revoked, its id and invite code never reused; its invitees keep theirs.
    Delete {
        /// The user: a phone or an id.
        who: String,
        /// Needed: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `admin sessions`.
#[derive(Debug, Subcommand)]
pub(crate) enum SessionsAction {
    /// Ends every session of a user (its refresh tokens are refused at once; its access
    /// tokens too, on every server sharing the OTP store).
    Revoke {
        /// The user: a phone or an id.
        who: String,
    },
}

/// Runs `admin user`.
pub(crate) async fn user(
    service: &ReferralService,
    args: UserArgs,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match args.action {
        Some(UserAction::Delete { who, yes }) => {
            let Some(user) = find(service, &who).await? else {
                return Ok(unknown(&who));
            };
            if !yes {
                eprintln!(
                    "this deletes user {user} for good (its phone, sessions and account); \
                     run it again with --yes"
                );
                return Ok(ExitCode::from(2));
            }
            match service.delete_user(user).await? {
                Some(revoked) => {
                    println!(
                        "deleted user {user}: its phone and {} session(s) are erased",
                        revoked.sessions
                    );
                    Ok(shared(revoked))
                }
                None => Ok(unknown(&who)),
            }
        }
        None => {
            let who = args.who.unwrap_or_default();
            let Some(user) = find(service, &who).await? else {
                return Ok(unknown(&who));
            };
            let Some((account, sessions)) = service.account_of(user).await? else {
                return Ok(unknown(&who));
            };
            println!("user {}", account.user_id);
            println!("  phone         {}", account.phone);
            println!("  created       {}", rfc3339::format(account.created_at));
            println!("  invite code   {}", account.own_invite_code);
            match (account.activated_invite_code, account.activated_at) {
                (Some(code), Some(at)) => {
                    let by = account
                        .invited_by
                        .map_or_else(|| "a deleted account".to_owned(), |id| format!("user {id}"));
                    println!(
                        "  applied       {code} at {}, invited by {by}",
                        rfc3339::format(at)
                    );
                }
                _ => println!("  applied       no code"),
            }
            println!("  invitees      {}", account.invitees.len());
            println!("  sessions      {} live", sessions.len());
            for session in &sessions {
                println!(
                    "    {}  started {}  last used {}  {}  {}",
                    session.id.as_str(),
                    rfc3339::format(session.created_at),
                    rfc3339::format(session.last_used_at),
                    session.client.network.as_deref().unwrap_or("-"),
                    session.client.user_agent.as_deref().unwrap_or("-"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `admin sessions`.
pub(crate) async fn sessions(
    service: &ReferralService,
    action: SessionsAction,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let SessionsAction::Revoke { who } = action;
    let Some(user) = find(service, &who).await? else {
        return Ok(unknown(&who));
    };
    let revoked = service.revoke_user_sessions(user).await?;
    println!("revoked {} session(s) of user {user}", revoked.sessions);
    Ok(shared(revoked))
}

/// Success, or, when the revocations did not reach the list the servers read, a failure
/// that says what that means.
fn shared(revoked: SessionsRevoked) -> ExitCode {
    if revoked.shared {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "warning: the revocations could not be written to the OTP store (Redis): their refresh \
         tokens are refused, but running servers accept their access tokens until they expire \
         (ACCESS_TOKEN_TTL)"
    );
    ExitCode::FAILURE
}

/// The user `who` names: an id (digits) or a phone. `None` when no account has it; an
/// error for input that is neither.
async fn find(
    service: &ReferralService,
    who: &str,
) -> Result<Option<UserId>, Box<dyn std::error::Error>> {
    let who = who.trim();
    if !who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()) {
        let id = who
            .parse::<i64>()
            .map_err(|_| format!("`{who}` is not a user id"))?;
        let exists = service.account_of(UserId(id)).await?.is_some();
        return Ok(exists.then_some(UserId(id)));
    }
    let phone = service
        .parse_phone(who)
        .map_err(|_| format!("`{who}` is neither a user id nor a phone number"))?;
    Ok(service.find_user(&phone).await?)
}

/// Says that no account is `who`, and exits non-zero.
fn unknown(who: &str) -> ExitCode {
    eprintln!("no user {who} (unknown, or its account was deleted)");
    if who.len() >= 8 && who.bytes().all(|b| b.is_ascii_digit()) {
        // Digits alone are an id: a phone needs its `+`.
        eprintln!("(read as a user id; for a phone number, write it with its +: +{who})");
    }
    ExitCode::FAILURE
}
