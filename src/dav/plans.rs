//! Expansion plans of recently expanded objects.
//!
//! A calendar-query with `expand` re-expands every matching object for the
//! asked window; parsing the stored text is most of that work, and the same
//! objects come back query after query (a client syncing a month view). So the
//! parsed form ([`ExpandPlan`]) of each expanded object is kept, keyed by the
//! object and checked against its ETag, within a memory budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::node::{Ctx, Node};
use crate::ical::expand::ExpandPlan;

/// Memory for plans; when full, the cache starts over (plans are cheap to redo).
const BUDGET_BYTES: usize = 16 * 1024 * 1024;

type Key = (String, String, String);

#[derive(Default)]
struct Cache {
    plans: HashMap<Key, (String, Arc<ExpandPlan>)>,
    bytes: usize,
}

#[derive(Default)]
pub struct ExpandPlans {
    cache: Mutex<Cache>,
}

impl ExpandPlans {
    /// Drops the plans of a deleted tenant's objects.
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.plans.retain(|(t, _, _), _| t != tenant);
            cache.bytes = cache.plans.values().map(|(_, plan)| plan.size()).sum();
        }
    }

    /// The plan of an object resource, from the cache while its ETag holds;
    /// None for other resources. Errors say why the stored text does not parse.
    pub fn plan(&self, ctx: &Ctx<'_>, node: &Node) -> Result<Option<Arc<ExpandPlan>>, String> {
        let (calendar, id, etag) = match node {
            Node::Booking(_, b) => (
                crate::model::BOOKINGS_SOURCE,
                b.id.as_str(),
                b.etag.as_str(),
            ),
            Node::Object(c, o) => (c.id(), o.id.as_str(), o.etag.as_str()),
            _ => return Ok(None),
        };
        let key = (ctx.tenant.id.clone(), calendar.to_owned(), id.to_owned());
        if let Ok(cache) = self.cache.lock()
            && let Some((cached_etag, plan)) = cache.plans.get(&key)
            && cached_etag == etag
        {
            return Ok(Some(Arc::clone(plan)));
        }
        let Some(text) = node.body(ctx) else {
            return Ok(None);
        };
        let plan = Arc::new(ExpandPlan::new(&text)?);
        if let Ok(mut cache) = self.cache.lock() {
            let size = plan.size();
            if cache.bytes + size > BUDGET_BYTES {
                cache.plans.clear();
                cache.bytes = 0;
            }
            if let Some((_, old)) = cache
                .plans
                .insert(key, (etag.to_owned(), Arc::clone(&plan)))
            {
                cache.bytes = cache.bytes.saturating_sub(old.size());
            }
            cache.bytes += size;
        }
        Ok(Some(plan))
    }
}
