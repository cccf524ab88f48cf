//! What every section's step shares: the file's name for diagnostics, its directory for relative
//! paths, the diagnostics found so far, and the checks several sections make the same way
//! (durations, TLS keys).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Tls, parse_duration};
use crate::diag::{Code, Diagnostic, Diagnostics};

/// One reading of strata.yaml: each section's step takes it, returns its settings and pushes
/// its diagnostics here.
pub(super) struct Reader<'a> {
    /// The file as diagnostics name it.
    pub file: &'a str,
    /// The file's directory: relative paths are relative to it.
    pub base: &'a Path,
    pub diags: Diagnostics,
}

impl<'a> Reader<'a> {
    /// A path as written, made relative to the file's directory. A closure of its own, so a step
    /// may hold it while it pushes diagnostics.
    pub fn resolver(&self) -> impl Fn(&str) -> PathBuf + Copy + 'a {
        let base = self.base;
        // `components` drops the `.` of `./state`, so paths in messages read as written.
        move |p: &str| -> PathBuf {
            if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p).components().collect() }
        }
    }

    /// A setting that is not what it should be, at `line` of the file: `error[schema]`.
    pub fn schema(&mut self, line: usize, message: impl Into<String>, help: &str) {
        self.diags.push(Diagnostic::new(Code::Schema, message).in_file(self.file).at_line(line).help(help));
    }

    /// A duration setting, or its default with a diagnostic when it does not parse.
    pub fn duration(&mut self, value: &Option<Spanned<String>>, what: &str, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(&v.value).unwrap_or_else(|| {
                let line = v.referenced.line() as usize;
                self.schema(
                    line,
                    format!("{what} `{}` is not a duration", v.value),
                    "write durations like 90s, 5m or 1h",
                );
                default
            }),
        }
    }

    /// The TLS keys of `section`, checked: a certificate needs its key, and trusting `ca_file`
    /// alone needs a `ca_file`.
    pub fn tls(&mut self, line: usize, section: &str, raw: RawTls) -> Tls {
        let resolve = self.resolver();
        let tls = Tls {
            ca_file: raw.ca_file.as_deref().map(resolve),
            system_roots: raw.system_roots.unwrap_or(true),
            client_cert_file: raw.client_cert_file.as_deref().map(resolve),
            client_key_file: raw.client_key_file.as_deref().map(resolve),
        };
        if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
            self.diags.push(
                Diagnostic::new(Code::Schema, format!("{section}: client_cert_file and client_key_file go together"))
                    .in_file(self.file)
                    .at_line(line)
                    .help("give both PEM files: the client certificate (with its chain) and its private key"),
            );
        }
        if !tls.system_roots && tls.ca_file.is_none() {
            self.diags.push(
                Diagnostic::new(
                    Code::Schema,
                    format!("{section}: system_roots: false trusts nothing without a ca_file"),
                )
                .in_file(self.file)
                .at_line(line)
                .help("set ca_file to the PEM bundle of the CAs to trust, or drop system_roots: false"),
            );
        }
        tls
    }
}

/// TLS keys, the same in `repository` and `status`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub ca_file: Option<String>,
    pub system_roots: Option<bool>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

pub(super) fn yes() -> bool {
    true
}
