//! Grouping a plan's clusters by the change they get, so that a plan of 10,000 clusters reads
//! as the handful of distinct changes it is.
//!
//! Two changed clusters are in one group when they get the same change:
//! - the same reasons (upgrade, in-place edit + override, …), the same `from` and `to`
//!   (`profile@version`), and the same pending state and maintenance window (a pending update
//!   waits for someone to approve it, a windowed one for its window; an applied change does
//!   not, so they are never folded together);
//! - the same objects added, changed and removed (kind, namespace, name, layer), with the same
//!   lines added and removed in each object's diff.
//!
//! What belongs to one cluster is taken out before comparing: its own name, wherever it stands
//! on its own (the `strata.dev/cluster` label, a template's `{{ cluster.name }}`, a namespace
//! `c0042-apps`), reads as `<cluster>`. The diffs' context lines and hunk positions are left out
//! of the comparison: they show what is around a change (a region a cluster overrides, a label),
//! not the change. So a cluster whose overrides only sit next to a change shares its group,
//! and a cluster whose override changes the change itself (a replica count it pins, a value in a
//! changed line) is in a group of its own.
//!
//! A group shows the diff of its first member, with `<cluster>` for each member's own name; when
//! its members' context lines differ, it says so. Groups come largest first.

use std::collections::HashMap;

use super::{Action, ChangeKind, ClusterPlan, ObjectChange, Plan};

/// How a cluster's own name shows in a group's diff.
pub const PLACEHOLDER: &str = "<cluster>";

/// Clusters that get the same change.
pub struct Group<'p> {
    /// 1-based, in the order shown (largest group first).
    pub id: usize,
    /// In the plan's order (by name).
    pub members: Vec<&'p ClusterPlan>,
    /// An earlier group with the very same objects and diff (e.g. the same in-place edit on
    /// clusters that apply it and on clusters that hold it for approval).
    pub same_diff_as: Option<usize>,
    /// Whether the members' diffs are the same context lines included (else the group shows
    /// the first member's context).
    pub same_context: bool,
}

impl<'p> Group<'p> {
    pub fn first(&self) -> &'p ClusterPlan {
        self.members[0]
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The first member's object changes as the group shows them: with several members, each
    /// one's own name as [`PLACEHOLDER`].
    pub fn objects(&self) -> Vec<ObjectChange> {
        let first = self.first();
        if self.members.len() == 1 {
            return first.objects.clone();
        }
        first
            .objects
            .iter()
            .map(|o| ObjectChange { diff: own_name(&o.diff, &first.cluster, PLACEHOLDER), ..o.clone() })
            .collect()
    }

    /// An object's name as the group shows it (a namespace or name made of the cluster's name
    /// reads `<cluster>` when the group has several members).
    pub fn object_name(&self, o: &ObjectChange) -> String {
        let shown = o.id.to_string();
        if self.members.len() == 1 { shown } else { own_name(&shown, &self.first().cluster, PLACEHOLDER) }
    }
}

/// Whether `c` is part of a name (so a cluster's name inside a longer word is not its own).
fn word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// `text` with every stand-alone occurrence of `name` replaced by `with`: not preceded or
/// followed by a letter or digit (`c0042-apps` and `cluster: c0042` count, `c00421` does not).
pub fn own_name(text: &str, name: &str, with: &str) -> String {
    if name.is_empty() || !text.contains(name) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find(name) {
        let prev = rest[..at].chars().next_back().or(before);
        let next = rest[at + name.len()..].chars().next();
        out.push_str(&rest[..at]);
        if prev.is_some_and(word_char) || next.is_some_and(word_char) {
            out.push_str(name);
        } else {
            out.push_str(with);
        }
        before = name.chars().next_back();
        rest = &rest[at + name.len()..];
    }
    out.push_str(rest);
    out
}

