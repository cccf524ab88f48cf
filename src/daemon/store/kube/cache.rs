//! The cache the Kubernetes backend reads from: every ClusterState and the strata-state ConfigMap,
//! kept by watches (relisted on 410 Gone), and what this process wrote, put in as the answers come.
//! Reads are served from it once the first lists are in; a change someone else made to what is
//! intended (an approval, a suspension, a rollout's progress) is told to the listener.

use super::*;

/// Whether resourceVersion `a` is at least as new as `b`. They are opaque by the API's contract;
/// every API server in use counts them up, and when one does not, the newest event wins.
pub(super) fn not_older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a >= b,
        _ => true,
    }
}

#[derive(Default)]
pub(super) struct Cache {
    pub(super) docs: BTreeMap<String, Doc>,
    /// The ConfigMap's resourceVersion (`None`: it does not exist yet) and what it holds.
    pub(super) global: (Option<String>, Global),
    /// Both first lists are in: reads may be served.
    pub(super) synced: (bool, bool),
}

impl Inner {
    /// Puts an object read or written into the cache, unless the cache already has a newer one,
    /// and tells the listener when someone else changed its spec.
    pub(super) fn put(&self, object: DynamicObject, from_watch: bool) {
        let Some((name, doc)) = decode(object) else { return };
        let changed_intent = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            let old = cache.docs.get(&name);
            if old.is_some_and(|old| !not_older(doc.resource_version(), old.resource_version())) {
                return;
            }
            let changed = match old {
                Some(old) => old.spec != doc.spec,
                None => doc.spec != Spec::default(),
            };
            cache.docs.insert(name.clone(), doc);
            changed
        };
        if changed_intent && from_watch {
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
        let mut listing: Option<BTreeMap<String, Doc>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(BTreeMap::new()),
                Ok(Event::InitApply(object)) => {
                    if let (Some(listing), Some((name, doc))) = (listing.as_mut(), decode(object)) {
                        listing.insert(name, doc);
                    }
                }
                Ok(Event::InitDone) => {
                    let Some(listed) = listing.take() else { continue };
                    let changed: Vec<String> = {
                        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                        let changed = listed
                            .iter()
                            .filter(|(name, doc)| cache.docs.get(*name).is_some_and(|old| old.spec != doc.spec))
                            .map(|(name, _)| name.clone())
                            .collect();
                        // A write answered while the list was read may be newer than what was listed.
                        let mut merged = listed;
                        for (name, doc) in std::mem::take(&mut cache.docs) {
                            match merged.get(&name) {
                                Some(listed) if !not_older(listed.resource_version(), doc.resource_version()) => {
                                    merged.insert(name, doc);
                                }
                                _ => {}
                            }
                        }
                        cache.docs = merged;
                        changed
                    };
                    self.mark_synced(true);
                    for name in changed {
                        self.tell(&format!("cluster {name}"));
                    }
                }
                Ok(Event::Apply(object)) => self.put(object, true),
                Ok(Event::Delete(object)) => {
                    if let Some(name) = object.metadata.name {
                        self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.remove(&name);
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
                        match map {
                            Some(map) => self.put_global(&map, true),
                            None => self.cache.write().unwrap_or_else(|p| p.into_inner()).global = Default::default(),
                        }
                    }
                    self.mark_synced(false);
                }
                Ok(Event::Apply(map)) => self.put_global(&map, true),
                Ok(Event::Delete(_)) => {
                    self.cache.write().unwrap_or_else(|p| p.into_inner()).global = Default::default()
                }
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

    pub(super) fn put_global(&self, map: &ConfigMap, from_watch: bool) {
        let version = map.metadata.resource_version.clone();
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let (Some(new), Some(old)) = (&version, &cache.global.0)
            && !not_older(new, old)
        {
            return;
        }
        let global = decode_global(map);
        let me = &self.mgmt.identity;
        let old = &cache.global.1.rollouts;
        let moved_elsewhere = global.rollouts.iter().any(|(name, r)| &r.by != me && old.get(name) != Some(r));
        cache.global = (version, global);
        drop(cache);
        if moved_elsewhere && from_watch {
            self.tell("rollout progress");
        }
    }

    pub(super) async fn refresh(&self, name: &str) -> Result<()> {
        match self.states.get_opt(name).await {
            Ok(Some(object)) => {
                // Taken whatever the cache says: it is what the server holds now.
                if let Some((name, doc)) = decode(object) {
                    self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.insert(name, doc);
                }
                Ok(())
            }
            Ok(None) => {
                self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.remove(name);
                Ok(())
            }
            Err(e) => Err(api_error(&self.object(name), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_compare_as_numbers_when_they_are() {
        assert!(not_older("10", "9"));
        assert!(!not_older("9", "10"));
        assert!(not_older("abc", "10"), "opaque: the newest event wins");
    }
}
