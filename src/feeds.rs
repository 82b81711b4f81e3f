//! Published .ics feeds of a tenant's bookings (webcal subscriptions).
//!
//! A feed's ETag is derived from its inputs — the tenant's change sequence, the feed
//! settings, (for windowed feeds) the current day and, for feeds that publish
//! calendar sources, each source's settings and change-log version and the busy
//! horizon's day — so a conditional GET is answered without reading a single
//! booking. Rendered documents are cached per feed and reused until the ETag moves.
//! HTTP handling lives in [`crate::http`].
//!
//! Events of calendar sources (imported calendars, CalDAV calendars) named by a
//! feed's `include_sources` are published as opaque busy blocks: one VEVENT per
//! indexed occurrence (read from the busy index, so recurrence, exceptions and zones
//! are exactly what free/busy uses), in UTC, `SUMMARY:Busy`, nothing else of the
//! event. Non-blocking occurrences (transparent, cancelled, "free") are not in the
//! blocking index group and never show.
//!
//! A feed with a `resource` is that resource's feed: it publishes the bookings
//! taking the resource (tenant-wide ones too, since they block it) and, of the
//! sources `include_sources` names, those of the resource or of the whole
//! tenant. Without one it is the tenant's feed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};

use sha2::{Digest, Sha256};

use crate::calendars::Horizon;
use crate::config::{FeedConfig, FeedPrivacy, TenantConfig};
use crate::ical::booking::{PRODID, write_event, zones_used};
use crate::ical::{self, ContentWriter, vtimezone};
use crate::model::{Booking, BookingStatus, BusyKind, Source, Span};
use crate::store::{BusyEntry, Store, StoreError};

/// The validators of a feed's current content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedValidators {
    /// Strong ETag, quoted.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug)]
pub struct FeedDocument {
    pub validators: FeedValidators,
    pub body: Bytes,
}

/// Renders feeds and remembers the last rendering of each.
pub struct FeedService {
    store: Store,
    /// Source occurrences exist only inside it; it moves once a day.
    horizon: Horizon,
    /// Feeds rendered by an earlier process are stale (what the file or the
    /// provisioning API changes since is in the ETag's other parts).
    started: DateTime<Utc>,
    cache: Mutex<HashMap<(String, String), Arc<FeedDocument>>>,
}

