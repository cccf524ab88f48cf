//! `encrypt` then `decrypt` gives the document back, for every format and
//! rule, and for random documents.

mod common;

use common::*;
use proptest::prelude::*;
use strata_sops::{EncryptOptions, EncryptionRule, Error, Format, decrypt, encrypt, is_encrypted, recipients};

fn round(plain: &[u8], format: Format, options: &EncryptOptions) -> (Vec<u8>, Vec<u8>) {
    let enc = encrypt(plain, format, &[SOPS_R1], options).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(is_encrypted(&enc, format));
    let dec = decrypt(&enc, format, &sops_keys())
        .unwrap_or_else(|e| panic!("{}\n{}", chain(&e), String::from_utf8_lossy(&enc)));
    (enc, dec.as_bytes().to_vec())
}

#[test]
fn yaml_round_trip_keeps_values_types_and_comments() {
    let plain = fixture("generated/complex.yaml");
    let (enc, dec) = round(&plain, Format::Yaml, &EncryptOptions::default());
    let text = String::from_utf8(enc).unwrap();
    assert!(!text.contains("hunter2"));
    assert!(text.contains("public_unencrypted: visible"));
    assert!(text.contains("type:int]") && text.contains("type:float]") && text.contains("type:bool]"));
    assert!(text.contains("#ENC[AES256_GCM,"), "comments are encrypted");
    assert_eq!(yaml(&dec), yaml(&plain));
    assert_eq!(comments(&dec), comments(&fixture("generated/expected/complex.yaml")));
}

#[test]
fn every_rule_round_trips_and_leaves_the_right_values_in_cleartext() {
    let cases: &[(EncryptionRule, &str, &str, &str)] = &[
        (
            EncryptionRule::EncryptedRegex("^(data|stringData)$".into()),
            "generated/secret-regex.yaml",
            "name: regex",
            "admin",
        ),
        (
            EncryptionRule::UnencryptedRegex("^(name|description)$".into()),
            "generated/unencrypted-regex.yaml",
            "description: shown",
            "hidden",
        ),
        (
            EncryptionRule::EncryptedSuffix("_secret".into()),
            "generated/encrypted-suffix.yaml",
            "user: visible",
            "hidden",
        ),
        (
            EncryptionRule::EncryptedCommentRegex("sops:enc".into()),
            "generated/comment-regex.yaml",
            "other: visible too",
            "hidden",
        ),
        (
            EncryptionRule::UnencryptedCommentRegex("sops:enc".into()),
            "generated/comment-regex.yaml",
            "secret: hidden",
            "visible too",
        ),
    ];
    for (rule, file, clear, secret) in cases {
        let plain = fixture(file);
        let options = EncryptOptions { rule: rule.clone(), mac_only_encrypted: false };
        let (enc, dec) = round(&plain, Format::Yaml, &options);
        let text = String::from_utf8(enc).unwrap();
        assert!(text.contains(clear), "{file}: {clear} should stay clear\n{text}");
        assert!(!text.contains(secret), "{file}: {secret} should be encrypted\n{text}");
        assert!(text.contains(&format!("{}:", rule_field(rule))), "{file}: rule recorded");
        // Compared with what `sops decrypt` printed for the same plaintext:
        // YAML readers disagree on `y` and the like, SOPS reads them as strings.
        let expected = fixture(&file.replace("generated/", "generated/expected/"));
        assert_eq!(yaml(&dec), yaml(&expected), "{file}");
    }
}

fn rule_field(rule: &EncryptionRule) -> &'static str {
    match rule {
        EncryptionRule::UnencryptedSuffix(_) => "unencrypted_suffix",
        EncryptionRule::EncryptedSuffix(_) => "encrypted_suffix",
        EncryptionRule::UnencryptedRegex(_) => "unencrypted_regex",
        EncryptionRule::EncryptedRegex(_) => "encrypted_regex",
        EncryptionRule::UnencryptedCommentRegex(_) => "unencrypted_comment_regex",
        EncryptionRule::EncryptedCommentRegex(_) => "encrypted_comment_regex",
    }
}

