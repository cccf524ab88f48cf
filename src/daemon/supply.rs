//! The repository as a supply chain, before an evaluation: the age keys SOPS files decrypt with,
//! and the signatures a head must carry.
//!
//! ```text
//!   decryption.age_key_files, decryption.secret ──> Keys (read for every evaluation)
//!   repository.verify + last good revision ──> verify::check ──> ok: evaluate
//!                                                             └─> refused: EvaluateError::Unverified
//!                                                                 (logged, /readyz and the view's
//!                                                                 problems, an error status)
//! ```

use crate::daemon::store::Store as _;
use std::path::Path;

use tracing::info;

use super::Shared;
use super::evaluate::EvaluateError;
use super::management::Management;
use crate::config::{Config, Verify};
use crate::source::sops::Keys;
use crate::verify::{self, Failure};

/// Where `/readyz`, the view and `strata status` show a head that is refused.
pub const SIGNATURES: &str = "signatures";
/// Where they show age keys that cannot be read.
pub const DECRYPTION: &str = "decryption";

/// The age identities of `decryption`: its files, and in Kubernetes mode its Secret.
pub fn keys(config: &Config) -> Result<Keys, String> {
    let decryption = &config.decryption;
    let mut texts = Vec::new();
    for file in &decryption.age_key_files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "decryption.age_key_files: cannot read {}: {e} (create it with age-keygen -o FILE, readable by strata only)",
                file.display()
            )
        })?;
        texts.push((file.display().to_string(), zeroize::Zeroizing::new(text)));
    }
    if let Some(name) = &decryption.secret {
        let mgmt = Management::current()
            .ok_or_else(|| format!("decryption.secret `{name}`: not connected to the management cluster"))?;
        texts.extend(mgmt.age_keys(name)?);
    }
    Keys::parse(&texts).map_err(|e| format!("decryption: {e}"))
}

/// Verifies `head` as `repository.verify` says, since the last good revision; a refusal rejects
/// it. Says what it found in the log, and keeps a refusal among the problems `/readyz` and the
/// view show until a head verifies. On the evaluation's blocking thread.
pub fn verify(shared: &Shared, config: &Verify, git_dir: &Path, head: &str) -> Result<(), EvaluateError> {
    let since = shared
        .stored("read the revision", crate::daemon::store::wait(shared.store.revision()))
        .flatten()
        .and_then(|r| r.last_good);
    match verify::check(config, git_dir, head, since.as_deref()) {
        Ok(signed) => {
            shared.network.recovered(SIGNATURES);
            if let Some(first) = signed.first() {
                let v = &first.verified;
                info!(
                    revision = %head,
                    commits = signed.len(),
                    method = %v.method,
                    signer = %v.signer,
                    key = %v.fingerprint,
                    "Signatures verified."
                );
            }
            Ok(())
        }
        Err(Failure::Refused(refusal)) => {
            shared.network.failed(SIGNATURES, &format!("head {} not evaluated: {refusal}", short(head)));
            Err(EvaluateError::Unverified { revision: head.to_string(), refusal: Box::new(refusal) })
        }
        Err(other) => {
            shared.network.failed(SIGNATURES, &other.to_string());
            Err(EvaluateError::Host { revision: head.to_string(), message: other.to_string() })
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
