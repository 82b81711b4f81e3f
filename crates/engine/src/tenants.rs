//! The tenants the engines serve, looked up by id, and the fence that keeps a
//! deleted tenant's writes out.
//!
//! Background work (the sync scheduler, the export deliverer) walks every
//! tenant; requests look one up. Entries are shared (`Arc`) so a walk holds no
//! lock while it works, and the directory can change under it.
//!
//! A request that writes looks its tenant up as a [`LiveTenant`] and holds a
//! [`WritePermit`] from before its first write to its answer. Deleting a
//! tenant first holds its writes ([`Tenants::hold_writes`]: it waits for the
//! permits under way and keeps new ones waiting), then removes it
//! ([`Tenants::remove`]): every permit asked for after that, by requests that
//! found this tenant before, fails with [`TenantGone`]. So nothing is written
//! under a tenant's id once its data is being removed. A tenant created again
//! under the same id is another tenant with a fence of its own: requests that
//! found the deleted one cannot write into it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::model::Source;
use crate::settings::TenantConfig;
use crate::store::Store;

/// One tenant's fence: writes share it, its deletion takes it alone. The value
/// is whether the tenant is still served (false for good once removed).
type Fence = tokio::sync::RwLock<bool>;

struct Entry {
    settings: Arc<TenantConfig>,
    fence: Arc<Fence>,
}

/// A write was asked for on a tenant that has been deleted since the request
/// found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant \"{0}\" does not exist")]
pub struct TenantGone(pub String);

/// A tenant as a request found it: its settings (what it derefs to), and the
/// fence its writes pass.
#[derive(Clone)]
pub struct LiveTenant {
    settings: Arc<TenantConfig>,
    fence: Arc<Fence>,
}

impl std::ops::Deref for LiveTenant {
    type Target = TenantConfig;

    fn deref(&self) -> &TenantConfig {
        &self.settings
    }
}

impl LiveTenant {
    /// Lets a write in: hold the permit until the write, and whatever follows
    /// from it (conflicts, scheduling deliveries), is done. Waits only while
    /// the tenant is being deleted, then fails. Shared, so writes of one tenant
    /// never wait for each other here.
    pub async fn write(&self) -> Result<WritePermit, TenantGone> {
        let open = Arc::clone(&self.fence).read_owned().await;
        if *open {
            Ok(WritePermit { _open: open })
        } else {
            Err(TenantGone(self.settings.id.clone()))
        }
    }
}

/// While held, the tenant's data is not being removed.
#[must_use = "the write is let in only while the permit is held"]
pub struct WritePermit {
    _open: OwnedRwLockReadGuard<bool>,
}

/// A tenant's writes held out (none under way, new ones waiting), for deleting
/// it; dropped without [`Tenants::remove`], the writes go on.
pub struct WritesHeld {
    id: String,
    fence: Arc<Fence>,
    open: OwnedRwLockWriteGuard<bool>,
}

/// Every tenant's settings, by id.
#[derive(Default)]
pub struct Tenants {
    by_id: RwLock<BTreeMap<String, Entry>>,
}

impl Entry {
    fn new(settings: Arc<TenantConfig>) -> Self {
        Entry {
            settings,
            fence: Arc::new(Fence::new(true)),
        }
    }
}

