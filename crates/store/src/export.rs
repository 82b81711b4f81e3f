//! Storage for booking export: per exporting source, where its delivery stands in
//! the bookings change log (the durable outbox is that log itself, written in the
//! same transaction as every booking change), and per booking the event it was
//! exported as. What to send is the exporter's business (the engine's `export` module).
//!
//! | tree            | key                          | value                  |
//! |-----------------|------------------------------|------------------------|
//! | `export_map`    | tenant \0 source \0 booking  | [`ExportRecord`] JSON  |
//! | `export_remote` | tenant \0 source \0 event id | booking id             |
//! | `export_state`  | tenant \0 source             | [`ExportState`] JSON   |

use super::keys::{join, prefix};
use super::{Store, StoreError, encode, get_json, iter_json};
pub use calgate_model::stored::{ExportRecord, ExportState, ExternalChange, Parked};

impl Store {
    pub fn export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
    ) -> Result<Option<ExportRecord>, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), booking.as_bytes()]);
        get_json(&self.export_map, &key)
    }

    /// Stores (`Some`) or forgets (`None`) a booking's record and keeps the
    /// event-id index in step; durable with the next flush.
    pub fn put_export_record(
        &self,
        tenant: &str,
        source: &str,
        booking: &str,
        record: Option<&ExportRecord>,
    ) -> Result<(), StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), booking.as_bytes()]);
        let old: Option<ExportRecord> = get_json(&self.export_map, &key)?;
        let old_remote = old.and_then(|r| r.remote_id);
        let new_remote = record.and_then(|r| r.remote_id.clone());
        if old_remote != new_remote {
            if let Some(old) = &old_remote {
                let rkey = join(&[tenant.as_bytes(), source.as_bytes(), old.as_bytes()]);
                // Only if it still points at this booking.
                if self.export_remote.get(&rkey)?.as_deref() == Some(booking.as_bytes()) {
                    self.export_remote.remove(rkey)?;
                }
            }
            if let Some(new) = &new_remote {
                let rkey = join(&[tenant.as_bytes(), source.as_bytes(), new.as_bytes()]);
                self.export_remote.insert(rkey, booking.as_bytes())?;
            }
        }
        match record {
            Some(r) => self.export_map.insert(key, encode(r))?,
            None => self.export_map.remove(key)?,
        };
        Ok(())
    }

    /// The booking exported as event `remote_id` of the source, if any.
    pub fn exported_booking(
        &self,
        tenant: &str,
        source: &str,
        remote_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes(), remote_id.as_bytes()]);
        Ok(self
            .export_remote
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every (booking id, record) of a source.
    pub fn export_records(
        &self,
        tenant: &str,
        source: &str,
    ) -> Result<Vec<(String, ExportRecord)>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        let mut out = Vec::new();
        for item in self.export_map.scan_prefix(&scope) {
            let (key, raw) = item?;
            let booking = String::from_utf8_lossy(&key[scope.len()..]).into_owned();
            out.push((booking, super::decode(&key, &raw)?));
        }
        Ok(out)
    }

    /// How many records of a source are parked.
    pub fn export_parked_count(&self, tenant: &str, source: &str) -> Result<usize, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        let mut n = 0;
        for r in iter_json::<ExportRecord>(&self.export_map, &scope) {
            if r?.parked.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Up to `limit` entries of the tenant's bookings change log after `since`.
    pub fn booking_changes_after(
        &self,
        tenant: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<super::Change>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), super::BOOKINGS_COLLECTION.as_bytes()]);
        let mut from = scope.clone();
        from.extend_from_slice(&since.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for item in self.changes.range(from..) {
            let (key, raw) = item?;
            if !key.starts_with(&scope) || out.len() >= limit {
                break;
            }
            out.extend(super::decode_changes(&key, &raw, since)?);
        }
        out.truncate(limit);
        Ok(out)
    }

    pub fn export_state(&self, tenant: &str, source: &str) -> Result<ExportState, StoreError> {
        let key = join(&[tenant.as_bytes(), source.as_bytes()]);
        Ok(get_json(&self.export_state, &key)?.unwrap_or_default())
    }

    /// Stores the state; durable with the next flush.
    pub fn put_export_state(
        &self,
        tenant: &str,
        source: &str,
        state: &ExportState,
    ) -> Result<(), StoreError> {
        self.export_state
            .insert(join(&[tenant.as_bytes(), source.as_bytes()]), encode(state))?;
        Ok(())
    }

    /// Forgets the mappings of a source (its events stay where they are).
    pub fn forget_export_mappings(&self, tenant: &str, source: &str) -> Result<(), StoreError> {
        let scope = prefix(&[tenant.as_bytes(), source.as_bytes()]);
        for tree in [&self.export_map, &self.export_remote] {
            for key in tree.scan_prefix(&scope).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(())
    }

    /// Forgets everything export kept for a source (on its removal). The events
    /// already exported stay in the external calendar.
    pub(super) fn drop_export_data(&self, tenant: &str, source: &str) -> Result<(), StoreError> {
        self.forget_export_mappings(tenant, source)?;
        self.export_state
            .remove(join(&[tenant.as_bytes(), source.as_bytes()]))?;
        Ok(())
    }
}
