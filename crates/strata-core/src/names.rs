//! Names, groups and tags: what strata accepts as identifiers, at the bottom of the library so
//! that the loader, the renderer, the redactor and the targets share one reading of them.
//!
//! Object identities are checked as kube-apiserver checks them: an apiVersion, a kind, a name and a
//! namespace in, the rule they break (if any) out.
//!
//! These strings become URL path segments (the kube target) and file names (the directory
//! target), so a name the API server would refuse must never get that far. The rules are those of
//! k8s.io/apimachinery (`IsDNS1123Subdomain`, `IsDNS1123Label`, `IsDNS1035Label`,
//! `IsValidPathSegmentName`) and of the kinds' own validation in kube-apiserver: most objects'
//! names are DNS-1123 subdomains, a Namespace's is a DNS-1123 label, a Service's a DNS-1035 label,
//! the RBAC kinds' any path segment; a CustomResourceDefinition is named `<plural>.<group>`, a
//! CronJob's name leaves room for the Jobs it creates. A kind is what a CRD may declare
//! (lowercased, a DNS-1035 label); a group is a DNS-1123 subdomain and a version a DNS-1035 label.

use std::fmt;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// A CronJob's Jobs are named `<cronjob>-<11 characters>`, which must still be a DNS label.
const CRONJOB_NAME_MAX: usize = 52;

/// The rule a string was checked against, with the API server's wording of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
    CronJobName,
    CrdName,
    Kind,
    Group,
    Version,
    /// `/v1`: the core group spelled with an empty prefix.
    CoreGroup,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Dns1123Subdomain => {
                "a DNS-1123 subdomain: at most 253 characters, lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            }
            Rule::Dns1123Label => {
                "a DNS-1123 label: at most 63 characters, lowercase letters, digits and '-', starting and ending with a letter or digit"
            }
            Rule::Dns1035Label => {
                "a DNS-1035 label: at most 63 characters, lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
            }
            Rule::PathSegment => "a path segment: not empty, not `.` or `..`, and without '/' or '%'",
            Rule::CronJobName => "a DNS-1123 subdomain of at most 52 characters (its Jobs append 11)",
            Rule::CrdName => "`<spec.names.plural>.<spec.group>` of the definition",
            Rule::Kind => {
                "an identifier: at most 63 ASCII letters, digits and '-', starting with a letter and ending with a letter or digit"
            }
            Rule::Group => "empty (the core group) or a DNS-1123 subdomain",
            Rule::Version => "a DNS-1035 label such as v1 or v1beta1",
            Rule::CoreGroup => "the core group's version alone, without a slash: `v1`",
        })
    }
}

pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

pub fn is_path_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '%'])
}

/// CRDs may give kinds mixed case; lowercased, a kind is a DNS-1035 label.
pub fn is_kind(s: &str) -> bool {
    s.is_ascii() && is_dns1035_label(&s.to_ascii_lowercase())
}

/// The rule `metadata.name` of an object of this group and kind must follow.
pub fn name_rule(group: &str, kind: &str) -> Rule {
    match (group, kind) {
        ("", "Namespace") => Rule::Dns1123Label,
        ("", "Service") => Rule::Dns1035Label,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding") => {
            Rule::PathSegment
        }
        ("batch", "CronJob") => Rule::CronJobName,
        _ => Rule::Dns1123Subdomain,
    }
}

pub fn satisfies(rule: Rule, s: &str) -> bool {
    match rule {
        Rule::Dns1123Subdomain | Rule::CrdName => is_dns1123_subdomain(s),
        Rule::Dns1123Label => is_dns1123_label(s),
        Rule::Dns1035Label => is_dns1035_label(s),
        Rule::PathSegment => is_path_segment(s),
        Rule::CronJobName => s.len() <= CRONJOB_NAME_MAX && is_dns1123_subdomain(s),
        Rule::Kind => is_kind(s),
        Rule::Group => s.is_empty() || is_dns1123_subdomain(s),
        Rule::Version => is_dns1035_label(s),
        Rule::CoreGroup => !s.starts_with('/'),
    }
}

/// What is wrong with an object's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field: `apiVersion`, `kind`, `metadata.name`, `metadata.namespace`.
    pub field: &'static str,
    pub value: String,
    pub rule: Rule,
}