impl Tenants {
    pub fn new(tenants: impl IntoIterator<Item = TenantConfig>) -> Self {
        let by_id = tenants
            .into_iter()
            .map(|t| (t.id.clone(), Entry::new(Arc::new(t))))
            .collect();
        Tenants {
            by_id: RwLock::new(by_id),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.read().get(id).map(|e| Arc::clone(&e.settings))
    }

    /// A tenant for a request that may write ([`LiveTenant::write`]).
    pub fn live(&self, id: &str) -> Option<LiveTenant> {
        self.read().get(id).map(|e| LiveTenant {
            settings: Arc::clone(&e.settings),
            fence: Arc::clone(&e.fence),
        })
    }

    /// A snapshot of every tenant, in id order.
    pub fn all(&self) -> Vec<Arc<TenantConfig>> {
        self.read()
            .values()
            .map(|e| Arc::clone(&e.settings))
            .collect()
    }

    /// Adds a tenant or replaces its settings (provisioning); walks that
    /// already hold the old entry finish with it. New settings of a tenant
    /// keep its fence: only a deletion ends it.
    pub fn insert(&self, tenant: Arc<TenantConfig>) {
        let mut by_id = self.write();
        match by_id.get_mut(&tenant.id) {
            Some(entry) => entry.settings = tenant,
            None => {
                by_id.insert(tenant.id.clone(), Entry::new(tenant));
            }
        }
    }

    /// Holds a tenant's writes: waits until no [`WritePermit`] of it is held,
    /// and keeps new ones waiting until the hold is dropped or the tenant
    /// removed. None: no such tenant.
    pub async fn hold_writes(&self, id: &str) -> Option<WritesHeld> {
        let fence = Arc::clone(&self.read().get(id)?.fence);
        let open = Arc::clone(&fence).write_owned().await;
        Some(WritesHeld {
            id: id.to_owned(),
            fence,
            open,
        })
    }

    /// Removes a tenant whose writes are held: the writes waiting, and any
    /// asked for later by requests that found it, fail with [`TenantGone`];
    /// background loops stop picking it up at their next walk. The hold is
    /// given back, to be dropped once the tenant's data is gone.
    pub fn remove(&self, mut held: WritesHeld) -> WritesHeld {
        *held.open = false;
        let mut by_id = self.write();
        // Only the tenant whose writes are held: one created again under the
        // id would have a fence of its own.
        if by_id
            .get(&held.id)
            .is_some_and(|e| Arc::ptr_eq(&e.fence, &held.fence))
        {
            by_id.remove(&held.id);
        }
        held
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.by_id.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every source of every tenant that `keep` accepts, with its tenant: what
    /// the sync scheduler and the export deliverer walk. A tenant whose
    /// sources cannot be read is skipped, with a warning naming `walker`.
    pub fn sources_where(
        &self,
        store: &Store,
        walker: &str,
        keep: impl Fn(&Source) -> bool,
    ) -> Vec<(Arc<TenantConfig>, Source)> {
        sources_of(self.all(), store, walker, keep)
    }

    /// [`Tenants::sources_where`] over the tenants named in `ids` that exist.
    pub fn sources_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
        store: &Store,
        walker: &str,
        keep: impl Fn(&Source) -> bool,
    ) -> Vec<(Arc<TenantConfig>, Source)> {
        let tenants = ids.into_iter().filter_map(|id| self.get(id));
        sources_of(tenants, store, walker, keep)
    }

    /// The map; a panic elsewhere while it was held leaves it usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn sources_of(
    tenants: impl IntoIterator<Item = Arc<TenantConfig>>,
    store: &Store,
    walker: &str,
    keep: impl Fn(&Source) -> bool,
) -> Vec<(Arc<TenantConfig>, Source)> {
    let mut found = Vec::new();
    for tenant in tenants {
        match store.sources(&tenant.id) {
            Ok(sources) => found.extend(
                sources
                    .into_iter()
                    .filter(|s| keep(s))
                    .map(|s| (Arc::clone(&tenant), s)),
            ),
            Err(e) => tracing::warn!(error = %e, walker, "cannot list sources"),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};

    fn tenant(id: &str) -> TenantConfig {
        TenantConfig::new(id, id, chrono_tz::UTC)
    }

    /// Polls `f` once: whether it is still waiting (no timing involved).
    fn pending<F: Future>(f: &mut Pin<Box<F>>) -> bool {
        f.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    #[tokio::test]
    async fn looks_up_by_id_and_lists_in_order() {
        let tenants = Tenants::new([tenant("salon"), tenant("garage")]);
        assert_eq!(
            tenants.get("salon").map(|t| t.id.clone()),
            Some("salon".into())
        );
        assert!(tenants.get("nope").is_none());
        let ids: Vec<String> = tenants.all().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, ["garage", "salon"]);
        tenants.insert(Arc::new(tenant("bakery")));
        let held = tenants.hold_writes("garage").await.expect("garage exists");
        drop(tenants.remove(held));
        assert!(tenants.hold_writes("nope").await.is_none());
        let ids: Vec<String> = tenants.all().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, ["bakery", "salon"]);
    }

    #[tokio::test]
    async fn a_deletion_waits_for_writes_under_way_and_fences_out_later_ones() {
        let tenants = Tenants::new([tenant("bakery")]);
        let found = tenants.live("bakery").expect("bakery");
        let also_found = tenants.live("bakery").expect("bakery");
        let under_way = found.write().await.expect("served");
        // Writes share the fence.
        drop(
            also_found
                .write()
                .await
                .expect("writes of a tenant share it"),
        );
        // The deletion waits for the write under way ...
        let mut hold = Box::pin(tenants.hold_writes("bakery"));
        assert!(pending(&mut hold), "a write holds its permit");
        drop(under_way);
        let held = hold.await.expect("bakery exists");
        // ... and a write asked for meanwhile waits, then fails.
        let mut late = Box::pin(also_found.write());
        assert!(pending(&mut late), "writes wait while the deletion runs");
        let held = tenants.remove(held);
        assert!(tenants.live("bakery").is_none());
        drop(held);
        assert_eq!(
            late.await.err(),
            Some(TenantGone("bakery".into())),
            "a write that found the tenant before is refused"
        );

        // Created again: a new tenant, that requests which found the old one
        // cannot write into.
        tenants.insert(Arc::new(tenant("bakery")));
        assert!(found.write().await.is_err());
        let again = tenants.live("bakery").expect("bakery again");
        drop(again.write().await.expect("the new tenant is served"));
        // New settings keep the fence.
        tenants.insert(Arc::new(TenantConfig::new(
            "bakery",
            "Bakery",
            chrono_tz::UTC,
        )));
        drop(again.write().await.expect("still the same tenant"));

        // A hold given up (a deletion that failed before removing) lets writes go on.
        let held = tenants.hold_writes("bakery").await.expect("bakery");
        let mut waiting = Box::pin(again.write());
        assert!(pending(&mut waiting));
        drop(held);
        assert!(waiting.await.is_ok());
    }
}
