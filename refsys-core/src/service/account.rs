//! The account routes of [`ReferralService`]: export, deletion and phone change
//! (`docs/API.md`, "Account").

use std::net::IpAddr;

use crate::account::PhoneChange;
use crate::dto::AccountExport;
use crate::human::HumanCheckAnswer;
use crate::limits::ClientAction;
use crate::session::Caller;
use crate::{Error, Phone, ReferralService, UserId};

use super::to_completion;

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
        Ok(AccountExport::new(account, &sessions, &caller.session))
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
        let action = ClientAction::VerifyCodeForPhone;
        if let Some(ip) = client {
            self.check_phone_client(action, &phone, ip).await?;
        }
        let now = self.now();
        let hash = self.spend_code(&phone, code, now).await?;
        let (this, user) = (self.clone(), caller.user);
        let deleted = to_completion(async move {
            match this.erase(user).await {
                Ok(deleted) => Ok(deleted),
                Err(error) => {
                    this.restore_code(&phone, &hash, now).await;
                    Err(error)
                }
            }
        })
        .await?;
        if !deleted {
            // Deleted by a call that won the race (another tab, an operator).
            return Err(Error::Unauthorized);
        }
        Ok(())
    }

    /// Deletes the account of `user` without a code, for operators (`refsys-server admin user
    /// delete`): the same as [`delete_account`](Self::delete_account) otherwise. Whether there
    /// was an account to delete. Unlike the routes, it waits until the revocations are shared
    /// with the other instances (a command may exit right after).
    pub async fn delete_user(&self, user: UserId) -> Result<bool, Error> {
        let now = self.now();
        let Some(revoked) = self
            .inner
            .users
            .delete_account(user, self.change(now))
            .await?
        else {
            return Ok(false);
        };
        self.recorded();
        tracing::info!(user_id = %user, sessions = revoked.len(), "account deleted by an operator");
        if let Some(share) = self.refuse_here(revoked, now) {
            share.await;
        }
        Ok(true)
    }

    /// The deletion itself: whether there was an account to delete.
    async fn erase(&self, user: UserId) -> Result<bool, Error> {
        let now = self.now();
        let Some(revoked) = self
            .inner
            .users
            .delete_account(user, self.change(now))
            .await?
        else {
            return Ok(false);
        };
        self.recorded();
        tracing::info!(user_id = %user, sessions = revoked.len(), "account deleted");
        self.refuse_access(revoked, now);
        Ok(true)
    }

    /// `POST /api/account/phone/send_code/`: sends a code to `phone`, the number the caller
    /// wants to move to, under every limit, cooldown and budget of
    /// [`send_code_with`](Self::send_code_with) for that number. It does not say whether
    /// another account has the number (only a code for it does, in
    /// [`change_phone`](Self::change_phone)). `400 same_phone` for the caller's own number.
    pub async fn send_phone_change_code(
        &self,
        caller: &Caller,
        phone: &str,
        client: Option<IpAddr>,
        human_check: Option<&HumanCheckAnswer>,
    ) -> Result<(), Error> {
        self.new_phone(caller, phone).await?;
        self.send_code_with(phone, client, human_check).await
    }

    /// `POST /api/account/phone/verify/`: once `code` proves `phone` (checked as
    /// [`verify_code`](Self::verify_code) checks a login code, and counted the same way), moves
    /// the caller's account to it; the account's phone now. `409 phone_taken` if another
    /// account has it (answered only after the code proved the number); of two accounts racing
    /// for one number, exactly one gets it. The old number is free at once.
    pub async fn change_phone(
        &self,
        caller: &Caller,
        phone: &str,
        code: &str,
        client: Option<IpAddr>,
    ) -> Result<Phone, Error> {
        let phone = self.new_phone(caller, phone).await?;
        let action = ClientAction::VerifyCodeForPhone;
        if let Some(ip) = client {
            self.check_phone_client(action, &phone, ip).await?;
        }
        let now = self.now();
        let hash = self.spend_code(&phone, code, now).await?;
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
    /// that number already.
    async fn new_phone(&self, caller: &Caller, input: &str) -> Result<Phone, Error> {
        let phone = self.parse_phone(input)?;
        self.sessions(caller).await?;
        let current = self
            .inner
            .users
            .profile(caller.user)
            .await?
            .ok_or(Error::Unauthorized)?
            .phone;
        if current == phone {
            return Err(Error::SamePhone);
        }
        Ok(phone)
    }
}
