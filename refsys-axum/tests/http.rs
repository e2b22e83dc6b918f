//! Every scenario of the shared HTTP suite, against a refsys-axum server over real HTTP.

http_suite::scenarios!(http_suite::Framework::Axum);
