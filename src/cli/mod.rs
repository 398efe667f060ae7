//! Command-line clients of a running broker (its API over plain HTTP/1.1). Part of the binary,
//! not of the library.

pub mod http_client;
pub mod rewrap;