/// Checks an object's apiVersion, kind, name and (for a namespaced object) namespace.
/// `crd` carries a CustomResourceDefinition's `spec.names.plural` and `spec.group`.
pub fn check_identity(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    crd: Option<(&str, &str)>,
) -> Result<(), Invalid> {
    let invalid = |field, value: &str, rule| Err(Invalid { field, value: value.to_string(), rule });
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    // The API server reads `/v1` as the core group's `v1`; strata would not know it for one (a
    // Secret whose values a plan would show), so it is written one way only.
    if api_version.contains('/') && group.is_empty() {
        return invalid("apiVersion", api_version, Rule::CoreGroup);
    }
    if !satisfies(Rule::Group, group) {
        return invalid("apiVersion", api_version, Rule::Group);
    }
    if !satisfies(Rule::Version, version) {
        return invalid("apiVersion", api_version, Rule::Version);
    }
    if !satisfies(Rule::Kind, kind) {
        return invalid("kind", kind, Rule::Kind);
    }
    let rule = name_rule(group, kind);
    // Every name is also a path segment: the generic registry checks that for every kind.
    if !satisfies(rule, name) || !is_path_segment(name) {
        return invalid("metadata.name", name, rule);
    }
    if group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition" {
        let expected = crd.map(|(plural, group)| format!("{plural}.{group}"));
        if expected.as_deref() != Some(name) {
            return invalid("metadata.name", name, Rule::CrdName);
        }
    }
    if let Some(namespace) = namespace
        && !is_dns1123_label(namespace)
    {
        return invalid("metadata.namespace", namespace, Rule::Dns1123Label);
    }
    Ok(())
}

/// `apps/v1` → `apps`; `v1` → `` (the core group).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Whether `tags` match `filter`: a whole `key:value` tag, or any tag with that key when the
/// filter has no `:` (the CLI, the API's clients and the status view all filter this way).
pub fn has_tag<S: AsRef<str>>(tags: &[S], filter: &str) -> bool {
    tags.iter()
        .map(AsRef::as_ref)
        .any(|tag| tag == filter || (!filter.contains(':') && tag.split(':').next() == Some(filter)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apimachinery_rules() {
        for ok in ["a", "a-b", "0a", "a.b-c.d", &"a".repeat(63)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in
            ["", "A", "a_b", "-a", "a-", "a..b", ".a", "a/b", "ä", &"a".repeat(254), &format!("{}.a", "a".repeat(64))]
        {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(is_dns1123_label("0ab") && !is_dns1123_label("a.b") && !is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1035_label("ab0") && !is_dns1035_label("0ab"));
        for ok in ["system:controller:x", "a b", "ÄÖ", "..."] {
            assert!(is_path_segment(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a%2F"] {
            assert!(!is_path_segment(bad), "{bad}");
        }
        assert!(is_kind("ConfigMap") && is_kind("My-Kind2") && !is_kind("2Kind") && !is_kind("Kind.x"));
        assert!(!is_kind("Dep/loyment") && !is_kind("Ünicode") && !is_kind(""));
    }

    #[test]
    fn kinds_choose_their_name_rule() {
        assert_eq!(check_identity("rbac.authorization.k8s.io/v1", "ClusterRole", "system:reader", None, None), Ok(()));
        let err = check_identity("v1", "ConfigMap", "system:reader", Some("a"), None).unwrap_err();
        assert_eq!((err.field, err.rule), ("metadata.name", Rule::Dns1123Subdomain));
        let err = check_identity("v1", "Service", "1st", Some("a"), None).unwrap_err();
        assert_eq!(err.rule, Rule::Dns1035Label);
        let err = check_identity("v1", "Namespace", "a.b", None, None).unwrap_err();
        assert_eq!(err.rule, Rule::Dns1123Label);
        let err = check_identity("batch/v1", "CronJob", &"a".repeat(53), Some("a"), None).unwrap_err();
        assert_eq!(err.rule, Rule::CronJobName);
        let err = check_identity("rbac.authorization.k8s.io/v1", "Role", "..", Some("a"), None).unwrap_err();
        assert_eq!(err.rule, Rule::PathSegment);
    }

    #[test]
    fn namespaces_groups_versions_and_crds() {
        let err = check_identity("v1", "ConfigMap", "x", Some("../../etc"), None).unwrap_err();
        assert_eq!((err.field, err.rule), ("metadata.namespace", Rule::Dns1123Label));
        let err = check_identity("../v1", "ConfigMap", "x", Some("a"), None).unwrap_err();
        assert_eq!((err.field, err.rule), ("apiVersion", Rule::Group));
        let err = check_identity("apps/v1/../x", "Deployment", "x", Some("a"), None).unwrap_err();
        assert_eq!(err.field, "apiVersion");
        let err = check_identity("apps/", "Deployment", "x", Some("a"), None).unwrap_err();
        assert_eq!(err.rule, Rule::Version);
        let err = check_identity("/v1", "Secret", "x", Some("a"), None).unwrap_err();
        assert_eq!((err.field, err.rule), ("apiVersion", Rule::CoreGroup));
        let crd = "apiextensions.k8s.io/v1";
        assert!(
            check_identity(crd, "CustomResourceDefinition", "ws.example.com", None, Some(("ws", "example.com")))
                .is_ok()
        );
        let err =
            check_identity(crd, "CustomResourceDefinition", "other.example.com", None, Some(("ws", "example.com")))
                .unwrap_err();
        assert_eq!(err.rule, Rule::CrdName);
    }
}
