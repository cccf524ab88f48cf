//! age identities and recipients, and the age-wrapped data key.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format as ArmorFormat};
use age::x25519;
use zeroize::Zeroizing;

use crate::cipher::DataKey;
use crate::error::{Error, KeyError};
use crate::metadata::AgeStanza;

/// A set of age X25519 identities (secret keys), parsed from text as
/// `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines, `#` comments and blank
/// lines. Only the public keys are ever shown (`Debug`, errors).
#[derive(Clone)]
pub struct Identities {
    keys: Vec<(x25519::Identity, String)>,
}

impl Identities {
    /// Parses an identity file. Fails on any line that is neither blank, a
    /// comment, nor an X25519 identity (plugin and SSH identities are not
    /// supported), naming the line by number only.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = x25519::Identity::from_str(line)
                .map_err(|e| Error::InvalidIdentity { line: i + 1, source: KeyError(e) })?;
            let public = identity.to_public().to_string();
            keys.push((identity, public));
        }
        if keys.is_empty() {
            return Err(Error::NoIdentities);
        }
        Ok(Identities { keys })
    }

    /// The public keys (age recipients) of these identities, in file order.
    pub fn public_keys(&self) -> Vec<String> {
        self.keys.iter().map(|(_, public)| public.clone()).collect()
    }

    /// Unwraps the data key from the first stanza one of the identities opens:
    /// stanzas whose recipient is one of ours first, then the rest (the
    /// `recipient` field is only a label; the age header decides).
    pub(crate) fn unwrap_data_key(&self, stanzas: &[AgeStanza]) -> Result<DataKey, Error> {
        let ours: Vec<&str> = self.keys.iter().map(|(_, p)| p.as_str()).collect();
        let (matching, others): (Vec<&AgeStanza>, Vec<&AgeStanza>) =
            stanzas.iter().partition(|s| ours.contains(&s.recipient.as_str()));
        let mut last_error = None;
        for stanza in matching.into_iter().chain(others) {
            let decryptor = match age::Decryptor::new_buffered(ArmoredReader::new(stanza.enc.as_bytes())) {
                Ok(d) => d,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let identities = self.keys.iter().map(|(id, _)| id as &dyn age::Identity);
            let mut reader = match decryptor.decrypt(identities) {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let mut plain = Zeroizing::new(Vec::new());
            reader
                .read_to_end(&mut plain)
                .map_err(|source| Error::DataKey { recipient: stanza.recipient.clone(), source: Box::new(source) })?;
            return DataKey::from_bytes(&plain).ok_or_else(|| Error::DataKey {
                recipient: stanza.recipient.clone(),
                source: format!("expected a 32-byte key, found {} bytes", plain.len()).into(),
            });
        }
        Err(Error::NoMatchingKey {
            recipients: stanzas.iter().map(|s| s.recipient.clone()).collect(),
            tried: self.public_keys(),
            source: last_error,
        })
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities").field("public_keys", &self.public_keys()).finish()
    }
}

/// Parses age X25519 recipients (`age1…`), refusing anything else.
pub(crate) fn parse_recipients(recipients: &[&str]) -> Result<Vec<(x25519::Recipient, String)>, Error> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    recipients
        .iter()
        .map(|r| {
            let r = r.trim();
            x25519::Recipient::from_str(r).map(|parsed| (parsed, r.to_owned())).map_err(|e| {
                // Only something shaped like a public key is echoed: a secret
                // key or a value pasted by mistake must not reach a log.
                let shown = if r.starts_with("age1") && r.len() <= 100 && r.chars().all(|c| c.is_ascii_alphanumeric()) {
                    r.to_owned()
                } else {
                    "(not an age1… public key; not shown)".to_owned()
                };
                Error::InvalidRecipient { recipient: shown, source: KeyError(e) }
            })
        })
        .collect()
}

/// Wraps the data key for one recipient as an armored age file, as SOPS
/// does (one age file per recipient).
pub(crate) fn wrap_data_key(key: &DataKey, recipient: &x25519::Recipient, name: &str) -> Result<String, Error> {
    let wrap_error =
        |source: Box<dyn std::error::Error + Send + Sync>| Error::Wrap { recipient: name.to_owned(), source };
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| wrap_error(Box::new(e)))?;
    let mut out = Vec::new();
    let armored = ArmoredWriter::wrap_output(&mut out, ArmorFormat::AsciiArmor).map_err(|e| wrap_error(Box::new(e)))?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| wrap_error(Box::new(e)))?;
    writer.write_all(key.as_bytes()).map_err(|e| wrap_error(Box::new(e)))?;
    writer.finish().and_then(|armored| armored.finish()).map_err(|e| wrap_error(Box::new(e)))?;
    let mut text = String::from_utf8(out).expect("age armor is ASCII");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}
