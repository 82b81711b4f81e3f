//! REPORT: calendar-multiget, calendar-query, sync-collection, free-busy-query.
//!
//! Time-range queries go through the occurrence index (every occurrence of every
//! object, recurrence expanded when the object was written), so a query over a
//! large calendar reads only the objects that can match.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use super::error::{Condition, DavError};
use super::listing::{Listing, Slot, Template};
use super::node::{self, Calendar, Ctx, Node};
use super::paths::{self, DavPath};
use super::xml::{
    self, CalendarDataRequest, CompFilter, NS_CALDAV, NS_CALENDARSERVER, NS_DAV, PropContent,
    PropFilter, PropName, PropRequest, ReportRequest, TextMatch, TimeRange,
};
use crate::http::{Body, full};
use crate::ical::matching;
use crate::ical::parse::Kind;
use crate::model::Span;

pub async fn report(
    ctx: &Ctx<'_>,
    path: &DavPath,
    request: ReportRequest,
) -> Result<Response<Body>, DavError> {
    match request {
        ReportRequest::CalendarMultiget(m) => multiget(ctx, m),
        ReportRequest::SyncCollection(s) => sync_collection(ctx, path, s).await,
        ReportRequest::CalendarQuery(q) => calendar_query(ctx, path, q).await,
        ReportRequest::FreeBusyQuery(range) => free_busy_query(ctx, path, range),
        ReportRequest::PrincipalPropertySearch(search) => principal_search(ctx, &search),
        ReportRequest::PrincipalSearchPropertySet => Ok(principal_search_property_set()),
        other => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedReport,
            format!("this report is not supported here: {}", report_name(&other)),
        )),
    }
}

fn report_name(r: &ReportRequest) -> String {
    match r {
        ReportRequest::Unsupported(name) => name.to_string(),
        ReportRequest::ExpandProperty(_) => "D:expand-property".into(),
        ReportRequest::PrincipalPropertySearch(_) => "D:principal-property-search".into(),
        ReportRequest::PrincipalSearchPropertySet => "D:principal-search-property-set".into(),
        ReportRequest::AclPrincipalPropSet(_) => "D:acl-principal-prop-set".into(),
        _ => "report".into(),
    }
}

fn calendar_of(ctx: &Ctx<'_>, path: &DavPath) -> Result<Calendar, DavError> {
    match node::resolve(ctx, path)? {
        Node::Calendar(c) => Ok(c),
        _ => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedReport,
            "this report applies to calendar collections",
        )),
    }
}

/// Propstats of one object for a REPORT, `calendar-data` included.
pub(super) fn object_response(
    ctx: &Ctx<'_>,
    node: &Node,
    props: &PropRequest,
    data: Option<&CalendarDataRequest>,
) -> Result<xml::PropstatResponse, DavError> {
    let mut response = xml::PropstatResponse::new(node.href(ctx));
    let names: Vec<xml::PropName> = match props {
        PropRequest::Prop(names) => names.clone(),
        PropRequest::AllProp { include } => node
            .prop_names()
            .into_iter()
            .chain(include.iter().cloned())
            .collect(),
        PropRequest::PropName => {
            for name in node.prop_names() {
                response.ok(name, PropContent::Empty);
            }
            return Ok(response);
        }
    };
    let resource = super::props::Resource::load(ctx, node, props)?;
    let env = super::props::Env::of(ctx);
    for name in names {
        if name.is(NS_CALDAV, "calendar-data") {
            match calendar_data(ctx, node, data)? {
                Some(text) => response.ok(name, PropContent::text(text)),
                None => response.not_found(name),
            };
            continue;
        }
        match super::props::render(&env, &resource, &name) {
            Some(value) => response.ok(name, value),
            None => response.not_found(name),
        };
    }
    Ok(response)
}

/// The object's iCalendar text, expanded to UTC instances when asked (§9.6.5).
fn calendar_data(
    ctx: &Ctx<'_>,
    node: &Node,
    data: Option<&CalendarDataRequest>,
) -> Result<Option<String>, DavError> {
    let Some(period) = data.and_then(|d| d.expand) else {
        return Ok(node.body(ctx));
    };
    let window = Span::new(
        period.start.unix_seconds() * 1000,
        period.end.unix_seconds() * 1000,
    );
    let plan = ctx
        .app
        .dav_plans
        .plan(ctx, node)
        .map_err(|e| DavError::internal(format!("stored object does not parse: {e}")))?;
    plan.map(|p| p.expand(window, ctx.tenant.timezone))
        .transpose()
        .map_err(|e| DavError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))
}