#[test]
fn mac_only_encrypted_round_trips() {
    let plain = fixture("generated/mac-only.yaml");
    let options = EncryptOptions { mac_only_encrypted: true, ..Default::default() };
    let (enc, dec) = round(&plain, Format::Yaml, &options);
    assert!(String::from_utf8_lossy(&enc).contains("mac_only_encrypted: true"));
    assert_eq!(yaml(&dec), yaml(&plain));
}

#[test]
fn json_dotenv_binary_and_multidoc_round_trip() {
    let plain = fixture("generated/complex.json");
    let (_, dec) = round(&plain, Format::Json, &EncryptOptions::default());
    assert_eq!(json(&dec), json(&plain));

    let plain = fixture("generated/app.env");
    let (enc, dec) = round(&plain, Format::Dotenv, &EncryptOptions::default());
    assert_eq!(dec, plain);
    assert!(String::from_utf8_lossy(&enc).contains("sops_age__list_0__map_recipient="));

    let plain = fixture("generated/blob.bin");
    let (_, dec) = round(&plain, Format::Binary, &EncryptOptions::default());
    assert_eq!(dec, plain);

    let plain = fixture("generated/multidoc.yaml");
    let (enc, dec) = round(&plain, Format::Yaml, &EncryptOptions::default());
    assert_eq!(yaml(&dec), yaml(&plain));
    assert_eq!(String::from_utf8_lossy(&enc).matches("\nsops:\n").count(), 2, "metadata in each document");
}

#[test]
fn several_recipients_each_open_the_file() {
    let enc = encrypt(
        b"a: b\n",
        Format::Yaml,
        &[SOPS_R1, "age1l44xcng8dqj32nlv6d930qvvrny05hglzcv9qpc7kxjc6902ma4qufys29"],
        &Default::default(),
    )
    .unwrap();
    assert_eq!(recipients(&enc, Format::Yaml).unwrap().len(), 2);
    decrypt(&enc, Format::Yaml, &sops_keys()).unwrap();
    decrypt(&enc, Format::Yaml, &identities("flux/age.txt")).unwrap();
}

#[test]
fn encryption_is_randomised() {
    let a = encrypt(b"a: b\n", Format::Yaml, &[SOPS_R1], &Default::default()).unwrap();
    let b = encrypt(b"a: b\n", Format::Yaml, &[SOPS_R1], &Default::default()).unwrap();
    let value = |t: &[u8]| String::from_utf8_lossy(t).lines().next().unwrap().to_owned();
    assert_ne!(value(&a), value(&b));
}

#[test]
fn encrypting_an_encrypted_file_is_refused() {
    let enc = fixture("generated/complex.enc.yaml");
    assert!(matches!(
        encrypt(&enc, Format::Yaml, &[SOPS_R1], &Default::default()),
        Err(Error::AlreadyEncrypted { .. })
    ));
}

// Random documents: generators in common/mod.rs.

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_json_documents_round_trip(doc in document(), mac_only in any::<bool>()) {
        let plain = serde_json::to_vec_pretty(&doc).unwrap();
        let options = EncryptOptions { mac_only_encrypted: mac_only, ..Default::default() };
        let (_, dec) = round(&plain, Format::Json, &options);
        prop_assert_eq!(json(&dec), normalize(doc));
    }

    #[test]
    fn random_yaml_documents_round_trip(doc in document()) {
        // JSON is YAML: the YAML reader takes it, the YAML writer must quote
        // every string that would read back as something else.
        let plain = serde_json::to_vec(&doc).unwrap();
        let (_, dec) = round(&plain, Format::Yaml, &EncryptOptions::default());
        let expected = yaml(&plain);
        prop_assert_eq!(yaml(&dec), expected);
    }

    #[test]
    fn random_dotenv_documents_round_trip(
        pairs in prop::collection::vec(("[A-Z_][A-Z0-9_]{0,10}", "[ -~]{0,30}"), 0..8)
    ) {
        let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| !k.starts_with("sops_")).collect();
        let plain: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let (_, dec) = round(plain.as_bytes(), Format::Dotenv, &EncryptOptions::default());
        prop_assert_eq!(String::from_utf8(dec).unwrap(), plain);
    }
}
