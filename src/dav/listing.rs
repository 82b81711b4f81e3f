//! What a calendar collection holds, kept in memory between requests.
//!
//! A Depth:1 PROPFIND or an initial sync-collection names every member with a few
//! cheap properties (ETag, length, last change). Reading and decoding 10,000 stored
//! objects per request for that is most of what such a request costs, so each
//! collection's member summaries are kept here and brought up to date from the
//! collection's change log (the same log sync-collection answers from) before each
//! use: one range read when nothing changed, one record per changed member
//! otherwise. Nothing is cached that the change log does not invalidate.
//!
//! Answers are written through a [`Template`]: the generic property code renders
//! one response for a placeholder member, and each real member is that text with
//! its href and values spliced in. The output is therefore byte for byte what the
//! generic path writes, at the cost of a copy per member.
//!
//! Members also keep their XML-escaped body once a calendar-multiget asked for it,
//! within a memory budget: a client fetching changed objects by href then costs a
//! copy per object instead of a store read, a UTF-8 check and an escape. A body
//! dies with its member, so a change (a new member) can never serve an old body.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::error::DavError;
use super::node::{self, Calendar, Ctx, Node};
use super::xml;

/// Collections kept at once; the least recently used one goes first.
const MAX_COLLECTIONS: usize = 64;
/// Members kept over all collections (a member costs a few hundred bytes). The
/// collection just listed always stays, however large.
const MAX_MEMBERS: usize = 60_000;
/// Memory for rendered member lists, over all collections. A collection whose
/// rendering does not fit is rendered afresh on each request instead.
const RENDERED_BUDGET_BYTES: usize = 24 * 1024 * 1024;
/// Renderings kept per collection (PROPFIND and sync-collection ask differently).
const RENDERINGS_PER_LISTING: usize = 2;
/// Memory for members' escaped bodies, over all listings. Past it, bodies are read
/// from the store on every request, as if there were no cache.
const BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// One member as listed: everything a listing answer needs, pre-escaped.
#[derive(Debug)]
pub struct Member {
    /// Resource name in the collection (`{id}.ics` for bookings).
    pub name: String,
    /// Sequence number of the member's last change.
    pub seq: u64,
    pub etag: String,
    pub length: usize,
    pub last_modified: String,
    /// The XML-escaped href, ETag, length and date, as spliced into answers.
    href_xml: String,
    etag_xml: String,
    length_xml: String,
    modified_xml: String,
    /// Only a template's placeholder has a body (a marker); listings hold none.
    pub body: Option<String>,
    /// The stored text, XML-escaped, once asked for (see [`Member::escaped_body`]).
    body_xml: OnceLock<Arc<str>>,
    /// Where the escaped body's bytes are counted.
    body_budget: Arc<AtomicUsize>,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(body) = self.body_xml.get() {
            self.body_budget.fetch_sub(body.len(), Ordering::Relaxed);
        }
    }
}

impl Member {
    fn new(
        ctx: &Ctx<'_>,
        name: String,
        seq: u64,
        member: &Node,
        body_budget: &Arc<AtomicUsize>,
    ) -> Result<Member, DavError> {
        let etag = member.etag(ctx)?.unwrap_or_default();
        let length = member.body(ctx).map_or(0, |b| b.len());
        let last_modified = match member.prop(ctx, &xml::PropName::dav("getlastmodified"))? {
            Some(xml::PropContent::Text(date)) => date,
            _ => String::new(),
        };
        let href = member.href(ctx);
        Ok(Member {
            href_xml: xml::escape_text(&href).into_owned(),
            etag_xml: xml::escape_text(&etag).into_owned(),
            length_xml: length.to_string(),
            modified_xml: xml::escape_text(&last_modified).into_owned(),
            body: None,
            body_xml: OnceLock::new(),
            body_budget: Arc::clone(body_budget),
            name,
            seq,
            etag,
            length,
            last_modified,
        })
    }

