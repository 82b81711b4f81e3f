//! Property rendering, pure: what a resource's properties say, from the
//! resource and what was loaded for it beforehand ([`Resource`]), and from who
//! asks in which tenant ([`Env`]). Nothing here reads the store or the App, so
//! a PROPFIND answer can be rendered and tested without either (the fixture
//! pairs in `fixtures/dav/propfind/`).
//!
//! Loading is [`Resource::load`]'s: it reads only what the asked properties
//! need (a collection's change-log sequence for its ETag, sync-token, ctag).

use chrono::{DateTime, Utc};

use super::error::DavError;
use super::node::{Calendar, Ctx, Node, calendar_user_addresses, inbox_collection, sync_token};
use super::paths::{self, OUTBOX};
use super::xml::{
    self, NS_APPLE_ICAL, NS_CALDAV, NS_CALENDARSERVER, NS_DAV, PropContent, PropName, PropRequest,
};
use crate::config::TenantConfig;

/// What every resource's properties share: the tenant, the caller, the limits.
pub struct Env<'a> {
    pub tenant: &'a TenantConfig,
    /// The calling user's name.
    pub user: &'a str,
    /// `CALDAV:max-resource-size`: the server's body limit.
    pub max_resource_size: usize,
    /// When the answer is made (`CALDAV:calendar-timezone` covers two years from it).
    pub now: DateTime<Utc>,
}

impl<'a> Env<'a> {
    pub fn of(ctx: &Ctx<'a>) -> Env<'a> {
        Env {
            tenant: ctx.tenant,
            user: &ctx.user.username,
            max_resource_size: ctx.app.config.max_body_bytes,
            now: Utc::now(),
        }
    }
}

/// A resource and what rendering its properties needs from the store.
pub struct Resource<'n> {
    pub node: &'n Node,
    /// The change-log sequence of a calendar or an inbox ([`Node::version`]),
    /// when a property asked for needs it.
    pub version: Option<u64>,
}

/// Properties whose value is a collection's change-log sequence.
fn needs_version(name: &PropName) -> bool {
    name.is(NS_DAV, "getetag")
        || name.is(NS_DAV, "sync-token")
        || name.is(NS_CALENDARSERVER, "getctag")
}

impl<'n> Resource<'n> {
    /// Reads what the properties `request` asks of `node` need.
    pub fn load(
        ctx: &Ctx<'_>,
        node: &'n Node,
        request: &PropRequest,
    ) -> Result<Resource<'n>, DavError> {
        let wanted = match request {
            PropRequest::PropName => false,
            // Calendars and inboxes list their ETag; other resources have no version.
            PropRequest::AllProp { .. } => true,
            PropRequest::Prop(names) => names.iter().any(needs_version),
        };
        let version = if wanted { node.version(ctx)? } else { None };
        Ok(Resource { node, version })
    }
}

/// The names whose values a PROPFIND asks (None: `propname`, names only).
fn asked(node: &Node, request: &PropRequest) -> Option<Vec<PropName>> {
    match request {
        PropRequest::PropName => None,
        PropRequest::AllProp { include } => Some(
            node.prop_names()
                .into_iter()
                .chain(include.iter().cloned())
                .collect(),
        ),
        PropRequest::Prop(names) => Some(names.clone()),
    }
}

/// One resource's propstats for a PROPFIND: found values 200, unknown names
/// 404 (with `allprop`, only what it has).
pub fn propstats(
    env: &Env<'_>,
    res: &Resource<'_>,
    request: &PropRequest,
) -> xml::PropstatResponse {
    let mut response = xml::PropstatResponse::new(res.node.href_in(&env.tenant.id));
    match request {
        PropRequest::PropName => {
            for name in res.node.prop_names() {
                response.ok(name, PropContent::Empty);
            }
        }
        PropRequest::AllProp { .. } => {
            for name in asked(res.node, request).unwrap_or_default() {
                if let Some(value) = render(env, res, &name) {
                    response.ok(name, value);
                }
            }
        }
        PropRequest::Prop(names) => {
            for name in names {
                match render(env, res, name) {
                    Some(value) => response.ok(name.clone(), value),
                    None => response.not_found(name.clone()),
                };
            }
        }
    }
    response
}

