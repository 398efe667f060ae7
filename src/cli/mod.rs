//! Command-line clients of a running broker (its API over plain HTTP/1.1).

pub mod http_client;
pub mod rewrap;
