//! No error message, nor any `Debug` output, carries plaintext or key
//! material: values are named by path, keys by their public half.

mod common;

use common::*;
use strata_sops::{Error, Format, Identities, decrypt, encrypt};

/// Secrets that appear in the fixtures and inputs below.
const SECRETS: &[&str] = &[
    "hunter2",
    "s3cr3t",
    "MIIBszCCAVmgAwIBAgIUQ",
    "AGE-SECRET-KEY-1N",
    "NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6",
    "1RH87A5Z54ZGUR9S0AS3R6WHFSEFNPLYMAKF5Z2CEU7R06VRJ0A3Q7242AM",
    "TOPSECRET",
];

fn assert_clean(what: &str, err: &Error) {
    for text in [chain(err), format!("{err:?}")] {
        for secret in SECRETS {
            assert!(
                !text.to_ascii_uppercase().contains(&secret.to_ascii_uppercase()),
                "{what}: `{secret}` leaked in: {text}"
            );
        }
    }
}

fn tampered(find: &str, replace: &str) -> Vec<u8> {
    fixture_text("generated/complex.enc.yaml").replace(find, replace).into_bytes()
}

#[test]
fn no_error_leaks_secrets() {
    let keys = sops_keys();
    let password_line =
        fixture_text("generated/complex.enc.yaml").lines().find(|l| l.contains("password: ENC[")).unwrap().to_owned();
    let mut errors: Vec<(&str, Error)> = vec![
        ("bad identity line", Identities::parse("AGE-SECRET-KEY-1TOPSECRETBUTBROKEN\n").unwrap_err()),
        ("identity with garbage", Identities::parse("# c\nTOPSECRET value\n").unwrap_err()),
        ("no identities", Identities::parse("# only comments\n").unwrap_err()),
        (
            "wrong key",
            decrypt(&fixture("generated/complex.enc.yaml"), Format::Yaml, &identities("flux/age.txt")).unwrap_err(),
        ),
        (
            "altered ciphertext",
            decrypt(&tampered(&password_line, &password_line.replace("data:", "data:AAAA")), Format::Yaml, &keys)
                .unwrap_err(),
        ),
        (
            "cleartext in place of ciphertext",
            decrypt(&tampered(&password_line, "    password: hunter2"), Format::Yaml, &keys).unwrap_err(),
        ),
        (
            "mac mismatch",
            decrypt(&tampered("public_unencrypted: visible", "public_unencrypted: hunter2"), Format::Yaml, &keys)
                .unwrap_err(),
        ),
        (
            "yaml syntax",
            encrypt(b"a: [hunter2, TOPSECRET\n", Format::Yaml, &[SOPS_R1], &Default::default()).unwrap_err(),
        ),
        (
            "json syntax",
            encrypt(b"{\"password\": \"hunter2\" TOPSECRET}", Format::Json, &[SOPS_R1], &Default::default())
                .unwrap_err(),
        ),
        (
            "dotenv syntax",
            encrypt(b"A=hunter2\nTOPSECRET\n", Format::Dotenv, &[SOPS_R1], &Default::default()).unwrap_err(),
        ),
        ("yaml top-level list", encrypt(b"- hunter2\n", Format::Yaml, &[SOPS_R1], &Default::default()).unwrap_err()),
        (
            "secret key given as recipient",
            encrypt(
                b"a: b\n",
                Format::Yaml,
                &["AGE-SECRET-KEY-1NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6"],
                &Default::default(),
            )
            .unwrap_err(),
        ),
        ("value as recipient", encrypt(b"a: b\n", Format::Yaml, &["hunter2"], &Default::default()).unwrap_err()),
        ("not encrypted", decrypt(b"password: hunter2\n", Format::Yaml, &keys).unwrap_err()),
        ("pgp only", decrypt(&fixture("sops/pgp-format.enc.yaml"), Format::Yaml, &keys).unwrap_err()),
        (
            "bad regex",
            encrypt(
                b"a: hunter2\n",
                Format::Yaml,
                &[SOPS_R1],
                &strata_sops::EncryptOptions {
                    rule: strata_sops::EncryptionRule::EncryptedRegex("(".into()),
                    mac_only_encrypted: false,
                },
            )
            .unwrap_err(),
        ),
        ("ini", Format::from_path(std::path::Path::new("secrets.ini")).unwrap_err()),
    ];
    let lastmodified = tampered("lastmodified: \"", "lastmodified: \"x");
    errors.push(("bad lastmodified", decrypt(&lastmodified, Format::Yaml, &keys).unwrap_err()));
    for (what, err) in &errors {
        assert_clean(what, err);
    }
}

#[test]
fn the_wrong_key_error_names_public_keys_only() {
    let err = decrypt(&fixture("generated/complex.enc.yaml"), Format::Yaml, &identities("flux/age.txt")).unwrap_err();
    let Error::NoMatchingKey { recipients, tried, .. } = &err else { panic!("{err:?}") };
    assert_eq!(recipients, &[SOPS_R1]);
    assert_eq!(tried, &["age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"]);
    let message = err.to_string();
    assert!(message.contains(SOPS_R1) && message.contains("age1l44xcng8"), "{message}");
}

#[test]
fn errors_keep_their_cause() {
    let err = Identities::parse("AGE-SECRET-KEY-1BROKEN\n").unwrap_err();
    assert!(std::error::Error::source(&err).is_some());
    let err = encrypt(b"{", Format::Json, &[SOPS_R1], &Default::default()).unwrap_err();
    let syntax = std::error::Error::source(&err).unwrap();
    assert!(syntax.source().is_some(), "the JSON parser's error is kept");
    let err = decrypt(&tampered("public_unencrypted: visible", "public_unencrypted: x"), Format::Yaml, &sops_keys())
        .unwrap_err();
    assert!(matches!(err, Error::MacMismatch { .. }));
}

#[test]
fn debug_output_hides_secrets() {
    let keys = sops_keys();
    let debug = format!("{keys:?}");
    assert!(debug.contains(SOPS_R1) && !debug.contains("AGE-SECRET-KEY"), "{debug}");
    let plain = decrypt(&fixture("generated/complex.enc.yaml"), Format::Yaml, &keys).unwrap();
    let debug = format!("{plain:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn malformed_metadata_names_the_field() {
    let text = fixture_text("generated/complex.enc.yaml");
    let line = text.lines().find(|l| l.contains("lastmodified:")).unwrap();
    let err =
        decrypt(text.replace(line, "    lastmodified: yesterday").as_bytes(), Format::Yaml, &sops_keys()).unwrap_err();
    assert!(matches!(&err, Error::Metadata { field, .. } if field == "sops.lastmodified"), "{err:?}");
    let err = decrypt(
        text.replace(
            "    unencrypted_suffix: _unencrypted",
            "    unencrypted_suffix: _unencrypted\n    encrypted_regex: x",
        )
        .as_bytes(),
        Format::Yaml,
        &sops_keys(),
    )
    .unwrap_err();
    assert!(matches!(&err, Error::Metadata { problem, .. } if problem.contains("only one")), "{err:?}");
}
