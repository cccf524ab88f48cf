//! How the Kubernetes backend's changes reach the API server, on the management thread: a change
//! applied to the object as cached, sent with the resourceVersion it was read at, read again and
//! applied again on a conflict; objects created when a change makes something of nothing; and the
//! audit trail's ConfigMaps, appended to, listed and deleted.

use super::*;

/// Before attempt `attempt` of a write (0: the first, at once): a random pause growing with the
/// conflicts so far, as client-go's RetryOnConflict backs off. Without it the writer whose last
/// write won, its cache fresh from the answer, wins every race against one that must read first.
pub(super) async fn conflict_pause(attempt: usize) {
    const CONFLICT: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500), Jitter::Full);
    if attempt > 0 {
        tokio::time::sleep(CONFLICT.delay(attempt as u32)).await;
    }
}

pub(super) fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string())])
}

/// Which part of a ClusterState a write changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// What people intend: written through the main resource.
    Spec,
    /// What strata found and did: written through the status subresource.
    Status,
}

impl Inner {
    /// Applies `change` to the ClusterState `name` as the server holds it and writes `part`,
    /// retrying on conflicts; creates the object when the change makes something of nothing.
    pub(super) async fn write_doc<R>(
        &self,
        name: &str,
        part: Part,
        mut change: impl FnMut(&mut Spec, &mut StatusDoc) -> R,
    ) -> Result<R> {
        let object = self.object(name);
        if !crate::names::is_dns1123_label(name) {
            return Err(store_error(&object, "rejected", "not a cluster name (a DNS label)"));
        }
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        // The object as last read from the API server, when the cache holds only its brief.
        let mut read: Option<Doc> = None;
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let (held, mark) = {
                let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
                (cache.docs.get(name).map(|held| held.whole().cloned()), cache.mark())
            };
            let base = match (held, read.take()) {
                (Some(Some(doc)), _) => Some(doc),
                (Some(None), Some(doc)) => Some(doc),
                // Only its brief: the whole object from the API server first.
                (Some(None), None) => {
                    read = self.refresh(name).await?;
                    if read.is_none() {
                        continue;
                    }
                    read.take()
                }
                (None, _) => None,
            };
            let (mut spec, mut status) = base.as_ref().map(|d| (d.spec.clone(), d.status.clone())).unwrap_or_default();
            let result = change(&mut spec, &mut status);
            let unchanged = match (&base, part) {
                (Some(base), Part::Spec) => base.spec == spec,
                (Some(base), Part::Status) => base.status == status,
                (None, _) => spec == Spec::default() && status == StatusDoc::default(),
            };
            if unchanged {
                return Ok(result);
            }
            let Some(base) = base else {
                // Status is dropped on create (it has a subresource of its own): create, then write it.
                let created = DynamicObject {
                    types: Some(TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: KIND.into() }),
                    metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels()), ..ObjectMeta::default() },
                    data: serde_json::json!({ "spec": if part == Part::Spec { spec.clone() } else { Spec::default() } }),
                };
                match self.states.create(&params, &created).await {
                    Ok(object) => read = self.put_read(object, Source::Answer(&mark)),
                    Err(e) if Failure::is(&e, 409) => read = self.refresh(name).await?,
                    Err(e) => return Err(api_error(&object, &e)),
                }
                continue;
            };
            let body = DynamicObject {
                types: Some(TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: KIND.into() }),
                metadata: base.metadata.clone(),
                data: serde_json::json!({ "spec": spec, "status": status }),
            };
            let sent = match part {
                Part::Spec => self.states.replace(name, &params, &body).await,
                Part::Status => self.states.replace_status(name, &params, &body).await,
            };
            match sent {
                Ok(object) => {
                    self.put(object, Source::Answer(&mark));
                    return Ok(result);
                }
                // Someone else wrote it since it was read: read it again, change it again.
                Err(e) if Failure::is(&e, 409) || Failure::is(&e, 404) => read = self.refresh(name).await?,
                Err(e) => return Err(api_error(&object, &e)),
            }
        }
        Err(store_error(
            &object,
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: another writer changes it continuously"),
        ))
    }

    /// As [`Inner::write_doc`], for the strata-state ConfigMap.
    pub(super) async fn write_global<R>(&self, mut change: impl FnMut(&mut Global) -> R) -> Result<R> {
        let object = format!("ConfigMap {}/{GLOBAL}", self.mgmt.namespace);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let ((version, mut global), mark) = {
                let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
                (cache.global.clone(), cache.mark())
            };
            let before = global.clone();
            let result = change(&mut global);
            if global == before {
                return Ok(result);
            }
            let sent = match &version {
                None => {
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(GLOBAL.into()),
                            labels: Some(labels()),
                            ..ObjectMeta::default()
                        },
                        data: Some(encode_global(&global, BTreeMap::new())),
                        ..ConfigMap::default()
                    };
                    self.configmaps.create(&params, &map).await
                }
                Some(version) => {
                    // Keys someone else keeps in the ConfigMap stay: a write that cannot read
                    // them first is not made (it would drop them).
                    let current = match self.configmaps.get_opt(GLOBAL).await {
                        Ok(current) => current,
                        Err(e) => return Err(api_error(&object, &e)),
                    };
                    let others = current.and_then(|c| c.data).unwrap_or_default();
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(GLOBAL.into()),
                            labels: Some(labels()),
                            resource_version: Some(version.clone()),
                            ..ObjectMeta::default()
                        },
                        data: Some(encode_global(&global, others)),
                        ..ConfigMap::default()
                    };
                    self.configmaps.replace(GLOBAL, &params, &map).await
                }
            };
            match sent {
                Ok(map) => {
                    self.put_global(Some(&map), Source::Answer(&mark), false);
                    return Ok(result);
                }
                Err(e) if Failure::is(&e, 409) || Failure::is(&e, 404) => self.refresh_global().await?,
                Err(e) => return Err(api_error(&object, &e)),
            }
        }
        Err(store_error(
            &object,
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: another writer changes it continuously"),
        ))
    }
}

