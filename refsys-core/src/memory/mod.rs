//! In-memory stores: for tests, demos and single-process deployments.
//!
//! Each keeps its state behind one lock, so every trait method is atomic. Expired entries are
//! swept out every [`SWEEP_EVERY`] writes, so memory stays bounded by live state.

mod otp;
mod rate;
mod user;

pub use otp::MemoryOtpStore;
pub use rate::MemoryRateLimitStore;
pub use user::MemoryUserStore;

/// Writes between two sweeps of expired entries.
pub const SWEEP_EVERY: u64 = 1024;
