//! The conformance suite every [`UserStore`](crate::UserStore) and
//! [`OtpStore`](crate::OtpStore) must pass — ours and yours.
//!
//! Enable the `testing` feature in your dev-dependencies and invoke the macros in a test file
//! with an async setup that returns a fresh, empty store. Each case becomes its own
//! `#[tokio::test]` (so your crate needs `tokio` with the `macros` and `rt-multi-thread`
//! features as a dev-dependency), and cases run in parallel: give each its own database or key
//! prefix. With a second argument, the setup returns `(store, guard)` and the teardown gets the
//! guard after the case, pass or fail (drop a database, delete keys).
//!
//! ```ignore
//! // tests/conformance.rs
//! refsys_core::user_store_conformance!(|| async { my_crate::MyUserStore::connect_fresh().await });
//! refsys_core::otp_store_conformance!(
//!     || async { my_crate::fresh_otp_store().await }, // (store, its key prefix)
//!     |prefix: String| async move { my_crate::delete_keys(&prefix).await }
//! );
//! ```
//!
//! The cases use real time as their starting point (`now` is the system clock) and move
//! forward by passing later instants, so stores with real TTLs work unchanged.

pub mod accounts;
pub mod event_log;
pub mod invitees;
pub mod otp_store;
pub mod rate_limit_store;
pub mod sessions;
mod sms;
pub mod user_store;

pub use sms::RecordingSender;

use crate::{AllowedRegions, Phone, SystemClock, Timestamp};

#[doc(hidden)]
pub use tokio as __tokio;

/// A distinct valid phone per `n`: `+37529` followed by 7 digits.
pub fn phone(n: u32) -> Phone {
    Phone::parse(
        &format!("+37529{}", 1_000_000 + n % 9_000_000),
        &AllowedRegions::all(),
    )
    .expect("a valid Belarusian mobile number")
}

/// The start of a case's timeline: now, by the system clock.
pub fn start() -> Timestamp {
    crate::Clock::now(&SystemClock)
}

/// Runs `tasks` copies of `work` on `store` at the same moment (a barrier releases them
/// together) and returns their outcomes in task order.
pub async fn concurrently<S, F, Fut, T>(store: &std::sync::Arc<S>, tasks: usize, work: F) -> Vec<T>
where
    S: Send + Sync + 'static,
    F: Fn(std::sync::Arc<S>, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let job = work(store.clone(), i);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                job.await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks);
    for handle in handles {
        outcomes.push(handle.await.expect("task panicked"));
    }
    outcomes
}

