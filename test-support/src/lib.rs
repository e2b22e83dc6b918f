//! Test machinery of the refsys workspace, kept out of the published crates: a fresh database
//! on the test PostgreSQL, a fresh key prefix on the test Redis (or on a Redis Cluster this
//! crate can start), and the store tests of `refsys-core` that need those services.
//!
//! The conformance suites themselves stay in `refsys-core` (feature `testing`), for anyone
//! who writes a store.
#![forbid(unsafe_code)]

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
