//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Map, Value};
use strata_sops::Identities;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(dir().join("fixtures").join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

pub fn identities(rel: &str) -> Identities {
    Identities::parse(&fixture_text(rel)).unwrap()
}

/// The sops project's published age test keys (two identities).
pub fn sops_keys() -> Identities {
    identities("sops/keys.txt")
}

pub const SOPS_R1: &str = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw";
pub const SOPS_R2: &str = "age1tmaae3ld5vpevmsh5yacsauzx8jetg300mpvc4ugp5zr5l6ssq9sla97ep";

/// Numbers as f64, so that `2` and `2.0` (SOPS' float64 JSON) compare equal.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Every YAML document of `text`, as JSON values, numbers normalized.
pub fn yaml(text: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(text).unwrap();
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
        .into_iter()
        .map(normalize)
        .collect()
}

pub fn json(text: &[u8]) -> Value {
    normalize(serde_json::from_slice(text).unwrap_or_else(|e| panic!("not JSON: {e}")))
}

/// The comment lines of a YAML or dotenv text, trimmed.
pub fn comments(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text).lines().map(str::trim).filter(|l| l.starts_with('#')).map(str::to_owned).collect()
}

/// An error's message and all its sources', as a person would see them.
pub fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(" | ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

// ---------------------------------------------------------------------------
// Random documents

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,12}",
        "\\PC{1,10}",
        Just("sops_unencrypted".to_owned()),
        Just("a_unencrypted".to_owned()),
        Just("yes".to_owned()),
        Just("123".to_owned()),
    ]
    .prop_filter("sops is reserved", |k| k != "sops")
}

pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        "[ -~\n\t]{0,30}".prop_map(Value::String),
        prop_oneof![
            Just("true"),
            Just("null"),
            Just("~"),
            Just("0x1F"),
            Just("1e3"),
            Just("- a"),
            Just("a: b"),
            Just(" lead"),
            Just("trail "),
            Just("#hash"),
            Just("x #y"),
            Just("line\n"),
            Just("\n\n"),
            Just("ENC[AES256_GCM,data:x]"),
            Just("'q'"),
            Just("\"dq\""),
            Just("[1]"),
            Just("{}"),
            Just("&a"),
            Just("*a"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        Just(Value::Null),
    ]
}

pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

pub fn document() -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), value()), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}