    /// A stand-in whose values are markers, for rendering a [`Template`].
    fn placeholder() -> Member {
        Member {
            name: "placeholder.ics".into(),
            seq: 0,
            etag: marker(Slot::Etag),
            length: 0,
            last_modified: marker(Slot::Modified),
            href_xml: String::new(),
            etag_xml: String::new(),
            length_xml: marker(Slot::Length),
            modified_xml: String::new(),
            body: Some(marker(Slot::Data)),
            body_xml: OnceLock::new(),
            body_budget: Arc::default(),
        }
    }

    /// The member's `calendar-data` (as stored), XML-escaped: from memory when it
    /// was asked before, else read and kept while the budget allows. None when the
    /// object changed or went since the listing was brought up to date (the caller
    /// then answers from the store).
    pub fn escaped_body(
        &self,
        ctx: &Ctx<'_>,
        cal: &Calendar,
    ) -> Result<Option<Arc<str>>, DavError> {
        if let Some(body) = self.body_xml.get() {
            return Ok(Some(Arc::clone(body)));
        }
        let stored = match cal {
            Calendar::Source(_) => ctx
                .app
                .store
                .object_text(&ctx.tenant.id, cal.id(), &self.name)?
                .map(|t| (t.etag, t.ics)),
            Calendar::Bookings | Calendar::ResourceBookings { .. } => {
                match node::object(ctx, cal.clone(), &self.name) {
                    Ok(node) => node.etag(ctx)?.zip(node.body(ctx)),
                    Err(_) => None,
                }
            }
        };
        let Some((_, text)) = stored.filter(|(etag, _)| *etag == self.etag) else {
            return Ok(None);
        };
        let mut escaped = String::with_capacity(text.len() + text.len() / 16);
        xml::escape_text_into(&mut escaped, &text);
        let body: Arc<str> = Arc::from(escaped);
        let fits = self
            .body_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + body.len() <= BODY_BUDGET_BYTES).then_some(used + body.len())
            })
            .is_ok();
        if fits && self.body_xml.set(Arc::clone(&body)).is_err() {
            // Another request kept it first: its bytes are the ones counted.
            self.body_budget.fetch_sub(body.len(), Ordering::Relaxed);
        }
        Ok(Some(body))
    }

    /// Text for the `getcontentlength` property.
    pub fn length_text(&self) -> &str {
        &self.length_xml
    }
}

/// A collection's members at one version of its change log.
pub struct Listing {
    /// Sequence number of the newest change reflected here.
    pub version: u64,
    /// Members by the id their changes are logged under (multiget looks them up).
    by_id: HashMap<String, Arc<Member>>,
    /// Members in the order they last changed (what sync-collection reports in).
    by_seq: BTreeMap<u64, Arc<Member>>,
    /// Every member written through a template, by the template's text: a client
    /// polling an unchanged calendar gets the same bytes without a re-render.
    rendered: Mutex<Vec<(String, Bytes)>>,
    budget: Arc<AtomicUsize>,
}

impl Drop for Listing {
    fn drop(&mut self) {
        if let Ok(rendered) = self.rendered.get_mut() {
            let held: usize = rendered.iter().map(|(_, b)| b.len()).sum();
            self.budget.fetch_sub(held, Ordering::Relaxed);
        }
    }
}

impl Listing {
    /// The member with resource name `name`, if the collection holds it.
    pub fn member(&self, cal: &Calendar, name: &str) -> Option<&Arc<Member>> {
        let id = match cal.is_bookings() {
            true => name.strip_suffix(".ics")?,
            false => name,
        };
        self.by_id.get(id)
    }

    /// Members, oldest change first.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.by_seq.values()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Every member's answer through `template`, oldest change first, rendered
    /// once per version of the collection while memory allows.
    pub fn render(&self, template: &Template) -> Bytes {
        let key = template.signature();
        if let Ok(rendered) = self.rendered.lock()
            && let Some((_, bytes)) = rendered.iter().find(|(k, _)| *k == key)
        {
            return bytes.clone();
        }
        let mut out = String::with_capacity(self.len() * template.estimate());
        for member in self.members() {
            template.write(member, &mut out);
        }
        let bytes = Bytes::from(out);
        let fits = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes.len() <= RENDERED_BUDGET_BYTES).then_some(used + bytes.len())
            })
            .is_ok();
        if fits && let Ok(mut rendered) = self.rendered.lock() {
            if rendered.len() >= RENDERINGS_PER_LISTING {
                let (_, evicted) = rendered.remove(0);
                self.budget.fetch_sub(evicted.len(), Ordering::Relaxed);
            }
            rendered.push((key, bytes.clone()));
        } else if fits {
            self.budget.fetch_sub(bytes.len(), Ordering::Relaxed);
        }
        bytes
    }
}

