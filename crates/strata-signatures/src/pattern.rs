//! OpenSSH patterns, as ssh_config(5) "PATTERNS" describes them: `*` matches
//! any run of characters, `?` exactly one; a pattern-list is comma-separated
//! and a pattern starting with `!` negates. Used for the principals and
//! `namespaces=` fields of `allowed_signers`. Matching is case-sensitive,
//! as ssh-keygen's is for both.

/// Whether `text` matches the wildcard `pattern`.
pub(crate) fn matches(text: &str, pattern: &str) -> bool {
    let (t, p) = (text.as_bytes(), pattern.as_bytes());
    let (mut ti, mut pi) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The verdict of a pattern-list on a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListMatch {
    /// A positive pattern matched and no negated one did.
    Yes,
    /// Nothing matched.
    No,
    /// A negated pattern matched: refused whatever else matches.
    Negated,
}

/// OpenSSH's `match_pattern_list`.
pub(crate) fn match_list(text: &str, list: &str) -> ListMatch {
    let mut verdict = ListMatch::No;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if matches(text, pattern) {
            if negated {
                return ListMatch::Negated;
            }
            verdict = ListMatch::Yes;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("alice@example.com", "*@example.com"));
        assert!(matches("alice@example.com", "alice@*"));
        assert!(matches("alice@example.com", "a?ice@example.co?"));
        assert!(matches("alice@example.com", "*"));
        assert!(matches("", "*"));
        assert!(matches("aaa", "*a*a*a*"));
        assert!(!matches("aa", "*a*a*a*"));
        assert!(!matches("alice@example.com", "*@example.org"));
        assert!(!matches("Alice@example.com", "alice@*"));
        assert!(!matches("alice", "alice?"));
        assert!(matches("git", "git"));
        assert!(!matches("gitx", "git"));
    }

    #[test]
    fn pattern_lists_with_negation() {
        assert_eq!(match_list("git", "file,git"), ListMatch::Yes);
        assert_eq!(match_list("git", "file"), ListMatch::No);
        assert_eq!(match_list("bob@x.org", "*@x.org,!bob@*"), ListMatch::Negated);
        assert_eq!(match_list("eve@x.org", "*@x.org,!bob@*"), ListMatch::Yes);
        assert_eq!(match_list("git", "!file"), ListMatch::No);
    }
}
