//! A SOPS file changed after encryption is refused, with the error that says
//! how.

mod common;

use common::*;
use strata_sops::{Error, Format, ValueError, decrypt};

fn complex() -> String {
    fixture_text("generated/complex.enc.yaml")
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}"))
}

fn open(text: &str) -> Result<strata_sops::Plaintext, Error> {
    decrypt(text.as_bytes(), Format::Yaml, &sops_keys())
}

#[test]
fn the_untouched_file_opens() {
    open(&complex()).unwrap();
}

#[test]
fn one_changed_ciphertext_byte_does_not_decrypt() {
    let text = complex();
    let line = line_with(&text, "password: ENC[");
    let data_at = line.find("data:").unwrap() + 5;
    let mut changed = line.to_owned();
    let old = changed.as_bytes()[data_at];
    changed.replace_range(data_at..data_at + 1, if old == b'A' { "B" } else { "A" });
    let err = open(&text.replace(line, &changed)).unwrap_err();
    assert!(
        matches!(&err, Error::Value { path, source: ValueError::Authentication } if path == "stringData:password:"),
        "{err:?}"
    );
}

#[test]
fn values_swapped_between_keys_do_not_decrypt() {
    let text = complex();
    let a = line_with(&text, "apiVersion: ENC[");
    let b = line_with(&text, "kind: ENC[");
    let swapped = text
        .replace(a, "@A@")
        .replace(b, &a.replace("apiVersion", "kind"))
        .replace("@A@", &b.replace("kind", "apiVersion"));
    let err = open(&swapped).unwrap_err();
    assert!(matches!(&err, Error::Value { source: ValueError::Authentication, .. }), "{err:?}");
}

#[test]
fn values_swapped_within_a_list_break_the_mac() {
    // Items of one list share their additional data, so each still decrypts;
    // the MAC, over values in order, catches the swap.
    let text = complex();
    let lines: Vec<&str> = text.lines().collect();
    let i = lines.iter().position(|l| l.trim_start().starts_with("- ENC[") && l.contains("type:bool")).unwrap();
    let mut swapped: Vec<&str> = lines.clone();
    swapped.swap(i, i + 1);
    let err = open(&(swapped.join("\n") + "\n")).unwrap_err();
    assert!(matches!(err, Error::MacMismatch { source: None }), "{err:?}");
}

#[test]
fn a_changed_unencrypted_value_breaks_the_mac() {
    let text = complex().replace("public_unencrypted: visible", "public_unencrypted: changed");
    assert!(matches!(open(&text).unwrap_err(), Error::MacMismatch { source: None }));
}

#[test]
fn a_dropped_key_breaks_the_mac() {
    let text = complex();
    let line = line_with(&text, "negative: ENC[");
    let err = open(&text.replace(&format!("{line}\n"), "")).unwrap_err();
    assert!(matches!(err, Error::MacMismatch { source: None }), "{err:?}");
}

#[test]
fn an_added_key_breaks_the_mac() {
    let text = complex().replace("public_unencrypted: visible", "public_unencrypted: visible\nextra_unencrypted: x");
    assert!(matches!(open(&text).unwrap_err(), Error::MacMismatch { source: None }));
}

#[test]
fn an_altered_lastmodified_breaks_the_mac() {
    let text = complex();
    let line = line_with(&text, "lastmodified:");
    let err = open(&text.replace(line, "    lastmodified: \"2020-01-01T00:00:00Z\"")).unwrap_err();
    assert!(matches!(&err, Error::MacMismatch { source: Some(ValueError::Authentication) }), "{err:?}");
}

#[test]
fn a_removed_mac_is_malformed_metadata() {
    let text = complex();
    let line = line_with(&text, "    mac: ENC[");
    let err = open(&text.replace(&format!("{line}\n"), "")).unwrap_err();
    assert!(matches!(&err, Error::Metadata { field, .. } if field == "sops.mac"), "{err:?}");
}

#[test]
fn a_cleartext_value_where_ciphertext_belongs_is_refused() {
    let text = complex();
    let line = line_with(&text, "password: ENC[");
    let err = open(&text.replace(line, "    password: hunter2")).unwrap_err();
    assert!(matches!(&err, Error::Value { source: ValueError::NotEncrypted, .. }), "{err:?}");
}

#[test]
fn mac_only_encrypted_lets_cleartext_values_change_but_not_secrets() {
    let text = fixture_text("generated/mac-only.enc.yaml");
    let changed = text.replace("owner: team-a", "owner: team-b");
    let plain = decrypt(changed.as_bytes(), Format::Yaml, &sops_keys()).unwrap();
    assert!(String::from_utf8_lossy(plain.as_bytes()).contains("team-b"));
    // Dropping an encrypted value still breaks it.
    let line = line_with(&text, "count: ENC[");
    let err = decrypt(text.replace(&format!("{line}\n"), "").as_bytes(), Format::Yaml, &sops_keys()).unwrap_err();
    assert!(matches!(err, Error::MacMismatch { source: None }), "{err:?}");
}

#[test]
fn dotenv_and_json_tampering_is_caught_too() {
    let env = fixture_text("generated/app.enc.env").replace("PUBLIC_unencrypted=visible", "PUBLIC_unencrypted=other");
    assert!(matches!(decrypt(env.as_bytes(), Format::Dotenv, &sops_keys()), Err(Error::MacMismatch { .. })));
    let json = fixture_text("generated/complex.enc.json")
        .replace("\"public_unencrypted\": \"visible\"", "\"public_unencrypted\": \"x\"");
    assert!(matches!(decrypt(json.as_bytes(), Format::Json, &sops_keys()), Err(Error::MacMismatch { .. })));
}

#[test]
fn an_encrypted_comment_that_was_altered_is_refused() {
    let text = complex();
    let line = line_with(&text, "#ENC[");
    let data_at = line.find("data:").unwrap() + 5;
    let mut changed = line.to_owned();
    let old = changed.as_bytes()[data_at];
    changed.replace_range(data_at..data_at + 1, if old == b'A' { "B" } else { "A" });
    let err = open(&text.replace(line, &changed)).unwrap_err();
    assert!(matches!(&err, Error::Value { source: ValueError::Authentication, .. }), "{err:?}");
}
