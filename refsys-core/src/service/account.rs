//! The account routes of [`ReferralService`]: export, deletion and phone change
//! (`docs/API.md`, "Account").

use std::net::IpAddr;

use crate::account::{Account, PhoneChange};
use crate::dto::AccountExport;
use crate::event::SessionEndReason;
use crate::human::HumanCheckAnswer;
use crate::limits::ClientAction;
use crate::session::Caller;
use crate::session::{Session, SessionScope, SessionsRevoked};
use crate::{Error, FamilyId, OtpCode, Phone, ReferralService, Timestamp, UserId};

use super::{Purpose, to_completion};

/// How a revocation reaches the other instances: in the background (a request answers at
/// once) or before the call returns (an operator's command may exit right after).
#[derive(Clone, Copy, Debug)]
enum Share {
    InBackground,
    Await,
}

impl ReferralService {
    /// `GET /api/account/export/`: everything stored about the caller (its account, its
    /// invitees and its live sessions). `401 unauthorized` when the caller's own session was
    /// ended or the account deleted.
    pub async fn export_account(&self, caller: &Caller) -> Result<AccountExport, Error> {
        let sessions = self.sessions(caller).await?;
        let account = self
            .inner
            .users
            .account(caller.user)
            .await?
            .ok_or(Error::Unauthorized)?;
        let shown = self.inner.policy.invitee_phones();
        Ok(AccountExport::new(
            account,
            &sessions,
            &caller.session,
            shown,
        ))
    }

