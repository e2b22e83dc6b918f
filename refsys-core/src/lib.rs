//! Phone-number login with one-time SMS codes, JWT sessions and invite codes — the
//! framework-independent core of refsys.
//!
//! [`ReferralService`] is the one entry point. It holds three pluggable parts:
//!
//! - a [`UserStore`]: users, invite codes, referrals and refresh-token families (durable);
//! - an [`OtpStore`]: pending codes, cooldowns, attempt counters and send windows
//!   (short-lived);
//! - an [`SmsSender`]: delivers the code.
//!
//! Every store method is one atomic operation, so the service is race-free on any backend
//! that makes each method atomic. This crate ships in-memory stores ([`MemoryUserStore`],
//! [`MemoryOtpStore`]) and a development [`LogSender`]; the framework crates `refsys-axum`
//! and `refsys-actix` serve the service over HTTP, through the framework-independent
//! [`http`] module (route lookup, request handling). Per-client rate limits, with trusted
//! proxies, are in [`limits`].
//!
//! # Features
//!
//! - `testing`: the `testing` conformance suite for store implementations.
//! - `postgres`: `postgres::PgUserStore`, a PostgreSQL [`UserStore`] (sqlx, TLS by
//!   rustls).
//! - `sqlite`: `sqlite::SqliteUserStore`, a SQLite [`UserStore`] (sqlx, bundled SQLite).
//! - `redis`: `redis_store::RedisOtpStore` and `redis_store::RedisRateLimitStore`.
//! - `openapi`: `http::openapi`, the OpenAPI 3.1 document of the HTTP API (utoipa).
//!
//! # Quick start
//!
//! A whole flow with a test phone (fixed code, no SMS): two users log in, the second applies
//! the first one's invite code, and the first one's profile lists the second.
//!
//! ```
//! use refsys_core::{
//!     Error, JwtKeys, LogSender, MemoryOtpStore, MemoryUserStore, Policy, ReferralService,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::builder()
//!     .test_phone("+375 29 100-00-01", "1111")
//!     .test_phone("+375 29 100-00-02", "2222")
//!     .build()?;
//! let service = ReferralService::builder(
//!     MemoryUserStore::new(),
//!     MemoryOtpStore::new(),
//!     LogSender,
//!     JwtKeys::hs256(b"a secret of at least thirty-two bytes!!")?,
//! )
//! .policy(policy)
//! .build();
//!
//! // Alice logs in.
//! service.send_code("+375291000001").await?;
//! let alice = service.verify_code("+375291000001", "1111").await?;
//! let alice_id = service.authenticate(&alice.access)?;
//! let alice_code = service.profile(alice_id).await?.own_invite_code;
//!
//! // Bob logs in and applies Alice's code, in lower case: codes are case-insensitive.
//! service.send_code("+375291000002").await?;
//! let bob = service.verify_code("+375291000002", "2222").await?;
//! let bob_id = service.authenticate(&bob.access)?;
//! service.use_invite_code(bob_id, &alice_code.as_str().to_lowercase()).await?;
//!
//! // A code applies once, ever.
//! let again = service.use_invite_code(bob_id, alice_code.as_str()).await;
//! assert!(matches!(again, Err(Error::InviteAlreadyActivated)));
//!
//! let profile = service.profile(alice_id).await?;
//! assert_eq!(profile.invited_users[0].as_str(), "+375291000002");
//! assert_eq!(service.profile(bob_id).await?.activated_invite_code, Some(alice_code));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod account;
#[cfg(feature = "captcha")]
#[cfg_attr(docsrs, doc(cfg(feature = "captcha")))]
pub mod captcha;
pub mod dispatch;
pub mod dto;
mod error;
pub mod event;
pub mod http;
pub mod human;
mod invite;
pub mod limits;
pub mod memory;
mod otp;
mod phone;
mod policy;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_store;
pub mod revocation;
mod service;
pub mod session;
mod sms;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod time;
mod token;
mod user;
mod watch;

pub use dispatch::{EventDelivery, EventHandler, HandlerError};
pub use error::{Error, ErrorBody, NotReady, StoreError};
pub use event::{Change, Event, EventData, EventId, SessionEndReason};
pub use human::{Challenge, HumanCheck, HumanCheckAnswer, ProofOfWork};
pub use invite::{INVITE_ALPHABET, INVITE_CODE_LEN, InviteCode, InviteCodeError};
pub use limits::{ClientAction, ClientLimits, InvalidCidr, RateLimit, TrustedProxies};
pub use memory::{MemoryOtpStore, MemoryRateLimitStore, MemoryUserStore};
pub use otp::{OtpCode, OtpCodeError, OtpHash, OtpPolicy};
pub use phone::{AllowedRegions, Phone, PhoneError, Region};
pub use policy::{InviteePhones, PROFILE_INVITEES_LIMIT, Policy, PolicyBuilder, PolicyError};
pub use service::{Login, ReferralService, SMS_BUDGET_KEY, ServiceBuilder, sms_prefix_key};
pub use session::SessionsRevoked;
pub use sms::{LogSender, Sms, SmsError, SmsSender};
pub use store::{OtpStore, RateLimitStore, UserStore};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use token::{
    Claims, FamilyId, JwtKeys, KeyError, MIN_SECRET_LEN, TokenId, TokenKind, TokenPair,
};
pub use user::{Profile, Registration, User, UserId};
