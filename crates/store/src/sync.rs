//! Storage for provider sync: the mirror of provider items, each source's sync
//! status and log, and its encrypted OAuth tokens. What the items mean is the
//! providers' business; when to sync, the sync engine's.

use sled::Transactional;

use super::keys::{join, prefix};
use super::{
    ObjectOutcome, Store, StoreError, TenantVersion, decode, decode_object, encode, iter_json,
    record_changes, settled, swap_object_index, tx_corrupt,
};
use crate::model::{CalendarObject, SyncLog, SyncStatus};

/// Key of one mirrored provider item.
fn mirror_key(tenant: &str, source: &str, series: &str, item: &str) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        source.as_bytes(),
        series.as_bytes(),
        item.as_bytes(),
    ])
}

/// Key of a source's feed digests, next to its status (`tenant \0 source \0 digests`).
fn feed_digests_key(tenant: &str, source: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), source.as_bytes(), b"feed-digests"])
}

/// Runs kept per source in its log.
pub const SYNC_LOG_LIMIT: usize = 100;

impl Store {
    /// The items of one series, as stored.
    pub fn mirror_series(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        iter_json(
            &self.mirror,
            &prefix(&[tenant.as_bytes(), source.as_bytes(), series.as_bytes()]),
        )
        .collect()
    }

    /// Every (series, item) key of a source.
    pub fn mirror_keys(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        let mut out = Vec::new();
        for entry in self.mirror.scan_prefix(&scope).keys() {
            let key = entry?;
            let rest = &key[scope.len()..];
            let mut parts = rest.splitn(2, |b| *b == super::keys::SEP);
            let series = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let item = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            out.push((series, item));
        }
        Ok(out)
    }

    /// Stores (`Some`) or removes (`None`) one item; durable with the next flush.
    pub fn put_mirror_item(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let key = mirror_key(tenant, source, series, item);
        match body {
            Some(value) => self.mirror.insert(key, encode(value))?,
            None => self.mirror.remove(key)?,
        };
        Ok(())
    }

    /// Stores one item unless the stored one is byte-for-byte the same; returns
    /// whether it was written (durable with the next flush). A full listing that
    /// changed little rewrites little.
    pub fn put_mirror_item_if_changed(
        &self,
        tenant: &str,
        source: &str,
        series: &str,
        item: &str,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let key = mirror_key(tenant, source, series, item);
        let encoded = encode(body);
        if self
            .mirror
            .get(&key)?
            .is_some_and(|old| old.as_ref() == encoded.as_slice())
        {
            return Ok(false);
        }
        self.mirror.insert(key, encoded)?;
        Ok(true)
    }

