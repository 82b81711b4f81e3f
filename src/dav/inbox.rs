//! REPORTs on a scheduling inbox (RFC 6638 §2.2): calendar-multiget,
//! calendar-query and sync-collection over the iTIP messages in it, which is
//! how clients (python caldav's `get_items`, Apple Calendar) read an inbox.
//!
//! An inbox holds a few messages (at most [`crate::store::INBOX_CAPACITY`]), so
//! every answer is built whole from the store: no listing cache, no streaming.
//! Which messages arrive is [`super::scheduling`]'s business; PROPFIND, GET and
//! DELETE go through the generic handlers and [`super::node`].

use http::{Response, StatusCode};

use super::error::{Condition, DavError};
use super::node::{self, Ctx, Node};
use super::paths::{self, DavPath};
use super::report::{latest_changes, member_response, millis, object_response, sync_start};
use super::xml::{self, CompFilter, ReportRequest};
use crate::http::Body;
use crate::ical::parse::Kind;

pub fn report(
    ctx: &Ctx<'_>,
    user: &str,
    request: ReportRequest,
) -> Result<Response<Body>, DavError> {
    // The owner only, where inboxes exist.
    node::resolve(ctx, &DavPath::Inbox(user.to_owned()))?;
    match request {
        ReportRequest::CalendarMultiget(m) => multiget(ctx, user, &m),
        ReportRequest::CalendarQuery(q) => query(ctx, user, &q),
        ReportRequest::SyncCollection(s) => sync(ctx, user, &s),
        _ => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedReport,
            "a scheduling inbox answers calendar-multiget, calendar-query and sync-collection",
        )),
    }
}

fn item(ctx: &Ctx<'_>, user: &str, name: &str) -> Result<Option<Node>, DavError> {
    Ok(ctx
        .app
        .store
        .inbox_item(&ctx.tenant.id, user, name)?
        .map(|i| Node::InboxItem(user.to_owned(), Box::new(i))))
}

fn multiget(
    ctx: &Ctx<'_>,
    user: &str,
    m: &xml::CalendarMultiget,
) -> Result<Response<Body>, DavError> {
    let mut responses = Vec::with_capacity(m.hrefs.len());
    for href in &m.hrefs {
        let path = paths::href_segments(href)
            .and_then(|segs| DavPath::parse(&segs.iter().map(String::as_str).collect::<Vec<_>>()));
        let found = match path {
            Some(DavPath::InboxItem(owner, name)) if owner == user => item(ctx, user, &name)?,
            _ => None,
        };
        responses.push(member_response(
            ctx,
            found,
            href,
            &m.props,
            m.calendar_data.as_ref(),
        )?);
    }
    Ok(super::multistatus(xml::multistatus(&responses, None)))
}

/// calendar-query on messages: by component (present or not) and time-range;
/// property filters are not supported here.
fn query(ctx: &Ctx<'_>, user: &str, q: &xml::CalendarQuery) -> Result<Response<Body>, DavError> {
    let unsupported = || {
        DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedFilter,
            "an inbox is searched by component and time-range only; fetch the messages and read them",
        )
    };
    if !q.filter.name.eq_ignore_ascii_case("VCALENDAR") {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidFilter,
            "the filter must start with VCALENDAR",
        ));
    }
    if !q.filter.prop_filters.is_empty()
        || q.filter
            .comp_filters
            .iter()
            .any(|f| !f.prop_filters.is_empty() || !f.comp_filters.is_empty())
    {
        return Err(unsupported());
    }
    let mut responses = Vec::new();
    for i in ctx.app.store.inbox_items(&ctx.tenant.id, user)? {
        // A time-range on VCALENDAR itself (python caldav): any component in it.
        let in_calendar_range = q.filter.time_range.is_none_or(|range| {
            [Kind::Event, Kind::Todo, Kind::Journal]
                .into_iter()
                .any(|kind| in_range(ctx, &i.ics, kind, &range))
        });
        let matches = in_calendar_range
            && q.filter
                .comp_filters
                .iter()
                .all(|f| comp_matches(ctx, &i.ics, f));
        if matches {
            let n = Node::InboxItem(user.to_owned(), Box::new(i));
            responses.push(xml::Response::Props(object_response(
                ctx,
                &n,
                &q.props,
                q.calendar_data.as_ref(),
            )?));
        }
    }
    Ok(super::multistatus(xml::multistatus(&responses, None)))
}

/// Messages are written by the server: components begin on lines of their own,
/// in upper case.
fn has_component(text: &str, name: &str) -> bool {
    text.contains(&format!("BEGIN:{}\r\n", name.to_ascii_uppercase()))
}

fn comp_matches(ctx: &Ctx<'_>, text: &str, f: &CompFilter) -> bool {
    if f.is_not_defined {
        return !has_component(text, &f.name);
    }
    let Some(range) = &f.time_range else {
        return has_component(text, &f.name);
    };
    let kind = match f.name.to_ascii_uppercase().as_str() {
        "VEVENT" => Kind::Event,
        "VTODO" => Kind::Todo,
        "VJOURNAL" => Kind::Journal,
        _ => return false,
    };
    in_range(ctx, text, kind, range)
}

fn in_range(ctx: &Ctx<'_>, text: &str, kind: Kind, range: &xml::TimeRange) -> bool {
    has_component(text, kind.name())
        && crate::ical::matching::component_in_range(text, kind, millis(range), ctx.tenant.timezone)
}

/// RFC 6578 on the inbox's own change log. A `DAV:limit` smaller than the
/// answer is refused (507), which RFC 6578 §3.6 allows: inboxes are small.
fn sync(ctx: &Ctx<'_>, user: &str, s: &xml::SyncCollection) -> Result<Response<Body>, DavError> {
    let store = &ctx.app.store;
    let collection = node::inbox_collection(user);
    let current = store.inbox_version(&ctx.tenant.id, user)?;
    let since = sync_start(ctx, &collection, &s.sync_token, current)?;
    let changed = latest_changes(
        store.inbox_changes_since(&ctx.tenant.id, user, since)?,
        s.sync_token.trim().is_empty(),
    );
    if s.limit.is_some_and(|l| (l as usize) < changed.len()) {
        return Err(DavError::condition(
            StatusCode::INSUFFICIENT_STORAGE,
            Condition::NumberOfMatchesWithinLimits,
            format!(
                "the inbox has {} changes to report; ask without a limit",
                changed.len()
            ),
        ));
    }
    let mut responses = Vec::with_capacity(changed.len());
    for (_, name, deleted) in changed {
        let found = if deleted {
            None
        } else {
            item(ctx, user, &name)?
        };
        let href = paths::inbox_item_href(user, &name);
        responses.push(member_response(
            ctx,
            found,
            &href,
            &s.props,
            s.calendar_data.as_ref(),
        )?);
    }
    let token = node::sync_token(&ctx.tenant.id, &collection, current);
    Ok(super::multistatus(xml::multistatus(
        &responses,
        Some(&token),
    )))
}