/// A calendar a multiget names members of.
struct Named {
    id: String,
    calendar: Calendar,
    /// Its href as we write it: members' hrefs usually start with it.
    href: String,
    /// The template and listing its members are answered through, when their
    /// stored text is all the answer needs (bodies then come from memory).
    fast: Option<(Template, Arc<Listing>)>,
}

fn multiget(ctx: &Ctx<'_>, m: xml::CalendarMultiget) -> Result<Response<Body>, DavError> {
    let mut writer = xml::MultistatusWriter::new();
    let mut out = writer.begin();
    // Room for typical objects, so the answer is not copied as it grows.
    out.reserve(m.hrefs.len() * 2048);
    // Hrefs usually share one calendar: it is looked up once.
    let mut calendars: Vec<Named> = Vec::new();
    let stored_text_will_do = m.calendar_data.as_ref().is_none_or(|d| d.expand.is_none());
    // A meeting's Schedule-Tag comes from its text: such objects are answered in full.
    let wants_tag = super::scheduling::asks_schedule_tag(ctx, &m.props);
    for href in &m.hrefs {
        let known = calendars
            .iter()
            .enumerate()
            .find_map(|(at, c)| paths::member_name(href, &c.href).map(|name| (at, name)));
        let (at, name) = match known {
            Some(found) => found,
            None => match paths::href_segments(href).and_then(|segs| {
                DavPath::parse(&segs.iter().map(String::as_str).collect::<Vec<_>>())
            }) {
                Some(DavPath::Object(tenant, cal, name)) if tenant == ctx.tenant.id => {
                    let at = match calendars.iter().position(|c| c.id == cal) {
                        Some(at) => at,
                        None => {
                            let Ok(calendar) = node::calendar(ctx, &cal) else {
                                writer.write_response(&mut out, &not_found(href));
                                continue;
                            };
                            let fast = if stored_text_will_do {
                                let template = Template::new(
                                    &calendar,
                                    |member| {
                                        object_response(
                                            ctx,
                                            member,
                                            &m.props,
                                            m.calendar_data.as_ref(),
                                        )
                                    },
                                    |response| {
                                        let mut text = String::new();
                                        writer.write_response(&mut text, response);
                                        text
                                    },
                                )?;
                                match template.needs_only(&[Slot::Href, Slot::Etag, Slot::Data]) {
                                    true => Some((
                                        template,
                                        ctx.app.dav_listings.current(ctx, &calendar)?,
                                    )),
                                    false => None,
                                }
                            } else {
                                None
                            };
                            calendars.push(Named {
                                id: cal,
                                href: paths::calendar_href(&ctx.tenant.id, calendar.id()),
                                calendar,
                                fast,
                            });
                            calendars.len() - 1
                        }
                    };
                    (at, Cow::Owned(name))
                }
                Some(DavPath::Object(..)) | None => {
                    writer.write_response(&mut out, &not_found(href));
                    continue;
                }
                Some(other) => {
                    let found = node::resolve(ctx, &other).ok();
                    let found = found.filter(|n| !n.is_collection());
                    let response =
                        member_response(ctx, found, href, &m.props, m.calendar_data.as_ref())?;
                    writer.write_response(&mut out, &response);
                    continue;
                }
            },
        };
        let Named { calendar, fast, .. } = &calendars[at];
        if let Some((template, listing)) = fast {
            // Not a member when the request began: not found.
            let Some(member) = listing.member(calendar, &name) else {
                writer.write_response(&mut out, &not_found(href));
                continue;
            };
            match member.escaped_body(ctx, calendar)? {
                // A meeting's Schedule-Tag is asked: answered in full below
                // (escaping leaves the ORGANIZER name as it is).
                Some(body) if wants_tag && crate::ical::itip::may_schedule(&body) => {}
                Some(body) => {
                    template.write_with_body(member, &body, &mut out);
                    continue;
                }
                // Changed since the listing was read: answer from the store.
                None => {}
            }
        }
        let found = node::object(ctx, calendar.clone(), &name).ok();
        let found = found.filter(|n| !n.is_collection());
        let response = member_response(ctx, found, href, &m.props, m.calendar_data.as_ref())?;
        writer.write_response(&mut out, &response);
    }
    out.push_str(&writer.end(None));
    Ok(super::multistatus(out))
}

