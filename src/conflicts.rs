//! Conflicts that appear after a booking was made: calendar time (an imported
//! Google/Outlook event, a staff calendar entry) that now overlaps it.
//!
//! Detection runs whenever a calendar object is written or re-expanded; a conflict
//! is resolved when the overlap goes away (the event moves or goes, the booking
//! moves or is cancelled). New conflicts are POSTed to the tenant's webhook with an
//! HMAC-SHA256 signature, retried with backoff; undelivered ones are retried after a
//! restart, since the conflict record itself is durable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{TenantConfig, WebhookConfig};
use crate::model::{BusyKind, CalendarObject, Conflict, Span, WebhookState};
use crate::store::{Store, StoreError};

/// Delays before each webhook attempt; after the last one the conflict stays
/// undelivered (and is listed so) until the next restart.
const WEBHOOK_BACKOFF: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-calgate-signature";

/// Finds, resolves and announces conflicts.
pub struct ConflictTracker {
    store: Store,
    http: reqwest::Client,
}

/// The span from the first blocking occurrence's start to the last one's end.
fn blocking_envelope(object: &CalendarObject) -> Option<Span> {
    object
        .occurrences
        .iter()
        .filter(|b| b.kind != BusyKind::Free)
        .map(|b| b.span)
        .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)))
}

fn conflict_id(tenant: &str, booking: &str, source: &str, object: &str, span: Span) -> String {
    let digest = Sha256::digest(format!(
        "{tenant}\0{booking}\0{source}\0{object}\0{}",
        span.start
    ));
    hex::encode(&digest[..12])
}

impl ConflictTracker {
    pub fn new(store: Store) -> Arc<Self> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("calgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Arc::new(ConflictTracker { store, http })
    }

    /// Records the bookings `object` now overlaps and resolves the ones it no longer
    /// does; announces new ones. `object` None: the object was deleted.
    pub async fn object_changed(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: &str,
        object_id: &str,
        object: Option<&CalendarObject>,
    ) -> Result<(), StoreError> {
        // One index query over the object's whole extent, then matching in memory:
        // a recurring object has hundreds of occurrences.
        let bookings = match object.and_then(blocking_envelope) {
            Some(span) => self.store.booking_busy(&tenant.id, span)?,
            None => Vec::new(),
        };
        let (changed, fresh) = self.reconcile(tenant, source, object_id, object, &bookings)?;
        self.store.put_conflicts(&tenant.id, &changed).await?;
        self.announce_all(tenant, fresh);
        Ok(())
    }

