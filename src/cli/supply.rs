//! The repository as a supply chain, by hand: `strata secret encrypt|decrypt` (SOPS files with
//! age keys, without the sops binary) and `strata verify` (commit signatures, as the daemon
//! checks them).

use std::io::Write;
use std::path::{Path, PathBuf};

use strata::config::{Verify, VerifyMode};
use strata_sops::{EncryptOptions, EncryptionRule, Format};

use super::{Failure, load_config};
use crate::Cli;

fn format_of(file: &Path) -> Result<Format, Failure> {
    Format::from_path(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))
}

fn read(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))
}

/// Writes `bytes` to `out` (replacing it whole, by a rename), or to stdout.
fn write(out: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(|e| Failure::Internal(e.to_string()))
        }
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| Failure::Usage(format!("cannot write next to {}: {e}", path.display())))?;
            tmp.write_all(bytes).map_err(|e| Failure::Internal(e.to_string()))?;
            tmp.persist(path).map_err(|e| Failure::Usage(format!("cannot replace {}: {e}", path.display())))?;
            Ok(())
        }
    }
}

/// `strata secret encrypt FILE --age RECIPIENT…`: a SOPS file the sops tool reads.
pub fn encrypt(
    file: &Path,
    recipients: &[String],
    encrypted_regex: Option<&str>,
    in_place: bool,
    output: Option<&PathBuf>,
) -> Result<u8, Failure> {
    let format = format_of(file)?;
    let plain = zeroize::Zeroizing::new(read(file)?);
    let rule = encrypted_regex.map(|r| EncryptionRule::EncryptedRegex(r.to_string())).unwrap_or_default();
    let options = EncryptOptions { rule, mac_only_encrypted: false };
    let recipients: Vec<&str> = recipients.iter().map(|r| r.trim()).collect();
    let encrypted = strata_sops::encrypt(&plain, format, &recipients, &options)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let out = if in_place { Some(file) } else { output.map(PathBuf::as_path) };
    write(out, &encrypted)?;
    Ok(0)
}

/// `strata secret decrypt FILE`: checks that the keys strata would use open the file (and its
/// MAC holds); prints the plaintext only with `--output` or to a terminal-less stdout on request.
pub fn decrypt(cli: &Cli, file: &Path, show: bool, output: Option<&PathBuf>) -> Result<u8, Failure> {
    let format = format_of(file)?;
    let bytes = read(file)?;
    let shown = file.display().to_string();
    if !strata_sops::is_encrypted(&bytes, format) {
        return Err(Failure::Usage(format!("{shown}: not a SOPS file (no `sops` metadata)")));
    }
    let keys = super::keys(cli)?;
    let path = shown.replace('\\', "/");
    let plain = strata::source::sops::decrypt(&path, &bytes, &keys)
        .map_err(|failure| Failure::Invalid(strata::source::sops::diagnostic(&shown, &failure).into(), None))?;
    if show || output.is_some() {
        write(output.map(PathBuf::as_path), &plain)?;
    } else {
        let recipients = strata_sops::recipients(&bytes, format).unwrap_or_default();
        println!(
            "{shown}: decrypts, MAC verified ({} format, age recipients {}); --show prints the plaintext",
            format,
            recipients.join(", ")
        );
    }
    Ok(0)
}

/// `strata verify [--rev REV] [--since REV]`: whether the commit (and with `--since`, every
/// commit after that one) is signed by a key `repository.verify` allows.
pub fn verify(cli: &Cli, config: &Path, since: Option<&str>) -> Result<u8, Failure> {
    let config = load_config(config)?;
    let Some(verify) = config.repository.as_ref().and_then(|r| r.verify.clone()) else {
        return Err(Failure::Usage(format!(
            "{}: repository.verify is not set: nothing says which keys may sign (see docs/book/src/secrets.md, Signed commits)",
            config.file.display()
        )));
    };
    let verify = Verify { mode: if since.is_some() { VerifyMode::All } else { VerifyMode::Head }, ..verify };
    let rev = cli.rev.as_deref().unwrap_or("HEAD");
    match strata::verify::check(&verify, &cli.repo, rev, since) {
        Ok(signed) => {
            let mut out = String::new();
            for s in &signed {
                out.push_str(&format!("{s}\n"));
            }
            super::print(&out)?;
            Ok(0)
        }
        Err(strata::verify::Failure::Refused(refusal)) => {
            eprintln!("error: {refusal}");
            eprintln!("  the daemon does not evaluate this commit; it keeps the last verified revision");
            Ok(1)
        }
        Err(other) => Err(Failure::Usage(other.to_string())),
    }
}
