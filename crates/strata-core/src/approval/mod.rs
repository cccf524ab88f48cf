//! Approval rules: who may approve which pending updates, and how many people must.
//!
//! ```text
//!   approvals/<name>.yaml ──load──> Rule { profiles, tags, waves, approvers, required }       (load)
//!   the rules in force (the revision the cluster runs), the cluster (profile, tags, wave),
//!   the approvals of the pending revision, the change's authors ──> judge ──> Verdict     (here)
//! ```
//!
//! A rule applies to a cluster when every selector it gives matches: its profile is one of
//! `profiles`, it has every one of `tags`, its rollout wave is one of `waves`. Every rule that
//! applies must be met: `required` distinct people it admits (by `approvers.users`, or a group
//! in `approvers.groups`) approved the pending revision. People are identities — a named API
//! token is who it is, the shared token is one identity whatever name its holders give — and
//! no author of the change counts: the author of any commit between the revision the cluster
//! runs and the pending one (merges bring their branches' commits with them). Clusters no rule applies to need one approval by
//! anyone who may act, as before.
//!
//! The rules in force for an update are those of the revision the cluster runs, not those of
//! the commit being approved: a commit that changes the rules is governed by the rules before it.
//! Everything here is pure.

use serde::Serialize;

/// The directory of approval rules in a repository.
pub const APPROVALS_DIR: &str = "approvals";

/// One rule, as loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// `prod` of `approvals/prod.yaml`, then `/` and the rule's `name` or its number from 1.
    pub name: String,
    pub file: String,
    pub line: usize,
    pub profiles: Vec<String>,
    pub tags: Vec<String>,
    pub waves: Vec<String>,
    pub groups: Vec<String>,
    pub users: Vec<String>,
    pub required: usize,
}

/// Who approves: the identity's name (a token's, the provider's user name) and its groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person<'a> {
    pub identity: &'a str,
    pub groups: &'a [String],
}

/// An author of a commit of the change being approved, as Git records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    /// Whether `identity` is this author: the name, the email, or the email's local part.
    pub fn is(&self, identity: &str) -> bool {
        let identity = identity.trim();
        let local = self.email.split('@').next().unwrap_or("");
        [self.name.as_str(), self.email.as_str(), local]
            .iter()
            .any(|a| !a.is_empty() && a.eq_ignore_ascii_case(identity))
    }
}

/// The cluster a pending update is for, as rules select it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub profile: &'a str,
    pub tags: &'a [String],
    /// Its wave in the rollout that governs its change, if one does.
    pub wave: Option<&'a str>,
}

impl Rule {
    /// `prod/two-sre (approvals/prod.yaml:7)`.
    pub fn id(&self) -> String {
        format!("{} ({}:{})", self.name, self.file, self.line)
    }

    /// `groups sre, platform; users carol`.
    pub fn approvers(&self) -> String {
        let mut parts = Vec::new();
        if !self.groups.is_empty() {
            parts.push(format!("group{} {}", if self.groups.len() == 1 { "" } else { "s" }, self.groups.join(", ")));
        }
        if !self.users.is_empty() {
            parts.push(format!("user{} {}", if self.users.len() == 1 { "" } else { "s" }, self.users.join(", ")));
        }
        parts.join("; ")
    }

    pub fn applies(&self, target: &Target) -> bool {
        (self.profiles.is_empty() || self.profiles.iter().any(|p| p == target.profile))
            && self.tags.iter().all(|t| crate::names::has_tag(target.tags, t))
            && (self.waves.is_empty() || target.wave.is_some_and(|w| self.waves.iter().any(|x| x == w)))
    }

    pub fn admits(&self, person: &Person) -> bool {
        self.users.iter().any(|u| u == person.identity) || self.groups.iter().any(|g| person.groups.contains(g))
    }
}

/// The rules of `rules` that apply to `target`.
pub fn applying<'r>(rules: &'r [Rule], target: &Target) -> Vec<&'r Rule> {
    rules.iter().filter(|r| r.applies(target)).collect()
}

/// An approval given, as the rules count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    pub identity: String,
    pub groups: Vec<String>,
}

/// How a pending update stands against the rules that apply to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No rule applies: one approval by anyone who may act.
    Unruled { approved: bool },
    /// Every rule applying is met.
    Met,
    /// Some are not: for each, how many more people it needs, who counted, and who may still.
    Needs(Vec<Missing>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub rule: String,
    pub more: usize,
    pub counted: Vec<String>,
    pub approvers: String,
}

impl Verdict {
    pub fn approved(&self) -> bool {
        matches!(self, Verdict::Unruled { approved: true } | Verdict::Met)
    }

    /// `needs 1 more approval under rule prod/two-sre (group sre), approved by ci` — what a
    /// pending update says while it waits.
    pub fn still(&self) -> Option<String> {
        let Verdict::Needs(missing) = self else { return None };
        let parts: Vec<String> = missing
            .iter()
            .map(|m| {
                let by = if m.counted.is_empty() {
                    String::new()
                } else {
                    format!(", approved by {}", m.counted.join(", "))
                };
                format!(
                    "needs {} more approval{} under rule {} ({}){by}",
                    m.more,
                    if m.more == 1 { "" } else { "s" },
                    m.rule,
                    m.approvers
                )
            })
            .collect();
        Some(parts.join("; "))
    }
}