fn not_found(href: &str) -> xml::Response {
    xml::Response::Status(xml::StatusResponse::new(href, xml::Status::NOT_FOUND))
}

/// The answer for a member a REPORT names: its properties, or a 404 at `href`.
pub(super) fn member_response(
    ctx: &Ctx<'_>,
    found: Option<Node>,
    href: &str,
    props: &PropRequest,
    data: Option<&CalendarDataRequest>,
) -> Result<xml::Response, DavError> {
    Ok(match found {
        Some(n) => xml::Response::Props(object_response(ctx, &n, props, data)?),
        None => not_found(href),
    })
}

/// Parses our token for this collection; None when it is not one of ours for it.
fn token_seq(ctx: &Ctx<'_>, collection: &str, token: &str) -> Option<u64> {
    let prefix = node::sync_token(&ctx.tenant.id, collection, 0);
    let prefix = prefix.strip_suffix('0')?;
    token.strip_prefix(prefix)?.parse().ok()
}

/// Where a sync-collection of `collection` (now at `current`) starts: 0 for an
/// initial sync, else the position in `token`; 403 `valid-sync-token` for a
/// token that is not one of ours for it.
pub(super) fn sync_start(
    ctx: &Ctx<'_>,
    collection: &str,
    token: &str,
    current: u64,
) -> Result<u64, DavError> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(0);
    }
    match token_seq(ctx, collection, token) {
        Some(seq) if seq <= current => Ok(seq),
        _ => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidSyncToken,
            "this sync token is not valid for this collection; sync again from scratch",
        )),
    }
}

/// The latest change of each member, in the order they happened, as
/// (seq, id, deleted); an initial sync leaves the deleted out.
pub(super) fn latest_changes(
    changes: Vec<crate::store::Change>,
    initial: bool,
) -> Vec<(u64, String, bool)> {
    let mut latest: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for change in changes {
        latest.insert(change.id, (change.seq, change.deleted));
    }
    let mut ordered: Vec<(u64, String, bool)> = latest
        .into_iter()
        .filter(|(_, (_, deleted))| !(initial && *deleted))
        .map(|(id, (seq, deleted))| (seq, id, deleted))
        .collect();
    ordered.sort();
    ordered
}

/// RFC 6578 with `DAV:limit`: at most `limit` members per answer; a truncated answer
/// carries a 507 for the collection and a token from which the rest follows.
async fn sync_collection(
    ctx: &Ctx<'_>,
    path: &DavPath,
    s: xml::SyncCollection,
) -> Result<Response<Body>, DavError> {
    let cal = calendar_of(ctx, path)?;
    let initial = s.sync_token.trim().is_empty();
    if initial && !asks_for_data(&s.props) {
        return initial_sync_from_listing(ctx, path, cal, s).await;
    }
    let current = cal.version(ctx)?;
    let since = sync_start(ctx, cal.id(), &s.sync_token, current)?;
    let mut ordered = latest_changes(cal.changes_since(ctx, since)?, initial);
    let limit = s.limit.map(|l| l as usize);
    let truncated = limit.is_some_and(|l| ordered.len() > l);
    if let Some(l) = limit {
        ordered.truncate(l);
    }
    let token_at = if truncated {
        ordered.last().map_or(since, |(seq, _, _)| *seq)
    } else {
        current
    };
    let request_href = path.href();
    super::stream::multistatus(ctx, move |ctx, sink| {
        write_sync_members(ctx, &cal, &s, &ordered, initial, sink)?;
        if truncated {
            sink.write(&truncation_marker(request_href))?;
        }
        Ok(Some(node::sync_token(&ctx.tenant.id, cal.id(), token_at)))
    })
    .await
}

/// The 507 on the request-URI that tells a client a sync answer was cut at its
/// `DAV:limit` (RFC 6578 §3.6); the token that closes the answer continues it.
fn truncation_marker(request_href: String) -> xml::Response {
    xml::Response::Status(
        xml::StatusResponse::new(request_href, xml::Status::INSUFFICIENT_STORAGE)
            .with_error(Condition::NumberOfMatchesWithinLimits, None),
    )
}

