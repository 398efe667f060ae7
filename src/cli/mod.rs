//! Command-line clients of a running broker (admin API over plain HTTP/1.1).

pub mod admin_client;
pub mod rewrap;
