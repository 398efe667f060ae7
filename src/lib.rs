//! byok-broker: multi-tenant envelope encryption with bring-your-own AWS KMS keys.
//! Module declarations and re-exports only; see ARCHITECTURE.md for the module map.

pub mod aead;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod cache;
pub mod config;
pub mod context;
pub mod data_key;
pub mod envelope;
pub mod error;
pub mod error_code;
pub mod http;
pub mod keyring;
pub mod kms;
pub mod metrics;
pub mod platform_kek;
pub mod rate_limit;
pub mod services;
pub mod store;
pub mod supervisor;
pub mod timestamp;

// Services keep their pre-services paths for callers outside the crate.
pub use services::{byok, rewrap, vault};