struct Cached {
    listing: Arc<Listing>,
    used: Instant,
}

/// The listings of recently listed collections.
#[derive(Default)]
pub struct Listings {
    cache: Mutex<HashMap<(String, String), Cached>>,
    /// Bytes of renderings held by all listings.
    rendered_bytes: Arc<AtomicUsize>,
    /// Bytes of escaped member bodies held by all listings.
    body_bytes: Arc<AtomicUsize>,
    /// Held while a listing is brought up to date.
    updating: Mutex<()>,
}

impl Listings {
    /// The collection's members, brought up to date with its change log.
    pub fn current(&self, ctx: &Ctx<'_>, cal: &Calendar) -> Result<Arc<Listing>, DavError> {
        let key = (ctx.tenant.id.clone(), cal.id().to_owned());
        if let Some(cached) = self.cached(&key) {
            let changes = cal.changes_since(ctx, cached.version)?;
            if changes.is_empty() {
                self.keep(key, &cached);
                return Ok(cached);
            }
        }
        // One update at a time: concurrent first requests on a large collection
        // would each read all of it, and hold it all in memory at once.
        let _updating = self
            .updating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = self.cached(&key);
        let since = cached.as_ref().map_or(0, |l| l.version);
        let changes = cal.changes_since(ctx, since)?;
        let listing = match cached {
            Some(unchanged) if changes.is_empty() => unchanged,
            base => Arc::new(apply(
                ctx,
                cal,
                base.as_deref(),
                since,
                changes,
                &self.rendered_bytes,
                &self.body_bytes,
            )?),
        };
        self.keep(key, &listing);
        Ok(listing)
    }

    /// Drops every listing of a tenant (deleted: its change log is gone, so
    /// a cached listing could no longer be brought up to date).
    pub fn forget_tenant(&self, tenant: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(t, _), _| t != tenant);
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<Arc<Listing>> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).map(|e| Arc::clone(&e.listing))
    }

    /// Keeps `listing` as the latest of its collection, the least recently used
    /// collections making room.
    fn keep(&self, key: (String, String), listing: &Arc<Listing>) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        // A request that read an older version must not undo a newer one.
        if let Some(newer) = cache.get_mut(&key)
            && newer.listing.version > listing.version
        {
            newer.used = Instant::now();
            return;
        }
        cache.insert(
            key,
            Cached {
                listing: Arc::clone(listing),
                used: Instant::now(),
            },
        );
        let over = |cache: &HashMap<(String, String), Cached>| {
            cache.len() > MAX_COLLECTIONS
                || cache.values().map(|e| e.listing.len()).sum::<usize>() > MAX_MEMBERS
        };
        while cache.len() > 1 && over(&cache) {
            let Some(oldest) = cache
                .iter()
                .filter(|(_, e)| !Arc::ptr_eq(&e.listing, listing))
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            cache.remove(&oldest);
        }
    }
}

/// `base` (at `since`) with `changes` applied: members re-read, the removed dropped.
fn apply(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    base: Option<&Listing>,
    since: u64,
    changes: Vec<crate::store::Change>,
    budget: &Arc<AtomicUsize>,
    body_budget: &Arc<AtomicUsize>,
) -> Result<Listing, DavError> {
    let mut listing = Listing {
        version: since,
        by_id: base.map(|b| b.by_id.clone()).unwrap_or_default(),
        by_seq: base.map(|b| b.by_seq.clone()).unwrap_or_default(),
        rendered: Mutex::new(Vec::new()),
        budget: Arc::clone(budget),
    };
    // The last change of each member decides.
    let mut latest: HashMap<String, (u64, bool)> = HashMap::new();
    for change in changes {
        listing.version = listing.version.max(change.seq);
        latest.insert(change.id, (change.seq, change.deleted));
    }
    for (id, (seq, deleted)) in latest {
        if let Some(old) = listing.by_id.remove(&id) {
            listing.by_seq.remove(&old.seq);
        }
        if deleted {
            continue;
        }
        let resource = resource_name(cal, &id);
        // Gone again since the log was read: the next change says so.
        let Ok(member) = node::object(ctx, cal.clone(), &resource) else {
            continue;
        };
        let member = Arc::new(Member::new(ctx, resource, seq, &member, body_budget)?);
        listing.by_id.insert(id, Arc::clone(&member));
        listing.by_seq.insert(seq, member);
    }
    Ok(listing)
}

