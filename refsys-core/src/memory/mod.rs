//! In-memory stores: for tests, demos and single-process deployments.
//!
//! Each keeps its state behind one lock, so every trait method is atomic. Expired entries are
//! swept out every [`SWEEP_EVERY`] writes, so memory stays bounded by live state.

mod otp;
mod rate;
mod sweep;
mod user;

pub use otp::MemoryOtpStore;
pub use rate::MemoryRateLimitStore;
pub use sweep::SWEEP_EVERY;
pub use user::MemoryUserStore;
