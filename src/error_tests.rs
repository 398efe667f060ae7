//! `Error` keeps the store's source chain, and "not found" names what was not found.

use std::error::Error as _;

use super::{Error, ErrorCode};
use crate::store::StoreError;

#[test]
fn a_database_failure_reaches_the_log_through_store_and_broker_errors_but_not_the_client() {
    let connection = rusqlite::Connection::open_in_memory().expect("in-memory database");
    let sqlite = connection
        .execute("INSERT INTO no_such_table VALUES (1)", [])
        .expect_err("no such table");
    let store = StoreError::from(sqlite);
    assert!(store.to_string().contains("no_such_table"), "{store}");

    let error = Error::from(store);
    assert_eq!(error.public_message(), "internal error");
    let store_cause = error.source().expect("broker error has a source");
    assert!(store_cause.is::<StoreError>(), "{store_cause:?}");
    assert!(
        store_cause.to_string().contains("no_such_table"),
        "{store_cause}"
    );
}

#[test]
fn not_found_names_its_thing() {
    for thing in ["object", "API key", "BYOK key", "rewrap job"] {
        let error = Error::from(StoreError::NotFound(thing));
        assert_eq!(error.public_message(), format!("{thing} not found"));
    }
}

#[test]
fn already_exists_names_its_thing() {
    for thing in [
        "a BYOK key for this match_context",
        "another BYOK key using this key_arn",
        "a running rewrap job for this source",
    ] {
        let error = Error::from(StoreError::AlreadyExists(thing));
        assert_eq!(error.code(), ErrorCode::AlreadyExists);
        assert_eq!(error.public_message(), format!("{thing} already exists"));
    }
}

#[test]
fn provider_and_envelope_failures_keep_their_source_and_answer_generically() {
    use crate::envelope::EnvelopeError;
    use crate::kms::{KmsError, KmsFailure};

    let error = Error::from_kms(KmsError::new(
        KmsFailure::InvalidCiphertext,
        "the ciphertext does not open",
    ));
    let cause = error.source().expect("a provider failure keeps its cause");
    assert!(cause.to_string().contains("does not open"), "{cause}");
    assert_eq!(error.code(), ErrorCode::InternalError);
    assert_eq!(error.public_message(), "internal error");

    let error = Error::from(EnvelopeError::Integrity);
    assert!(
        error.source().is_some(),
        "an envelope failure keeps its cause"
    );
    assert_eq!(error.public_message(), "internal error");
}
