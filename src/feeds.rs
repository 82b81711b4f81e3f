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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::calendars::Horizon;
use crate::config::{FeedConfig, FeedPrivacy, TenantConfig};
use crate::ical::{self, ContentWriter, vtimezone};
use crate::model::{Booking, BookingStatus, BookingTime, BusyKind, Source, Span};
use crate::store::{BusyEntry, Store, StoreError};

/// Identifies this software in PRODID.
pub const PRODID: &str = concat!("-//calgate//calgate ", env!("CARGO_PKG_VERSION"), "//EN");

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
    /// Config changes only take effect on restart; feeds rendered before it are stale.
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
        for part in [
            tenant.id.as_str(),
            tenant.name.as_str(),
            tenant.timezone.name(),
            feed.name.as_str(),
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
        let bookings = self.store.bookings_in(&tenant.id, window)?;
        let blocks = if feed.include_sources.any() {
            let horizon = self.horizon.window(now);
            let within = Span::new(window.start.max(horizon.start), window.end.min(horizon.end));
            self.store.object_busy_in(&tenant.id, within, |source| {
                feed.include_sources.includes(source)
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

    /// The tenant's sources this feed publishes, in id order.
    fn published_sources(
        &self,
        tenant: &TenantConfig,
        feed: &FeedConfig,
    ) -> Result<Vec<Source>, StoreError> {
        let mut sources = self.store.sources(&tenant.id)?;
        sources.retain(|s| feed.include_sources.includes(&s.id));
        Ok(sources)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<FeedDocument>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    w.text("NAME", &[], &tenant.name);
    w.text("X-WR-CALNAME", &[], &tenant.name);
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

/// Each zone a timed booking is written in, with the time it must cover; the
/// tenant's own zone (named by X-WR-TIMEZONE) covers every booking. Derived from the
/// bookings alone, so equal inputs render equal bytes (the ETag relies on it).
fn zones_used(tenant_tz: Tz, bookings: &[&Booking]) -> Vec<(Tz, Span)> {
    let mut zones: Vec<(Tz, Span)> = Vec::new();
    let mut cover = |tz: Tz, span: Span| match zones.iter_mut().find(|(z, _)| *z == tz) {
        Some((_, s)) => *s = Span::new(s.start.min(span.start), s.end.max(span.end)),
        None => zones.push((tz, span)),
    };
    let all = bookings
        .iter()
        .map(|b| b.span())
        .reduce(|a, b| Span::new(a.start.min(b.start), a.end.max(b.end)))
        .unwrap_or(Span::new(0, 0));
    cover(tenant_tz, all);
    for b in bookings {
        if !b.is_all_day() {
            cover(b.time_zone, b.span());
        }
    }
    zones
}

/// One booking as a complete VCALENDAR with its VTIMEZONE: the CalDAV object of a
/// booking, identical to its event in a full-privacy feed.
pub fn render_booking(tenant: &TenantConfig, booking: &Booking) -> String {
    let mut w = ContentWriter::with_capacity(2048);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], PRODID);
    w.raw("VERSION", &[], "2.0");
    w.raw("CALSCALE", &[], "GREGORIAN");
    for (tz, span) in zones_used(tenant.timezone, &[booking]) {
        if tz == booking.time_zone && !booking.is_all_day() {
            let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
            vtimezone::write_vtimezone(&mut w, tz, at(span.start), at(span.end));
        }
    }
    // What a CalDAV client wrote beyond the booking's own fields stays after an
    // API change (its alarms, attendees, X- properties).
    write_event(&mut w, None, booking, booking.calendar_text.as_deref());
    w.end("VCALENDAR");
    w.finish()
}

/// Properties a booking's VEVENT takes from the booking itself; a client's values
/// for them give way to the booking's.
const BOOKING_OWNED: [&str; 17] = [
    "UID",
    "DTSTAMP",
    "CREATED",
    "LAST-MODIFIED",
    "SEQUENCE",
    "DTSTART",
    "DTEND",
    "DURATION",
    "STATUS",
    "TRANSP",
    "SUMMARY",
    "LOCATION",
    "DESCRIPTION",
    "CLASS",
    "RRULE",
    "RDATE",
    "EXDATE",
];

/// Writes a booking's VEVENT; with `opaque_uids` (the feed name) only busy time,
/// under a UID from which nothing can be learnt. `client_text`, the iCalendar a
/// CalDAV client last wrote for it, adds that VEVENT's other properties and
/// sub-components.
fn write_event(
    w: &mut ContentWriter,
    opaque_uids: Option<&str>,
    b: &Booking,
    client_text: Option<&str>,
) {
    let busy_only = opaque_uids.is_some();
    w.begin("VEVENT");
    if let Some(feed_name) = opaque_uids {
        // An opaque UID: the same event across renders, nothing learnt from it.
        let digest = Sha256::digest(format!("{}\0{}\0{}", b.tenant, feed_name, b.uid));
        w.text(
            "UID",
            &[],
            &format!("{}@calgate", hex::encode(&digest[..16])),
        );
    } else {
        w.text("UID", &[], &b.uid);
    }
    w.raw("DTSTAMP", &[], &ical::format_utc(b.updated));
    w.raw("CREATED", &[], &ical::format_utc(b.created));
    w.raw("LAST-MODIFIED", &[], &ical::format_utc(b.updated));
    w.raw("SEQUENCE", &[], &b.sequence.to_string());
    match &b.time {
        BookingTime::AllDay { start, end } => {
            w.raw("DTSTART", &[("VALUE", "DATE")], &ical::format_date(*start));
            w.raw("DTEND", &[("VALUE", "DATE")], &ical::format_date(*end));
        }
        BookingTime::Timed { start, end } => {
            for (name, t) in [("DTSTART", start), ("DTEND", end)] {
                match ical::zoned_value(t.with_timezone(&Utc), b.time_zone) {
                    (Some(tzid), value) => w.raw(name, &[("TZID", tzid)], &value),
                    (None, value) => w.raw(name, &[], &value),
                }
            }
        }
    }
    let status = match b.status {
        BookingStatus::Confirmed => "CONFIRMED",
        BookingStatus::Tentative => "TENTATIVE",
        BookingStatus::Cancelled => "CANCELLED",
    };
    w.raw("STATUS", &[], status);
    let transparent = b.status == BookingStatus::Cancelled;
    w.raw(
        "TRANSP",
        &[],
        if transparent { "TRANSPARENT" } else { "OPAQUE" },
    );
    if busy_only {
        w.text("SUMMARY", &[], "Busy");
        w.raw("CLASS", &[], "PRIVATE");
    } else {
        w.text("SUMMARY", &[], &b.title);
        if let Some(location) = &b.location {
            w.text("LOCATION", &[], location);
        }
        let description = describe(b);
        if !description.is_empty() {
            w.text("DESCRIPTION", &[], &description);
        }
    }
    if let Some(text) = client_text {
        write_client_extras(w, text);
    }
    w.end("VEVENT");
}

fn write_client_extras(w: &mut ContentWriter, text: &str) {
    let unfolded = ical::parse::unfolded(text);
    let Ok(cal) = ical::parse::read(&unfolded) else {
        return;
    };
    let Some(event) = cal.components.iter().find(|c| c.name.as_str() == "VEVENT") else {
        return;
    };
    for p in &event.properties {
        if !BOOKING_OWNED.contains(&p.name.as_str()) {
            w.parsed_property(p);
        }
    }
    for sub in &event.components {
        w.parsed_component(sub);
    }
}

/// The human-readable DESCRIPTION: service and customer first, then notes.
pub(crate) fn describe(b: &Booking) -> String {
    let mut lines = Vec::new();
    if let Some(service) = &b.service {
        lines.push(format!("Service: {service}"));
    }
    if let Some(c) = &b.customer {
        for (label, value) in [
            ("Customer", &c.name),
            ("Email", &c.email),
            ("Phone", &c.phone),
        ] {
            if let Some(v) = value {
                lines.push(format!("{label}: {v}"));
            }
        }
    }
    if let Some(notes) = &b.notes {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(notes.clone());
    }
    lines.join("\n")
}