/// Runs one conformance case against a fresh store, then tears its fixture down, pass or fail;
/// used by the suite macros.
#[doc(hidden)]
pub async fn run_case<S, G, C, Fut, T, TFut>(fixture: (S, G), case: C, teardown: T)
where
    S: Send + Sync + 'static,
    C: FnOnce(std::sync::Arc<S>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: FnOnce(G) -> TFut,
    TFut: std::future::Future<Output = ()>,
{
    let (store, guard) = fixture;
    let outcome = tokio::spawn(case(std::sync::Arc::new(store))).await;
    teardown(guard).await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("conformance case did not finish: {error}"),
        }
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($module:ident, $setup:expr, $teardown:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[$crate::testing::__tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::run_case(
                    ($setup)().await,
                    |store| $crate::testing::$module::$case(store),
                    $teardown,
                )
                .await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per [`UserStore`](crate::UserStore) conformance case.
///
/// `user_store_conformance!(setup)`, where `setup` is `|| async { store }`, or
/// `user_store_conformance!(setup, teardown)`, where `setup` is `|| async { (store, guard) }`
/// and `teardown` is `|guard| async { ... }`.
#[macro_export]
macro_rules! user_store_conformance {
    ($setup:expr) => {
        $crate::user_store_conformance!(|| async { (($setup)().await, ()) }, |()| {
            ::std::future::ready(())
        });
    };
    ($setup:expr, $teardown:expr) => {
        $crate::__conformance_cases!(
            user_store,
            $setup,
            $teardown,
            [
                find_or_create_is_idempotent_per_phone,
                find_or_create_gives_distinct_ids_and_codes,
                find_or_create_retries_invite_code_collisions,
                find_or_create_gives_up_after_bounded_collisions,
                concurrent_find_or_create_creates_one_user,
                profile_of_unknown_user_is_none,
                profile_of_new_user_is_empty,
                invitees_are_listed_oldest_first,
                activation_refusals_in_documented_order,
                activation_refuses_direct_and_transitive_cycles,
                concurrent_activations_by_one_user_succeed_once,
                concurrent_mutual_activations_never_make_a_cycle,
                concurrent_ring_activations_never_make_a_cycle,
                refresh_rotation_and_reuse_detection,
                revoked_unknown_and_expired_families_do_not_rotate,
                concurrent_rotations_of_one_token_succeed_once,
                a_token_spent_within_the_reuse_grace_gets_the_live_one,
                concurrent_refreshes_within_the_grace_all_get_the_live_token,
                ping_answers,
            ]
        );
        $crate::__conformance_cases!(
            event_log,
            $setup,
            $teardown,
            [
                each_change_records_exactly_its_event,
                refused_and_unrecorded_changes_record_nothing,
                concurrent_changes_record_one_event_each,
                claims_lease_events_one_user_at_a_time,
                retries_wait_and_failed_events_can_be_redelivered,
                prune_deletes_only_old_delivered_events,
                concurrent_claims_never_share_an_event,
                delivered_events_settle_in_one_call,
            ]
        );
        $crate::__conformance_cases!(
            sessions,
            $setup,
            $teardown,
            [
                sessions_list_the_live_ones_newest_first,
                revoke_sessions_ends_exactly_the_scope,
                concurrent_revocations_revoke_each_session_once,
            ]
        );
        $crate::__conformance_cases!(
            accounts,
            $setup,
            $teardown,
            [
                account_exports_what_is_stored,
                deleting_an_account_erases_it_and_keeps_the_graph,
                phone_change_moves_the_account,
                concurrent_moves_to_one_number_give_it_to_one,
                concurrent_deletion_leaves_nothing_behind,
            ]
        );
        $crate::__conformance_cases!(
            invitees,
            $setup,
            $teardown,
            [
                profile_lists_at_most_the_limit_oldest_first,
                invitee_pages_hold_each_invitee_once_in_order,
                invitee_pages_of_nobody_and_past_the_end,
                a_cursor_reads_only_the_callers_invitees_after_its_place,
                invitee_cursors_hold_while_invitees_come_and_go,
                a_newcomer_comes_after_a_cursor_whose_invitees_are_gone,
                paging_during_concurrent_activations_repeats_and_skips_none,
            ]
        );
    };
}

/// Generates one `#[tokio::test]` per [`OtpStore`](crate::OtpStore) conformance case.
///
/// Same arguments as [`user_store_conformance!`].
#[macro_export]
macro_rules! otp_store_conformance {
    ($setup:expr) => {
        $crate::otp_store_conformance!(|| async { (($setup)().await, ()) }, |()| {
            ::std::future::ready(())
        });
    };
    ($setup:expr, $teardown:expr) => {
        $crate::__conformance_cases!(
            otp_store,
            $setup,
            $teardown,
            [
                issued_code_verifies_once,
                wrong_codes_count_down_then_burn,
                burned_code_never_verifies_until_a_new_one,
                code_expires,
                unknown_phone_has_no_code,
                resend_cooldown_then_new_code_replaces_old,
                send_window_caps_codes_per_phone,
                cancel_gives_the_send_back,
                cancel_leaves_a_newer_code_alone,
                restore_gives_a_consumed_code_back,
                restore_leaves_expired_and_replaced_codes_alone,
                phones_are_independent,
                concurrent_correct_checks_succeed_once,
                concurrent_wrong_guesses_never_exceed_the_limit,
                concurrent_issues_store_once,
                failures_across_codes_lock_the_phone,
                attempts_left_is_the_nearer_of_code_and_budget,
                success_resets_the_failure_count,
                failure_count_is_forgotten_after_a_quiet_lockout,
                concurrent_wrong_guesses_never_exceed_the_budget,
                revoked_sessions_are_listed_since_and_forgotten_after_keep,
                concurrent_revocations_are_all_kept,
                ping_answers,
            ]
        );
    };
}

/// Generates one `#[tokio::test]` per [`RateLimitStore`](crate::RateLimitStore) conformance
/// case. Same arguments as [`user_store_conformance!`].
#[macro_export]
macro_rules! rate_limit_store_conformance {
    ($setup:expr) => {
        $crate::rate_limit_store_conformance!(|| async { (($setup)().await, ()) }, |()| {
            ::std::future::ready(())
        });
    };
    ($setup:expr, $teardown:expr) => {
        $crate::__conformance_cases!(
            rate_limit_store,
            $setup,
            $teardown,
            [
                hits_within_the_limit_are_allowed,
                a_hit_taken_back_frees_its_place,
                the_window_resets_the_count,
                keys_are_independent,
                concurrent_hits_never_exceed_the_limit,
                a_sliding_window_frees_places_gradually,
                a_sliding_window_holds_across_the_window_edge,
                a_sliding_window_rounds_the_carried_share_up,
                sliding_hits_are_atomic_and_can_be_taken_back,
            ]
        );
    };
}
