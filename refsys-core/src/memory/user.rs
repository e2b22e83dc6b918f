use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;

use crate::account::{Account, Invitee, InviteeCursor, InviteePage, PhoneChange};
use crate::event::{
    Change, Claim, Event, EventData, EventId, EventRecord, EventStatus, Redeliver,
    SessionEndReason, Settlement,
};
use crate::memory::sweep::SWEEP_EVERY;
use crate::session::{Session, SessionClient, SessionScope};
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
    /// The event log, by sequence number (the order of the changes).
    events: BTreeMap<u64, StoredEvent>,
    /// The sequence numbers of pending events.
    pending: BTreeSet<u64>,
    by_event_id: HashMap<EventId, u64>,
    next_seq: u64,
    /// How many invite codes were applied: the number of the last activation.
    activations: u64,
}

#[derive(Debug)]
struct StoredEvent {
    record: EventRecord,
    lease: Option<(String, Timestamp)>,
    delivered_at: Option<Timestamp>,
}

#[derive(Debug)]
struct UserRow {
    /// `None` once the account is deleted: the row stays, so that its id and invite code are
    /// never given to another user and its invitees keep the code they applied.
    phone: Option<Phone>,
    invite_code: InviteCode,
    created_at: Timestamp,
    /// Who invited this user (whose code it applied), and when.
    invited_by: Option<(UserId, Timestamp)>,
    /// Users who applied this user's code (accounts not deleted), oldest first, each with
    /// the number of its activation (what an [`InviteeCursor`] holds).
    invitees: Vec<(u64, UserId)>,
}

#[derive(Debug)]
struct Family {
    user: UserId,
    live: TokenId,
    /// The token spent last, and when.
    previous: Option<(TokenId, Timestamp)>,
    expires_at: Timestamp,
    revoked: bool,
    started_at: Timestamp,
    /// The order of the logins, for sessions started in the same second.
    seq: u64,
    client: SessionClient,
}