impl FeedService {
    pub fn new(store: Store, horizon: Horizon) -> Self {
        let now = Utc::now();
        FeedService {
            store,
            horizon,
            started: Utc
                .timestamp_opt(now.timestamp(), 0)
                .single()
                .unwrap_or(now),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The window of bookings a feed publishes at `now`.
    fn window(feed: &FeedConfig, now: DateTime<Utc>) -> Span {
        let start = match feed.past_days {
            // Whole days, so the window (and the ETag) moves once a day.
            Some(days) => {
                let today = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
                (Utc.from_utc_datetime(&today) - Duration::days(days.into())).timestamp_millis()
            }
            None => i64::MIN / 2,
        };
        Span::new(start, i64::MAX / 2)
    }

    /// Current validators, computed without touching bookings.
    pub fn validators(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
        now: DateTime<Utc>,
    ) -> Result<FeedValidators, StoreError> {
        let version = self.store.version(&tenant.id)?;
        let mut h = Sha256::new();
        if feed.include_sources.any() {
            // Busy blocks change with any write to a published source (its change
            // log), with its settings, and as the horizon rolls (re-expansions of
            // recurring events are not logged as changes).
            h.update(b"sources\0");
            h.update(self.horizon.window(now).start.to_be_bytes());
            for source in self.published_sources(tenant, feed)? {
                let collection = self.store.collection_version(&tenant.id, &source.id)?;
                h.update(source.id.as_bytes());
                h.update([0, u8::from(source.transparent)]);
                h.update(collection.to_be_bytes());
            }
        }
        // The calendar's name, not just the tenant's: a resource renamed over
        // the provisioning API renames its feed.
        let name = calendar_name(tenant, feed);
        for part in [
            tenant.id.as_str(),
            name.as_str(),
            tenant.timezone.name(),
            feed.name.as_str(),
            feed.resource.as_deref().unwrap_or(""),
            &format!("{:?}", feed.privacy),
            &feed.refresh_minutes.to_string(),
            &feed.include_cancelled.to_string(),
            &Self::window(feed, now).start.to_string(),
            &self.started.timestamp().to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let modified = Utc
            .timestamp_millis_opt(version.modified_ms)
            .single()
            .unwrap_or(self.started);
        Ok(FeedValidators {
            etag: format!("\"{}-{}\"", version.seq, hex::encode(&digest[..8])),
            // HTTP dates have whole seconds.
            last_modified: Utc
                .timestamp_opt(modified.max(self.started).timestamp(), 0)
                .single()
                .unwrap_or(self.started),
        })
    }

    /// Drops the renderings of a deleted tenant's feeds.
    pub fn forget_tenant(&self, tenant: &str) {
        self.lock().retain(|(t, _), _| t != tenant);
    }

    /// The cached rendering, if it is still current for `validators`.
    pub fn cached(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
        validators: &FeedValidators,
    ) -> Option<Arc<FeedDocument>> {
        let key = (tenant.id.clone(), feed.name.clone());
        self.lock()
            .get(&key)
            .filter(|doc| doc.validators == *validators)
            .cloned()
    }

    /// The feed document for the current validators, rendered at most once per change.
    /// Rendering reads every published booking: call it off the async workers.
    pub fn document(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
        now: DateTime<Utc>,
    ) -> Result<Arc<FeedDocument>, StoreError> {
        let validators = self.validators(tenant, feed, now)?;
        if let Some(doc) = self.cached(tenant, feed, &validators) {
            return Ok(doc);
        }
        let key = (tenant.id.clone(), feed.name.clone());
        let window = Self::window(feed, now);
        let mut bookings = self.store.bookings_in(&tenant.id, window)?;
        if let Some(resource) = &feed.resource {
            bookings.retain(|b| b.takes(resource));
        }
        let blocks = if feed.include_sources.any() {
            let horizon = self.horizon.window(now);
            let within = Span::new(window.start.max(horizon.start), window.end.min(horizon.end));
            let others = self.other_resources_sources(tenant, feed)?;
            self.store.object_busy_in(&tenant.id, within, &|source| {
                feed.include_sources.includes(source) && !others.contains(source)
            })?
        } else {
            Vec::new()
        };
        let body = render_with_sources(tenant, feed, &bookings, &blocks, validators.last_modified);
        let doc = Arc::new(FeedDocument {
            validators,
            body: Bytes::from(body),
        });
        self.lock().insert(key, Arc::clone(&doc));
        Ok(doc)
    }

    /// The tenant's sources this feed publishes, in id order: those it names,
    /// and for a resource's feed only the resource's and the tenant-wide ones.
    fn published_sources(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
    ) -> Result<Vec<Source>, StoreError> {
        let mut sources = self.store.sources(&tenant.id)?;
        sources.retain(|s| feed.include_sources.includes(&s.id) && in_scope(feed, s));
        Ok(sources)
    }

    /// For a resource's feed, the sources of other resources (never published);
    /// empty for the tenant's feed.
    fn other_resources_sources(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
    ) -> Result<HashSet<String>, StoreError> {
        if feed.resource.is_none() {
            return Ok(HashSet::new());
        }
        Ok(self
            .store
            .sources(&tenant.id)?
            .into_iter()
            .filter(|s| !in_scope(feed, s))
            .map(|s| s.id)
            .collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<FeedDocument>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `source` is in `feed`'s scope: every source for the tenant's feed;
/// the resource's own and the tenant-wide ones for a resource's feed.
fn in_scope(feed: &FeedConfig, source: &Source) -> bool {
    feed.resource.is_none() || source.resource.is_none() || source.resource == feed.resource
}

/// Renders a complete VCALENDAR for `bookings` (ordered by start).
pub fn render(tenant: &TenantConfig, feed: &FeedConfig, bookings: &[Booking]) -> String {
    render_with_sources(tenant, feed, bookings, &[], Utc::now())
}

/// [`render`], plus `blocks` (occurrences of calendar sources, ordered by start,
/// source and object) as opaque busy blocks stamped `stamp` (the feed's
/// Last-Modified, so equal inputs render equal bytes).
pub fn render_with_sources(
    tenant: &TenantConfig,
    feed: &FeedConfig,
    bookings: &[Booking],
    blocks: &[BusyEntry],
    stamp: DateTime<Utc>,
) -> String {
    let published: Vec<&Booking> = bookings
        .iter()
        .filter(|b| {
            b.status != BookingStatus::Cancelled
                || (feed.include_cancelled && feed.privacy == FeedPrivacy::Full)
        })
        .collect();
    let mut w = ContentWriter::with_capacity(512 + published.len() * 600 + blocks.len() * 280);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], PRODID);
    w.raw("VERSION", &[], "2.0");
    w.raw("CALSCALE", &[], "GREGORIAN");
    w.raw("METHOD", &[], "PUBLISH");
    let name = calendar_name(tenant, feed);
    w.text("NAME", &[], &name);
    w.text("X-WR-CALNAME", &[], &name);
    w.text("X-WR-TIMEZONE", &[], tenant.timezone.name());
    let ttl = format!("PT{}M", feed.refresh_minutes);
    w.raw("REFRESH-INTERVAL", &[("VALUE", "DURATION")], &ttl);
    w.raw("X-PUBLISHED-TTL", &[], &ttl);
    for (tz, span) in zones_used(tenant.timezone, &published) {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        vtimezone::write_vtimezone(&mut w, tz, at(span.start), at(span.end));
    }
    let opaque_uids = (feed.privacy == FeedPrivacy::Busy).then_some(feed.name.as_str());
    for booking in published {
        write_event(&mut w, opaque_uids, booking, None);
    }
    let stamp = ical::format_utc(stamp);
    let mut blocks = blocks.iter().peekable();
    while let Some(block) = blocks.next() {
        // Two occurrences of one object starting together (an RDATE repeating the
        // DTSTART, say) are one block: the longest, taken as strongly as either.
        let (mut end, mut kind) = (block.span.end, block.kind);
        while let Some(twin) = blocks.next_if(|b| {
            (b.span.start, &b.source, &b.object) == (block.span.start, &block.source, &block.object)
        }) {
            end = end.max(twin.span.end);
            kind = kind.max(twin.kind);
        }
        write_busy_block(&mut w, &tenant.id, &feed.name, block, end, kind, &stamp);
    }
    w.end("VCALENDAR");
    w.finish()
}

/// The calendar's name in subscribers' apps: the tenant's, and for a
/// resource's feed the resource's after it ("Salon – Anna").
fn calendar_name(tenant: &TenantConfig, feed: &FeedConfig) -> String {
    let resource = feed.resource.as_deref().and_then(|id| {
        tenant
            .resources()
            .into_iter()
            .find(|r| r.id == id && !r.implicit)
    });
    match resource {
        Some(r) => format!("{} – {}", tenant.name, r.name),
        None => tenant.name.clone(),
    }
}

/// One occurrence of a source's event as an opaque busy block. The UID, stable
/// across renders, is a digest of tenant, feed, source, object and start: unique
/// per occurrence of each source object, and nothing can be learnt from it.
fn write_busy_block(
    w: &mut ContentWriter,
    tenant: &str,
    feed_name: &str,
    block: &BusyEntry,
    end_ms: i64,
    kind: BusyKind,
    stamp: &str,
) {
    let at = |ms: i64| ical::format_utc(Utc.timestamp_millis_opt(ms).single().unwrap_or_default());
    let mut h = Sha256::new();
    for part in [tenant, feed_name, &block.source, &block.object] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(block.span.start.to_be_bytes());
    let digest = h.finalize();
    w.begin("VEVENT");
    w.text(
        "UID",
        &[],
        &format!("busy-{}@calgate", hex::encode(&digest[..16])),
    );
    w.raw("DTSTAMP", &[], stamp);
    w.raw("DTSTART", &[], &at(block.span.start));
    w.raw("DTEND", &[], &at(end_ms));
    w.text("SUMMARY", &[], "Busy");
    w.raw("CLASS", &[], "PRIVATE");
    w.raw("TRANSP", &[], "OPAQUE");
    let (status, busy_status) = match kind {
        BusyKind::Tentative => ("TENTATIVE", "TENTATIVE"),
        BusyKind::Oof => ("CONFIRMED", "OOF"),
        BusyKind::Busy | BusyKind::Free => ("CONFIRMED", "BUSY"),
    };
    w.raw("STATUS", &[], status);
    w.raw("X-MICROSOFT-CDO-BUSYSTATUS", &[], busy_status);
    w.end("VEVENT");
}