    /// [`ConflictTracker::object_changed`] for a batch of objects of one source
    /// that were just written (an import): one bookings query over the whole
    /// batch's extent and one read of the source's open conflicts, instead of a
    /// query per object; an object that overlaps no booking and had no open
    /// conflict needs nothing more. Conflict records of the batch are stored
    /// together (durable when this returns), then announced.
    pub async fn objects_changed(
        self: &Arc<Self>,
        tenant: &TenantConfig,
        source: &str,
        objects: &[&CalendarObject],
    ) -> Result<(), StoreError> {
        let envelope = objects
            .iter()
            .filter_map(|o| blocking_envelope(o))
            .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)));
        let bookings = match envelope {
            Some(span) => self.store.booking_busy(&tenant.id, span)?,
            None => Vec::new(),
        };
        let open = self.store.objects_in_open_conflicts(&tenant.id, source)?;
        if bookings.is_empty() && open.is_empty() {
            return Ok(());
        }
        let mut changed = Vec::new();
        let mut fresh = Vec::new();
        for object in objects {
            let (c, f) = self.reconcile(tenant, source, &object.id, Some(object), &bookings)?;
            changed.extend(c);
            fresh.extend(f);
        }
        self.store.put_conflicts(&tenant.id, &changed).await?;
        self.announce_all(tenant, fresh);
        Ok(())
    }

    fn announce_all(self: &Arc<Self>, tenant: &TenantConfig, fresh: Vec<Conflict>) {
        for c in fresh {
            tracing::info!(tenant = %tenant.id, conflict = %c.id, booking = %c.booking_id, source = %c.source, "booking conflict detected");
            self.announce(tenant, c);
        }
    }

    /// The conflict records `object` changes, given (at least) the bookings that
    /// overlap its extent, ordered by start: (every changed record, the new ones).
    fn reconcile(
        &self,
        tenant: &TenantConfig,
        source: &str,
        object_id: &str,
        object: Option<&CalendarObject>,
        bookings: &[crate::store::BusyEntry],
    ) -> Result<(Vec<Conflict>, Vec<Conflict>), StoreError> {
        let busy: Vec<_> = object
            .map(|o| {
                o.occurrences
                    .iter()
                    .filter(|b| b.kind != BusyKind::Free)
                    .collect()
            })
            .unwrap_or_default();
        // `bookings` is ordered by start: only those starting in
        // [b.start - longest, b.end) can overlap occurrence b.
        let longest = bookings
            .iter()
            .map(|k| k.span.end - k.span.start)
            .max()
            .unwrap_or(0);
        let mut current = Vec::new();
        for b in busy {
            let from = bookings.partition_point(|k| k.span.start < b.span.start - longest);
            let to = bookings.partition_point(|k| k.span.start < b.span.end);
            for booking in bookings[from..to.max(from)]
                .iter()
                .filter(|k| k.span.overlaps(&b.span))
            {
                let span = Span::new(
                    booking.span.start.max(b.span.start),
                    booking.span.end.min(b.span.end),
                );
                current.push((booking.object.clone(), span, b.kind));
            }
        }
        let known = self.store.object_conflicts(&tenant.id, source, object_id)?;
        let ids: HashSet<String> = current
            .iter()
            .map(|(b, span, _)| conflict_id(&tenant.id, b, source, object_id, *span))
            .collect();
        let now = Utc::now();
        let mut changed = Vec::new();
        // Gone: resolved.
        for mut c in known
            .iter()
            .filter(|c| c.resolved.is_none())
            .filter(|c| !ids.contains(&c.id))
            .cloned()
        {
            c.resolved = Some(now);
            changed.push(c);
        }
        // New (or back after being resolved): open.
        let mut fresh = Vec::new();
        for (booking, span, kind) in current {
            let id = conflict_id(&tenant.id, &booking, source, object_id, span);
            match known.iter().find(|c| c.id == id) {
                Some(c) if c.resolved.is_none() => continue,
                _ => {}
            }
            let c = Conflict {
                id,
                booking_id: booking,
                source: source.to_owned(),
                object_id: object_id.to_owned(),
                span,
                kind,
                detected: now,
                acknowledged: None,
                resolved: None,
                webhook: WebhookState::default(),
            };
            fresh.push(c.clone());
            changed.push(c);
        }
        Ok((changed, fresh))
    }

    /// Resolves a booking's open conflicts that no longer overlap it (after a move,
    /// a cancellation or a deletion: `span` None).
    pub async fn booking_changed(
        &self,
        tenant: &TenantConfig,
        booking_id: &str,
        span: Option<Span>,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut changed = Vec::new();
        for mut c in self.store.conflicts(&tenant.id)? {
            if c.booking_id != booking_id || c.resolved.is_some() {
                continue;
            }
            let still = match (
                span,
                self.store.object(&tenant.id, &c.source, &c.object_id)?,
            ) {
                (Some(span), Some(object)) => object.occurrences.iter().any(|b| {
                    b.kind != BusyKind::Free && b.span.overlaps(&span) && b.span.overlaps(&c.span)
                }),
                _ => false,
            };
            if !still {
                c.resolved = Some(now);
                changed.push(c);
            }
        }
        self.store.put_conflicts(&tenant.id, &changed).await
    }

    /// Marks a conflict as seen by a person. Returns the updated record.
    pub async fn acknowledge(
        &self,
        tenant: &TenantConfig,
        id: &str,
    ) -> Result<Option<Conflict>, StoreError> {
        let Some(mut c) = self.store.conflict(&tenant.id, id)? else {
            return Ok(None);
        };
        if c.acknowledged.is_none() {
            c.acknowledged = Some(Utc::now());
            self.store
                .put_conflicts(&tenant.id, std::slice::from_ref(&c))
                .await?;
        }
        Ok(Some(c))
    }

    /// Retries deliveries a restart interrupted.
    pub fn redeliver_pending(self: &Arc<Self>, tenants: &[TenantConfig]) {
        for tenant in tenants.iter().filter(|t| t.webhook.is_some()) {
            match self.store.conflicts(&tenant.id) {
                Ok(all) => {
                    for c in all
                        .into_iter()
                        .filter(|c| c.webhook.delivered.is_none() && c.resolved.is_none())
                    {
                        self.announce(tenant, c);
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, error = %e, "pending webhooks not read")
                }
            }
        }
    }

    fn announce(self: &Arc<Self>, tenant: &TenantConfig, conflict: Conflict) {
        let Some(hook) = tenant.webhook.clone() else {
            return;
        };
        let this = Arc::clone(self);
        let tenant_id = tenant.id.clone();
        tokio::spawn(async move { this.deliver(&tenant_id, &hook, conflict).await });
    }

    async fn deliver(&self, tenant: &str, hook: &WebhookConfig, mut conflict: Conflict) {
        let body = json!({
            "type": "booking.conflict",
            "tenant": tenant,
            "conflict": conflict_json(&conflict),
        })
        .to_string();
        for delay in WEBHOOK_BACKOFF
            .iter()
            .skip(conflict.webhook.attempts as usize)
        {
            tokio::time::sleep(*delay).await;
            let timestamp = Utc::now().timestamp();
            let result = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, signature(&hook.secret, timestamp, &body))
                .body(body.clone())
                .send()
                .await;
            conflict.webhook.attempts += 1;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    conflict.webhook.delivered = Some(Utc::now());
                    conflict.webhook.last_error = None;
                }
                Ok(resp) => conflict.webhook.last_error = Some(format!("HTTP {}", resp.status())),
                Err(e) => conflict.webhook.last_error = Some(e.without_url().to_string()),
            }
            // Keep acknowledgements made meanwhile: only the delivery state is ours.
            if let Ok(Some(mut stored)) = self.store.conflict(tenant, &conflict.id) {
                stored.webhook = conflict.webhook.clone();
                if let Err(e) = self.store.put_conflicts(tenant, &[stored]).await {
                    tracing::warn!(error = %e, "webhook state not saved");
                }
            }
            if conflict.webhook.delivered.is_some() {
                return;
            }
            tracing::warn!(tenant, conflict = %conflict.id, error = ?conflict.webhook.last_error, "webhook delivery failed");
        }
    }
}

/// `t=<unix>,v1=<hex>`: HMAC-SHA256 over `"<t>.<body>"`, as Stripe-style receivers
/// verify (the timestamp lets them refuse replays).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The API representation of a conflict.
pub fn conflict_json(c: &Conflict) -> serde_json::Value {
    let at = |ms: i64| crate::api::instant_json(ms);
    let ts = |t: &Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    json!({
        "id": c.id,
        "booking_id": c.booking_id,
        "source": c.source,
        "object_id": c.object_id,
        "start": at(c.span.start),
        "end": at(c.span.end),
        "kind": c.kind.as_str(),
        "detected": c.detected.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "acknowledged": ts(&c.acknowledged),
        "resolved": ts(&c.resolved),
        "webhook": {
            "delivered": ts(&c.webhook.delivered),
            "attempts": c.webhook.attempts,
            "last_error": c.webhook.last_error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // Reference value computed with Python: hmac.new(b"0123456789abcdef",
        // b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("0123456789abcdef", 1_700_000_000, "{}"),
            "t=1700000000,v1=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
