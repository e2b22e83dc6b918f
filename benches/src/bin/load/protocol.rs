//! What the runner and the bench server agree on: the JWT secret, the test-phone layout of
//! the seeded state, and the bench server's extra routes.

/// HS256 secret shared by the runner and every server it starts.
pub(crate) const SECRET: &str = "refsys-load-runner-secret-0123456789abcdef";

/// Test-phone layout: 0 owns the profile, 1..=10 are its invitees, 11 is the invite hub, the
/// rest is the login pool.
pub(crate) const PROFILE_OWNER: usize = 0;
pub(crate) const INVITEES: usize = 10;
pub(crate) const HUB: usize = 11;
pub(crate) const LOGIN_POOL_START: usize = 12;

/// The bench server's extra route that makes fresh users (see `serve::Minter`).
pub(crate) const MINT_ROUTE: &str = "/__bench/users/{n}";

/// The bench server's framework-native handler (`{"status":"ok"}`, no refsys code).
pub(crate) const BARE_ROUTE: &str = "/__bench/bare";

/// What the bare handler answers.
pub(crate) const BARE_BODY: &str = r#"{"status":"ok"}"#;

/// The bench server's framework-native handler that reads the profile of the user named by
/// the [`STORE_USER`] header straight from the store (no refsys HTTP code: no auth, no
/// rate limit, no route table) and answers it as JSON.
pub(crate) const STORE_ROUTE: &str = "/__bench/store_profile";

/// The header with the user id for [`STORE_ROUTE`].
pub(crate) const STORE_USER: &str = "x-bench-user";

/// The bench server's route (with `--events`) answering `{"delivered": n, "pending": m}`:
/// events its handler took, and events still waiting in the store.
pub(crate) const EVENTS_ROUTE: &str = "/__bench/events";