/// The value of one property, or None (answered as 404 in its propstat).
pub fn render(env: &Env<'_>, res: &Resource<'_>, name: &PropName) -> Option<PropContent> {
    let t = env.tenant;
    let node = res.node;
    let principal = paths::principal_href(env.user);
    let ns = name.ns.as_str();
    let local = name.name.as_str();
    match (ns, local) {
        (NS_DAV, "resourcetype") => Some(PropContent::raw(match node {
            Node::Root | Node::Principals | Node::Home => "<d:collection/>",
            Node::Principal(_) => "<d:principal/>",
            Node::Outbox => "<d:collection/><cal:schedule-outbox/>",
            Node::Inbox(_) => "<d:collection/><cal:schedule-inbox/>",
            Node::Calendar(_) => "<d:collection/><cal:calendar/>",
            Node::Booking(..) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..) => "",
        })),
        (NS_DAV, "current-user-principal") => Some(PropContent::hrefs(&[principal])),
        (NS_DAV, "current-user-privilege-set") => Some(PropContent::raw(privileges(node))),
        (NS_DAV, "owner") if node.is_collection() => Some(PropContent::hrefs(&[principal])),
        (NS_DAV, "displayname") => match node {
            Node::Root => Some(PropContent::text("calgate")),
            Node::Principals => Some(PropContent::text("principals")),
            Node::Principal(u) => Some(PropContent::text(u.clone())),
            Node::Home => Some(PropContent::text(t.name.clone())),
            Node::Outbox => Some(PropContent::text("outbox")),
            Node::Inbox(_) => Some(PropContent::text("inbox")),
            Node::Calendar(Calendar::Bookings) => {
                Some(PropContent::text(format!("{} bookings", t.name)))
            }
            Node::Calendar(Calendar::ResourceBookings { resource, .. }) => Some(PropContent::text(
                format!("{} bookings", resource_name(t, resource)),
            )),
            Node::Calendar(Calendar::Source(s)) => Some(PropContent::text(s.name.clone())),
            _ => None,
        },
        (NS_DAV, "principal-URL") if matches!(node, Node::Principal(_)) => {
            Some(PropContent::hrefs(&[node.href_in(&t.id)]))
        }
        (NS_CALDAV, "calendar-home-set") if matches!(node, Node::Principal(_)) => {
            Some(PropContent::hrefs(&[paths::home_href(&t.id)]))
        }
        (NS_CALDAV, "calendar-user-address-set") => match node {
            Node::Principal(u) => t
                .users
                .iter()
                .find(|user| user.username == *u)
                .map(|user| PropContent::hrefs(&calendar_user_addresses(user, &t.id))),
            _ => None,
        },
        (NS_CALDAV, "schedule-inbox-URL") => match node {
            Node::Principal(u) if crate::scheduling::enabled(t) => {
                Some(PropContent::hrefs(&[paths::inbox_href(u)]))
            }
            _ => None,
        },
        (NS_CALDAV, "schedule-tag") => match node {
            Node::Booking(..) | Node::Object(..) => node
                .body_in(t.timezone)
                .and_then(|text| crate::scheduling::schedule_tag(t, &text))
                .map(PropContent::text),
            _ => None,
        },
        // RFC 6638 §9.2: where a linked user's client puts new events, so
        // they book the user's resource.
        (NS_CALDAV, "schedule-default-calendar-URL") => match node {
            Node::Principal(u) | Node::Inbox(u) => t.user_resource(u).map(|r| {
                PropContent::hrefs(&[paths::calendar_href(&t.id, &paths::resource_bookings(r))])
            }),
            _ => None,
        },
        (NS_CALDAV, "schedule-outbox-URL") if matches!(node, Node::Principal(_)) => {
            Some(PropContent::hrefs(&[paths::calendar_href(&t.id, OUTBOX)]))
        }
        (NS_CALDAV, "calendar-user-type") if matches!(node, Node::Principal(_)) => {
            Some(PropContent::text("INDIVIDUAL"))
        }
        (NS_DAV, "getetag") => node.etag_at(res.version).map(PropContent::text),
        (NS_DAV, "sync-token") | (NS_CALENDARSERVER, "getctag") => match node {
            Node::Calendar(c) => res
                .version
                .map(|v| PropContent::text(sync_token(&t.id, c.id(), v))),
            Node::Inbox(user) => res
                .version
                .map(|v| PropContent::text(sync_token(&t.id, &inbox_collection(user), v))),
            _ => None,
        },
        (NS_DAV, "supported-report-set") => match node {
            Node::Calendar(_) => Some(PropContent::raw(
                "<d:supported-report><d:report><cal:calendar-query/></d:report></d:supported-report>\
                 <d:supported-report><d:report><cal:calendar-multiget/></d:report></d:supported-report>\
                 <d:supported-report><d:report><d:sync-collection/></d:report></d:supported-report>\
                 <d:supported-report><d:report><cal:free-busy-query/></d:report></d:supported-report>",
            )),
            Node::Inbox(_) => Some(PropContent::raw(
                "<d:supported-report><d:report><cal:calendar-query/></d:report></d:supported-report>\
                 <d:supported-report><d:report><cal:calendar-multiget/></d:report></d:supported-report>\
                 <d:supported-report><d:report><d:sync-collection/></d:report></d:supported-report>",
            )),
            _ => None,
        },
        (NS_CALDAV, "calendar-description") => match node {
            Node::Calendar(Calendar::Source(s)) => s.description.clone().map(PropContent::text),
            Node::Calendar(Calendar::Bookings) => Some(PropContent::text(format!(
                "Bookings of {}, kept in sync with the booking engine",
                t.name
            ))),
            Node::Calendar(Calendar::ResourceBookings { resource, .. }) => {
                Some(PropContent::text(format!(
                    "Bookings taking {} at {}, kept in sync with the booking engine; new events here book {}",
                    resource_name(t, resource),
                    t.name,
                    resource_name(t, resource)
                )))
            }
            _ => None,
        },
        (NS_CALDAV, "calendar-timezone") if matches!(node, Node::Calendar(_)) => {
            Some(PropContent::text(tenant_timezone(t, env.now)))
        }
        (NS_CALDAV, "supported-calendar-component-set") => match node {
            Node::Calendar(Calendar::Source(s)) => Some(PropContent::raw(
                s.component_set()
                    .iter()
                    .map(|c| format!("<cal:comp name=\"{c}\"/>"))
                    .collect::<String>(),
            )),
            Node::Calendar(Calendar::Bookings | Calendar::ResourceBookings { .. }) => {
                Some(PropContent::raw("<cal:comp name=\"VEVENT\"/>"))
            }
            _ => None,
        },
        (NS_CALDAV, "supported-calendar-data") if matches!(node, Node::Calendar(_)) => Some(
            PropContent::raw("<cal:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>"),
        ),
        (NS_CALDAV, "max-resource-size") if matches!(node, Node::Calendar(_)) => {
            Some(PropContent::text(env.max_resource_size.to_string()))
        }
        // The occurrences an object may have in the indexed window (RFC 4791
        // §5.2.8); more is refused with the `max-instances` precondition.
        (NS_CALDAV, "max-instances") if matches!(node, Node::Calendar(_)) => Some(
            PropContent::text(crate::ical::expand::MAX_INSTANCES.to_string()),
        ),
        (NS_CALDAV, "min-date-time") => match node {
            Node::Calendar(c) => Some(PropContent::text(c.years().min_date_time())),
            _ => None,
        },
        (NS_CALDAV, "max-date-time") => match node {
            Node::Calendar(c) => Some(PropContent::text(c.years().max_date_time())),
            _ => None,
        },
        (NS_CALDAV, "schedule-calendar-transp") => match node {
            Node::Calendar(c) => {
                let transparent = matches!(c, Calendar::Source(s) if s.transparent);
                Some(PropContent::raw(if transparent {
                    "<cal:transparent/>"
                } else {
                    "<cal:opaque/>"
                }))
            }
            _ => None,
        },
        (NS_APPLE_ICAL, "calendar-color") => match node {
            Node::Calendar(Calendar::Source(s)) => s.color.clone().map(PropContent::text),
            _ => None,
        },
        (NS_APPLE_ICAL, "calendar-order") => match node {
            Node::Calendar(Calendar::Source(s)) => {
                s.order.map(|o| PropContent::text(o.to_string()))
            }
            _ => None,
        },
        (NS_DAV, "getcontenttype") if !node.is_collection() => {
            Some(PropContent::text("text/calendar; charset=utf-8"))
        }
        (NS_DAV, "getcontentlength") => match node {
            Node::Member(_, m) => Some(PropContent::text(m.length_text())),
            _ => node
                .body_in(t.timezone)
                .map(|b| PropContent::text(b.len().to_string())),
        },
        (NS_DAV, "getlastmodified") => match node {
            Node::Booking(_, b) => Some(PropContent::text(crate::http::http_date(b.updated))),
            Node::Object(_, o) => Some(PropContent::text(crate::http::http_date(o.updated))),
            Node::Member(_, m) => Some(PropContent::text(m.last_modified.clone())),
            Node::InboxItem(_, item) => {
                Some(PropContent::text(crate::http::http_date(item.created)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The declared name of resource `id` (its id when it has none).
fn resource_name<'t>(t: &'t TenantConfig, id: &'t str) -> &'t str {
    t.resources
        .iter()
        .find(|r| r.id == id)
        .map_or(id, |r| r.name.as_str())
}

/// What the current user may do here (RFC 3744 §5.4).
fn privileges(node: &Node) -> String {
    let privilege = |p: &str| format!("<d:privilege><d:{p}/></d:privilege>");
    let writable = match node {
        Node::Calendar(c) | Node::Object(c, _) | Node::Member(c, _) => c.writable(),
        Node::Booking(..) | Node::Home => true,
        Node::Outbox => {
            return privilege("read") + "<d:privilege><cal:schedule-send/></d:privilege>";
        }
        // Messages are read and removed, never written.
        Node::Inbox(_) => {
            return privilege("read")
                + &privilege("read-current-user-privilege-set")
                + &privilege("unbind");
        }
        _ => false,
    };
    let mut set = privilege("read") + &privilege("read-current-user-privilege-set");
    if writable {
        for p in [
            "write",
            "write-properties",
            "write-content",
            "bind",
            "unbind",
        ] {
            set += &privilege(p);
        }
    }
    set
}

/// The tenant's zone as a VCALENDAR holding one VTIMEZONE (CalDAV calendar-timezone).
fn tenant_timezone(t: &TenantConfig, now: DateTime<Utc>) -> String {
    let mut w = crate::ical::ContentWriter::with_capacity(1024);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], crate::ical::booking::PRODID);
    w.raw("VERSION", &[], "2.0");
    crate::ical::vtimezone::write_vtimezone(
        &mut w,
        t.timezone,
        now,
        now + chrono::Duration::days(730),
    );
    w.end("VCALENDAR");
    w.finish()
}

#[cfg(test)]
mod tests;