impl State {
    fn row(&self, id: UserId) -> Option<&UserRow> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.users.get(i))
    }

    /// The row of a user whose account exists (not deleted), with its phone.
    fn live(&self, id: UserId) -> Option<(&UserRow, &Phone)> {
        self.row(id)
            .and_then(|row| row.phone.as_ref().map(|phone| (row, phone)))
    }

    /// The code `row` applied: its inviter's, whether or not that account still exists.
    fn applied_code(&self, row: &UserRow) -> Option<InviteCode> {
        row.invited_by
            .and_then(|(inviter, _)| self.row(inviter))
            .map(|inviter| inviter.invite_code)
    }

    /// User `id` as its inviter's list shows it, if its account exists.
    fn invitee(&self, id: UserId) -> Option<Invitee> {
        let (row, phone) = self.live(id)?;
        Some(Invitee {
            user_id: id,
            phone: phone.clone(),
            joined_at: row.invited_by.map_or(row.created_at, |(_, at)| at),
        })
    }

    fn row_mut(&mut self, id: UserId) -> Option<&mut UserRow> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.users.get_mut(i))
    }

    /// Appends the event of a change, if the change records one; in the same critical
    /// section as the change, so both happen or neither.
    fn record(&mut self, change: Change, data: EventData) {
        if !change.record {
            return;
        }
        let event = Event::new(data, change.now);
        self.next_seq += 1;
        let seq = self.next_seq;
        self.by_event_id.insert(event.id.clone(), seq);
        self.pending.insert(seq);
        self.events.insert(
            seq,
            StoredEvent {
                record: EventRecord {
                    event,
                    status: EventStatus::Pending,
                    attempts: 0,
                    queued_at: change.now,
                    next_attempt_at: change.now,
                    last_error: None,
                },
                lease: None,
                delivered_at: None,
            },
        );
    }

    /// Queues event `seq` again at `now`.
    fn requeue(&mut self, seq: u64, now: Timestamp) {
        if let Some(stored) = self.events.get_mut(&seq) {
            stored.record.status = EventStatus::Pending;
            stored.record.attempts = 0;
            stored.record.queued_at = now;
            stored.record.next_attempt_at = now;
            stored.record.last_error = None;
            stored.lease = None;
            stored.delivered_at = None;
            self.pending.insert(seq);
        }
    }

    /// Whether `descendant` was invited, directly or transitively, by `ancestor`.
    fn descends_from(&self, descendant: UserId, ancestor: UserId) -> bool {
        let mut current = descendant;
        // Activation never closes a cycle, so the chain ends; the bound is belt and braces.
        for _ in 0..=self.users.len() {
            match self.row(current).and_then(|row| row.invited_by) {
                Some((inviter, _)) if inviter == ancestor => return true,
                Some((inviter, _)) => current = inviter,
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
        change: Change,
    ) -> Result<Registration, StoreError> {
        let existing = |state: &State| {
            let id = *state.by_phone.get(phone)?;
            Some(state.live(id).map(|(row, phone)| Registration {
                user: User {
                    id,
                    phone: phone.clone(),
                    invite_code: row.invite_code,
                },
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
            phone: Some(phone.clone()),
            invite_code,
            created_at: change.now,
            invited_by: None,
            invitees: Vec::new(),
        });
        state.record(
            change,
            EventData::UserCreated {
                user_id: id,
                phone: phone.clone(),
            },
        );
        Ok(Registration {
            user,
            created: true,
        })
    }

    async fn profile(&self, user: UserId, invitees: usize) -> Result<Option<Profile>, StoreError> {
        let state = self.read();
        let Some((row, phone)) = state.live(user) else {
            return Ok(None);
        };
        let phone_of = |id| state.live(id).map(|(_, phone)| phone.clone());
        Ok(Some(Profile {
            phone: phone.clone(),
            own_invite_code: row.invite_code,
            activated_invite_code: state.applied_code(row),
            invited_users: row
                .invitees
                .iter()
                .filter_map(|&(_, id)| phone_of(id))
                .take(invitees)
                .collect(),
            // A deletion takes the invitee off the list.
            invited_count: row.invitees.len() as u64,
        }))
    }

    async fn invitees(
        &self,
        user: UserId,
        after: Option<InviteeCursor>,
        limit: usize,
    ) -> Result<Option<InviteePage>, StoreError> {
        let state = self.read();
        let Some((row, _)) = state.live(user) else {
            return Ok(None);
        };
        let start = after.map_or(0, |InviteeCursor(after)| {
            row.invitees.partition_point(|&(seq, _)| seq <= after)
        });
        let mut page: Vec<(u64, Invitee)> = row.invitees[start..]
            .iter()
            .filter_map(|&(seq, id)| Some((seq, state.invitee(id)?)))
            .take(limit.saturating_add(1))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        Ok(Some(InviteePage {
            next: more
                .then(|| page.last().map(|&(seq, _)| InviteeCursor(seq)))
                .flatten(),
            invitees: page.into_iter().map(|(_, invitee)| invitee).collect(),
            total: row.invitees.len() as u64,
        }))
    }

    async fn activate_invite(
        &self,
        user: UserId,
        code: &InviteCode,
        change: Change,
    ) -> Result<Activation, StoreError> {
        let mut state = self.write();
        let Some((row, _)) = state.live(user) else {
            return Ok(Activation::UnknownUser);
        };
        let already = row.invited_by.is_some();
        // A deleted account's code belongs to nobody: it cannot be applied any more.
        let Some(&owner) = state
            .by_code
            .get(code)
            .filter(|&&owner| state.live(owner).is_some())
        else {
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
            row.invited_by = Some((owner, change.now));
        }
        state.activations += 1;
        let seq = state.activations;
        if let Some(owner_row) = state.row_mut(owner) {
            owner_row.invitees.push((seq, user));
        }
        state.record(
            change,
            EventData::ReferralCreated {
                user_id: user,
                referrer_id: owner,
                invite_code: *code,
            },
        );
        Ok(Activation::Activated)
    }

    async fn start_family(
        &self,
        user: &User,
        family: &FamilyId,
        jti: &TokenId,
        client: &SessionClient,
        change: Change,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let now = change.now;
        let mut state = self.write();
        if state
            .live(user.id)
            .is_none_or(|(_, phone)| *phone != user.phone)
        {
            return Ok(false);
        }
        let user = user.id;
        state.family_writes += 1;
        if state.family_writes.is_multiple_of(SWEEP_EVERY) {
            // Families past their expiry cannot rotate; forget them.
            state.families.retain(|_, f| f.expires_at > now);
        }
        let seq = state.family_writes;
        state.families.insert(
            family.clone(),
            Family {
                user,
                live: jti.clone(),
                previous: None,
                expires_at,
                revoked: false,
                started_at: now,
                seq,
                client: client.clone(),
            },
        );
        state.record(
            change,
            EventData::SessionCreated {
                user_id: user,
                session_id: family.as_str().to_owned(),
            },
        );
        Ok(true)
    }

    async fn rotate_refresh(
        &self,
        family: &FamilyId,
        presented: &TokenId,
        next: &TokenId,
        change: Change,
        expires_at: Timestamp,
        reuse_grace: Duration,
    ) -> Result<Rotation, StoreError> {
        let now = change.now;
        let mut state = self.write();
        let user_exists = |state: &State, id| state.live(id).is_some();
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
            let user_id = entry.user;
            state.record(
                change,
                EventData::SessionRevoked {
                    user_id,
                    session_id: family.as_str().to_owned(),
                    reason: SessionEndReason::ReuseDetected,
                },
            );
            return Ok(Rotation::Reused);
        }
        entry.previous = Some((presented.clone(), now));
        entry.live = next.clone();
        entry.expires_at = expires_at;
        Ok(Rotation::Rotated)
    }

    async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<(), StoreError> {
        let mut state = self.write();
        let Some(entry) = state.families.get_mut(family).filter(|f| !f.revoked) else {
            return Ok(());
        };
        entry.revoked = true;
        let user_id = entry.user;
        state.record(
            change,
            EventData::SessionRevoked {
                user_id,
                session_id: family.as_str().to_owned(),
                reason,
            },
        );
        Ok(())
    }

    async fn sessions(&self, user: UserId, now: Timestamp) -> Result<Vec<Session>, StoreError> {
        // A scan of every family: this store is for tests and single small processes.
        let state = self.read();
        let mut families: Vec<_> = state
            .families
            .iter()
            .filter(|(_, f)| f.user == user && !f.revoked && f.expires_at > now)
            .collect();
        families.sort_by_key(|(_, f)| std::cmp::Reverse((f.started_at, f.seq)));
        Ok(families
            .into_iter()
            .map(|(id, f)| Session {
                id: id.clone(),
                created_at: f.started_at,
                last_used_at: f.previous.as_ref().map_or(f.started_at, |(_, at)| *at),
                client: f.client.clone(),
            })
            .collect())
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        scope: SessionScope<'_>,
        reason: SessionEndReason,
        change: Change,
    ) -> Result<Vec<FamilyId>, StoreError> {
        let now = change.now;
        let mut state = self.write();
        let mut revoked: Vec<FamilyId> = state
            .families
            .iter_mut()
            .filter(|(id, f)| {
                f.user == user && !f.revoked && f.expires_at > now && scope.covers(id)
            })
            .map(|(id, f)| {
                f.revoked = true;
                id.clone()
            })
            .collect();
        revoked.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for id in &revoked {
            state.record(
                change,
                EventData::SessionRevoked {
                    user_id: user,
                    session_id: id.as_str().to_owned(),
                    reason,
                },
            );
        }
        Ok(revoked)
    }

    async fn user_by_phone(&self, phone: &Phone) -> Result<Option<User>, StoreError> {
        let state = self.read();
        Ok(state.by_phone.get(phone).and_then(|&id| {
            state.live(id).map(|(row, phone)| User {
                id,
                phone: phone.clone(),
                invite_code: row.invite_code,
            })
        }))
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let state = self.read();
        let Some((row, phone)) = state.live(user) else {
            return Ok(None);
        };
        let invitees = row
            .invitees
            .iter()
            .filter_map(|&(_, id)| state.invitee(id))
            .collect();
        Ok(Some(Account {
            user_id: user,
            phone: phone.clone(),
            created_at: row.created_at,
            own_invite_code: row.invite_code,
            activated_invite_code: state.applied_code(row),
            activated_at: row.invited_by.map(|(_, at)| at),
            invited_by: row
                .invited_by
                .map(|(inviter, _)| inviter)
                .filter(|&inviter| state.live(inviter).is_some()),
            invitees,
        }))
    }

    async fn change_phone(
        &self,
        user: UserId,
        phone: &Phone,
        change: Change,
    ) -> Result<PhoneChange, StoreError> {
        let mut state = self.write();
        let Some((_, current)) = state.live(user) else {
            return Ok(PhoneChange::UnknownUser);
        };
        if current == phone {
            return Ok(PhoneChange::Unchanged);
        }
        if state.by_phone.contains_key(phone) {
            return Ok(PhoneChange::Taken);
        }
        let old = current.clone();
        state.by_phone.remove(&old);
        state.by_phone.insert(phone.clone(), user);
        if let Some(row) = state.row_mut(user) {
            row.phone = Some(phone.clone());
        }
        state.record(
            change,
            EventData::PhoneChanged {
                user_id: user,
                phone: phone.clone(),
            },
        );
        Ok(PhoneChange::Changed)
    }

    async fn delete_account(
        &self,
        user: UserId,
        change: Change,
    ) -> Result<Option<Vec<FamilyId>>, StoreError> {
        let now = change.now;
        let mut state = self.write();
        let Some((row, phone)) = state.live(user) else {
            return Ok(None);
        };
        let phone = phone.clone();
        let inviter = row.invited_by.map(|(inviter, _)| inviter);
        let mut revoked: Vec<FamilyId> = state
            .families
            .iter()
            .filter(|(_, f)| f.user == user && !f.revoked && f.expires_at > now)
            .map(|(id, _)| id.clone())
            .collect();
        revoked.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        // Every family goes, with its network and user agent: an unknown family's refresh
        // token is refused like a revoked one's.
        state.families.retain(|_, f| f.user != user);
        state.by_phone.remove(&phone);
        if let Some(inviter) = inviter.and_then(|inviter| state.row_mut(inviter)) {
            inviter.invitees.retain(|&(_, id)| id != user);
        }
        if let Some(row) = state.row_mut(user) {
            row.phone = None;
            row.invited_by = None;
        }
        for id in &revoked {
            state.record(
                change,
                EventData::SessionRevoked {
                    user_id: user,
                    session_id: id.as_str().to_owned(),
                    reason: SessionEndReason::AccountDeleted,
                },
            );
        }
        state.record(change, EventData::AccountDeleted { user_id: user });
        Ok(Some(revoked))
    }

    fn keeps_event_log(&self) -> bool {
        true
    }

    async fn phone_locked(
        &self,
        phone: &Phone,
        until: Timestamp,
        change: Change,
    ) -> Result<(), StoreError> {
        let mut state = self.write();
        let user_id = state.by_phone.get(phone).copied();
        state.record(
            change,
            EventData::PhoneLocked {
                user_id,
                locked_until: until,
            },
        );
        Ok(())
    }

    async fn claim_events(
        &self,
        now: Timestamp,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let mut guard = self.write();
        let state = &mut *guard;
        let mut waiting_users = HashSet::new();
        let mut claimed = Vec::new();
        for seq in &state.pending {
            if claimed.len() >= max {
                break;
            }
            let Some(stored) = state.events.get(seq) else {
                continue;
            };
            // Only the oldest pending event of each user may go.
            let user = stored.record.event.data.user_id();
            let first_of_user = user.is_none_or(|user| waiting_users.insert(user));
            let leased = stored.lease.as_ref().is_some_and(|(_, until)| *until > now);
            if first_of_user && !leased && stored.record.next_attempt_at <= now {
                claimed.push(*seq);
            }
        }
        Ok(claimed
            .into_iter()
            .filter_map(|seq| {
                let stored = state.events.get_mut(&seq)?;
                let token = uuid::Uuid::new_v4().simple().to_string();
                stored.record.attempts += 1;
                stored.lease = Some((token.clone(), now.plus(lease)));
                Some(Claim {
                    event: stored.record.event.clone(),
                    seq,
                    attempt: stored.record.attempts,
                    queued_at: stored.record.queued_at,
                    lease: token,
                })
            })
            .collect())
    }

    async fn settle_event(
        &self,
        claim: &Claim,
        settlement: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut state = self.write();
        let Some(&seq) = state.by_event_id.get(&claim.event.id) else {
            return Ok(false);
        };
        let Some(stored) = state.events.get_mut(&seq) else {
            return Ok(false);
        };
        let ours = stored
            .lease
            .as_ref()
            .is_some_and(|(token, _)| *token == claim.lease);
        if !ours || stored.record.status != EventStatus::Pending {
            return Ok(false);
        }
        stored.lease = None;
        match settlement {
            Settlement::Delivered => {
                stored.record.status = EventStatus::Delivered;
                stored.record.last_error = None;
                stored.delivered_at = Some(now);
            }
            Settlement::Retry { at, error } => {
                stored.record.next_attempt_at = *at;
                stored.record.last_error = Some(error.clone());
            }
            Settlement::Failed { error } => {
                stored.record.status = EventStatus::Failed;
                stored.record.last_error = Some(error.clone());
            }
        }
        if stored.record.status != EventStatus::Pending {
            state.pending.remove(&seq);
        }
        Ok(true)
    }

    async fn events(
        &self,
        status: EventStatus,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let state = self.read();
        Ok(state
            .events
            .values()
            .filter(|stored| stored.record.status == status)
            .take(limit)
            .map(|stored| stored.record.clone())
            .collect())
    }

    async fn redeliver_events(&self, which: &Redeliver, now: Timestamp) -> Result<u64, StoreError> {
        let mut state = self.write();
        let seqs: Vec<u64> = match which {
            Redeliver::One(id) => state.by_event_id.get(id).copied().into_iter().collect(),
            Redeliver::Failed => state
                .events
                .iter()
                .filter(|(_, stored)| stored.record.status == EventStatus::Failed)
                .map(|(seq, _)| *seq)
                .collect(),
        };
        // A delivery in flight keeps its event (see the trait).
        let seqs: Vec<u64> = seqs
            .into_iter()
            .filter(|seq| {
                state.events.get(seq).is_some_and(|stored| {
                    stored.lease.as_ref().is_none_or(|(_, until)| *until <= now)
                })
            })
            .collect();
        for &seq in &seqs {
            state.requeue(seq, now);
        }
        Ok(u64::try_from(seqs.len()).unwrap_or(u64::MAX))
    }

    async fn prune_events(&self, before: Timestamp, max: usize) -> Result<u64, StoreError> {
        let mut state = self.write();
        let old: Vec<(u64, EventId)> = state
            .events
            .iter()
            .filter(|(_, stored)| stored.delivered_at.is_some_and(|at| at < before))
            .take(max)
            .map(|(seq, stored)| (*seq, stored.record.event.id.clone()))
            .collect();
        for (seq, id) in &old {
            state.events.remove(seq);
            state.by_event_id.remove(id);
        }
        Ok(u64::try_from(old.len()).unwrap_or(u64::MAX))
    }
}