/// Whether a REPORT asks for what comes from bodies (`calendar-data`,
/// `schedule-tag`), which listings do not hold.
fn asks_for_data(props: &PropRequest) -> bool {
    match props {
        PropRequest::Prop(names) => names
            .iter()
            .any(|n| n.is(NS_CALDAV, "calendar-data") || n.is(NS_CALDAV, "schedule-tag")),
        PropRequest::AllProp { include } => {
            include.iter().any(|n| n.is(NS_CALDAV, "calendar-data"))
        }
        PropRequest::PropName => false,
    }
}

/// An initial sync-collection from the collection's listing: every member, in
/// the order of their last change, so that a `DAV:limit` cut leaves a token from
/// which the rest follows.
async fn initial_sync_from_listing(
    ctx: &Ctx<'_>,
    path: &DavPath,
    cal: Calendar,
    s: xml::SyncCollection,
) -> Result<Response<Body>, DavError> {
    let request_href = path.href();
    super::stream::multistatus(ctx, move |ctx, sink| {
        let listing = ctx.app.dav_listings.current(ctx, &cal)?;
        let template = Template::new(
            &cal,
            |member| object_response(ctx, member, &s.props, None),
            |response| sink.render(response),
        )?;
        let limit = s.limit.map(|l| l as usize).filter(|&l| l < listing.len());
        let Some(limit) = limit else {
            sink.write_bytes(listing.render(&template))?;
            return Ok(Some(node::sync_token(
                &ctx.tenant.id,
                cal.id(),
                listing.version,
            )));
        };
        let mut token_at = 0;
        for member in listing.members().take(limit) {
            sink.write_with(|out| template.write(member, out))?;
            token_at = member.seq;
        }
        sink.write(&truncation_marker(request_href))?;
        Ok(Some(node::sync_token(&ctx.tenant.id, cal.id(), token_at)))
    })
    .await
}

/// The changed members of a sync-collection answer: propstats, or 404 for the gone.
fn write_sync_members(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    s: &xml::SyncCollection,
    ordered: &[(u64, String, bool)],
    initial: bool,
    sink: &mut super::stream::Sink,
) -> Result<(), DavError> {
    for (_, id, deleted) in ordered {
        let resource = super::listing::resource_name(cal, id);
        let href = paths::object_href(&ctx.tenant.id, cal.id(), &resource);
        let node = if *deleted {
            None
        } else {
            node::object(ctx, cal.clone(), &resource).ok()
        };
        // An initial sync names only members: a change logged before bookings
        // said what they took may be of a booking that is not one, and a
        // booking may have left since the log was read.
        if initial && node.is_none() {
            continue;
        }
        let response = member_response(ctx, node, &href, &s.props, s.calendar_data.as_ref())?;
        sink.write(&response)?;
    }
    Ok(())
}

pub(super) fn millis(range: &TimeRange) -> Span {
    let at =
        |t: Option<xml::UtcDateTime>, default: i64| t.map_or(default, |t| t.unix_seconds() * 1000);
    Span::new(at(range.start, i64::MIN / 2), at(range.end, i64::MAX / 2))
}

