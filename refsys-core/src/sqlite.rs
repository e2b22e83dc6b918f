//! Filled in by issue 3 (in progress).
