//! Scheduling inboxes (RFC 6638 §2.2): the iTIP messages the server delivered to
//! each CalDAV user, and a change log per inbox that sync-collection answers from.
//!
//! | tree    | key                            | value                    |
//! |---------|--------------------------------|--------------------------|
//! | `inbox` | tenant \0 user \0 `i` \0 name  | [`InboxItem`] (JSON)     |
//! | `inbox` | tenant \0 user \0 `c` \0 seq   | [`Change`] (JSON)        |
//! | `inbox` | tenant \0 user \0 `v`          | newest seq (u64, BE)     |
//!
//! Deliveries and deletions are transactions made durable before they return,
//! like every other acknowledged write. What the messages say and who receives
//! them is the scheduling code's business, not this module's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::TransactionalTree;

use super::keys::{decode_u64, join, prefix};
use super::{
    Change, Store, StoreError, TxResult, changes_after, decode, encode, get_json, scan_json,
    settled, tx_corrupt,
};

/// Messages an inbox keeps: when more arrive, the oldest go. They are notices
/// (the meetings themselves live in the tenant's calendars), and clients that
/// never clean their inbox must not grow it without end.
pub const INBOX_CAPACITY: usize = 500;

/// One delivered iTIP message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// Resource name in the inbox (`{uuid}.ics`).
    pub name: String,
    pub etag: String,
    pub created: DateTime<Utc>,
    /// Position in the inbox's change log.
    pub seq: u64,
    pub ics: String,
}

/// A message for one user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub user: String,
    pub ics: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxDelete {
    Deleted,
    NotFound,
    /// The item's ETag is not the one given: here is the current one.
    PreconditionFailed(String),
}

fn item_key(tenant: &str, user: &str, name: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), user.as_bytes(), b"i", name.as_bytes()])
}

fn change_key(tenant: &str, user: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(&[tenant.as_bytes(), user.as_bytes(), b"c"]);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn version_key(tenant: &str, user: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), user.as_bytes(), b"v"])
}

/// Moves the inbox's version on and logs the change under it.
fn log_change(
    tx: &TransactionalTree,
    tenant: &str,
    user: &str,
    name: &str,
    deleted: bool,
) -> TxResult<u64> {
    let key = version_key(tenant, user);
    let seq = tx.get(&key)?.and_then(|raw| decode_u64(&raw)).unwrap_or(0) + 1;
    tx.insert(key, &seq.to_be_bytes())?;
    let change = Change {
        seq,
        id: name.to_owned(),
        deleted,
    };
    tx.insert(change_key(tenant, user, seq), encode(&change))?;
    Ok(seq)
}

impl Store {
    /// A user's inbox, oldest message first.
    pub fn inbox_items(&self, tenant: &str, user: &str) -> Result<Vec<InboxItem>, StoreError> {
        let mut items: Vec<InboxItem> = scan_json(
            &self.inbox,
            &prefix(&[tenant.as_bytes(), user.as_bytes(), b"i"]),
        )?;
        items.sort_by_key(|i| i.seq);
        Ok(items)
    }

    pub fn inbox_item(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
    ) -> Result<Option<InboxItem>, StoreError> {
        get_json(&self.inbox, &item_key(tenant, user, name))
    }

    /// Sequence number of the inbox's newest change (0: none yet).
    pub fn inbox_version(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        Ok(self
            .inbox
            .get(version_key(tenant, user))?
            .and_then(|raw| decode_u64(&raw))
            .unwrap_or(0))
    }

    /// Changes of an inbox after `since`, oldest first.
    pub fn inbox_changes_since(
        &self,
        tenant: &str,
        user: &str,
        since: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let scope = prefix(&[tenant.as_bytes(), user.as_bytes(), b"c"]);
        changes_after(&self.inbox, scope, since)
    }

