//! The in-memory stores pass the conformance suite.

mod user_store {
    refsys_core::user_store_conformance!(|| async { refsys_core::MemoryUserStore::new() });
}

mod otp_store {
    refsys_core::otp_store_conformance!(|| async { refsys_core::MemoryOtpStore::new() });
}

mod rate_limit_store {
    refsys_core::rate_limit_store_conformance!(|| async {
        refsys_core::MemoryRateLimitStore::new()
    });
}
