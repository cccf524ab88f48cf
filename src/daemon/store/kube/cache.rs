//! The cache the Kubernetes backend reads from: every ClusterState (whole when this process owns
//! its cluster, else its brief: see [`Held`]) and the strata-state ConfigMap, kept by watches
//! (relisted on 410 Gone), and what this process wrote, put in as the answers come.
//! Reads are served from it once the first lists are in; a change someone else made to what is
//! intended (an approval, a suspension, a rollout's progress) is told to the listener.
//!
//! resourceVersions are opaque strings by the API's contract: only equality means anything, so
//! none is ordered here. What is ordered is what the watch tells: an object's events come in the
//! order they happened, and a list replaces the cache wholesale (the watch goes on from it). An
//! answer to this process's own request (a write's, a re-read's) is placed in that order by
//! equality alone, with a count of the watch's events of our own ([`Mark`]) taken before the
//! request:
//!
//! - its resourceVersion was told by the watch already: the cache holds it or what came after it;
//!   the answer is dropped;
//! - otherwise, when the watch's events for the object since the request began are all known
//!   (no list since), every one of them happened before the answer (had one come after it, the
//!   answer's own event would have come first): the answer is taken, and the watch's events for
//!   that object that are not it are older and passed over until it comes;
//! - otherwise (a list came between) it cannot be placed, and is dropped: the watch brings the
//!   object soon.
//!
//! The events known are exactly those needed: of each object, the last one told before the
//! oldest request still on its way (a re-read may answer with it) and every one since (a watch
//! lagging behind tells many while a request is out), however many. A request's [`Mark`] is
//! counted as on its way until it is dropped.
//!
//! So what this process wrote is read back at once, and never replaced by something older.

use super::*;
use std::collections::VecDeque;

/// The requests on their way, by the count of watch events when they began (how many began then).
type Open = Arc<Mutex<BTreeMap<u64, usize>>>;

/// The count of watch events when a request began; the request is on its way until the mark is
/// dropped. See the module comment.
#[derive(Debug)]
pub(super) struct Mark {
    at: u64,
    open: Open,
}

impl Drop for Mark {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.at) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.at);
            }
        }
    }
}

/// Whence an object put into the cache came.
#[derive(Clone, Copy, Debug)]
pub(super) enum Source<'a> {
    /// The watch: taken as it comes, unless it is older than an answer taken.
    Watch,
    /// The answer to a request begun at this mark.
    Answer(&'a Mark),
}

/// A bound on the watch events kept of one object, against a request that never ends: past it
/// the oldest are forgotten, and answers to requests begun before them are dropped.
const TOLD_KEPT: usize = 4096;

/// What the watch told lately of one object.
#[derive(Clone, Debug, Default)]
struct Told {
    /// The events' counts and resourceVersions, oldest first: the last one told before the
    /// oldest request on its way, and every one since.
    recent: VecDeque<(u64, String)>,
    /// Events up to this count may be missing from `recent` (past [`TOLD_KEPT`], or before a list).
    forgotten: u64,
    /// The resourceVersion of an answer taken that the watch has not told yet: until it does,
    /// the object's events are older than it.
    ahead: Option<String>,
}