async fn calendar_query(
    ctx: &Ctx<'_>,
    path: &DavPath,
    q: xml::CalendarQuery,
) -> Result<Response<Body>, DavError> {
    let cal = calendar_of(ctx, path)?;
    if !q.filter.name.eq_ignore_ascii_case("VCALENDAR") {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidFilter,
            "the filter must start with VCALENDAR",
        ));
    }
    // The component asked for: events (indexed), or tasks/journals (evaluated).
    let event_filter = q.filter.comp_filters.first();
    let asks_for_events = event_filter.is_none_or(|f| f.name.eq_ignore_ascii_case("VEVENT"));
    if event_filter.is_some_and(|f| f.is_not_defined) {
        return Ok(super::multistatus(xml::multistatus(&[], None)));
    }
    for f in event_filter
        .map(|f| f.prop_filters.as_slice())
        .unwrap_or_default()
    {
        if let Some(tm) = &f.text_match {
            check_collation(tm)?;
        }
    }
    if !asks_for_events {
        let kind = match event_filter.map(|f| f.name.to_ascii_uppercase()).as_deref() {
            Some("VTODO") => Kind::Todo,
            Some("VJOURNAL") => Kind::Journal,
            // No object holds other component kinds: an empty answer.
            _ => return Ok(super::multistatus(xml::multistatus(&[], None))),
        };
        return super::stream::multistatus(ctx, move |ctx, sink| {
            other_components(ctx, &cal, kind, &q, sink)
        })
        .await;
    }
    super::stream::multistatus(ctx, move |ctx, sink| {
        let event_filter = q.filter.comp_filters.first();
        // Time-range: on the VEVENT filter, or (python caldav) on VCALENDAR itself.
        let range = event_filter
            .and_then(|f| f.time_range)
            .or(q.filter.time_range);
        let alarm_filters: Vec<&CompFilter> = event_filter
            .map(|f| f.comp_filters.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case("VALARM"))
            .collect();
        for_each_candidate(
            ctx,
            &cal,
            range.as_ref().map(millis),
            event_filter.is_some(),
            &mut |n| {
                if let Some(f) = event_filter
                    && !f.prop_filters.is_empty()
                    && !matches_props(ctx, &n, f)
                {
                    return Ok(());
                }
                if !alarm_filters.iter().all(|a| matches_alarm(ctx, &n, a)) {
                    return Ok(());
                }
                let response = object_response(ctx, &n, &q.props, q.calendar_data.as_ref())?;
                Ok(sink.write(&xml::Response::Props(response))?)
            },
        )?;
        Ok(None)
    })
    .await
}

/// Visits the objects of a calendar, or only those with an occurrence in `window`,
/// reading each from the store as it is visited.
fn for_each_candidate(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    window: Option<Span>,
    events_only: bool,
    visit: &mut dyn FnMut(Node) -> Result<(), DavError>,
) -> Result<(), DavError> {
    let store = &ctx.app.store;
    let t = &ctx.tenant.id;
    let Some(window) = window else {
        // Events only: a calendar may also hold tasks and journals.
        return Node::Calendar(cal.clone()).for_each_child(ctx, &mut |n| match &n {
            Node::Object(_, o) if events_only && !o.ics.contains("BEGIN:VEVENT") => Ok(()),
            _ => visit(n),
        });
    };
    match cal {
        Calendar::Bookings | Calendar::ResourceBookings { .. } => {
            for id in store.booking_ids_in(t, window)? {
                if let Some(b) = store.booking(t, &id)?
                    && node::takes(cal, &b)
                {
                    visit(Node::Booking(cal.clone(), Box::new(b)))?;
                }
            }
            Ok(())
        }
        Calendar::Source(s) if !within_horizon(ctx, window) => {
            // Occurrences are materialised for the horizon only: further out (old
            // dates, open-ended ranges) expand each object for this window.
            let opts = crate::ical::expand::ExpandOptions {
                default_zone: ctx.tenant.timezone,
                window,
            };
            for object in store.iter_objects(t, &s.id) {
                let object = object?;
                let Ok(parsed) = crate::ical::parse::parse(&object.ics) else {
                    continue;
                };
                if !crate::ical::expand::expand(&parsed, &opts).0.is_empty() {
                    visit(Node::Object(cal.clone(), Box::new(object)))?;
                }
            }
            Ok(())
        }
        Calendar::Source(s) => {
            let ids: BTreeSet<String> = store
                .object_occurrences(t, window)?
                .into_iter()
                .filter(|e| e.source == s.id)
                .map(|e| e.object)
                .collect();
            for id in ids {
                if let Ok(n) = node::object(ctx, cal.clone(), &id) {
                    visit(n)?;
                }
            }
            Ok(())
        }
    }
}

/// Whether `window` lies inside the materialised occurrence horizon.
fn within_horizon(ctx: &Ctx<'_>, window: Span) -> bool {
    let horizon = ctx.app.calendars.horizon().window(chrono::Utc::now());
    window.start >= horizon.start && window.end <= horizon.end
}

fn check_collation(tm: &TextMatch) -> Result<(), DavError> {
    match tm.collation.as_str() {
        "i;ascii-casemap" | "i;octet" | "i;unicode-casemap" => Ok(()),
        other => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedCollation,
            format!(
                "collation {other} is not supported; use i;ascii-casemap, i;unicode-casemap or i;octet"
            ),
        )),
    }
}

