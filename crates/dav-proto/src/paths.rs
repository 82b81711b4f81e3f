//! The CalDAV URL layout, both ways.
//!
//! ```text
//! /.well-known/caldav               -> redirect to /dav/
//! /dav/                             root
//! /dav/principals/{user}/           a user's principal
//! /dav/principals/{user}/inbox/     the user's scheduling inbox (iTIP messages)
//! /dav/principals/{user}/inbox/{m}  one message
//! /dav/calendars/{tenant}/          the tenant's calendar home
//! /dav/calendars/{tenant}/{cal}/    a calendar: `bookings`, `bookings.{resource}`
//!                                   (one resource's bookings), or a source id
//! /dav/calendars/{tenant}/{cal}/{o} a calendar object (`*.ics`)
//! /dav/calendars/{tenant}/outbox/   the scheduling outbox (free/busy requests)
//! ```

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

pub const ROOT: &str = "/dav/";
pub const OUTBOX: &str = "outbox";
pub const INBOX: &str = "inbox";
/// The tenant-wide bookings collection; `bookings.{resource}` is one resource's.
pub const BOOKINGS: &str = "bookings";

/// What a calendar segment names. Source and resource ids cannot hold a `.`,
/// so `bookings.{resource}` never collides with a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarKind<'a> {
    /// `bookings`: every booking of the tenant.
    Bookings,
    /// `bookings.{resource}`: the bookings taking that resource.
    ResourceBookings(&'a str),
    /// Anything else: a source (staff calendar or imported one).
    Source(&'a str),
}

impl<'a> CalendarKind<'a> {
    pub fn of(segment: &'a str) -> CalendarKind<'a> {
        if segment == BOOKINGS {
            return CalendarKind::Bookings;
        }
        match segment.strip_prefix("bookings.") {
            Some(resource) if !resource.is_empty() => CalendarKind::ResourceBookings(resource),
            _ => CalendarKind::Source(segment),
        }
    }
}

/// The calendar segment of `resource`'s bookings collection.
pub fn resource_bookings(resource: &str) -> String {
    format!("{BOOKINGS}.{resource}")
}

/// Characters escaped in path segments we write (RFC 3986 pchar is stricter than
/// what clients send; escaping more is always safe).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'&')
    .add(b'+');

pub fn escape(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// [`escape`] appended to `out`. The result needs no XML escaping (`&`, `<` and
/// `>` are percent-encoded).
pub fn push_escaped(out: &mut String, segment: &str) {
    for piece in utf8_percent_encode(segment, SEGMENT) {
        out.push_str(piece);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DavPath {
    Root,
    Principals,
    Principal(String),
    /// A user's scheduling inbox.
    Inbox(String),
    /// A message in a user's inbox: user, resource name.
    InboxItem(String, String),
    CalendarsRoot,
    Home(String),
    Outbox(String),
    Calendar(String, String),
    Object(String, String, String),
}

impl DavPath {
    /// Parses decoded path segments after `/dav/`. None: nothing lives there, or
    /// a segment is a dot segment (see [`dot_segment`]).
    pub fn parse(segments: &[&str]) -> Option<DavPath> {
        if dot_segment(segments).is_some() {
            return None;
        }
        let segs: Vec<&str> = segments.iter().copied().filter(|s| !s.is_empty()).collect();
        Some(match segs.as_slice() {
            [] => DavPath::Root,
            ["principals"] => DavPath::Principals,
            ["principals", user] => DavPath::Principal((*user).to_owned()),
            ["principals", user, INBOX] => DavPath::Inbox((*user).to_owned()),
            ["principals", user, INBOX, item] => {
                DavPath::InboxItem((*user).to_owned(), (*item).to_owned())
            }
            ["calendars"] => DavPath::CalendarsRoot,
            ["calendars", t] => DavPath::Home((*t).to_owned()),
            ["calendars", t, OUTBOX] => DavPath::Outbox((*t).to_owned()),
            ["calendars", t, c] => DavPath::Calendar((*t).to_owned(), (*c).to_owned()),
            ["calendars", t, c, o] => {
                DavPath::Object((*t).to_owned(), (*c).to_owned(), (*o).to_owned())
            }
            _ => return None,
        })
    }

    pub fn href(&self) -> String {
        match self {
            DavPath::Root => ROOT.to_owned(),
            DavPath::Principals => "/dav/principals/".to_owned(),
            DavPath::Principal(u) => principal_href(u),
            DavPath::Inbox(u) => inbox_href(u),
            DavPath::InboxItem(u, item) => inbox_item_href(u, item),
            DavPath::CalendarsRoot => "/dav/calendars/".to_owned(),
            DavPath::Home(t) => home_href(t),
            DavPath::Outbox(t) => format!("{}{OUTBOX}/", home_href(t)),
            DavPath::Calendar(t, c) => calendar_href(t, c),
            DavPath::Object(t, c, o) => object_href(t, c, o),
        }
    }

    /// What kind of calendar a calendar or object path is in; None for others.
    pub fn calendar_kind(&self) -> Option<CalendarKind<'_>> {
        match self {
            DavPath::Calendar(_, c) | DavPath::Object(_, c, _) => Some(CalendarKind::of(c)),
            _ => None,
        }
    }

    /// The tenant the path belongs to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            DavPath::Home(t)
            | DavPath::Outbox(t)
            | DavPath::Calendar(t, _)
            | DavPath::Object(t, _, _) => Some(t),
            _ => None,
        }
    }
}

/// The first `.` or `..` among decoded segments. Such a segment (sent
/// percent-encoded, so the client did not resolve it) would name a resource
/// whose href points elsewhere once anyone resolves it: nothing is named so.
pub fn dot_segment<'s>(segments: &[&'s str]) -> Option<&'s str> {
    segments.iter().copied().find(|s| *s == "." || *s == "..")
}

