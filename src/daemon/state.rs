//! The states the daemon records for a cluster and for the revision it follows, as the store
//! keeps them and the API, the CLI and the status view show them (lowercase words on the wire and
//! in the database, so the JSON API is the same as when they were strings).

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Defines a state enum with its one spelling, used by serde, SQLite and `Display` alike.
macro_rules! state {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every state, in the order declared (the ClusterState CRD's enums are made of them).
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Ordered by name, as the fleet page sorts them.
        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("`{text}` is not a {} state", stringify!($name)).into())
                })
            }
        }
    };
}

state! {
    /// Where a cluster's reconciliation stands.
    Sync {
        /// Known, never applied by this daemon.
        New = "new",
        Applying = "applying",
        /// Applied and healthy.
        Applied = "applied",
        /// Applied; some objects did not become healthy in time.
        Unhealthy = "unhealthy",
        /// The apply failed (unreachable, rejected object); retried with backoff.
        Failed = "failed",
        /// The revision does not render for this cluster, or rendering it crashed; it keeps
        /// what it runs.
        Error = "error",
        /// The cluster file left the repository.
        Removed = "removed",
    }
}

state! {
    /// How the cluster's workloads are doing after the last apply.
    Health {
        Ready = "ready",
        Progressing = "progressing",
        Failed = "failed",
        Unknown = "unknown",
    }
}

state! {
    /// What the daemon made of the last revision it evaluated.
    Verdict {
        /// It loaded; every cluster was decided on it.
        Loaded = "loaded",
        /// It does not load (or evaluating it crashed): clusters keep what they run.
        Rejected = "rejected",
    }
}

/// The revision the daemon follows: the head it last evaluated, what came of it, and the last
/// revision that loaded (which keeps serving while a newer one is rejected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionState {
    pub head: String,
    pub verdict: Verdict,
    /// Why it was rejected: the diagnostics, one per line.
    pub message: Option<String>,
    /// Unix seconds.
    pub at: i64,
    pub last_good: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_lowercase_spelling_everywhere() {
        assert_eq!(serde_json::to_string(&Sync::Unhealthy).unwrap(), "\"unhealthy\"");
        assert_eq!(serde_json::from_str::<Health>("\"progressing\"").unwrap(), Health::Progressing);
        assert_eq!(Sync::parse("removed"), Some(Sync::Removed));
        assert_eq!(Sync::parse("Removed"), None);
        let mut all = vec![Sync::New, Sync::Applied, Sync::Failed, Sync::Error];
        all.sort();
        assert_eq!(all, [Sync::Applied, Sync::Error, Sync::Failed, Sync::New], "by name");
    }
}