/// calendar-query for VTODO / VJOURNAL: every object holding that component whose
/// component matches the time-range (RFC 4791 §9.9, recurrence instances included)
/// and the prop-filters. Tasks are not indexed (they never block time), so each
/// object of the calendar is read.
fn other_components(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    kind: Kind,
    q: &xml::CalendarQuery,
    sink: &mut super::stream::Sink,
) -> Result<Option<String>, DavError> {
    let Some(filter) = q.filter.comp_filters.first() else {
        return Ok(None);
    };
    let range = filter.time_range.as_ref().map(millis);
    Node::Calendar(cal.clone()).for_each_child(ctx, &mut |n| {
        let Some(text) = n.body(ctx) else {
            return Ok(());
        };
        let unfolded = crate::ical::parse::unfolded(&text);
        let Ok(parsed) = crate::ical::parse::read(&unfolded) else {
            return Ok(());
        };
        let props_match = parsed
            .components
            .iter()
            .filter(|c| c.name.as_str() == kind.name())
            .any(|c| filter.prop_filters.iter().all(|pf| prop_matches(c, pf)));
        let hit = props_match
            && range.is_none_or(|window| {
                matching::component_in_range(&text, kind, window, ctx.tenant.timezone)
            });
        if hit {
            let response = object_response(ctx, &n, &q.props, q.calendar_data.as_ref())?;
            sink.write(&xml::Response::Props(response))?;
        }
        Ok(())
    })?;
    Ok(None)
}

/// A VALARM comp-filter nested in the VEVENT filter (RFC 4791 §9.7.1): alarms present,
/// absent, or triggering inside a time-range.
fn matches_alarm(ctx: &Ctx<'_>, node: &Node, filter: &CompFilter) -> bool {
    let Some(text) = node.body(ctx) else {
        return false;
    };
    let has_alarm = text.contains("BEGIN:VALARM");
    if filter.is_not_defined {
        return !has_alarm;
    }
    match &filter.time_range {
        None => has_alarm,
        Some(range) => {
            has_alarm && matching::alarm_in_range(&text, millis(range), ctx.tenant.timezone)
        }
    }
}

/// Whether the object's VEVENTs satisfy every prop-filter (RFC 4791 §9.7.2).
fn matches_props(ctx: &Ctx<'_>, node: &Node, filter: &CompFilter) -> bool {
    let Some(text) = node.body(ctx) else {
        return false;
    };
    let unfolded = crate::ical::parse::unfolded(&text);
    let Ok(cal) = crate::ical::parse::read(&unfolded) else {
        return false;
    };
    cal.components
        .iter()
        .filter(|c| c.name.as_str() == "VEVENT")
        .any(|event| filter.prop_filters.iter().all(|pf| prop_matches(event, pf)))
}

fn prop_matches(event: &icalendar::parser::Component<'_>, pf: &PropFilter) -> bool {
    let values: Vec<&str> = event
        .properties
        .iter()
        .filter(|p| p.name.as_str().eq_ignore_ascii_case(&pf.name))
        .map(|p| p.val.as_str())
        .collect();
    if pf.is_not_defined {
        return values.is_empty();
    }
    if values.is_empty() {
        return false;
    }
    match &pf.text_match {
        None => true,
        Some(tm) => values.iter().any(|v| text_matches(v, tm)),
    }
}

fn text_matches(value: &str, tm: &TextMatch) -> bool {
    let found = match tm.collation.as_str() {
        "i;octet" => value.contains(&tm.text),
        "i;unicode-casemap" => value.to_lowercase().contains(&tm.text.to_lowercase()),
        _ => value
            .to_ascii_lowercase()
            .contains(&tm.text.to_ascii_lowercase()),
    };
    found != tm.negate
}

