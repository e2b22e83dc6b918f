//! Every scenario of the shared HTTP suite, against a refsys-actix server over real HTTP.

http_suite::scenarios!(http_suite::Framework::Actix);
