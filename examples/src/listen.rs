//! The connection layer: how many connections the server keeps open and how long a client may
//! take, on both frameworks.
//!
//! On axum the server uses [`refsys_axum::serve`], on actix-web its own settings plus
//! [`refsys_actix::ConnectionCap`]; on both a full connection cap closes the oldest idle
//! connection for each new one.

use std::time::Duration;

/// Connection limits of the example server (`HEADER_READ_TIMEOUT`, `MAX_CONNECTIONS`,
/// `LISTEN_BACKLOG`; the body-read timeout is the service's `ClientLimits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Time to receive a request's headers, counted from the connection's start or from the
    /// end of the previous response (so it is also the idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// Open connections at most; `None`: from the open-files limit at start.
    pub max_connections: Option<usize>,
    /// The listen backlog.
    pub backlog: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: None,
            backlog: 1024,
        }
    }
}

/// File descriptors kept back from the connection cap for the process's own use: database
/// pools, Redis, the SMS webhook client, logs.
const RESERVED_FILES: u64 = 128;

/// The cap on open connections: `configured`, or what the open-files limit leaves after
/// [`RESERVED_FILES`] when every `connections` connections cost `files` descriptors (the soft
/// limit is raised to the hard one first). Logs what it chose.
pub(crate) fn max_connections(configured: Option<usize>, files: u64, connections: u64) -> usize {
    let open_files = rlimit::increase_nofile_limit(u64::MAX).ok();
    let room = open_files
        .map(|n| (n.saturating_sub(RESERVED_FILES) * connections.max(1) / files.max(1)).max(16));
    let max = match (configured, room) {
        (Some(max), Some(room)) if max as u64 > room => {
            tracing::warn!(
                max_connections = max,
                open_files,
                "MAX_CONNECTIONS is above what the open-files limit leaves; connections past it will fail to open"
            );
            max
        }
        (Some(max), _) => max,
        (None, Some(room)) => usize::try_from(room.min(100_000)).unwrap_or(100_000),
        (None, None) => 10_000,
    };
    match open_files {
        Some(open_files) => tracing::info!(open_files, max_connections = max, "connection cap"),
        None => tracing::info!(
            max_connections = max,
            "connection cap (open-files limit unknown)"
        ),
    }
    max
}
