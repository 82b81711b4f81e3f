//! The scheduling outbox (RFC 6638 §5): a POSTed VFREEBUSY request is answered with
//! a `schedule-response` holding each recipient's busy time, as Apple Calendar asks
//! when checking availability. Recipients are users of the sender's tenant (by any
//! of their calendar user addresses); their busy time is the tenant's (bookings
//! and every calendar source). A declared resource's calendar user address
//! (`mailto:` its `email`, else `urn:x-calgate:resource:{tenant}:{id}`) gets
//! that resource's busy time, as its `bookings.{id}/` free-busy-query does.
//! Anyone else is an invalid calendar user (3.7), so no other tenant's busy
//! time ever shows.

use http::{HeaderValue, Response, StatusCode, header};

use super::error::{Condition, DavError};
use super::node::Ctx;
use super::xml::escape_text;
use crate::http::{Body, full};
use crate::ical::ContentWriter;
use crate::ical::freebusy::{FreeBusyHeader, write_vfreebusy};
use crate::model::Span;

pub fn post(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response<Body>, DavError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        DavError::condition(
            StatusCode::BAD_REQUEST,
            Condition::ValidCalendarData,
            "the request must be UTF-8 iCalendar",
        )
    })?;
    let unfolded = crate::ical::parse::unfolded(text);
    let cal = crate::ical::parse::read(&unfolded).map_err(|e| {
        DavError::condition(
            StatusCode::BAD_REQUEST,
            Condition::ValidCalendarData,
            e.to_string(),
        )
    })?;
    let method = cal
        .properties
        .iter()
        .find(|p| p.name.as_str() == "METHOD")
        .map(|p| p.val.as_str().to_owned());
    let request = cal
        .components
        .iter()
        .find(|c| c.name.as_str() == "VFREEBUSY");
    let (Some("REQUEST"), Some(request)) = (method.as_deref(), request) else {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidSchedulingMessage,
            "the outbox answers METHOD:REQUEST with a VFREEBUSY (free/busy lookups)",
        ));
    };
    let instant = |name: &str| {
        request
            .find_prop(name)
            .and_then(|p| crate::ical::parse::parse_naive(p.val.as_str()))
            .map(|n| n.and_utc().timestamp_millis())
    };
    let (Some(start), Some(end)) = (instant("DTSTART"), instant("DTEND")) else {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidSchedulingMessage,
            "the VFREEBUSY request needs DTSTART and DTEND in UTC",
        ));
    };
    if end <= start {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidSchedulingMessage,
            "DTEND must be after DTSTART",
        ));
    }
    let window = Span::new(start, end);
    let uid = request.find_prop("UID").map(|p| p.val.as_str().to_owned());
    let organizer = request
        .find_prop("ORGANIZER")
        .map(|p| p.val.as_str().to_owned());
    let attendees: Vec<String> = request
        .properties
        .iter()
        .filter(|p| p.name.as_str() == "ATTENDEE")
        .map(|p| p.val.as_str().trim().to_owned())
        .collect();
    if attendees.is_empty() {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidSchedulingMessage,
            "name at least one ATTENDEE",
        ));
    }
    let blocks = crate::freebusy::busy_blocks(&ctx.app.store, &ctx.tenant.id, window, None, false)?;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<cal:schedule-response xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">",
    );
    for attendee in &attendees {
        let found = if super::scheduling::resolve(ctx.tenant, attendee).is_some() {
            Some(None)
        } else {
            ctx.tenant
                .resource_by_address(attendee)
                .map(|r| Some(super::report::resource_busy(ctx, &r.id, window)))
        };
        xml.push_str("<cal:response><cal:recipient><d:href>");
        xml.push_str(&escape_text(attendee));
        xml.push_str("</d:href></cal:recipient>");
        if let Some(own) = found {
            let own = own.transpose()?;
            let blocks = own.as_ref().unwrap_or(&blocks);
            let mut w = ContentWriter::with_capacity(512 + blocks.len() * 64);
            w.begin("VCALENDAR");
            w.text("PRODID", &[], crate::ical::booking::PRODID);
            w.raw("VERSION", &[], "2.0");
            w.raw("METHOD", &[], "REPLY");
            let header = FreeBusyHeader {
                uid: uid.as_deref(),
                organizer: organizer.as_deref(),
                attendee: Some(attendee),
            };
            write_vfreebusy(&mut w, window, blocks, &header, chrono::Utc::now());
            w.end("VCALENDAR");
            xml.push_str("<cal:request-status>2.0;Success</cal:request-status><cal:calendar-data>");
            xml.push_str(&escape_text(&w.finish()));
            xml.push_str("</cal:calendar-data>");
        } else {
            xml.push_str("<cal:request-status>3.7;Invalid calendar user</cal:request-status>");
        }
        xml.push_str("</cal:response>");
    }
    xml.push_str("</cal:schedule-response>");
    let mut resp = Response::new(full(xml));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Ok(resp)
}