impl Inner {
    /// Reads the strata-state ConfigMap again: kept unless the cache has it or something newer.
    pub(super) async fn refresh_global(&self) -> Result<()> {
        let mark = self.mark();
        match self.configmaps.get_opt(GLOBAL).await {
            Ok(map) => {
                self.put_global(map.as_ref(), Source::Answer(&mark), false);
                Ok(())
            }
            Err(e) => Err(api_error(&format!("ConfigMap {}/{GLOBAL}", self.mgmt.namespace), &e)),
        }
    }
}

/// `20261207` for a time in milliseconds (UTC).
pub(super) fn audit_day(ms: i64) -> String {
    crate::daemon::store::rfc3339(ms.div_euclid(1000))[..10].replace('-', "")
}

/// An audit ConfigMap's day and number, from its name.
pub(super) fn audit_shard(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix("strata-audit-")?;
    let (day, n) = rest.split_once('-')?;
    Some((day.to_string(), n.parse().ok()?))
}

impl Inner {
    /// The audit ConfigMaps, by day and number (oldest first); all of them, or one day's.
    pub(super) async fn audit_maps(&self, day: Option<&str>) -> Result<Vec<((String, u32), ConfigMap)>> {
        let selector = match day {
            Some(day) => format!("{AUDIT_LABEL}={day}"),
            None => AUDIT_LABEL.to_string(),
        };
        let object = format!("ConfigMaps {}/strata-audit-*", self.mgmt.namespace);
        let list =
            self.configmaps.list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(&object, &e))?;
        let mut maps: Vec<_> =
            list.items.into_iter().filter_map(|m| Some((audit_shard(m.metadata.name.as_deref()?)?, m))).collect();
        maps.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(maps)
    }

    /// Appends a line to the newest ConfigMap of the entry's day, or starts the next one.
    pub(super) async fn append_audit(&self, line: String, day: String) -> Result<()> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let newest = self.audit_maps(Some(&day)).await?.pop();
            let used = newest
                .as_ref()
                .map_or(0, |(_, m)| m.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map_or(0, String::len));
            let sent = match newest {
                Some(((_, n), mut map)) if used + line.len() <= AUDIT_OBJECT_BYTES => {
                    let name = map.metadata.name.clone().unwrap_or_else(|| format!("strata-audit-{day}-{n:04}"));
                    map.data
                        .get_or_insert_with(BTreeMap::new)
                        .entry(AUDIT_KEY.to_string())
                        .or_default()
                        .push_str(&line);
                    (name.clone(), self.configmaps.replace(&name, &params, &map).await)
                }
                newest => {
                    let n = newest.map_or(0, |((_, n), _)| n + 1);
                    let name = format!("strata-audit-{day}-{n:04}");
                    let mut labels = labels();
                    labels.insert(AUDIT_LABEL.to_string(), day.clone());
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(AUDIT_KEY.to_string(), line.clone())])),
                        ..ConfigMap::default()
                    };
                    (name, self.configmaps.create(&params, &map).await)
                }
            };
            match sent {
                (_, Ok(_)) => return Ok(()),
                // Another replica appended (or started the next one) first: read again.
                (_, Err(e)) if Failure::is(&e, 409) => continue,
                (name, Err(e)) => return Err(api_error(&format!("ConfigMap {}/{name}", self.mgmt.namespace), &e)),
            }
        }
        Err(store_error(
            &format!("ConfigMaps {}/strata-audit-{day}-*", self.mgmt.namespace),
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: other replicas keep appending"),
        ))
    }

    pub(super) async fn read_audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        let since_day = query.since.map(audit_day);
        let mut entries: Vec<AuditEntry> = Vec::new();
        for ((day, _), map) in self.audit_maps(None).await? {
            if since_day.as_ref().is_some_and(|since| &day < since) {
                continue;
            }
            let text = map.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map(String::as_str).unwrap_or("");
            entries.extend(
                text.lines().filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok()).filter(|e| query.matches(e)),
            );
        }
        // Appends go in order within a ConfigMap, and ConfigMaps by day and number: newest last.
        entries.reverse();
        entries.truncate(query.limit.clamp(1, AuditQuery::MOST));
        Ok(entries)
    }

    /// Deletes the audit ConfigMaps whose day is wholly before `before_ms`, then the oldest
    /// while the rest hold `max` entries or more.
    pub(super) async fn prune_audit(&self, before_ms: i64, max: u64) -> Result<usize> {
        let cutoff = audit_day(before_ms);
        let maps = self.audit_maps(None).await?;
        let count =
            |m: &ConfigMap| m.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map_or(0, |t| t.lines().count()) as u64;
        let mut total: u64 = maps.iter().map(|(_, m)| count(m)).sum();
        let mut gone = 0;
        for ((day, _), map) in &maps {
            let n = count(map);
            if *day >= cutoff && total.saturating_sub(n) < max {
                break;
            }
            let name = map.metadata.name.clone().unwrap_or_default();
            match self.configmaps.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if Failure::is(&e, 404) => {}
                Err(e) => return Err(api_error(&format!("ConfigMap {}/{name}", self.mgmt.namespace), &e)),
            }
            total = total.saturating_sub(n);
            gone += n as usize;
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_configmaps_are_named_by_day_and_number() {
        assert_eq!(audit_day(1_795_824_000_000 + 3_661_000), "20261128");
        assert_eq!(audit_shard("strata-audit-20261128-0003"), Some(("20261128".into(), 3)));
        assert_eq!(audit_shard("strata-state"), None);
        // Days sort as text in time order, which pruning relies on.
        assert!(audit_day(0) < audit_day(1_795_824_000_000));
    }
}