/// What a group is keyed by, without the cluster's own name (`\0` stands for it: no diff of
/// YAML holds one) — see the module's documentation.
fn key(c: &ClusterPlan) -> String {
    use std::fmt::Write;
    let own = |text: &str| own_name(text, &c.cluster, "\0");
    let mut key = String::new();
    let reasons: Vec<&str> = c.reasons.iter().map(|r| r.label()).collect();
    let _ = write!(
        key,
        "{}\n{} {:?}\n{:?}\n{:?}\n",
        reasons.join("+"),
        c.pending,
        c.window,
        c.from.as_deref().map(own),
        c.to.as_deref().map(own)
    );
    for o in &c.objects {
        let _ = writeln!(key, "{:?} {} {}", o.action, own(&o.id.to_string()), o.layer);
        for line in o.diff.lines() {
            let changed = (line.starts_with('+') && !line.starts_with("+++ "))
                || (line.starts_with('-') && !line.starts_with("--- "));
            if changed {
                key.push_str(&own(line));
                key.push('\n');
            }
        }
    }
    key
}

/// The whole diff of `c` without its own name: members whose are equal show the same context.
fn full(c: &ClusterPlan) -> String {
    let mut all = String::new();
    for o in &c.objects {
        all.push_str(&own_name(&o.diff, &c.cluster, "\0"));
        all.push('\u{1}');
    }
    all
}

/// The objects and diff part of a key (what follows the reasons, pending state and versions).
fn objects_part(key: &str) -> &str {
    key.splitn(5, '\n').nth(4).unwrap_or("")
}

/// The changed clusters of `plan` in groups, largest first (ties in the plan's order).
pub fn groups(plan: &Plan) -> Vec<Group<'_>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut found: Vec<(String, Vec<&ClusterPlan>)> = Vec::new();
    for c in plan.changed() {
        let key = key(c);
        match index.get(&key) {
            Some(&i) => found[i].1.push(c),
            None => {
                index.insert(key.clone(), found.len());
                found.push((key, vec![c]));
            }
        }
    }
    // Stable: equal sizes keep the order of their first members.
    found.sort_by_key(|(_, members)| std::cmp::Reverse(members.len()));
    let mut seen_objects: HashMap<&str, usize> = HashMap::new();
    let mut groups = Vec::with_capacity(found.len());
    for (i, (key, members)) in found.iter().enumerate() {
        let id = i + 1;
        let objects = objects_part(key);
        let same_diff_as = if members[0].objects.is_empty() {
            None
        } else {
            match seen_objects.get(objects) {
                Some(&earlier) => Some(earlier),
                None => {
                    seen_objects.insert(objects, id);
                    None
                }
            }
        };
        let context = full(members[0]);
        let same_context = members[1..].iter().all(|m| full(m) == context);
        groups.push(Group { id, members: members.clone(), same_diff_as, same_context });
    }
    groups
}

/// The group id of every changed cluster.
pub fn ids<'p>(groups: &[Group<'p>]) -> HashMap<&'p str, usize> {
    groups.iter().flat_map(|g| g.members.iter().map(move |m| (m.cluster.as_str(), g.id))).collect()
}

/// `c0001, c0002, c0003, … c0640`: up to [`LISTED`] names in full, else the first three and the
/// last. `quote` wraps each name (backticks in markdown).
pub fn fold<'a>(names: impl ExactSizeIterator<Item = &'a str> + Clone, quote: &str) -> String {
    let n = names.len();
    let q = |name: &str| format!("{quote}{name}{quote}");
    if n <= LISTED {
        return names.map(q).collect::<Vec<_>>().join(", ");
    }
    let mut shown: Vec<String> = names.clone().take(3).map(q).collect();
    shown.push(format!("… {}", q(names.last().unwrap_or_default())));
    shown.join(", ")
}

/// Names shown in full up to this many.
pub const LISTED: usize = 5;

/// `+1 ~6 -0`.
pub fn counts(c: &ClusterPlan) -> String {
    format!("+{} ~{} -{}", c.count(Action::Added), c.count(Action::Changed), c.count(Action::Removed))
}