    /// Puts each message in its user's inbox, all in one transaction; durable
    /// when it returns. Returns the items as stored.
    pub async fn deliver(
        &self,
        tenant: &str,
        deliveries: &[Delivery],
    ) -> Result<Vec<InboxItem>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let created = Utc::now();
        let fresh: Vec<InboxItem> = deliveries
            .iter()
            .map(|d| InboxItem {
                name: format!("{}.ics", uuid::Uuid::new_v4()),
                etag: format!(
                    "\"{}\"",
                    hex::encode(&Sha256::digest(d.ics.as_bytes())[..12])
                ),
                created,
                seq: 0,
                ics: d.ics.clone(),
            })
            .collect();
        let result = self.inbox.transaction(|tx| {
            let mut stored = Vec::with_capacity(fresh.len());
            for (delivery, item) in deliveries.iter().zip(&fresh) {
                let mut item = item.clone();
                item.seq = log_change(tx, tenant, &delivery.user, &item.name, false)?;
                tx.insert(item_key(tenant, &delivery.user, &item.name), encode(&item))?;
                stored.push(item);
            }
            Ok(stored)
        });
        let stored = settled(result)?;
        let mut users: Vec<&str> = deliveries.iter().map(|d| d.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            let items = self.inbox_items(tenant, user)?;
            let excess = items.len().saturating_sub(INBOX_CAPACITY);
            for old in &items[..excess] {
                self.remove_inbox_item(tenant, user, &old.name, None)?;
            }
        }
        self.flush().await?;
        Ok(stored)
    }

    /// Deletes a message if `etag` (when given) matches. Durable when it returns.
    pub async fn delete_inbox_item(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
        etag: Option<&str>,
    ) -> Result<InboxDelete, StoreError> {
        let outcome = self.remove_inbox_item(tenant, user, name, etag)?;
        if outcome == InboxDelete::Deleted {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// [`Store::delete_inbox_item`] without waiting for durability.
    fn remove_inbox_item(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
        etag: Option<&str>,
    ) -> Result<InboxDelete, StoreError> {
        let key = item_key(tenant, user, name);
        let result = self.inbox.transaction(|tx| {
            let Some(raw) = tx.get(&key)? else {
                return Ok(InboxDelete::NotFound);
            };
            let item: InboxItem = decode(&key, &raw).map_err(tx_corrupt)?;
            if etag.is_some_and(|e| e != item.etag) {
                return Ok(InboxDelete::PreconditionFailed(item.etag));
            }
            tx.remove(key.as_slice())?;
            log_change(tx, tenant, user, name, true)?;
            Ok(InboxDelete::Deleted)
        });
        settled(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(user: &str, n: usize) -> Delivery {
        Delivery {
            user: user.into(),
            ics: format!("BEGIN:VCALENDAR\r\nX-N:{n}\r\nEND:VCALENDAR\r\n"),
        }
    }

    #[tokio::test]
    async fn deliveries_are_logged_per_inbox_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let names = {
            let store = Store::open(dir.path()).unwrap();
            let stored = store
                .deliver(
                    "t",
                    &[delivery("bea", 1), delivery("ana", 2), delivery("bea", 3)],
                )
                .await
                .unwrap();
            assert_eq!(stored.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 1, 2]);
            assert_eq!(store.inbox_items("t", "bea").unwrap().len(), 2);
            assert!(
                store.inbox_items("u", "bea").unwrap().is_empty(),
                "tenants apart"
            );
            let first = &stored[0];
            assert_eq!(
                store
                    .delete_inbox_item("t", "bea", &first.name, Some("\"other\""))
                    .await
                    .unwrap(),
                InboxDelete::PreconditionFailed(first.etag.clone())
            );
            assert_eq!(
                store
                    .delete_inbox_item("t", "bea", &first.name, Some(&first.etag))
                    .await
                    .unwrap(),
                InboxDelete::Deleted
            );
            assert_eq!(
                store
                    .delete_inbox_item("t", "bea", &first.name, None)
                    .await
                    .unwrap(),
                InboxDelete::NotFound
            );
            let changes = store.inbox_changes_since("t", "bea", 1).unwrap();
            assert_eq!(
                changes
                    .iter()
                    .map(|c| (c.seq, c.deleted))
                    .collect::<Vec<_>>(),
                [(2, false), (3, true)]
            );
            assert_eq!(store.inbox_version("t", "bea").unwrap(), 3);
            store
                .inbox_items("t", "bea")
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect::<Vec<_>>()
        };
        let store = Store::open(dir.path()).unwrap();
        let again: Vec<String> = store
            .inbox_items("t", "bea")
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(again, names);
        assert!(
            store
                .inbox_item("t", "bea", &names[0])
                .unwrap()
                .is_some_and(|i| i.ics.contains("X-N:3"))
        );
    }

    #[tokio::test]
    async fn full_inboxes_drop_their_oldest_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch: Vec<Delivery> = (0..INBOX_CAPACITY + 3)
            .map(|n| delivery("bea", n))
            .collect();
        store.deliver("t", &batch).await.unwrap();
        let items = store.inbox_items("t", "bea").unwrap();
        assert_eq!(items.len(), INBOX_CAPACITY);
        assert!(items[0].ics.contains("X-N:3\r\n"), "{}", items[0].ics);
    }
}
