//! The one integration test binary: each module is a former test binary, sharing the fixtures in
//! `common`. One binary links once instead of once per file. Run a part of it by module path, e.g.
//! `cargo test --test integration -- rewrap_localstack:: rewrap_crash::`.

// Test code: a failed unwrap is a failed test. clippy.toml's allow-*-in-tests covers only #[test]
// functions and #[cfg(test)] modules, not this crate's fixtures and helpers, hence the crate-wide allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod audit_chain;
mod audit_complete;
mod byok_binding_order;
mod byok_localstack;
mod byok_push;
mod byok_registration;
mod byok_revision;
mod byok_sts_faults;
mod cache_localstack;
mod cli_rewrap;
mod hardening_keys_localstack;
mod http_admin;
mod http_hardening;
mod http_vault;
mod http_vault_hardening;
mod idempotency;
mod instances;
mod instances_failover;
mod instances_leader;
mod instances_revocation;
mod instances_rewrap;
mod instances_stale_view;
mod kek_rotation;
mod keyring_localstack;
mod kms_budget;
mod kms_localstack;
mod local_provider;
mod observability;
mod openapi;
mod platform_kek_limits;
mod platform_kek_localstack;
mod portal;
mod portal_browser;
mod postgres_faults;
mod postgres_migrations;
mod process_lifecycle;
mod retention;
mod rewrap_crash;
mod rewrap_leases;
mod rewrap_localstack;
mod shutdown;
mod storage_full;
mod tls;
