//! How often the in-memory stores sweep out expired entries.

/// Writes between two sweeps of expired entries.
pub const SWEEP_EVERY: u64 = 1024;
