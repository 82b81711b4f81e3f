//! Scheduling inboxes (RFC 6638 §2.2): the iTIP messages the server delivered to
//! each CalDAV user, a change log per inbox that sync-collection answers from,
//! and the outbox that feeds them.
//!
//! | tree              | key                            | value                    |
//! |-------------------|--------------------------------|--------------------------|
//! | `inbox`           | tenant \0 user \0 `i` \0 name  | [`InboxItem`] (JSON)     |
//! | `inbox`           | tenant \0 user \0 `c` \0 seq   | [`Change`] (JSON)        |
//! | `inbox`           | tenant \0 user \0 `v`          | newest seq (u64, BE)     |
//! | `schedule_outbox` | tenant \0 entry id             | the entry's messages (JSON) |
//!
//! **Outbox.** The messages a calendar write sends ([`Outgoing`]) are stored in
//! that write's own transaction, then delivered: one transaction puts them in
//! the inboxes and removes the entry, so an entry is gone exactly when its
//! messages are in. A crash between the write and the delivery leaves the entry,
//! and opening the store delivers it. Each message's inbox name is fixed when
//! it is planned, so a message already in its inbox is never added twice.
//!
//! Deliveries and deletions are made durable before they return, like every
//! other acknowledged write. What the messages say and who receives them is the
//! scheduling code's business, not this module's.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::TransactionalTree;

use super::keys::{SEP, decode_u64, join, prefix};
use super::{
    Change, Store, StoreError, TxResult, changes_after, decode, encode, get_json, scan_json,
    settled, tx_corrupt,
};

/// Messages an inbox keeps: when more arrive, the oldest go. They are notices
/// (the meetings themselves live in the tenant's calendars), and clients that
/// never clean their inbox must not grow it without end.
pub const INBOX_CAPACITY: usize = 500;

pub use calgate_model::stored::{Delivery, InboxItem};

/// The messages one write sends: stored in the write's transaction (the
/// object and booking writes of [`Store`] take it) and delivered after it with
/// [`Store::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Time-ordered, so entries a crash left are delivered in write order.
    id: String,
    messages: Vec<Message>,
}

/// One message of an outbox entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    user: String,
    /// Its resource name in the inbox, chosen when planned: the key that keeps
    /// a second delivery from adding it again.
    name: String,
    ics: String,
}

impl Outgoing {
    /// An outbox entry for `deliveries`; None when there is nothing to send.
    pub fn new(deliveries: Vec<Delivery>) -> Option<Outgoing> {
        if deliveries.is_empty() {
            return None;
        }
        let micros = Utc::now().timestamp_micros().max(0) as u64;
        Some(Outgoing {
            id: format!("{micros:016x}-{}", uuid::Uuid::new_v4().simple()),
            messages: deliveries
                .into_iter()
                .map(|d| Message {
                    user: d.user,
                    name: format!("{}.ics", uuid::Uuid::new_v4()),
                    ics: d.ics,
                })
                .collect(),
        })
    }

    /// The recipients, in order, one per message.
    fn recipients(&self) -> impl Iterator<Item = &str> {
        self.messages.iter().map(|m| m.user.as_str())
    }
}

fn outbox_key(tenant: &str, id: &str) -> Vec<u8> {
    join(&[tenant.as_bytes(), id.as_bytes()])
}