/// Whether the reasons are only `kind`.
pub fn only(c: &ClusterPlan, kind: ChangeKind) -> bool {
    c.reasons == [kind]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_name_is_replaced_where_it_stands_alone() {
        assert_eq!(own_name("strata.dev/cluster: c0042", "c0042", "<cluster>"), "strata.dev/cluster: <cluster>");
        assert_eq!(own_name("ns c0042-apps", "c0042", "X"), "ns X-apps");
        assert_eq!(own_name("c00421 and ac0042 and c0042", "c0042", "X"), "c00421 and ac0042 and X");
        assert_eq!(own_name("c0042c0042", "c0042", "X"), "c0042c0042");
        assert_eq!(own_name("nothing", "", "X"), "nothing");
        assert_eq!(own_name("é-c1-é", "c1", "X"), "é-X-é");
    }

    use crate::model::UpdatePolicy;
    use crate::render::object::ObjectId;

    /// A cluster whose Deployment `web` changes: `context` around the change, `changed` the
    /// replicas line it gets.
    fn cluster(name: &str, context: &str, changed: &str, pending: bool) -> ClusterPlan {
        let diff = format!(
            "--- base/Deployment/apps/web\n+++ head/Deployment/apps/web\n@@ -3,5 +3,5 @@\n   labels:\n    strata.dev/cluster: {name}\n    region: {context}\n-  replicas: 1\n+  replicas: {changed}\n"
        );
        ClusterPlan {
            cluster: name.to_string(),
            kind: ChangeKind::InPlaceEdit,
            reasons: vec![ChangeKind::InPlaceEdit],
            from: Some("web@1.0.0".into()),
            to: Some("web@1.0.0".into()),
            updates: if pending { UpdatePolicy::Manual } else { UpdatePolicy::Auto },
            pending,
            window: None,
            update_available: None,
            base_digest: None,
            head_digest: None,
            objects: vec![ObjectChange {
                id: ObjectId::new("apps/v1", "Deployment", Some("apps"), "web"),
                layer: "web".into(),
                action: Action::Changed,
                diff,
            }],
        }
    }

    fn plan(clusters: Vec<ClusterPlan>) -> Plan {
        Plan { base: None, head: None, clusters, rollouts: Vec::new() }
    }

    #[test]
    fn the_same_change_is_one_group_whatever_the_cluster_is_called_or_what_is_around_it() {
        let p = plan(vec![
            cluster("eu-1", "eu-west-1", "2", false),
            cluster("eu-2", "eu-west-1", "2", false),
            cluster("us-1", "us-east-1", "2", false),
        ]);
        let found = groups(&p);
        assert_eq!(found.len(), 1);
        let g = &found[0];
        assert_eq!(g.members.iter().map(|m| m.cluster.as_str()).collect::<Vec<_>>(), ["eu-1", "eu-2", "us-1"]);
        // The region around the change differs: the group says its context is eu-1's.
        assert!(!g.same_context);
        let shown = &g.objects()[0].diff;
        assert!(shown.contains("strata.dev/cluster: <cluster>\n") && shown.contains("region: eu-west-1"), "{shown}");
        // One cluster: its own diff, its own name.
        let single = plan(vec![cluster("eu-1", "eu-west-1", "2", false)]);
        let one = groups(&single);
        assert!(one[0].same_context && one[0].objects()[0].diff.contains("cluster: eu-1\n"));
    }

    #[test]
    fn a_different_change_or_pending_state_is_another_group() {
        let p = plan(vec![
            cluster("a", "r", "2", false),
            cluster("b", "r", "2", false),
            // Its override pins replicas: another change.
            cluster("c", "r", "5", false),
            // The same change, held for approval: its own group, the diff "as group 1".
            cluster("d", "r", "2", true),
        ]);
        let found = groups(&p);
        let members: Vec<Vec<&str>> =
            found.iter().map(|g| g.members.iter().map(|m| m.cluster.as_str()).collect()).collect();
        assert_eq!(members, [vec!["a", "b"], vec!["c"], vec!["d"]]);
        assert_eq!(found.iter().map(|g| g.same_diff_as).collect::<Vec<_>>(), [None, None, Some(1)]);
        assert_eq!(ids(&found)["d"], 3);
    }

    #[test]
    fn names_fold_past_five() {
        let names = ["a", "b", "c", "d", "e"];
        assert_eq!(fold(names.iter().copied(), ""), "a, b, c, d, e");
        let names = ["a", "b", "c", "d", "e", "f"];
        assert_eq!(fold(names.iter().copied(), "`"), "`a`, `b`, `c`, … `f`");
    }
}
