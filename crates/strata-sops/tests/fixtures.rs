//! Files encrypted by the real `sops` tool: Flux's kustomize-controller test
//! data (sops 3.9.0 and 3.10.2) and files made with sops 3.11.0 for this
//! crate (see fixtures/README.md). Decryption must give what `sops decrypt`
//! gives.

mod common;

use common::*;
use strata_sops::{Error, Format, decrypt, is_encrypted, recipients};

#[test]
fn flux_age_yaml_with_encrypted_regex_sops_3_9() {
    let input = fixture("flux/algorithms-age.yaml");
    assert!(is_encrypted(&input, Format::Yaml));
    let plain = decrypt(&input, Format::Yaml, &identities("flux/age.txt")).unwrap();
    let doc = &yaml(plain.as_bytes())[0];
    assert_eq!(doc["stringData"]["key"], "value");
    assert_eq!(doc["metadata"]["name"], "age");
    assert!(doc.get("sops").is_none());
}

#[test]
fn flux_age_yaml_sops_3_10() {
    let plain = decrypt(&fixture("flux/global-secret.yaml"), Format::Yaml, &identities("flux/age-global.txt")).unwrap();
    assert_eq!(yaml(plain.as_bytes())[0]["stringData"]["key"], "global-value");
}

#[test]
fn flux_dotenv() {
    let input = fixture("flux/component.env");
    assert!(is_encrypted(&input, Format::Dotenv));
    let plain = decrypt(&input, Format::Dotenv, &identities("flux/age.txt")).unwrap();
    assert_eq!(plain.as_bytes(), b"key=value\n");
}

#[test]
fn flux_binary_envelope() {
    let input = fixture("flux/inside-secret.binary.json");
    let plain = decrypt(&input, Format::Binary, &identities("flux/age.txt")).unwrap();
    assert_eq!(plain.as_bytes(), b"value");
}

#[test]
fn recipients_are_listed() {
    assert_eq!(
        recipients(&fixture("flux/algorithms-age.yaml"), Format::Yaml).unwrap(),
        ["age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"]
    );
    assert_eq!(
        recipients(&fixture("generated/multidoc.enc.yaml"), Format::Yaml).unwrap(),
        ["age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29", SOPS_R2]
    );
    assert_eq!(recipients(&fixture("flux/component.env"), Format::Dotenv).unwrap().len(), 1);
}

#[test]
fn pgp_only_file_is_refused_naming_the_key_type() {
    let input = fixture("sops/pgp-format.enc.yaml");
    assert!(is_encrypted(&input, Format::Yaml));
    let err = decrypt(&input, Format::Yaml, &sops_keys()).unwrap_err();
    assert!(matches!(&err, Error::UnsupportedKeyType { kinds } if kinds == &["pgp"]), "{err:?}");
    assert!(err.to_string().contains("only age is supported"));
}

/// (encrypted fixture, format) pairs made with sops 3.11.0; `expected/` holds
/// what `sops decrypt` printed for each.
const GENERATED: &[(&str, Format)] = &[
    ("complex.enc.yaml", Format::Yaml),
    ("complex.enc.json", Format::Json),
    ("app.enc.env", Format::Dotenv),
    ("secret-regex.enc.yaml", Format::Yaml),
    ("mac-only.enc.yaml", Format::Yaml),
    ("comment-regex.enc.yaml", Format::Yaml),
    ("unencrypted-regex.enc.yaml", Format::Yaml),
    ("encrypted-suffix.enc.yaml", Format::Yaml),
    ("multidoc.enc.yaml", Format::Yaml),
    ("blob.enc.bin", Format::Binary),
    ("tricky.enc.yaml", Format::Yaml),
];

#[test]
fn sops_3_11_files_decrypt_as_sops_decrypts_them() {
    let keys = sops_keys();
    for (name, format) in GENERATED {
        let input = fixture(&format!("generated/{name}"));
        assert!(is_encrypted(&input, *format), "{name}");
        let plain = decrypt(&input, *format, &keys).unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        let expected = fixture(&format!("generated/expected/{}", name.replace(".enc", "")));
        match format {
            Format::Yaml => {
                assert_eq!(yaml(plain.as_bytes()), yaml(&expected), "{name}");
                assert_eq!(comments(plain.as_bytes()), comments(&expected), "{name}: comments");
            }
            Format::Json => assert_eq!(json(plain.as_bytes()), json(&expected), "{name}"),
            Format::Dotenv | Format::Binary => assert_eq!(plain.as_bytes(), expected.as_slice(), "{name}"),
        }
    }
}

#[test]
fn a_sops_key_that_is_not_a_mapping_is_not_metadata() {
    assert!(!is_encrypted(b"sops: just a string\n", Format::Yaml));
    assert!(!is_encrypted(br#"{"sops": [1]}"#, Format::Json));
    assert!(!is_encrypted(b"SOPS_LIKE=1\nsops_note=x\n", Format::Dotenv));
}

#[test]
fn plaintext_files_are_not_encrypted() {
    for (name, format) in GENERATED {
        let plain = fixture(&format!("generated/{}", name.replace(".enc", "")));
        assert!(!is_encrypted(&plain, *format), "{name}");
        assert!(matches!(
            decrypt(&plain, *format, &sops_keys()),
            Err(Error::NotEncrypted { .. }) | Err(Error::Parse { .. })
        ));
    }
}

#[test]
fn a_file_for_two_recipients_opens_with_either() {
    let input = fixture("generated/multidoc.enc.yaml");
    let a = decrypt(&input, Format::Yaml, &identities("flux/age.txt")).unwrap();
    let b = decrypt(&input, Format::Yaml, &sops_keys()).unwrap();
    assert_eq!(a.as_bytes(), b.as_bytes());
    let docs = yaml(a.as_bytes());
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["stringData"]["b"], "two");
}

/// The age stanzas of a sops 3.11 file moved under `key_groups`.
fn with_key_groups(groups: usize) -> Vec<u8> {
    let text = fixture_text("generated/complex.enc.yaml");
    let start = text.find("\n    age:\n").unwrap() + 1;
    let end = text.find("\n    lastmodified:").unwrap() + 1;
    let stanzas: String = text[start..end].lines().skip(1).map(|l| format!("    {l}\n")).collect();
    let group = format!("        - age:\n{stanzas}");
    let replaced = format!("    key_groups:\n{}", group.repeat(groups));
    format!("{}{}{}", &text[..start], replaced, &text[end..]).into_bytes()
}

#[test]
fn a_single_key_group_is_read_and_shamir_groups_are_refused() {
    let one = with_key_groups(1);
    assert_eq!(recipients(&one, Format::Yaml).unwrap(), [SOPS_R1]);
    decrypt(&one, Format::Yaml, &sops_keys()).unwrap();
    let err = decrypt(&with_key_groups(2), Format::Yaml, &sops_keys()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("Shamir"));
}