/// Whether `identity` is one of `authors`.
fn wrote(authors: &[Author], identity: &str) -> bool {
    authors.iter().any(|a| a.is(identity))
}

/// Judges the approvals `given` of one pending update against the rules that apply to it.
/// Approvals by one of the change's `authors` and a second approval by one identity do not count.
pub fn judge(applying: &[&Rule], given: &[Given], authors: &[Author]) -> Verdict {
    if applying.is_empty() {
        return Verdict::Unruled { approved: !given.is_empty() };
    }
    let mut missing = Vec::new();
    for rule in applying {
        let mut counted: Vec<String> = Vec::new();
        for g in given {
            let person = Person { identity: &g.identity, groups: &g.groups };
            if rule.admits(&person) && !wrote(authors, &g.identity) && !counted.contains(&g.identity) {
                counted.push(g.identity.clone());
            }
        }
        if counted.len() < rule.required {
            missing.push(Missing {
                rule: rule.name.clone(),
                more: rule.required - counted.len(),
                counted,
                approvers: rule.approvers(),
            });
        }
    }
    if missing.is_empty() { Verdict::Met } else { Verdict::Needs(missing) }
}

/// Why `person` may not approve an update the `applying` rules govern (given so far: `given`):
/// none of the rules still waiting admits them, they wrote a commit of the change, or they
/// approved it already. `None` when their approval counts.
pub fn refusal(applying: &[&Rule], given: &[Given], authors: &[Author], person: &Person) -> Option<String> {
    if applying.is_empty() {
        return None;
    }
    if wrote(authors, person.identity) {
        let rules: Vec<String> = applying.iter().map(|r| r.id()).collect();
        return Some(format!(
            "{} wrote a commit of this change, and an author's approval does not count (rule {}): another person must approve",
            person.identity,
            rules.join(", ")
        ));
    }
    if given.iter().any(|g| g.identity == person.identity) {
        return Some(format!(
            "{} approved this revision already; rule {} needs another person",
            person.identity,
            applying.iter().map(|r| r.id()).collect::<Vec<_>>().join(", ")
        ));
    }
    if applying.iter().any(|r| r.admits(person)) {
        return None;
    }
    let rules: Vec<String> =
        applying.iter().map(|r| format!("rule {}: approvers are {}", r.id(), r.approvers())).collect();
    Some(format!(
        "{} (groups: {}) may not approve this update: {}",
        person.identity,
        if person.groups.is_empty() { "none".to_string() } else { person.groups.join(", ") },
        rules.join("; ")
    ))
}

