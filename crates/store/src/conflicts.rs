//! Conflict records beyond the basics in the parent module: writes that also drop
//! records, reads by key, and listing a page at a time.
//!
//! Keys are `tenant \0 source \0 object \0 id`, none of which ever changes for a
//! record, so a listing in key order resumed after the last key it returned sees
//! every record once even while records are written meanwhile.

use std::ops::Bound;

use super::keys::{join, prefix};
use super::{Store, StoreError, decode, encode, get_json};
use crate::model::Conflict;

/// One page of a tenant's conflicts.
#[derive(Debug)]
pub struct ConflictPage {
    pub conflicts: Vec<Conflict>,
    /// Where the next page starts (opaque key bytes), when there are more.
    pub next: Option<Vec<u8>>,
}

fn key(tenant: &str, c: &Conflict) -> Vec<u8> {
    join(&[
        tenant.as_bytes(),
        c.source.as_bytes(),
        c.object_id.as_bytes(),
        c.id.as_bytes(),
    ])
}

impl Store {
    /// Stores `put` and removes `remove` in one batch; durable when it returns.
    pub async fn replace_conflicts(
        &self,
        tenant: &str,
        put: &[Conflict],
        remove: &[Conflict],
    ) -> Result<(), StoreError> {
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for c in remove {
            batch.remove(key(tenant, c));
        }
        for c in put {
            batch.insert(key(tenant, c), encode(c));
        }
        self.conflicts.apply_batch(batch)?;
        self.flush().await
    }

    /// One conflict by its full key.
    pub fn conflict_of(
        &self,
        tenant: &str,
        source: &str,
        object: &str,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError> {
        let key = join(&[
            tenant.as_bytes(),
            source.as_bytes(),
            object.as_bytes(),
            id.as_bytes(),
        ]);
        get_json(&self.conflicts, &key)
    }

    /// Up to `limit` of the tenant's conflicts that `keep` accepts, in key order,
    /// starting after `after` (a [`ConflictPage::next`] of an earlier page).
    pub fn conflicts_page(
        &self,
        tenant: &str,
        after: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&Conflict) -> bool,
    ) -> Result<ConflictPage, StoreError> {
        let scope = prefix(&[tenant.as_bytes()]);
        let from = match after {
            Some(after) => Bound::Excluded([scope.as_slice(), after].concat()),
            None => Bound::Included(scope.clone()),
        };
        let mut conflicts = Vec::new();
        let mut last = Vec::new();
        for item in self.conflicts.range::<Vec<u8>, _>((from, Bound::Unbounded)) {
            let (key, raw) = item?;
            if !key.starts_with(&scope) {
                break;
            }
            let c: Conflict = decode(&key, &raw)?;
            if !keep(&c) {
                continue;
            }
            if conflicts.len() == limit {
                // One more exists: the page ends at the last one taken.
                return Ok(ConflictPage {
                    conflicts,
                    next: Some(last),
                });
            }
            last = key[scope.len()..].to_vec();
            conflicts.push(c);
        }
        Ok(ConflictPage {
            conflicts,
            next: None,
        })
    }
}