    /// `POST /api/account/delete/`: deletes the caller's account (see
    /// [`UserStore::delete_account`](crate::UserStore::delete_account)) once `code`, a live
    /// code for the account's own phone from [`send_code`](Self::send_code), proves the phone
    /// again: a stolen access token alone cannot delete. A wrong or missing code gets the
    /// errors of [`verify_code`](Self::verify_code) (and counts as a wrong login code does);
    /// a store outage gives the code back. Every session's access tokens are refused at once
    /// with [instant revocation](crate::revocation).
    pub async fn delete_account(
        &self,
        caller: &Caller,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<(), Error> {
        self.sessions(caller).await?;
        let account = self
            .inner
            .users
            .account(caller.user)
            .await?
            .ok_or(Error::Unauthorized)?;
        let phone = account.phone;
        if let Some(ip) = client {
            self.check_phone_client(ClientAction::VerifyCodeForPhone, &phone, ip)
                .await?;
        }
        let deleted = async {
            let now = self.now();
            let hash = self.spend_code(&phone, code, now, Purpose::Login).await?;
            let (this, user, phone) = (self.clone(), caller.user, phone.clone());
            to_completion(async move {
                match this.erase(user, Share::InBackground).await {
                    Ok(deleted) => Ok(deleted),
                    Err(error) => {
                        this.restore_code(&phone, &hash, now).await;
                        Err(error)
                    }
                }
            })
            .await
        }
        .await;
        let deleted = self
            .store_failure_uncounted(deleted, &phone, client)
            .await?;
        if deleted.is_none() {
            // Deleted by a call that won the race (another tab, an operator).
            return Err(Error::Unauthorized);
        }
        Ok(())
    }

    /// `result`, after giving the client network's `verify_code` try for `phone` back when a
    /// store failed (not the client's doing), as [`verify_code_by`](Self::verify_code_by) does.
    async fn store_failure_uncounted<T>(
        &self,
        result: Result<T, Error>,
        phone: &Phone,
        client: Option<IpAddr>,
    ) -> Result<T, Error> {
        if let (Err(Error::Store(_)), Some(ip)) = (&result, client) {
            self.take_back_phone_client(ClientAction::VerifyCodeForPhone, phone, ip)
                .await;
        }
        result
    }

    /// Deletes the account of `user` without a code, for operators (`refsys-server admin user
    /// delete`): the same as [`delete_account`](Self::delete_account) otherwise. `None` when
    /// there was no account to delete. Unlike the routes, it waits until the revocations are
    /// shared with the other instances (a command may exit right after), and says whether
    /// they were.
    pub async fn delete_user(&self, user: UserId) -> Result<Option<SessionsRevoked>, Error> {
        self.erase(user, Share::Await).await
    }

    /// The user with `phone`, if any, for operators' lookups (nothing is created).
    pub async fn find_user(&self, phone: &Phone) -> Result<Option<UserId>, Error> {
        let user = self.inner.users.user_by_phone(phone).await?;
        Ok(user.map(|user| user.id))
    }

    /// Everything stored about `user` and its live sessions, newest first, for operators;
    /// `None` for an unknown user or a deleted account.
    pub async fn account_of(&self, user: UserId) -> Result<Option<(Account, Vec<Session>)>, Error> {
        let Some(account) = self.inner.users.account(user).await? else {
            return Ok(None);
        };
        let sessions = self.inner.users.sessions(user, self.now()).await?;
        Ok(Some((account, sessions)))
    }

    /// Ends every live session of `user`, for operators (`refsys-server admin sessions
    /// revoke`). Like [`delete_user`](Self::delete_user), it waits until the revocations are
    /// shared with the other instances, and says whether they were.
    pub async fn revoke_user_sessions(&self, user: UserId) -> Result<SessionsRevoked, Error> {
        let now = self.now();
        let revoked = self
            .inner
            .users
            .revoke_sessions(
                user,
                SessionScope::All,
                SessionEndReason::Revoked,
                self.change(now),
            )
            .await?;
        if !revoked.is_empty() {
            self.recorded();
            tracing::info!(user_id = %user, revoked = revoked.len(), "sessions revoked by an operator");
        }
        Ok(self.share(revoked, now, Share::Await).await)
    }

    /// The deletion itself; `None` when there was no account to delete.
    async fn erase(&self, user: UserId, share: Share) -> Result<Option<SessionsRevoked>, Error> {
        let now = self.now();
        let Some(revoked) = self
            .inner
            .users
            .delete_account(user, self.change(now))
            .await?
        else {
            return Ok(None);
        };
        self.recorded();
        tracing::info!(user_id = %user, sessions = revoked.len(), ?share, "account deleted");
        Ok(Some(self.share(revoked, now, share).await))
    }

    /// Refuses the access tokens of `revoked` here and shares them with the other instances,
    /// in the background or before it returns.
    async fn share(&self, revoked: Vec<FamilyId>, now: Timestamp, share: Share) -> SessionsRevoked {
        let sessions = revoked.len() as u64;
        let shared = match share {
            Share::InBackground => {
                self.refuse_access(revoked, now);
                true
            }
            Share::Await => match self.refuse_here(revoked, now) {
                Some(sharing) => sharing.await,
                None => true,
            },
        };
        SessionsRevoked { sessions, shared }
    }

    /// `POST /api/account/phone/send_code/`: once `current_code`, a live code for the
    /// account's current phone from [`send_code`](Self::send_code), proves that phone again
    /// (a stolen access token alone cannot move the account to a thief's number), sends a code
    /// to `phone`, the number the caller moves to, under every limit, cooldown and budget of
    /// [`send_code_with`](Self::send_code_with) for that number. That code serves this move
    /// only (not a login, nor another account's move). It does not say whether another
    /// account has the number (only [`change_phone`](Self::change_phone) does, once its code
    /// proved it). `400 same_phone` for the caller's own number. If the new code cannot go
    /// out (a cooldown, a budget, the SMS sender), the current phone's code is given back.
    pub async fn send_phone_change_code(
        &self,
        caller: &Caller,
        phone: &str,
        current_code: &str,
        client: Option<IpAddr>,
        human_check: Option<&HumanCheckAnswer>,
    ) -> Result<(), Error> {
        let (phone, current) = self.new_phone(caller, phone).await?;
        // Its form first, so that a malformed one is named by its own field.
        OtpCode::parse(current_code, self.inner.policy.otp().code_length)
            .map_err(|e| Error::InvalidRequest(format!("Field `current_code`: {e}.")))?;
        if let Some(ip) = client {
            self.check_phone_client(ClientAction::VerifyCodeForPhone, &current, ip)
                .await?;
        }
        let now = self.now();
        let proof = self
            .spend_code(&current, current_code, now, Purpose::Login)
            .await;
        let proof = self
            .store_failure_uncounted(proof, &current, client)
            .await?;
        let purpose = Purpose::PhoneChange {
            user: caller.user,
            from: &current,
        };
        let sent = self
            .send_code_for(phone, client, human_check, purpose)
            .await;
        if sent.is_err() {
            self.restore_code(&current, &proof, now).await;
        }
        sent
    }

    /// `POST /api/account/phone/verify/`: once `code`, the code
    /// [`send_phone_change_code`](Self::send_phone_change_code) sent to `phone` for this
    /// caller, proves the number (checked as [`verify_code`](Self::verify_code) checks a login
    /// code, and counted the same way), moves the caller's account to it; the account's phone
    /// now. `409 phone_taken` if another
    /// account has it (answered only after the code proved the number); of two accounts racing
    /// for one number, exactly one gets it. The old number is free at once.
    pub async fn change_phone(
        &self,
        caller: &Caller,
        phone: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<Phone, Error> {
        let (phone, current) = self.new_phone(caller, phone).await?;
        if let Some(ip) = client {
            self.check_phone_client(ClientAction::VerifyCodeForPhone, &phone, ip)
                .await?;
        }
        let moved = self.move_phone(caller, &phone, &current, code).await;
        self.store_failure_uncounted(moved, &phone, client).await
    }

    /// [`change_phone`](Self::change_phone) once the client's try is counted.
    async fn move_phone(
        &self,
        caller: &Caller,
        phone: &Phone,
        current: &Phone,
        code: &str,
    ) -> Result<Phone, Error> {
        let phone = phone.clone();
        let now = self.now();
        let purpose = Purpose::PhoneChange {
            user: caller.user,
            from: current,
        };
        let hash = self.spend_code(&phone, code, now, purpose).await?;
        let moved = self
            .inner
            .users
            .change_phone(caller.user, &phone, self.change(now))
            .await;
        match moved {
            Ok(PhoneChange::Changed) => {
                self.recorded();
                tracing::info!(user_id = %caller.user, phone = %phone.redacted(), "phone changed");
                Ok(phone)
            }
            Ok(PhoneChange::Unchanged) => Ok(phone),
            Ok(PhoneChange::Taken) => Err(Error::PhoneTaken),
            Ok(PhoneChange::UnknownUser) => Err(Error::Unauthorized),
            Err(error) => {
                self.restore_code(&phone, &hash, now).await;
                Err(error.into())
            }
        }
    }

    /// The number `input` parsed, for a caller whose session is live and who does not have
    /// that number already; and the caller's number.
    async fn new_phone(&self, caller: &Caller, input: &str) -> Result<(Phone, Phone), Error> {
        let phone = self.parse_phone(input)?;
        self.sessions(caller).await?;
        let current = self
            .inner
            .users
            .profile(caller.user, 0)
            .await?
            .ok_or(Error::Unauthorized)?
            .phone;
        if current == phone {
            return Err(Error::SamePhone);
        }
        Ok((phone, current))
    }
}