/// Why `person` may not promote a rollout wave whose clusters the `applying` rules govern (each
/// cluster's rules in force and the authors of its change): promoting releases those clusters'
/// change, so the person must be one every such rule admits and must not have written it. `None`
/// when they may. (`required` counts approvals of pending updates; a promotion is one person's.)
pub fn promotion_refusal<'r>(
    governed: impl IntoIterator<Item = (&'r [Rule], &'r [Author])>,
    wave: &str,
    person: &Person,
) -> Option<String> {
    let mut not_admitted: Vec<&Rule> = Vec::new();
    for (rules, authors) in governed {
        if !rules.is_empty() && wrote(authors, person.identity) {
            return Some(format!(
                "{} wrote a commit of the change wave {wave} releases, and rule {} governs it: another person must promote",
                person.identity,
                rules.iter().map(|r| r.id()).collect::<Vec<_>>().join(", ")
            ));
        }
        for rule in rules {
            if !rule.admits(person) && !not_admitted.iter().any(|r| r.name == rule.name) {
                not_admitted.push(rule);
            }
        }
    }
    if not_admitted.is_empty() {
        return None;
    }
    let rules: Vec<String> =
        not_admitted.iter().map(|r| format!("rule {}: approvers are {}", r.id(), r.approvers())).collect();
    Some(format!(
        "{} (groups: {}) may not promote wave {wave}: {}",
        person.identity,
        if person.groups.is_empty() { "none".to_string() } else { person.groups.join(", ") },
        rules.join("; ")
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rule(name: &str, tags: &[&str], groups: &[&str], users: &[&str], required: usize) -> Rule {
        Rule {
            name: name.into(),
            file: "approvals/prod.yaml".into(),
            line: 7,
            profiles: vec!["aws-profile".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            waves: vec![],
            groups: groups.iter().map(|t| t.to_string()).collect(),
            users: users.iter().map(|t| t.to_string()).collect(),
            required,
        }
    }

    fn given(identity: &str, groups: &[&str]) -> Given {
        Given { identity: identity.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn two_distinct_people_of_the_group_and_never_the_author() {
        let r = rule("prod/two-sre", &["env:prod"], &["sre"], &["carol"], 2);
        let tags = ["env:prod".to_string()];
        let prod = Target { profile: "aws-profile", tags: &tags, wave: None };
        let rules = [r.clone()];
        let applying = applying(&rules, &prod);
        assert_eq!(applying.len(), 1);
        assert!(applying_to_lab_is_empty(&rules));
        let author = Author { name: "Dana Doe".into(), email: "dana@example.com".into() };
        let sre = |who: &str| given(who, &["sre"]);
        assert_eq!(
            judge(&applying, &[], std::slice::from_ref(&author)).still().unwrap(),
            "needs 2 more approvals under rule prod/two-sre (group sre; user carol)"
        );
        let one = [sre("ci")];
        let v = judge(&applying, &one, std::slice::from_ref(&author));
        assert_eq!(
            v.still().unwrap(),
            "needs 1 more approval under rule prod/two-sre (group sre; user carol), approved by ci"
        );
        // The same identity twice, a person of another group, the author: none counts.
        let more = [sre("ci"), sre("ci"), given("dev", &["dev"]), sre("dana")];
        assert!(!judge(&applying, &more, std::slice::from_ref(&author)).approved());
        // Without knowing the author, dana counts; carol counts by name.
        assert!(judge(&applying, &more, &[]).approved());
        assert!(judge(&applying, &[sre("ci"), given("carol", &[])], std::slice::from_ref(&author)).approved());
        // No rule applies: one approval, as before.
        assert_eq!(judge(&[], &[], &[]), Verdict::Unruled { approved: false });
        assert!(judge(&[], &one, &[]).approved());
    }

    fn applying_to_lab_is_empty(rules: &[Rule]) -> bool {
        let lab = ["env:lab".to_string()];
        applying(rules, &Target { profile: "aws-profile", tags: &lab, wave: None }).is_empty()
    }

    #[test]
    fn a_wave_is_promoted_only_by_someone_every_rule_governing_its_clusters_admits() {
        let mut sre_rule = rule("prod/sre", &[], &["sre"], &[], 2);
        sre_rule.waves = vec!["prod".into()];
        let security = rule("prod/security", &[], &["security"], &[], 1);
        let both = [sre_rule.clone(), security];
        let only_sre = [sre_rule];
        let dana = [Author { name: "Dana".into(), email: "dana@example.com".into() }];
        let sre = ["sre".to_string()];
        let all = ["sre".to_string(), "security".to_string()];
        fn person<'a>(identity: &'a str, groups: &'a [String]) -> Person<'a> {
            Person { identity, groups }
        }
        // One cluster governed by the sre rule only: someone in sre may.
        let one = [(&only_sre[..], &dana[..])];
        assert_eq!(promotion_refusal(one, "prod", &person("ops", &sre)), None);
        // Another cluster of the wave is governed by the security rule too.
        let two = [(&only_sre[..], &dana[..]), (&both[..], &[][..])];
        let why = promotion_refusal(two, "prod", &person("ops", &sre)).unwrap();
        assert_eq!(
            why,
            "ops (groups: sre) may not promote wave prod: rule prod/security (approvals/prod.yaml:7): approvers are group security"
        );
        assert_eq!(promotion_refusal(two, "prod", &person("lee", &all)), None);
        // The change's author may not, even in every group.
        assert!(promotion_refusal(two, "prod", &person("dana", &all)).unwrap().starts_with("dana wrote a commit"));
        // No rule governs the wave: anyone who may act.
        let none: Vec<Rule> = vec![];
        assert_eq!(promotion_refusal([(&none[..], &dana[..])], "prod", &person("dana", &[])), None);
    }

    #[test]
    fn refusals_name_the_rule_and_who_may() {
        let rules = [rule("prod/two-sre", &[], &["sre"], &[], 2)];
        let tags: [String; 0] = [];
        let applying = applying(&rules, &Target { profile: "aws-profile", tags: &tags, wave: None });
        let author = Author { name: "Dana".into(), email: "dana@example.com".into() };
        let dev = ["dev".to_string()];
        let sre = ["sre".to_string()];
        assert_eq!(
            refusal(&applying, &[], std::slice::from_ref(&author), &Person { identity: "bob", groups: &dev }).unwrap(),
            "bob (groups: dev) may not approve this update: rule prod/two-sre (approvals/prod.yaml:7): approvers are group sre"
        );
        assert!(
            refusal(&applying, &[], std::slice::from_ref(&author), &Person { identity: "dana", groups: &sre })
                .unwrap()
                .starts_with("dana wrote a commit of this change")
        );
        let given = [Given { identity: "ci".into(), groups: sre.to_vec() }];
        assert!(refusal(&applying, &given, &[], &Person { identity: "ci", groups: &sre }).unwrap().contains("already"));
        assert_eq!(refusal(&applying, &given, &[], &Person { identity: "ops", groups: &sre }), None);
        // Waves: a rule for a wave applies only to clusters in it.
        let mut canary = rules[0].clone();
        canary.waves = vec!["canary".into()];
        assert!(canary.applies(&Target { profile: "aws-profile", tags: &tags, wave: Some("canary") }));
        assert!(!canary.applies(&Target { profile: "aws-profile", tags: &tags, wave: Some("rest") }));
        assert!(!canary.applies(&Target { profile: "aws-profile", tags: &tags, wave: None }));
    }
}