pub fn principal_href(user: &str) -> String {
    format!("/dav/principals/{}/", escape(user))
}

pub fn inbox_href(user: &str) -> String {
    format!("{}{INBOX}/", principal_href(user))
}

pub fn inbox_item_href(user: &str, item: &str) -> String {
    format!("{}{}", inbox_href(user), escape(item))
}

pub fn home_href(tenant: &str) -> String {
    format!("/dav/calendars/{}/", escape(tenant))
}

pub fn calendar_href(tenant: &str, calendar: &str) -> String {
    format!("{}{}/", home_href(tenant), escape(calendar))
}

pub fn object_href(tenant: &str, calendar: &str, object: &str) -> String {
    format!("{}{}", calendar_href(tenant, calendar), escape(object))
}

/// The decoded path of an href a client sent (absolute URL or path), split into
/// segments after `/dav/`; None when it is not under `/dav/`.
/// The decoded name of the member `href` names when it starts with
/// `collection_href` as we write it (the usual multiget href): no path splitting.
/// `None` for anything else, which [`href_segments`] then reads.
pub fn member_name<'h>(href: &'h str, collection_href: &str) -> Option<Cow<'h, str>> {
    let name = href.strip_prefix(collection_href)?;
    if name.is_empty() || name.contains(['/', '?', '#']) {
        return None;
    }
    Some(percent_encoding::percent_decode_str(name).decode_utf8_lossy())
}

pub fn href_segments(href: &str) -> Option<Vec<String>> {
    let path = match href.find("://") {
        Some(i) => {
            let rest = &href[i + 3..];
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        None => href,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let rest = path
        .strip_prefix("/dav/")
        .or_else(|| (path == "/dav").then_some(""))?;
    Some(
        rest.split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_under_a_known_collection() {
        let cal = calendar_href("demo", "staff cal");
        assert_eq!(cal, "/dav/calendars/demo/staff%20cal/");
        let name = |href: &str| member_name(href, &cal).map(|n| n.into_owned());
        assert_eq!(name(&format!("{cal}a%20b.ics")).as_deref(), Some("a b.ics"));
        assert_eq!(name(&cal), None);
        assert_eq!(name(&format!("{cal}sub/x.ics")), None);
        assert_eq!(name(&format!("{cal}x.ics?v=1")), None);
        assert_eq!(name("/dav/calendars/demo/other/x.ics"), None);
        assert_eq!(name(&format!("http://h{cal}x.ics")), None);
    }

    #[test]
    fn parses_and_builds() {
        let p = DavPath::parse(&["calendars", "demo", "bookings", "a b.ics"]).unwrap();
        assert_eq!(
            p,
            DavPath::Object("demo".into(), "bookings".into(), "a b.ics".into())
        );
        assert_eq!(p.href(), "/dav/calendars/demo/bookings/a%20b.ics");
        assert_eq!(
            DavPath::parse(&["calendars", "demo", ""]),
            Some(DavPath::Home("demo".into()))
        );
        assert_eq!(DavPath::parse(&["nope", "x"]), None);
        assert_eq!(DavPath::parse(&["calendars", "demo", ".."]), None);
        assert_eq!(
            DavPath::parse(&["calendars", "demo", "bookings", "."]),
            None
        );
        assert_eq!(
            DavPath::parse(&["calendars", "demo", "outbox"]),
            Some(DavPath::Outbox("demo".into()))
        );
        let item = DavPath::parse(&["principals", "ana b", "inbox", "m 1.ics"]).unwrap();
        assert_eq!(item, DavPath::InboxItem("ana b".into(), "m 1.ics".into()));
        assert_eq!(item.href(), "/dav/principals/ana%20b/inbox/m%201.ics");
        assert_eq!(
            DavPath::parse(&["principals", "ana", "inbox", ""]).map(|p| p.href()),
            Some("/dav/principals/ana/inbox/".to_owned())
        );
    }

    #[test]
    fn resource_bookings_collections() {
        let p = DavPath::parse(&["calendars", "salon", "bookings.anna", "x.ics"]).unwrap();
        assert_eq!(
            p.calendar_kind(),
            Some(CalendarKind::ResourceBookings("anna"))
        );
        assert_eq!(p.href(), "/dav/calendars/salon/bookings.anna/x.ics");
        assert_eq!(CalendarKind::of("bookings"), CalendarKind::Bookings);
        assert_eq!(
            CalendarKind::of("bookings."),
            CalendarKind::Source("bookings.")
        );
        assert_eq!(
            CalendarKind::of("anna-work"),
            CalendarKind::Source("anna-work")
        );
        assert_eq!(resource_bookings("anna"), "bookings.anna");
        assert_eq!(DavPath::Home("salon".into()).calendar_kind(), None);
    }

    #[test]
    fn hrefs_from_clients() {
        assert_eq!(
            href_segments("https://cal.example.com/dav/calendars/demo/bookings/a%40b.ics").unwrap(),
            ["calendars", "demo", "bookings", "a@b.ics"]
        );
        assert_eq!(
            href_segments("/dav/principals/demo/").unwrap(),
            ["principals", "demo", ""]
        );
        assert!(href_segments("/api/v1/x").is_none());
    }
}