    /// Stores many imported objects of one source in one transaction: each is
    /// written as [`Store::put_object`] would with [`Precondition::None`] and
    /// [`ObjectWrite::BatchedChange`] (record, busy index, UID, a change-log entry
    /// and a version bump per object), but the batch commits atomically and pays
    /// the transaction's cost once. An object whose UID another object of the
    /// source holds is not written ([`ObjectOutcome::UidConflict`]). Durable after
    /// the caller's [`Store::flush`].
    ///
    /// [`Precondition::None`]: super::Precondition::None
    /// [`ObjectWrite::BatchedChange`]: super::ObjectWrite::BatchedChange
    pub fn put_objects_batched(
        &self,
        tenant: &str,
        source: &str,
        objects: &[CalendarObject],
    ) -> Result<Vec<ObjectOutcome>, StoreError> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = objects
            .iter()
            .map(|o| join(&[tenant.as_bytes(), source.as_bytes(), o.id.as_bytes()]))
            .collect();
        let records: Vec<Vec<u8>> = objects.iter().map(super::object_record::encode).collect();
        let now = chrono::Utc::now().timestamp_millis();
        let uid_key = |uid: &str| join(&[tenant.as_bytes(), source.as_bytes(), uid.as_bytes()]);
        let result = (
            &self.objects,
            &self.busy,
            &self.changes,
            &self.meta,
            &self.uids,
        )
            .transaction(|(tx_objects, busy, changes, meta, uids)| {
                let mut outcomes = Vec::with_capacity(objects.len());
                // Each object written: its place in `outcomes`, and its change.
                let mut written_at = Vec::with_capacity(objects.len());
                let mut written: Vec<(&str, bool)> = Vec::with_capacity(objects.len());
                for ((object, key), record) in objects.iter().zip(&keys).zip(&records) {
                    if let Some(uid) = &object.uid
                        && let Some(owner) = uids.get(uid_key(uid))?
                        && owner.as_ref() != object.id.as_bytes()
                    {
                        outcomes.push(ObjectOutcome::UidConflict(
                            String::from_utf8_lossy(&owner).into_owned(),
                        ));
                        continue;
                    }
                    let old = match tx_objects.get(key)? {
                        Some(raw) => Some(decode_object(key, &raw).map_err(tx_corrupt)?),
                        None => None,
                    };
                    swap_object_index(busy, uids, tenant, source, old.as_ref(), object)?;
                    tx_objects.insert(key.as_slice(), record.as_slice())?;
                    written_at.push(outcomes.len());
                    written.push((object.id.as_str(), false));
                    // Replaced by the version once the batch's changes are logged.
                    outcomes.push(ObjectOutcome::Written(TenantVersion::default()));
                }
                let versions = record_changes(changes, meta, tenant, source, &written, now)?;
                for (i, version) in written_at.into_iter().zip(versions) {
                    outcomes[i] = ObjectOutcome::Written(version);
                }
                Ok(outcomes)
            });
        settled(result)
    }

    /// The mirror writes for many items (`None`: remove, which counts as a
    /// change), and per item whether it differs from what the mirror holds. The
    /// batch is written by [`MirrorWrites::apply`], so a large one can be written
    /// while the import goes on (durable with the next flush).
    pub fn mirror_changes<'i>(
        &self,
        tenant: &str,
        source: &str,
        items: impl IntoIterator<Item = (&'i str, &'i str, Option<&'i serde_json::Value>)>,
    ) -> Result<(MirrorWrites, Vec<bool>), StoreError> {
        let mut batches = Vec::new();
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut changed = Vec::new();
        for (series, item, body) in items {
            if in_batch == MIRROR_BATCH {
                batches.push(std::mem::take(&mut batch));
                in_batch = 0;
            }
            let key = mirror_key(tenant, source, series, item);
            match body {
                Some(body) => {
                    let encoded = encode(body);
                    let same = self
                        .mirror
                        .get(&key)?
                        .is_some_and(|old| old.as_ref() == encoded.as_slice());
                    if !same {
                        batch.insert(key, encoded);
                        in_batch += 1;
                    }
                    changed.push(!same);
                }
                None => {
                    batch.remove(key);
                    in_batch += 1;
                    changed.push(true);
                }
            }
        }
        batches.push(batch);
        let writes = MirrorWrites {
            mirror: self.mirror.clone(),
            batches,
        };
        Ok((writes, changed))
    }

    /// Ids of a source's calendar objects, from the keys alone (no record decoded).
    pub fn object_ids(&self, tenant: &str, source: &str) -> Result<Vec<String>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        let mut out = Vec::new();
        for key in self.objects.scan_prefix(&scope).keys() {
            let key = key?;
            out.push(String::from_utf8_lossy(&key[scope.len()..]).into_owned());
        }
        Ok(out)
    }

    /// The source's feed digests as last stored ([`Store::put_feed_digests`]).
    pub fn feed_digests(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .sync_state
            .get(feed_digests_key(tenant, source))?
            .map(|v| v.to_vec()))
    }

    /// Stores (`Some`) or forgets (`None`) what the last applied iCal feed of a
    /// source looked like (opaque to the store: see
    /// `providers::ics::FeedDigests`); durable with the next flush. They
    /// describe the mirror, so a run forgets them before it changes the mirror
    /// and stores new ones only once it applied the whole feed.
    pub fn put_feed_digests(
        &self,
        tenant: &str,
        source: &str,
        digests: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let key = feed_digests_key(tenant, source);
        match digests {
            Some(raw) => self.sync_state.insert(key, raw)?,
            None => self.sync_state.remove(key)?,
        };
        Ok(())
    }

    pub fn sync_status(&self, tenant: &str, source: &str) -> Result<SyncStatus, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes()]);
        match self.sync_state.get(&key)? {
            Some(raw) => decode(&key, &raw),
            None => Ok(SyncStatus::default()),
        }
    }

    /// Stores the status; durable with the next flush (callers flush once per run).
    pub fn put_sync_status(
        &self,
        tenant: &str,
        source: &str,
        status: &SyncStatus,
    ) -> Result<(), StoreError> {
        self.sync_state.insert(
            join(&[tenant.as_bytes(), source.as_bytes()]),
            encode(status),
        )?;
        Ok(())
    }

    /// Appends a run to the source's log, dropping the oldest beyond the limit.
    pub fn append_sync_log(
        &self,
        tenant: &str,
        source: &str,
        log: &SyncLog,
    ) -> Result<(), StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        let next = match self.sync_logs.scan_prefix(&scope).keys().next_back() {
            Some(last) => {
                let last = last?;
                let tail: [u8; 8] = last[last.len().saturating_sub(8)..]
                    .try_into()
                    .unwrap_or_default();
                u64::from_be_bytes(tail) + 1
            }
            None => 0,
        };
        let mut key = scope.clone();
        key.extend_from_slice(&next.to_be_bytes());
        self.sync_logs.insert(key, encode(log))?;
        let count = self.sync_logs.scan_prefix(&scope).count();
        for old in self
            .sync_logs
            .scan_prefix(&scope)
            .keys()
            .take(count.saturating_sub(SYNC_LOG_LIMIT))
        {
            self.sync_logs.remove(old?)?;
        }
        Ok(())
    }

    /// The source's runs, newest first.
    pub fn sync_logs(&self, tenant: &str, source: &str) -> Result<Vec<SyncLog>, StoreError> {
        let mut logs: Vec<SyncLog> = iter_json(
            &self.sync_logs,
            &prefix(&[tenant.as_bytes(), source.as_bytes()]),
        )
        .collect::<Result<_, _>>()?;
        logs.reverse();
        Ok(logs)
    }

    /// Encrypted token blob of a source.
    pub fn secret(&self, tenant: &str, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .secrets
            .get(join(&[tenant.as_bytes(), source.as_bytes()]))?
            .map(|v| v.to_vec()))
    }

    /// Stores an encrypted token blob; durable when it returns.
    pub async fn put_secret(
        &self,
        tenant: &str,
        source: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.put_secret_batched(tenant, source, sealed)?;
        self.flush().await
    }

    /// Stores an encrypted token blob; durable with the next flush.
    pub fn put_secret_batched(
        &self,
        tenant: &str,
        source: &str,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.secrets
            .insert(join(&[tenant.as_bytes(), source.as_bytes()]), sealed)?;
        Ok(())
    }

    /// Forgets everything sync kept for a source (on its removal).
    pub(super) fn drop_sync_data(&self, tenant: &str, source: &str) -> Result<(), StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        for tree in [&self.mirror, &self.sync_logs] {
            for key in tree.scan_prefix(&scope).keys() {
                tree.remove(key?)?;
            }
        }
        let key = join(&[tenant.as_bytes(), source.as_bytes()]);
        self.sync_state.remove(&key)?;
        self.sync_state.remove(feed_digests_key(tenant, source))?;
        self.secrets.remove(&key)?;
        Ok(())
    }
}

/// Items per mirror batch: sled holds its write lock, which every reader of the
/// store waits for, while it applies one.
const MIRROR_BATCH: usize = 256;

/// Mirror writes prepared by [`Store::mirror_changes`]; durable with the next
/// flush once applied. Applied in several batches: a run that stops half-way
/// leaves items that differ from the provider, which the next run writes again.
pub struct MirrorWrites {
    mirror: sled::Tree,
    batches: Vec<sled::Batch>,
}

impl MirrorWrites {
    pub fn apply(self) -> Result<(), StoreError> {
        for batch in self.batches {
            self.mirror.apply_batch(batch)?;
        }
        Ok(())
    }
}