impl Told {
    /// Notes an event (`version` `None`: the server gave none), the oldest request on its way
    /// having begun at `oldest`; whether the cache takes it.
    fn watched(&mut self, count: u64, version: Option<&str>, oldest: u64) -> bool {
        if let Some(version) = version {
            self.recent.push_back((count, version.to_string()));
            while self.recent.len() > 1 && self.recent[1].0 <= oldest {
                self.recent.pop_front();
            }
            if self.recent.len() > TOLD_KEPT {
                let (gone, _) = self.recent.pop_front().expect("longer than kept");
                self.forgotten = gone;
            }
        }
        match &self.ahead {
            Some(ahead) if Some(ahead.as_str()) == version => {
                self.ahead = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Whether an answer of `version` (`None`: the object is gone), to a request begun at `mark`,
    /// is newer than what the cache holds; see the module comment. Taken: the watch is to tell it.
    fn answered(&mut self, mark: &Mark, version: Option<&str>) -> bool {
        if self.forgotten > mark.at {
            return false;
        }
        let taken = match version {
            Some(version) => !self.recent.iter().any(|(_, told)| told == version),
            // Gone: taken only when nothing was told since (a deletion carries no version of its own to place).
            None => self.recent.back().is_none_or(|(count, _)| *count <= mark.at),
        };
        if taken {
            self.ahead = version.map(str::to_string);
        }
        taken
    }

    /// After a list that held the object at `version` (`None`: it held none).
    fn listed(count: u64, version: Option<&str>) -> Told {
        Told { recent: version.map(|v| (count, v.to_string())).into_iter().collect(), forgotten: count, ahead: None }
    }
}

#[derive(Default)]
pub(super) struct Cache {
    pub(super) docs: BTreeMap<String, Held>,
    /// The strings briefs share.
    strings: Strings,
    /// The ConfigMap's resourceVersion (`None`: it does not exist yet) and what it holds.
    pub(super) global: (Option<String>, Global),
    /// Both first lists are in: reads may be served.
    pub(super) synced: (bool, bool),
    /// Watch events taken so far (ClusterStates and the ConfigMap; a list counts as one).
    events: u64,
    /// What the watch told lately of each ClusterState (kept after a deletion: it is an event).
    told: BTreeMap<String, Told>,
    /// The count at the latest ClusterState list: answers to requests begun before it are
    /// dropped, as nothing places them against it.
    listed: u64,
    /// What the watch told lately of the ConfigMap.
    global_told: Told,
    /// The requests on their way.
    open: Open,
}

impl Cache {
    fn tick(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    /// Taken before a request whose answer is put in, and kept until the answer is.
    pub(super) fn mark(&self) -> Mark {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()).entry(self.events).or_default() += 1;
        Mark { at: self.events, open: self.open.clone() }
    }

    /// When the oldest request on its way began (now, when none is).
    fn oldest(&self) -> u64 {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).keys().next().copied().unwrap_or(self.events)
    }

    /// `doc` as the cache holds it: whole, or its brief.
    pub(super) fn hold(&mut self, doc: Doc, whole: bool) -> Held {
        Held::of(doc, whole, &mut self.strings)
    }

    /// Puts a ClusterState in (`None`: it is gone; `whole`: all of it, else its brief), unless
    /// what the cache holds is newer. Returns whether it was put in, and whether its spec (what
    /// is intended) changed.
    pub(super) fn take(&mut self, name: &str, doc: Option<Doc>, whole: bool, source: Source) -> Option<bool> {
        let new = doc.as_ref().and_then(|doc| doc.metadata.resource_version.as_deref());
        let taken = match source {
            Source::Watch => {
                let (count, oldest) = (self.tick(), self.oldest());
                self.told.entry(name.to_string()).or_default().watched(count, new, oldest)
            }
            Source::Answer(mark) => {
                self.listed <= mark.at && self.told.entry(name.to_string()).or_default().answered(mark, new)
            }
        };
        if !taken {
            return None;
        }
        let changed = match (self.docs.get(name), &doc) {
            (Some(old), Some(doc)) => *old.spec() != doc.spec,
            (None, Some(doc)) => doc.spec != Spec::default(),
            (_, None) => false,
        };
        match doc {
            Some(doc) => {
                let held = self.hold(doc, whole);
                self.docs.insert(name.to_string(), held)
            }
            None => self.docs.remove(name),
        };
        Some(changed)
    }

    /// Keeps only the briefs of the clusters `whole` no longer says: after shards moved away.
    pub(super) fn demote(&mut self, whole: impl Fn(&str) -> bool) {
        let Cache { docs, strings, .. } = self;
        for (name, held) in docs.iter_mut() {
            if let Held::Whole(doc) = held
                && !whole(name)
            {
                *held = Held::of(std::mem::take(&mut **doc), false, strings);
            }
        }
    }

    /// Replaces the ClusterStates with a list's (what was answered meanwhile included: the watch
    /// goes on from the list, so what it missed still comes). Returns the names whose spec changed.
    pub(super) fn take_list(&mut self, listed: BTreeMap<String, Held>) -> Vec<String> {
        let changed = listed
            .iter()
            .filter(|(name, held)| self.docs.get(*name).is_some_and(|old| old.spec() != held.spec()))
            .map(|(name, _)| name.clone())
            .collect();
        let count = self.tick();
        self.listed = count;
        self.told =
            listed.iter().map(|(name, held)| (name.clone(), Told::listed(count, held.resource_version()))).collect();
        self.docs = listed;
        changed
    }

    /// Puts the ConfigMap in (`None`: it is gone) as [`Cache::take`] does; `listed`: it is what a
    /// list found. Returns the rollouts it held before, when it was put in.
    pub(super) fn take_global(
        &mut self,
        map: Option<(Option<String>, Global)>,
        source: Source,
        listed: bool,
    ) -> Option<BTreeMap<String, StoredRollout>> {
        let new = map.as_ref().and_then(|(version, _)| version.as_deref());
        let taken = match source {
            Source::Watch if listed => {
                let count = self.tick();
                self.global_told = Told::listed(count, new);
                true
            }
            Source::Watch => {
                let (count, oldest) = (self.tick(), self.oldest());
                self.global_told.watched(count, new, oldest)
            }
            Source::Answer(mark) => self.global_told.answered(mark, new),
        };
        if !taken {
            return None;
        }
        Some(std::mem::replace(&mut self.global, map.unwrap_or_default()).1.rollouts)
    }
}

impl Inner {
    pub(super) fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken before a request whose answer is put in; see [`Mark`].
    pub(super) fn mark(&self) -> Mark {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).mark()
    }

    /// Puts an object read or written into the cache (unless what it holds is newer), and tells
    /// the listener when someone else changed its spec.
    pub(super) fn put(&self, object: DynamicObject, source: Source) {
        if let Some((name, doc)) = decode(object) {
            self.put_doc(&name, doc, source);
        }
    }

    /// As [`Inner::put`], and returns the object whole (the cache may keep only its brief).
    pub(super) fn put_read(&self, object: DynamicObject, source: Source) -> Option<Doc> {
        let (name, doc) = decode(object)?;
        self.put_doc(&name, doc.clone(), source);
        Some(doc)
    }

    fn put_doc(&self, name: &str, doc: Doc, source: Source) {
        let whole = (self.whole)(Some(name));
        let changed_intent = self.cache_mut().take(name, Some(doc), whole, source);
        if changed_intent == Some(true) && matches!(source, Source::Watch) {
            self.tell(&format!("cluster {name}"));
        }
    }

    pub(super) fn tell(&self, name: &str) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            listener(name);
        }
    }

    pub(super) fn mark_synced(&self, states: bool) {
        let done = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if states {
                cache.synced.0 = true;
            } else {
                cache.synced.1 = true;
            }
            cache.synced.0 && cache.synced.1
        };
        if done {
            self.synced.send_replace(true);
        }
    }

    /// Keeps the ClusterState cache equal to the API server's, for as long as the process runs.
    pub(super) async fn watch_states(self: Arc<Self>) {
        let mut events = watcher::watcher(self.states.clone(), watcher::Config::default()).default_backoff().boxed();
        let mut listing: Option<BTreeMap<String, Held>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(BTreeMap::new()),
                Ok(Event::InitApply(object)) => {
                    if let (Some(listing), Some((name, doc))) = (listing.as_mut(), decode(object)) {
                        let held = self.cache_mut().hold(doc, (self.whole)(Some(&name)));
                        listing.insert(name, held);
                    }
                }
                Ok(Event::InitDone) => {
                    let Some(listed) = listing.take() else { continue };
                    let changed = self.cache_mut().take_list(listed);
                    self.mark_synced(true);
                    for name in changed {
                        self.tell(&format!("cluster {name}"));
                    }
                }
                Ok(Event::Apply(object)) => self.put(object, Source::Watch),
                Ok(Event::Delete(object)) => {
                    if let Some(name) = object.metadata.name {
                        self.cache_mut().take(&name, None, false, Source::Watch);
                    }
                }
                Err(e) => {
                    let error =
                        store_error(&format!("{KIND}s in {}", self.mgmt.namespace), "unreachable", e.to_string());
                    self.failures.note(&Err::<(), _>(error), false);
                }
            }
        }
    }

    /// Keeps the strata-state ConfigMap in the cache.
    pub(super) async fn watch_global(self: Arc<Self>) {
        let config = watcher::Config::default().fields(&format!("metadata.name={GLOBAL}"));
        let mut events = watcher::watcher(self.configmaps.clone(), config).default_backoff().boxed();
        let mut listed: Option<Option<ConfigMap>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listed = Some(None),
                Ok(Event::InitApply(map)) => listed = Some(Some(map)),
                Ok(Event::InitDone) => {
                    if let Some(map) = listed.take() {
                        self.put_global(map.as_ref(), Source::Watch, true);
                    }
                    self.mark_synced(false);
                }
                Ok(Event::Apply(map)) => self.put_global(Some(&map), Source::Watch, false),
                Ok(Event::Delete(_)) => self.put_global(None, Source::Watch, false),
                Err(e) => {
                    let error = store_error(
                        &format!("ConfigMap {}/{GLOBAL}", self.mgmt.namespace),
                        "unreachable",
                        e.to_string(),
                    );
                    self.failures.note(&Err::<(), _>(error), false);
                }
            }
        }
    }

    /// Puts the ConfigMap read, written or listed into the cache (`None`: it is gone), unless
    /// what it holds is newer; tells the listener when another replica moved a rollout.
    pub(super) fn put_global(&self, map: Option<&ConfigMap>, source: Source, listed: bool) {
        let new = map.map(|map| (map.metadata.resource_version.clone(), decode_global(map)));
        let rollouts = new.as_ref().map(|(_, global)| global.rollouts.clone()).unwrap_or_default();
        let Some(old) = self.cache_mut().take_global(new, source, listed) else { return };
        let me = &self.mgmt.identity;
        let moved = rollouts.iter().any(|(name, r)| &r.by != me && old.get(name) != Some(r));
        if moved && matches!(source, Source::Watch) {
            self.tell("rollout progress");
        }
    }

    /// Reads ClusterState `name` again (after a conflict, or for a part its brief leaves out):
    /// what the server holds now, put in the cache unless it has it or something newer already.
    pub(super) async fn refresh(&self, name: &str) -> Result<Option<Doc>> {
        let mark = self.mark();
        match self.states.get_opt(name).await {
            Ok(Some(object)) => Ok(self.put_read(object, Source::Answer(&mark))),
            Ok(None) => {
                self.cache_mut().take(name, None, false, Source::Answer(&mark));
                Ok(None)
            }
            Err(e) => Err(api_error(&self.object(name), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(version: &str, suspended: bool) -> Doc {
        Doc {
            metadata: ObjectMeta { resource_version: Some(version.into()), ..ObjectMeta::default() },
            spec: Spec { suspended, ..Spec::default() },
            status: StatusDoc::default(),
        }
    }

    fn listed(name: &str, version: &str) -> BTreeMap<String, Held> {
        BTreeMap::from([(name.to_string(), Held::Whole(Box::new(doc(version, false))))])
    }

    fn held(cache: &Cache, name: &str) -> Option<String> {
        cache.docs.get(name).and_then(|d| d.resource_version().map(str::to_string))
    }

    /// resourceVersions that are not numbers, and numbers that do not grow: the cache follows the
    /// order of the watch and of its own requests, never the versions' values.
    #[test]
    fn resource_versions_are_only_compared_for_equality() {
        let mut cache = Cache::default();
        cache.take_list(listed("a", "zz-9"));
        assert_eq!(held(&cache, "a").as_deref(), Some("zz-9"));

        // Watch events are taken as they come, whatever their versions look like.
        assert_eq!(cache.take("a", Some(doc("aa-1", true)), true, Source::Watch), Some(true));
        assert_eq!(cache.take("a", Some(doc("10", true)), true, Source::Watch), Some(false));
        assert_eq!(cache.take("a", Some(doc("9", true)), true, Source::Watch), Some(false));
        assert_eq!(held(&cache, "a").as_deref(), Some("9"));

        // A write's answer is read back at once, even when its version "looks" older; the watch's
        // events that are not it came before it, and are passed over until it comes.
        let mark = cache.mark();
        assert_eq!(cache.take("a", Some(doc("1", false)), true, Source::Answer(&mark)), Some(true));
        assert_eq!(held(&cache, "a").as_deref(), Some("1"));
        assert_eq!(cache.take("a", Some(doc("q", true)), true, Source::Watch), None, "older than the answer");
        assert_eq!(held(&cache, "a").as_deref(), Some("1"));
        assert!(cache.take("a", Some(doc("1", false)), true, Source::Watch).is_some(), "the answer's own event");
        assert!(cache.take("a", Some(doc("after", true)), true, Source::Watch).is_some(), "and what came after it");
        assert_eq!(held(&cache, "a").as_deref(), Some("after"));

        // An older event arriving while a write is on its way does not hold the answer back...
        let mark = cache.mark();
        cache.take("a", Some(doc("before-mine", true)), true, Source::Watch);
        assert!(cache.take("a", Some(doc("mine", false)), true, Source::Answer(&mark)).is_some());
        assert_eq!(held(&cache, "a").as_deref(), Some("mine"));
        cache.take("a", Some(doc("mine", false)), true, Source::Watch);

        // ...but an answer the watch told already (and went past) is dropped.
        let mark = cache.mark();
        cache.take("a", Some(doc("reread", false)), true, Source::Watch);
        cache.take("a", Some(doc("newer", true)), true, Source::Watch);
        assert_eq!(cache.take("a", Some(doc("reread", false)), true, Source::Answer(&mark)), None);
        assert_eq!(held(&cache, "a").as_deref(), Some("newer"));

        // A deletion is an event: a re-read begun before it does not bring the object back.
        cache.take("b", Some(doc("b-1", false)), true, Source::Watch);
        let mark = cache.mark();
        cache.take("b", None, true, Source::Watch);
        assert_eq!(cache.take("b", Some(doc("b-1", false)), true, Source::Answer(&mark)), None);
        assert!(!cache.docs.contains_key("b"));

        // A list replaces everything; answers begun before it cannot be placed against it and are
        // dropped, even of an object the cache had never seen (a creation).
        let mark = cache.mark();
        let changed = cache.take_list(listed("a", "x"));
        assert_eq!(changed, ["a"]);
        assert_eq!(cache.take("a", Some(doc("y", false)), true, Source::Answer(&mark)), None);
        assert_eq!(cache.take("c", Some(doc("c-1", false)), true, Source::Answer(&mark)), None);
        assert_eq!(held(&cache, "a").as_deref(), Some("x"));
        assert!(!cache.docs.contains_key("c"));
        let mark = cache.mark();
        assert!(cache.take("c", Some(doc("c-1", false)), true, Source::Answer(&mark)).is_some());
        assert_eq!(cache.take("a", Some(doc("x", false)), true, Source::Answer(&mark)), None, "listed already");
    }

    /// A watch far behind tells many old events while a write is on its way: the answer is still
    /// placed (and read back at once), and once no request is on its way only the newest event of
    /// an object is kept.
    #[test]
    fn a_watch_far_behind_does_not_hide_what_was_written() {
        let mut cache = Cache::default();
        cache.take_list(listed("a", "0"));
        let mark = cache.mark();
        for n in 1..=100 {
            cache.take("a", Some(doc(&format!("old-{n}"), false)), true, Source::Watch);
        }
        assert!(cache.take("a", Some(doc("mine", true)), true, Source::Answer(&mark)).is_some());
        assert_eq!(held(&cache, "a").as_deref(), Some("mine"));
        assert_eq!(cache.take("a", Some(doc("old-101", false)), true, Source::Watch), None, "older than the answer");
        assert!(cache.take("a", Some(doc("mine", true)), true, Source::Watch).is_some());

        // A re-read begun after events the watch told, answering with one of them, is dropped
        // however many came since the oldest request began.
        let reread = cache.mark();
        cache.take("a", Some(doc("told", true)), true, Source::Watch);
        for n in 1..=50 {
            cache.take("b", Some(doc(&format!("b-{n}"), false)), true, Source::Watch);
        }
        cache.take("a", Some(doc("newest", true)), true, Source::Watch);
        assert_eq!(cache.take("a", Some(doc("told", true)), true, Source::Answer(&reread)), None);
        assert_eq!(held(&cache, "a").as_deref(), Some("newest"));

        drop((mark, reread));
        assert!(cache.open.lock().unwrap().is_empty(), "no request on its way");
        cache.take("a", Some(doc("last", true)), true, Source::Watch);
        cache.take("b", Some(doc("b-last", true)), true, Source::Watch);
        assert_eq!(cache.told["a"].recent.len(), 1);
        assert_eq!(cache.told["b"].recent.len(), 1);
        // A re-read begun now and answering with what the watch told last is known to be no news.
        let mark = cache.mark();
        assert_eq!(cache.take("a", Some(doc("last", true)), true, Source::Answer(&mark)), None);
    }

    /// A cluster whose shard moved away keeps its brief; a change of intent on a brief is
    /// still told.
    #[test]
    fn clusters_no_longer_owned_keep_their_briefs() {
        let mut cache = Cache::default();
        cache.take("a", Some(doc("1", false)), true, Source::Watch);
        cache.take("b", Some(doc("1", false)), true, Source::Watch);
        cache.demote(|name| name == "a");
        assert!(cache.docs["a"].whole().is_some());
        assert!(cache.docs["b"].whole().is_none());
        assert_eq!(held(&cache, "b").as_deref(), Some("1"));
        assert_eq!(cache.take("b", Some(doc("2", true)), false, Source::Watch), Some(true));
        assert_eq!(cache.take("b", Some(doc("3", true)), false, Source::Watch), Some(false));
        assert!(cache.docs["b"].spec().suspended);
    }

    #[test]
    fn the_configmap_follows_the_same_order() {
        let mut cache = Cache::default();
        let map = |v: &str| Some((Some(v.to_string()), Global::default()));
        cache.take_global(map("b"), Source::Watch, true);
        cache.take_global(map("a"), Source::Watch, false);
        assert_eq!(cache.global.0.as_deref(), Some("a"));
        let mark = cache.mark();
        assert!(cache.take_global(map("0"), Source::Answer(&mark), false).is_some());
        assert_eq!(cache.global.0.as_deref(), Some("0"));
        assert!(cache.take_global(map("older"), Source::Watch, false).is_none());
        assert!(cache.take_global(map("0"), Source::Watch, false).is_some());
        let mark = cache.mark();
        cache.take_global(map("watched"), Source::Watch, false);
        assert!(cache.take_global(map("watched"), Source::Answer(&mark), false).is_none());
        cache.take_global(None, Source::Watch, false);
        assert_eq!(cache.global.0, None);
    }
}
