use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;

use crate::memory::sweep::SWEEP_EVERY;
use crate::store::{Activation, INVITE_CODE_TRIES, Rotation, UserStore};
use crate::{
    FamilyId, InviteCode, Phone, Profile, Registration, StoreError, Timestamp, TokenId, User,
    UserId,
};

/// A [`UserStore`] in process memory. Everything is lost on restart: use it for tests and
/// demos, and the SQLite or PostgreSQL store for anything you keep.
#[derive(Debug, Default)]
pub struct MemoryUserStore {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Users by id; ids are dense from 1, so `users[id - 1]`.
    users: Vec<UserRow>,
    by_phone: HashMap<Phone, UserId>,
    by_code: HashMap<InviteCode, UserId>,
    families: HashMap<FamilyId, Family>,
    family_writes: u64,
}

#[derive(Debug)]
struct UserRow {
    user: User,
    /// Who invited this user (whose code it applied).
    invited_by: Option<UserId>,
    /// Users who applied this user's code, oldest first.
    invitees: Vec<UserId>,
}

#[derive(Debug)]
struct Family {
    user: UserId,
    live: TokenId,
    /// The token spent last, and when.
    previous: Option<(TokenId, Timestamp)>,
    expires_at: Timestamp,
    revoked: bool,
}

impl State {
    fn row(&self, id: UserId) -> Option<&UserRow> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.users.get(i))
    }

    fn row_mut(&mut self, id: UserId) -> Option<&mut UserRow> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.users.get_mut(i))
    }

    /// Whether `descendant` was invited, directly or transitively, by `ancestor`.
    fn descends_from(&self, descendant: UserId, ancestor: UserId) -> bool {
        let mut current = descendant;
        // Activation never closes a cycle, so the chain ends; the bound is belt and braces.
        for _ in 0..=self.users.len() {
            match self.row(current).and_then(|row| row.invited_by) {
                Some(inviter) if inviter == ancestor => return true,
                Some(inviter) => current = inviter,
                None => return false,
            }
        }
        false
    }
}

impl MemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every update checks first and then writes, so a panic cannot leave it half-applied.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn find_or_create(
        &self,
        phone: &Phone,
        new_code: &(dyn Fn() -> InviteCode + Send + Sync),
    ) -> Result<Registration, StoreError> {
        let existing = |state: &State| {
            let id = *state.by_phone.get(phone)?;
            Some(state.row(id).map(|row| Registration {
                user: row.user.clone(),
                created: false,
            }))
        };
        let corrupt = || StoreError::corrupt("phone index points at no user");
        if let Some(found) = existing(&self.read()) {
            return found.ok_or_else(corrupt);
        }
        let mut state = self.write();
        if let Some(found) = existing(&state) {
            return found.ok_or_else(corrupt);
        }
        let invite_code = (0..INVITE_CODE_TRIES)
            .map(|_| new_code())
            .find(|code| !state.by_code.contains_key(code))
            .ok_or_else(|| {
                StoreError::Exhausted(format!("no free invite code in {INVITE_CODE_TRIES} tries"))
            })?;
        let id = UserId(i64::try_from(state.users.len()).unwrap_or(i64::MAX) + 1);
        let user = User {
            id,
            phone: phone.clone(),
            invite_code,
        };
        state.by_phone.insert(phone.clone(), id);
        state.by_code.insert(invite_code, id);
        state.users.push(UserRow {
            user: user.clone(),
            invited_by: None,
            invitees: Vec::new(),
        });
        Ok(Registration {
            user,
            created: true,
        })
    }

    async fn profile(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        let state = self.read();
        let Some(row) = state.row(user) else {
            return Ok(None);
        };
        let phone_of = |id| state.row(id).map(|row: &UserRow| row.user.phone.clone());
        Ok(Some(Profile {
            phone: row.user.phone.clone(),
            own_invite_code: row.user.invite_code,
            activated_invite_code: row
                .invited_by
                .and_then(|inviter| state.row(inviter))
                .map(|inviter| inviter.user.invite_code),
            invited_users: row.invitees.iter().filter_map(|&id| phone_of(id)).collect(),
        }))
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
    ) -> Result<Activation, StoreError> {
        let mut state = self.write();
        let Some(row) = state.row(user) else {
            return Ok(Activation::UnknownUser);
        };
        let already = row.invited_by.is_some();
        let Some(&owner) = state.by_code.get(code) else {
            return Ok(Activation::NotFound);
        };
        if owner == user {
            return Ok(Activation::OwnCode);
        }
        if already {
            return Ok(Activation::AlreadyActivated);
        }
        if state.descends_from(owner, user) {
            return Ok(Activation::Cycle);
        }
        if let Some(row) = state.row_mut(user) {
            row.invited_by = Some(owner);
        }
        if let Some(owner_row) = state.row_mut(owner) {
            owner_row.invitees.push(user);
        }
        Ok(Activation::Activated)
    }

    async fn start_family(
        &self,
        user: UserId,
        family: &FamilyId,
        jti: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut state = self.write();
        state.family_writes += 1;
        if state.family_writes.is_multiple_of(SWEEP_EVERY) {
            // Families past their expiry cannot rotate; forget them.
            state.families.retain(|_, f| f.expires_at > now);
        }
        state.families.insert(
            family.clone(),
            Family {
                user,
                live: jti.clone(),
                previous: None,
                expires_at,
                revoked: false,
            },
        );
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        now: Timestamp,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError> {
        let mut state = self.write();
        let user_exists = |state: &State, id| state.row(id).is_some();
        let Some(entry) = state.families.get(family) else {
            return Ok(Rotation::Revoked);
        };
        if entry.revoked || entry.expires_at <= now || !user_exists(&state, entry.user) {
            return Ok(Rotation::Revoked);
        }
        let Some(entry) = state.families.get_mut(family) else {
            return Ok(Rotation::Revoked);
        };
        if entry.live != *presented {
            if let Some((previous, rotated_at)) = &entry.previous
                && previous == presented
                && now < rotated_at.plus(reuse_grace)
            {
                return Ok(Rotation::Grace {
                    live: entry.live.clone(),
                });
            }
            entry.revoked = true;
            return Ok(Rotation::Reused);
        }
        entry.previous = Some((presented.clone(), now));
        entry.live = next.clone();
        entry.expires_at = expires_at;
        Ok(Rotation::Rotated)
    }

    async fn revoke_family(&self, family: &FamilyId) -> Result<(), StoreError> {
        if let Some(entry) = self.write().families.get_mut(family) {
            entry.revoked = true;
        }
        Ok(())
    }
}