/// The resource name of a logged member id.
pub fn resource_name(cal: &Calendar, id: &str) -> String {
    match cal.is_bookings() {
        true => format!("{id}.ics"),
        false => id.to_owned(),
    }
}

/// A value a [`Template`] leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Href,
    Etag,
    Length,
    Modified,
    /// `calendar-data` (as stored, not expanded).
    Data,
}

const SLOTS: [Slot; 5] = [
    Slot::Href,
    Slot::Etag,
    Slot::Length,
    Slot::Modified,
    Slot::Data,
];

/// Private-use code points: never escaped, never in a property name or fixed value.
fn marker(slot: Slot) -> String {
    format!("\u{E000}{}\u{E001}", slot as u8)
}

enum Part {
    Text(String),
    Value(Slot),
}

/// One member's answer with holes for its href and values.
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Renders `respond` for a placeholder member of `cal` through `render` (the
    /// document's writer) and cuts the text at the placeholder's values.
    pub fn new(
        cal: &Calendar,
        respond: impl FnOnce(&Node) -> Result<xml::PropstatResponse, DavError>,
        render: impl FnOnce(&xml::Response) -> String,
    ) -> Result<Template, DavError> {
        let placeholder = Node::Member(cal.clone(), Arc::new(Member::placeholder()));
        let mut response = respond(&placeholder)?;
        response.href = marker(Slot::Href);
        let mut text = render(&xml::Response::Props(response)).as_str().to_owned();
        let mut parts = Vec::new();
        loop {
            let next = SLOTS
                .iter()
                .filter_map(|&s| text.find(&marker(s)).map(|at| (at, s)))
                .min_by_key(|(at, _)| *at);
            let Some((at, slot)) = next else {
                parts.push(Part::Text(text));
                break;
            };
            let rest = text.split_off(at);
            parts.push(Part::Text(text));
            parts.push(Part::Value(slot));
            text = rest[marker(slot).len()..].to_owned();
        }
        Ok(Template { parts })
    }

    /// The template's text: equal texts give equal answers for equal members.
    fn signature(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(text) => text.clone(),
                Part::Value(slot) => marker(*slot),
            })
            .collect()
    }

    /// Bytes one member's answer takes, roughly.
    fn estimate(&self) -> usize {
        let fixed: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(text) => text.len(),
                Part::Value(_) => 40,
            })
            .sum();
        fixed + 16
    }

    /// Whether the answer needs no value but those in `slots`.
    pub fn needs_only(&self, slots: &[Slot]) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Text(_) => true,
            Part::Value(slot) => slots.contains(slot),
        })
    }

    /// Appends `member`'s answer to `out`.
    pub fn write(&self, member: &Member, out: &mut String) {
        // Listings hold no bodies: a template asking for one is not used on them.
        self.write_with_body(member, "", out);
    }

    /// Appends `member`'s answer to `out`, with `body_xml` (escaped) as its data.
    pub fn write_with_body(&self, member: &Member, body_xml: &str, out: &mut String) {
        self.write_with(out, |slot, out| {
            out.push_str(match slot {
                Slot::Href => &member.href_xml,
                Slot::Etag => &member.etag_xml,
                Slot::Length => &member.length_xml,
                Slot::Modified => &member.modified_xml,
                Slot::Data => body_xml,
            })
        });
    }

    /// Appends an answer whose values `value` writes (XML-escaped) into `out`.
    pub fn write_with(&self, out: &mut String, mut value: impl FnMut(Slot, &mut String)) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(slot) => value(*slot, out),
            }
        }
    }
}
