//! Which values SOPS encrypts: the `*_suffix`, `*_regex` and `*_comment_regex`
//! rules of the metadata, evaluated exactly as SOPS' `shouldBeEncrypted` does.

use regex::Regex;

use crate::error::Error;
use crate::text::Text;

/// The one rule a file may carry (SOPS refuses files with two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncryptionRule {
    /// Leave values whose path has a key ending with this suffix in cleartext
    /// (SOPS' default, with `_unencrypted`).
    UnencryptedSuffix(String),
    /// Encrypt only values whose path has a key ending with this suffix.
    EncryptedSuffix(String),
    /// Leave values whose path has a key matching this regex in cleartext.
    UnencryptedRegex(String),
    /// Encrypt only values whose path has a key matching this regex (Flux's
    /// usual `^(data|stringData)$`).
    EncryptedRegex(String),
    /// Leave values preceded by a comment matching this regex in cleartext.
    UnencryptedCommentRegex(String),
    /// Encrypt only values (and comments) preceded by a comment matching this regex.
    EncryptedCommentRegex(String),
}

impl Default for EncryptionRule {
    fn default() -> Self {
        EncryptionRule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.to_owned())
    }
}

pub(crate) const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

impl EncryptionRule {
    /// The metadata field the rule is stored in.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            EncryptionRule::UnencryptedSuffix(_) => "unencrypted_suffix",
            EncryptionRule::EncryptedSuffix(_) => "encrypted_suffix",
            EncryptionRule::UnencryptedRegex(_) => "unencrypted_regex",
            EncryptionRule::EncryptedRegex(_) => "encrypted_regex",
            EncryptionRule::UnencryptedCommentRegex(_) => "unencrypted_comment_regex",
            EncryptionRule::EncryptedCommentRegex(_) => "encrypted_comment_regex",
        }
    }

    pub(crate) fn value(&self) -> &str {
        match self {
            EncryptionRule::UnencryptedSuffix(s)
            | EncryptionRule::EncryptedSuffix(s)
            | EncryptionRule::UnencryptedRegex(s)
            | EncryptionRule::EncryptedRegex(s)
            | EncryptionRule::UnencryptedCommentRegex(s)
            | EncryptionRule::EncryptedCommentRegex(s) => s,
        }
    }

    pub(crate) fn from_field(field: &str, value: String) -> Option<Self> {
        Some(match field {
            "unencrypted_suffix" => EncryptionRule::UnencryptedSuffix(value),
            "encrypted_suffix" => EncryptionRule::EncryptedSuffix(value),
            "unencrypted_regex" => EncryptionRule::UnencryptedRegex(value),
            "encrypted_regex" => EncryptionRule::EncryptedRegex(value),
            "unencrypted_comment_regex" => EncryptionRule::UnencryptedCommentRegex(value),
            "encrypted_comment_regex" => EncryptionRule::EncryptedCommentRegex(value),
            _ => return None,
        })
    }

    pub(crate) const FIELDS: [&'static str; 6] = [
        "unencrypted_suffix",
        "encrypted_suffix",
        "unencrypted_regex",
        "encrypted_regex",
        "unencrypted_comment_regex",
        "encrypted_comment_regex",
    ];
}

/// A rule ready to be evaluated, plus `mac_only_encrypted`.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    pub(crate) rule: EncryptionRule,
    regex: Option<Regex>,
    pub(crate) mac_only_encrypted: bool,
}

impl Rules {
    pub(crate) fn new(rule: EncryptionRule, mac_only_encrypted: bool) -> Result<Self, Error> {
        let regex = match &rule {
            EncryptionRule::UnencryptedRegex(r)
            | EncryptionRule::EncryptedRegex(r)
            | EncryptionRule::UnencryptedCommentRegex(r)
            | EncryptionRule::EncryptedCommentRegex(r) => {
                Some(Regex::new(r).map_err(|source| Error::InvalidRegex { field: rule.field(), source })?)
            }
            _ => None,
        };
        Ok(Rules { rule, regex, mac_only_encrypted })
    }

    /// SOPS' `shouldBeEncrypted`: `path` holds the keys down to the value,
    /// `comments` the comments SOPS has on its stack, `is_comment` whether
    /// the value is itself a comment line.
    pub(crate) fn should_encrypt(&self, path: &[Text], comments: &[Vec<Text>], is_comment: bool) -> bool {
        let regex = self.regex.as_ref();
        match &self.rule {
            EncryptionRule::UnencryptedSuffix(s) => s.is_empty() || !path.iter().any(|k| k.ends_with(s.as_str())),
            EncryptionRule::EncryptedSuffix(s) => s.is_empty() || path.iter().any(|k| k.ends_with(s.as_str())),
            EncryptionRule::UnencryptedRegex(_) => {
                let re = regex.expect("compiled in new");
                !path.iter().any(|k| re.is_match(k))
            }
            EncryptionRule::EncryptedRegex(_) => {
                let re = regex.expect("compiled in new");
                path.iter().any(|k| re.is_match(k))
            }
            EncryptionRule::UnencryptedCommentRegex(_) => {
                let re = regex.expect("compiled in new");
                !comments.iter().flatten().any(|c| re.is_match(c))
            }
            EncryptionRule::EncryptedCommentRegex(_) => {
                let re = regex.expect("compiled in new");
                // The comment line that matches is itself left in cleartext:
                // for a comment, its own line (the last one pushed) is skipped.
                let last_level = comments.len().saturating_sub(1);
                let last_index = comments.last().map_or(0, |l| l.len().saturating_sub(1));
                comments.iter().enumerate().any(|(i, level)| {
                    level
                        .iter()
                        .enumerate()
                        .any(|(j, c)| !(is_comment && i == last_level && j == last_index) && re.is_match(c))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> Vec<Text> {
        keys.iter().map(|k| Text::from(*k)).collect()
    }

    #[test]
    fn suffix_applies_to_any_key_of_the_path() {
        let rules = Rules::new(EncryptionRule::default(), false).unwrap();
        assert!(rules.should_encrypt(&path(&["a", "b"]), &[], false));
        assert!(!rules.should_encrypt(&path(&["a_unencrypted", "b"]), &[], false));
        assert!(!rules.should_encrypt(&path(&["a", "b_unencrypted"]), &[], false));
    }

    #[test]
    fn encrypted_regex_encrypts_only_matching_paths() {
        let rules = Rules::new(EncryptionRule::EncryptedRegex("^(data|stringData)$".into()), false).unwrap();
        assert!(rules.should_encrypt(&path(&["stringData", "key"]), &[], false));
        assert!(!rules.should_encrypt(&path(&["metadata", "name"]), &[], false));
    }

    #[test]
    fn encrypted_comment_regex_skips_the_marker_itself() {
        let rules = Rules::new(EncryptionRule::EncryptedCommentRegex("sops:enc".into()), false).unwrap();
        let marker = vec![vec![Text::from(" sops:enc")]];
        assert!(!rules.should_encrypt(&[], &marker, true));
        assert!(rules.should_encrypt(&path(&["a"]), &marker, false));
        let two = vec![vec![Text::from(" sops:enc"), Text::from(" more")]];
        assert!(rules.should_encrypt(&[], &two, true));
        assert!(!rules.should_encrypt(&path(&["a"]), &[vec![]], false));
    }
}
