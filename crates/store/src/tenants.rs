//! Tenants provisioned at run time, and removing everything of a tenant.
//!
//! | tree      | key       | value                          |
//! |-----------|-----------|--------------------------------|
//! | `tenants` | tenant id | [`ProvisionedTenant`] (JSON)   |
//!
//! Tenants declared in `gateway.toml` have no record here. Every write is
//! flushed before it returns: the API acknowledges a tenant only once it would
//! survive a crash.
//!
//! [`Store::delete_tenant_data`] removes every key of a tenant from every data
//! tree (all keys start with `tenant \0`, see [`crate::keys`]). It is not one
//! transaction (a tenant may own millions of keys); the caller marks the record
//! `deleting` first, so a crash part-way is finished at the next start. The
//! tenant's version counter in `meta` stays and moves on once more: it only
//! ever grows, so a sync token or ETag handed out before the deletion never
//! matches a re-created tenant's.

use super::keys::{encode_i64, join, prefix};
use super::{
    Store, StoreError, decode_version, encode, every_resource_version_key, get_json, iter_json,
    resource_version_key,
};
pub use calgate_model::provisioned::ProvisionedTenant;

/// Keys removed per batch when clearing a tenant (bounded memory per batch).
const DELETE_BATCH: usize = 4096;

impl Store {
    /// Stores (creates or replaces) a provisioned tenant; durable when it returns.
    pub async fn put_tenant_record(&self, record: &ProvisionedTenant) -> Result<(), StoreError> {
        self.tenants.insert(record.id.as_bytes(), encode(record))?;
        self.flush().await
    }

    pub fn tenant_record(&self, id: &str) -> Result<Option<ProvisionedTenant>, StoreError> {
        get_json(&self.tenants, id.as_bytes())
    }

    /// Every provisioned tenant, in id order.
    pub fn tenant_records(&self) -> Result<Vec<ProvisionedTenant>, StoreError> {
        iter_json(&self.tenants, b"").collect()
    }

    /// Forgets a provisioned tenant's record (not its data); whether there was
    /// one. Durable when it returns.
    pub async fn delete_tenant_record(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.tenants.remove(id.as_bytes())?.is_some();
        self.flush().await?;
        Ok(existed)
    }

    /// Removes every record of `tenant` from every data tree: bookings, their
    /// index, UIDs and Idempotency-Keys, sources, objects and their index,
    /// change logs, sync state and logs, mirror, tokens, export mapping and
    /// state, conflicts, inboxes and the scheduling outbox. Durable when it
    /// returns; other tenants are untouched.
    pub async fn delete_tenant_data(&self, tenant: &str) -> Result<(), StoreError> {
        let scope = prefix(&[tenant.as_bytes()]);
        for tree in self.data_trees() {
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for key in tree.scan_prefix(&scope).keys() {
                batch.remove(key?);
                pending += 1;
                if pending == DELETE_BATCH {
                    tree.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            if pending > 0 {
                tree.apply_batch(batch)?;
            }
        }
        // Per-resource versions go with the bookings log they point into.
        for key in self
            .meta
            .scan_prefix(resource_version_key(tenant, ""))
            .keys()
        {
            self.meta.remove(key?)?;
        }
        self.meta.remove(every_resource_version_key(tenant))?;
        // The version moves on, so validators of the old data (feed ETags,
        // sync tokens) never match what a re-created tenant serves.
        let key = join(&[b"version", tenant.as_bytes()]);
        let old = self
            .meta
            .get(&key)?
            .map(|raw| decode_version(&raw))
            .unwrap_or_default();
        let mut raw = (old.seq + 1).to_be_bytes().to_vec();
        raw.extend_from_slice(&encode_i64(
            chrono::Utc::now().timestamp_millis().max(old.modified_ms),
        ));
        self.meta.insert(key, raw)?;
        self.flush().await
    }

    /// Every tree whose keys start with a tenant id (all but `meta` and `tenants`).
    fn data_trees(&self) -> [&sled::Tree; 18] {
        [
            &self.bookings,
            &self.booking_time,
            &self.changes,
            &self.idempotency,
            &self.sources,
            &self.objects,
            &self.busy,
            &self.conflicts,
            &self.uids,
            &self.mirror,
            &self.sync_state,
            &self.sync_logs,
            &self.secrets,
            &self.export_map,
            &self.export_remote,
            &self.export_state,
            &self.inbox,
            &self.schedule_outbox,
        ]
    }
}
