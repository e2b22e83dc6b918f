//! The shared HTTP suite's scenarios that need nothing but HTTP, against the real
//! `refsys-server` binary: on the embedded default (axum and actix), and with the `services`
//! feature on PostgreSQL + Redis too. Each scenario starts its own server process.

use http_suite::{Binary, Framework};

const SERVER: &str = env!("CARGO_BIN_EXE_refsys-server");

mod embedded_axum {
    http_suite::binary_scenarios!(super::Framework::Binary(super::Binary {
        path: super::SERVER,
        framework: "axum",
        postgres_redis: false,
    }));
}

mod embedded_actix {
    http_suite::binary_scenarios!(super::Framework::Binary(super::Binary {
        path: super::SERVER,
        framework: "actix",
        postgres_redis: false,
    }));
}

#[cfg(feature = "services")]
mod postgres_redis_axum {
    http_suite::binary_scenarios!(super::Framework::Binary(super::Binary {
        path: super::SERVER,
        framework: "axum",
        postgres_redis: true,
    }));
}

#[cfg(feature = "services")]
mod postgres_redis_actix {
    http_suite::binary_scenarios!(super::Framework::Binary(super::Binary {
        path: super::SERVER,
        framework: "actix",
        postgres_redis: true,
    }));
}
