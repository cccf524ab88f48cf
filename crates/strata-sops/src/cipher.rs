//! SOPS' value encryption: AES-256-GCM with a 32-byte IV, the value's path as
//! additional data, written as `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::error::{Error, ValueError};

/// SOPS' IV length (Go's `cipher.NewGCMWithNonceSize(block, 32)`).
const IV_LEN: usize = 32;
const TAG_LEN: usize = 16;

type Aes256Gcm32 = AesGcm<Aes256, U32>;

/// The 32-byte data key that encrypts every value of a file.
pub(crate) struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|source| Error::Random { source })?;
        Ok(DataKey(key))
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(array)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm32 {
        Aes256Gcm32::new(GenericArray::from_slice(self.0.as_ref()))
    }

    /// Encrypts `plain` as a SOPS value of type `kind` under `aad`.
    pub(crate) fn encrypt(&self, plain: &[u8], kind: &str, aad: &[u8]) -> Result<String, Error> {
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).map_err(|source| Error::Random { source })?;
        let mut buf = Zeroizing::new(plain.to_vec());
        let tag = self
            .cipher()
            .encrypt_in_place_detached(GenericArray::from_slice(&iv), aad, &mut buf)
            .expect("AES-GCM encryption of an in-memory value cannot fail");
        Ok(format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            B64.encode(buf.as_slice()),
            B64.encode(iv),
            B64.encode(tag)
        ))
    }

    /// Decrypts a SOPS value written under `aad`, returning its plaintext bytes
    /// and its declared type.
    pub(crate) fn decrypt(&self, value: &str, aad: &[u8]) -> Result<(Zeroizing<Vec<u8>>, String), ValueError> {
        let parts = Parsed::parse(value)?;
        let data = B64.decode(parts.data).map_err(|source| ValueError::Base64 { field: "data", source })?;
        let iv = B64.decode(parts.iv).map_err(|source| ValueError::Base64 { field: "iv", source })?;
        let tag = B64.decode(parts.tag).map_err(|source| ValueError::Base64 { field: "tag", source })?;
        if iv.len() != IV_LEN {
            return Err(ValueError::Length { field: "iv", len: iv.len(), expected: IV_LEN });
        }
        if tag.len() != TAG_LEN {
            return Err(ValueError::Length { field: "tag", len: tag.len(), expected: TAG_LEN });
        }
        let mut buf = Zeroizing::new(data);
        self.cipher()
            .decrypt_in_place_detached(GenericArray::from_slice(&iv), aad, &mut buf, GenericArray::from_slice(&tag))
            .map_err(|_| ValueError::Authentication)?;
        Ok((buf, parts.kind.to_owned()))
    }
}

/// The four fields of an `ENC[...]` value.
struct Parsed<'a> {
    data: &'a str,
    iv: &'a str,
    tag: &'a str,
    kind: &'a str,
}

impl<'a> Parsed<'a> {
    fn parse(value: &'a str) -> Result<Self, ValueError> {
        let inner = value
            .strip_prefix("ENC[AES256_GCM,data:")
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or(ValueError::NotEncrypted)?;
        let (data, rest) = inner.split_once(",iv:").ok_or(ValueError::NotEncrypted)?;
        let (iv, rest) = rest.split_once(",tag:").ok_or(ValueError::NotEncrypted)?;
        let (tag, kind) = rest.split_once(",type:").ok_or(ValueError::NotEncrypted)?;
        if data.is_empty() || iv.is_empty() || tag.is_empty() || kind.is_empty() {
            return Err(ValueError::NotEncrypted);
        }
        Ok(Parsed { data, iv, tag, kind })
    }
}

/// Whether a string has the shape of a SOPS encrypted value.
pub(crate) fn looks_encrypted(value: &str) -> bool {
    Parsed::parse(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aad_binding() {
        let key = DataKey::generate().unwrap();
        let enc = key.encrypt(b"hello", "str", b"a:b:").unwrap();
        assert!(enc.starts_with("ENC[AES256_GCM,data:"));
        assert!(enc.ends_with(",type:str]"));
        let (plain, kind) = key.decrypt(&enc, b"a:b:").unwrap();
        assert_eq!(plain.as_slice(), b"hello");
        assert_eq!(kind, "str");
        assert!(matches!(key.decrypt(&enc, b"a:c:"), Err(ValueError::Authentication)));
    }

    #[test]
    fn refuses_malformed_values() {
        let key = DataKey::generate().unwrap();
        assert!(matches!(key.decrypt("plain", b":"), Err(ValueError::NotEncrypted)));
        assert!(matches!(
            key.decrypt("ENC[AES256_GCM,data:!!,iv:AA==,tag:AA==,type:str]", b":"),
            Err(ValueError::Base64 { field: "data", .. })
        ));
        assert!(matches!(
            key.decrypt("ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]", b":"),
            Err(ValueError::Length { field: "iv", .. })
        ));
    }
}