/// Inside a write's transaction: stores what it sends, if anything.
pub(super) fn stage(
    outbox: &TransactionalTree,
    tenant: &str,
    outgoing: Option<&Outgoing>,
) -> TxResult<()> {
    if let Some(o) = outgoing {
        outbox.insert(outbox_key(tenant, &o.id), encode(&o.messages))?;
    }
    Ok(())
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
        resources: None,
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

    /// Delivers what a write put in the outbox: its messages go into their
    /// inboxes and the entry goes, in one transaction; durable when it returns.
    /// Returns the items added (none when the entry was delivered already).
    pub async fn deliver(
        &self,
        tenant: &str,
        outgoing: &Outgoing,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let stored = self.deliver_entry(tenant, &outbox_key(tenant, &outgoing.id))?;
        self.trim_inboxes(tenant, outgoing.recipients())?;
        self.flush().await?;
        Ok(stored.into_iter().map(|(_, item)| item).collect())
    }

    /// Delivers every entry left in the outbox by a crash between a write and
    /// its delivery, oldest first; returns how many messages arrived. Called
    /// when the store opens, before anyone reads an inbox; not flushed.
    pub(super) fn deliver_leftovers(&self) -> Result<usize, StoreError> {
        let mut delivered = 0;
        for key in self.schedule_outbox.iter().keys() {
            let key = key?;
            let Some(tenant) = key.split(|b| *b == SEP).next() else {
                continue;
            };
            let tenant = String::from_utf8_lossy(tenant).into_owned();
            let stored = self.deliver_entry(&tenant, &key)?;
            delivered += stored.len();
            self.trim_inboxes(&tenant, stored.iter().map(|(user, _)| user.as_str()))?;
        }
        Ok(delivered)
    }

    /// Moves one outbox entry into the inboxes; messages already there stay
    /// as they are. Not flushed.
    fn deliver_entry(
        &self,
        tenant: &str,
        key: &[u8],
    ) -> Result<Vec<(String, InboxItem)>, StoreError> {
        let created = Utc::now();
        let result = (&self.schedule_outbox, &self.inbox).transaction(|(outbox, inbox)| {
            let Some(raw) = outbox.get(key)? else {
                return Ok(Vec::new());
            };
            let messages: Vec<Message> = decode(key, &raw).map_err(tx_corrupt)?;
            let mut stored = Vec::with_capacity(messages.len());
            for m in messages {
                let item_key = item_key(tenant, &m.user, &m.name);
                if inbox.get(&item_key)?.is_some() {
                    continue;
                }
                let item = InboxItem {
                    seq: log_change(inbox, tenant, &m.user, &m.name, false)?,
                    etag: format!(
                        "\"{}\"",
                        hex::encode(&Sha256::digest(m.ics.as_bytes())[..12])
                    ),
                    name: m.name,
                    created,
                    ics: m.ics,
                };
                inbox.insert(item_key, encode(&item))?;
                stored.push((m.user, item));
            }
            outbox.remove(key)?;
            Ok(stored)
        });
        settled(result)
    }

    /// Drops the oldest messages of inboxes over [`INBOX_CAPACITY`]. Not flushed.
    fn trim_inboxes<'u>(
        &self,
        tenant: &str,
        users: impl Iterator<Item = &'u str>,
    ) -> Result<(), StoreError> {
        let mut users: Vec<&str> = users.collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            let items = self.inbox_items(tenant, user)?;
            let excess = items.len().saturating_sub(INBOX_CAPACITY);
            for old in &items[..excess] {
                self.remove_inbox_item(tenant, user, &old.name, None)?;
            }
        }
        Ok(())
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

    /// Empties a user's inbox (the user is deleted): every message goes, each
    /// logged as removed, so a client syncing with an old token sees them go
    /// and a user created again under the name starts empty. Durable when it
    /// returns; the number of messages removed.
    pub async fn clear_inbox(&self, tenant: &str, user: &str) -> Result<usize, StoreError> {
        let names: Vec<String> = self
            .inbox_items(tenant, user)?
            .into_iter()
            .map(|item| item.name)
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let result = self.inbox.transaction(|tx| {
            for name in &names {
                tx.remove(item_key(tenant, user, name))?;
                log_change(tx, tenant, user, name, true)?;
            }
            Ok(())
        });
        settled(result)?;
        self.flush().await?;
        Ok(names.len())
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

    use crate::model::CalendarObject;
    use crate::{ObjectOutcome, ObjectWrite, Precondition};

    fn delivery(user: &str, n: usize) -> Delivery {
        Delivery {
            user: user.into(),
            ics: format!("BEGIN:VCALENDAR\r\nX-N:{n}\r\nEND:VCALENDAR\r\n"),
        }
    }

    /// Puts `outgoing` in the outbox on its own, as a write would with it.
    fn stage_alone(store: &Store, tenant: &str, outgoing: &Outgoing) {
        store
            .schedule_outbox
            .insert(outbox_key(tenant, &outgoing.id), encode(&outgoing.messages))
            .unwrap();
    }

    /// Stages and delivers messages, as a write and its delivery do.
    async fn send(store: &Store, tenant: &str, deliveries: Vec<Delivery>) -> Vec<InboxItem> {
        let outgoing = Outgoing::new(deliveries).expect("something to send");
        stage_alone(store, tenant, &outgoing);
        store.deliver(tenant, &outgoing).await.unwrap()
    }

    fn meeting(id: &str) -> CalendarObject {
        crate::tests::weekly(id, 0, 1)
    }

    #[tokio::test]
    async fn deliveries_are_logged_per_inbox_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let names = {
            let store = Store::open(dir.path()).unwrap();
            let stored = send(
                &store,
                "t",
                vec![delivery("bea", 1), delivery("ana", 2), delivery("bea", 3)],
            )
            .await;
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
        let store = crate::tests::reopen(dir.path());
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
        send(&store, "t", batch).await;
        let items = store.inbox_items("t", "bea").unwrap();
        assert_eq!(items.len(), INBOX_CAPACITY);
        assert!(items[0].ics.contains("X-N:3\r\n"), "{}", items[0].ics);
    }

    #[tokio::test]
    async fn messages_stored_with_a_write_are_delivered_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let outgoing = Outgoing::new(vec![delivery("bea", 1), delivery("cy", 2)]).unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let written = store
                .put_object_sending(
                    "t",
                    "team",
                    &meeting("m"),
                    &Precondition::None,
                    ObjectWrite::Change,
                    Some(&outgoing),
                )
                .await
                .unwrap();
            assert!(matches!(written, ObjectOutcome::Written(_)));
            // A crash here: written, not delivered.
            assert!(store.inbox_items("t", "bea").unwrap().is_empty());
        }
        let store = crate::tests::reopen(dir.path());
        let bea = store.inbox_items("t", "bea").unwrap();
        assert_eq!(bea.len(), 1);
        assert!(bea[0].ics.contains("X-N:1"));
        assert_eq!(store.inbox_items("t", "cy").unwrap().len(), 1);
        assert!(store.schedule_outbox.is_empty(), "delivered means gone");
        // The request's own delivery, had it run too, adds nothing.
        assert!(store.deliver("t", &outgoing).await.unwrap().is_empty());
        assert_eq!(store.inbox_items("t", "bea").unwrap(), bea);
        assert_eq!(store.inbox_version("t", "bea").unwrap(), 1);
    }

    #[tokio::test]
    async fn a_message_already_in_its_inbox_is_not_added_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let outgoing = Outgoing::new(vec![delivery("bea", 1)]).unwrap();
        stage_alone(&store, "t", &outgoing);
        assert_eq!(store.deliver("t", &outgoing).await.unwrap().len(), 1);
        // The same entry once more (as if its removal had been lost).
        stage_alone(&store, "t", &outgoing);
        assert!(store.deliver("t", &outgoing).await.unwrap().is_empty());
        assert_eq!(store.inbox_items("t", "bea").unwrap().len(), 1);
        assert!(store.schedule_outbox.is_empty());
    }

    #[tokio::test]
    async fn writes_that_do_not_happen_send_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let outgoing = Outgoing::new(vec![delivery("bea", 1)]).unwrap();
        let refused = store
            .put_object_sending(
                "t",
                "team",
                &meeting("m"),
                &Precondition::MustExist,
                ObjectWrite::Change,
                Some(&outgoing),
            )
            .await
            .unwrap();
        assert_eq!(refused, ObjectOutcome::PreconditionFailed(None));
        let missing = store
            .delete_object("t", "team", "m", None, Some(&outgoing))
            .await
            .unwrap();
        assert_eq!(missing, ObjectOutcome::PreconditionFailed(None));
        assert!(store.schedule_outbox.is_empty());
        // A deletion that happens stores its messages.
        store
            .put_object(
                "t",
                "team",
                &meeting("m"),
                &Precondition::None,
                ObjectWrite::Change,
            )
            .await
            .unwrap();
        store
            .delete_object("t", "team", "m", None, Some(&outgoing))
            .await
            .unwrap();
        assert_eq!(store.schedule_outbox.len(), 1);
    }
}
