//! The README's error-code table and `ErrorCode` agree both ways: same codes, same statuses.

use std::collections::BTreeMap;

use super::ErrorCode;

const README: &str = include_str!("../README.md");

/// The `| code | status | meaning |` table that follows the "Every non-2xx answer" paragraph.
fn readme_codes() -> BTreeMap<String, u16> {
    let start = README
        .find("Every non-2xx answer is JSON")
        .expect("README has the error-code paragraph");
    let mut codes = BTreeMap::new();
    let rows = README[start..]
        .lines()
        .skip_while(|line| !line.starts_with("| code | status |"))
        .skip(2) // header and separator
        .take_while(|line| line.starts_with('|'));
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let code = cells[1].trim_matches('`').to_owned();
        let status = cells[2].parse().expect("status is a number");
        assert!(
            !cells[3].is_empty(),
            "README row for {code} explains the code"
        );
        assert!(
            codes.insert(code.clone(), status).is_none(),
            "{code} twice in README"
        );
    }
    codes
}

#[test]
fn readme_table_and_enum_agree_both_ways() {
    let readme = readme_codes();
    let ours: BTreeMap<String, u16> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), code.status().as_u16()))
        .collect();
    assert_eq!(
        ours.len(),
        ErrorCode::ALL.len(),
        "a code string is used twice"
    );
    for (code, status) in &ours {
        assert_eq!(
            readme.get(code),
            Some(status),
            "{code} in README with status {status}"
        );
    }
    for (code, status) in &readme {
        assert_eq!(
            ours.get(code),
            Some(status),
            "README's {code} is an ErrorCode"
        );
    }
}

#[test]
fn codes_are_snake_case_and_statuses_are_errors() {
    for code in ErrorCode::ALL {
        let text = code.as_str();
        assert!(
            text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{text}"
        );
        assert!(
            code.status().is_client_error() || code.status().is_server_error(),
            "{text}"
        );
    }
}
