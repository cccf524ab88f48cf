//! The file formats SOPS knows, and which of them this crate handles.

use std::fmt;
use std::path::Path;

use crate::Error;

/// The format of a SOPS file, which decides how its values are found and how
/// its `sops` metadata is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML: a mapping at the top of each document, metadata under `sops`.
    Yaml,
    /// JSON: an object at the top, metadata under `sops`.
    Json,
    /// dotenv: `KEY=value` lines, metadata flattened into `sops_*` keys.
    Dotenv,
    /// SOPS' "binary" store: any file, kept as one string under `data` of a
    /// JSON envelope with a `sops` key.
    Binary,
}

impl Format {
    /// The format SOPS itself would pick for `path`, by extension: `.yaml`
    /// and `.yml`, `.json`, `.env` (also a file named `.env`), anything else
    /// binary. INI files (`.ini`) are refused with [`Error::UnsupportedFormat`]:
    /// SOPS' INI store has no place in a Kubernetes repository and this crate
    /// does not implement it.
    pub fn from_path(path: &Path) -> Result<Format, Error> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Ok(Format::Yaml)
        } else if name.ends_with(".json") {
            Ok(Format::Json)
        } else if name.ends_with(".env") {
            Ok(Format::Dotenv)
        } else if name.ends_with(".ini") {
            Err(Error::UnsupportedFormat { format: "ini" })
        } else {
            Ok(Format::Binary)
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Dotenv => "dotenv",
            Format::Binary => "binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
