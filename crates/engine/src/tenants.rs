//! The tenants the engines serve, looked up by id.
//!
//! Background work (the sync scheduler, the export deliverer) walks every
//! tenant; requests look one up. Entries are shared (`Arc`) so a walk holds no
//! lock while it works, and the directory can change under it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::model::Source;
use crate::settings::TenantConfig;
use crate::store::Store;

/// Every tenant's settings, by id.
#[derive(Default)]
pub struct Tenants {
    by_id: RwLock<BTreeMap<String, Arc<TenantConfig>>>,
}

impl Tenants {
    pub fn new(tenants: impl IntoIterator<Item = TenantConfig>) -> Self {
        let by_id = tenants
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        Tenants {
            by_id: RwLock::new(by_id),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.read().get(id).cloned()
    }

    /// A snapshot of every tenant, in id order.
    pub fn all(&self) -> Vec<Arc<TenantConfig>> {
        self.read().values().cloned().collect()
    }

    /// Adds a tenant or replaces its settings (provisioning); walks that
    /// already hold the old entry finish with it.
    pub fn insert(&self, tenant: Arc<TenantConfig>) {
        self.write().insert(tenant.id.clone(), tenant);
    }

    /// Removes a tenant: background loops stop picking it up at their next walk.
    pub fn remove(&self, id: &str) -> Option<Arc<TenantConfig>> {
        self.write().remove(id)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<TenantConfig>>> {
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
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<TenantConfig>>> {
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

    fn tenant(id: &str) -> TenantConfig {
        TenantConfig::new(id, id, chrono_tz::UTC)
    }

    #[test]
    fn looks_up_by_id_and_lists_in_order() {
        let tenants = Tenants::new([tenant("salon"), tenant("garage")]);
        assert_eq!(
            tenants.get("salon").map(|t| t.id.clone()),
            Some("salon".into())
        );
        assert!(tenants.get("nope").is_none());
        let ids: Vec<String> = tenants.all().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, ["garage", "salon"]);
        tenants.insert(Arc::new(tenant("bakery")));
        assert!(tenants.remove("garage").is_some());
        let ids: Vec<String> = tenants.all().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, ["bakery", "salon"]);
    }
}