/// CALDAV:free-busy-query on a calendar: its busy time as one VFREEBUSY.
fn free_busy_query(
    ctx: &Ctx<'_>,
    path: &DavPath,
    range: TimeRange,
) -> Result<Response<Body>, DavError> {
    let cal = calendar_of(ctx, path)?;
    let window = millis(&range);
    if range.start.is_none() || range.end.is_none() {
        return Err(DavError::new(
            StatusCode::BAD_REQUEST,
            "free-busy-query needs a time-range with start and end",
        ));
    }
    let blocks = match cal.resource() {
        // The resource's busy time as bookings see it: see `resource_busy`.
        Some(resource) => resource_busy(ctx, resource, window)?,
        None => {
            let sources = [cal.id().to_owned()];
            crate::freebusy::busy_blocks(
                &ctx.app.store,
                &ctx.tenant.id,
                window,
                Some(&sources),
                false,
            )?
        }
    };
    let mut w = crate::ical::ContentWriter::with_capacity(512 + blocks.len() * 64);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], crate::ical::booking::PRODID);
    w.raw("VERSION", &[], "2.0");
    crate::ical::freebusy::write_vfreebusy(
        &mut w,
        window,
        &blocks,
        &Default::default(),
        chrono::Utc::now(),
    );
    w.end("VCALENDAR");
    let mut resp = Response::new(full(w.finish()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    Ok(resp)
}

/// Busy time of declared resource `resource` within `window`, as the booking
/// engine decides it: where its bookings (with tenant-wide ones) fill its
/// capacity, and its own and the tenant-wide calendars.
pub(super) fn resource_busy(
    ctx: &Ctx<'_>,
    resource: &str,
    window: Span,
) -> Result<Vec<crate::model::BusyBlock>, DavError> {
    let Some(resource) = ctx
        .tenant
        .resources()
        .into_iter()
        .find(|r| r.id == resource)
    else {
        return Ok(Vec::new());
    };
    let busy = crate::freebusy::ResourceBusy::load(&ctx.app.store, ctx.tenant, window, None, None)?;
    Ok(crate::freebusy::resource_blocks(
        &busy, &resource, window, false,
    ))
}

/// The properties DAV:principal-property-search can match on, with their words
/// for the user (RFC 3744 §9.5).
const PRINCIPAL_SEARCH_PROPS: [(&str, &str, &str); 3] = [
    (NS_DAV, "displayname", "Display name"),
    (NS_CALDAV, "calendar-user-address-set", "Calendar address"),
    (NS_CALENDARSERVER, "email-address-set", "E-mail address"),
];

/// DAV:principal-property-search (RFC 3744 §9.4) over the principals of the
/// caller's tenant: attendee lookups in Apple Calendar, `search_principals` in
/// python caldav. No search at all lists every principal.
fn principal_search(
    ctx: &Ctx<'_>,
    search: &xml::PrincipalPropertySearch,
) -> Result<Response<Body>, DavError> {
    let tenant = ctx.tenant;
    let props = PropRequest::Prop(search.props.clone());
    let mut writer = xml::MultistatusWriter::new();
    let mut out = writer.begin();
    for user in &tenant.users {
        let addresses = node::calendar_user_addresses(user, &tenant.id);
        let values = |name: &PropName| -> Vec<&str> {
            match (name.ns.as_str(), name.name.as_str()) {
                (NS_DAV, "displayname") => vec![user.username.as_str()],
                (NS_CALDAV, "calendar-user-address-set") => {
                    addresses.iter().map(String::as_str).collect()
                }
                (NS_CALENDARSERVER, "email-address-set") => addresses
                    .iter()
                    .filter_map(|a| a.strip_prefix("mailto:"))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let matches = |s: &xml::PropertySearch| {
            let needle = s.match_text.to_lowercase();
            s.props.iter().flat_map(values).any(|v| {
                let v = v.to_lowercase();
                match s.match_type.as_deref() {
                    Some("equals") => v == needle,
                    Some("starts-with") => v.starts_with(&needle),
                    _ => v.contains(&needle),
                }
            })
        };
        let hit = if search.any_of {
            search.searches.is_empty() || search.searches.iter().any(matches)
        } else {
            search.searches.iter().all(matches)
        };
        if hit {
            let principal = Node::Principal(user.username.clone());
            let response = super::propstats(ctx, &principal, &props)?;
            writer.write_response(&mut out, &xml::Response::Props(response));
        }
    }
    out.push_str(&writer.end(None));
    Ok(super::multistatus(out))
}

/// DAV:principal-search-property-set (RFC 3744 §9.5).
fn principal_search_property_set() -> Response<Body> {
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:principal-search-property-set xmlns:d=\"DAV:\">",
    );
    for (ns, name, description) in PRINCIPAL_SEARCH_PROPS {
        body.push_str(&format!(
            "<d:principal-search-property><d:prop><x:{name} xmlns:x=\"{ns}\"/></d:prop>\
             <d:description xml:lang=\"en\">{description}</d:description></d:principal-search-property>"
        ));
    }
    body.push_str("</d:principal-search-property-set>");
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}
