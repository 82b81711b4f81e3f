//! The DAV resources of a tenant and the properties each one has.
//!
//! Resources are a closed set (root, principals and their scheduling inboxes, home,
//! calendars, objects), so they are an enum; each kind's properties are answered by
//! one function, and what a kind does not have is a 404 propstat, never an error. Writes are decided by the
//! handler, which refuses them on every kind that does not support them.

use http::StatusCode;

use super::error::DavError;
use super::paths::{self, DavPath, OUTBOX};
use super::scheduling;
use super::validate::Years;
use super::xml::{NS_APPLE_ICAL, NS_CALDAV, NS_CALENDARSERVER, NS_DAV, PropContent, PropName};
use std::sync::Arc;

use super::listing::Member;
use crate::app::{App, UserPrincipal};
use crate::config::{Scheduling, TenantConfig, UserConfig};
use crate::model::{BOOKINGS_SOURCE, Booking, CalendarObject, Source};
use crate::store::InboxItem;

/// Who is asking, and in which tenant.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub user: &'a UserPrincipal,
    pub tenant: &'a TenantConfig,
}

/// A calendar collection: the bookings, or a source.
#[derive(Debug, Clone)]
pub enum Calendar {
    Bookings,
    Source(Source),
}

impl Calendar {
    pub fn id(&self) -> &str {
        match self {
            Calendar::Bookings => BOOKINGS_SOURCE,
            Calendar::Source(s) => &s.id,
        }
    }

    /// The years its objects may use.
    pub fn years(&self) -> Years {
        match self {
            Calendar::Bookings => Years::BOOKINGS,
            Calendar::Source(_) => Years::ANY,
        }
    }

    pub fn writable(&self) -> bool {
        match self {
            Calendar::Bookings => true,
            Calendar::Source(s) => !s.read_only,
        }
    }
}

pub enum Node {
    Root,
    Principals,
    Principal(String),
    /// A user's scheduling inbox (RFC 6638 §2.2), and a message in it.
    Inbox(String),
    InboxItem(String, Box<InboxItem>),
    Home,
    Outbox,
    Calendar(Calendar),
    Booking(Box<Booking>),
    Object(Calendar, Box<CalendarObject>),
    /// An object or booking as a collection listing knows it: no body.
    Member(Calendar, Arc<Member>),
}

/// Name of a booking's CalDAV resource.
pub fn booking_resource(b: &Booking) -> String {
    format!("{}.ics", b.id)
}

/// Finds the resource at `path`, or 404. Paths of another tenant are 404 too: they
/// must not even be confirmed to exist.
pub fn resolve(ctx: &Ctx<'_>, path: &DavPath) -> Result<Node, DavError> {
    own_tenant(ctx, path)?;
    Ok(match path {
        DavPath::Root => Node::Root,
        DavPath::Principals | DavPath::CalendarsRoot => Node::Principals,
        DavPath::Principal(user) => {
            // Principals of one's own tenant are visible (scheduling needs them).
            let same_tenant = ctx.tenant.users.iter().any(|u| &u.username == user);
            if !same_tenant {
                return Err(DavError::not_found());
            }
            Node::Principal(user.clone())
        }
        DavPath::Inbox(user) => {
            inbox_owner(ctx, user)?;
            Node::Inbox(user.clone())
        }
        DavPath::InboxItem(user, name) => {
            inbox_owner(ctx, user)?;
            let item = ctx
                .app
                .store
                .inbox_item(&ctx.tenant.id, user, name)?
                .ok_or_else(DavError::not_found)?;
            Node::InboxItem(user.clone(), Box::new(item))
        }
        DavPath::Home(_) => Node::Home,
        DavPath::Outbox(_) => Node::Outbox,
        DavPath::Calendar(_, cal) => Node::Calendar(calendar(ctx, cal)?),
        DavPath::Object(_, cal, name) => {
            let cal = calendar(ctx, cal)?;
            object(ctx, cal, name)?
        }
    })
}

/// 404 for a path in another tenant (or one that does not exist): every method,
/// writes included, answers as if nothing were there.
pub fn own_tenant(ctx: &Ctx<'_>, path: &DavPath) -> Result<(), DavError> {
    match path.tenant() {
        Some(t) if t != ctx.tenant.id => Err(DavError::not_found()),
        _ => Ok(()),
    }
}

/// Inboxes exist where the server schedules, and only their owner opens them;
/// another tenant's users are not even confirmed to exist.
fn inbox_owner(ctx: &Ctx<'_>, user: &str) -> Result<(), DavError> {
    let same_tenant = ctx.tenant.users.iter().any(|u| u.username == user);
    if !same_tenant || ctx.tenant.scheduling != Scheduling::Server {
        return Err(DavError::not_found());
    }
    if user != ctx.user.username {
        return Err(DavError::forbidden(format!(
            "only {user} may open their scheduling inbox"
        )));
    }
    Ok(())
}

pub fn calendar(ctx: &Ctx<'_>, id: &str) -> Result<Calendar, DavError> {
    if id == BOOKINGS_SOURCE {
        return Ok(Calendar::Bookings);
    }
    ctx.app
        .store
        .source(&ctx.tenant.id, id)?
        .map(Calendar::Source)
        .ok_or_else(DavError::not_found)
}

pub fn object(ctx: &Ctx<'_>, cal: Calendar, name: &str) -> Result<Node, DavError> {
    match cal {
        Calendar::Bookings => {
            let id = name.strip_suffix(".ics").ok_or_else(DavError::not_found)?;
            let booking = ctx
                .app
                .store
                .booking(&ctx.tenant.id, id)?
                .ok_or_else(DavError::not_found)?;
            Ok(Node::Booking(Box::new(booking)))
        }
        Calendar::Source(ref s) => {
            let object = ctx
                .app
                .store
                .object(&ctx.tenant.id, &s.id, name)?
                .ok_or_else(DavError::not_found)?;
            Ok(Node::Object(cal, Box::new(object)))
        }
    }
}

impl Node {
    pub fn href(&self, ctx: &Ctx<'_>) -> String {
        let t = &ctx.tenant.id;
        match self {
            Node::Root => paths::ROOT.to_owned(),
            Node::Principals => "/dav/principals/".to_owned(),
            Node::Principal(u) => paths::principal_href(u),
            Node::Inbox(u) => paths::inbox_href(u),
            Node::InboxItem(u, item) => paths::inbox_item_href(u, &item.name),
            Node::Home => paths::home_href(t),
            Node::Outbox => paths::calendar_href(t, OUTBOX),
            Node::Calendar(c) => paths::calendar_href(t, c.id()),
            Node::Booking(b) => paths::object_href(t, BOOKINGS_SOURCE, &booking_resource(b)),
            Node::Object(c, o) => paths::object_href(t, c.id(), &o.id),
            Node::Member(c, m) => paths::object_href(t, c.id(), &m.name),
        }
    }

    pub fn is_collection(&self) -> bool {
        !matches!(
            self,
            Node::Booking(_) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..)
        )
    }

    /// Members for a Depth: 1 listing.
    pub fn children(&self, ctx: &Ctx<'_>) -> Result<Vec<Node>, DavError> {
        let mut members = Vec::new();
        self.for_each_child(ctx, &mut |n| {
            members.push(n);
            Ok(())
        })?;
        Ok(members)
    }

    /// Visits the members one at a time, read from the store as they are visited,
    /// so a listing of any size holds one member at a time.
    pub fn for_each_child(
        &self,
        ctx: &Ctx<'_>,
        visit: &mut dyn FnMut(Node) -> Result<(), DavError>,
    ) -> Result<(), DavError> {
        let store = &ctx.app.store;
        match self {
            Node::Root => {
                visit(Node::Principal(ctx.user.username.clone()))?;
                visit(Node::Home)
            }
            Node::Principals => visit(Node::Principal(ctx.user.username.clone())),
            Node::Home => {
                visit(Node::Calendar(Calendar::Bookings))?;
                visit(Node::Outbox)?;
                for s in store.sources(&ctx.tenant.id)? {
                    visit(Node::Calendar(Calendar::Source(s)))?;
                }
                Ok(())
            }
            Node::Calendar(Calendar::Bookings) => {
                for b in store.iter_bookings(&ctx.tenant.id) {
                    visit(Node::Booking(Box::new(b?)))?;
                }
                Ok(())
            }
            Node::Calendar(c @ Calendar::Source(s)) => {
                for o in store.iter_objects(&ctx.tenant.id, &s.id) {
                    visit(Node::Object(c.clone(), Box::new(o?)))?;
                }
                Ok(())
            }
            Node::Inbox(user) => {
                for item in store.inbox_items(&ctx.tenant.id, user)? {
                    visit(Node::InboxItem(user.clone(), Box::new(item)))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The iCalendar body of an object resource.
    pub fn body(&self, ctx: &Ctx<'_>) -> Option<String> {
        match self {
            // The client's own text while nothing changed it since; else rendered.
            Node::Booking(b) => Some(match (&b.calendar_text, b.calendar_text_sequence) {
                (Some(text), Some(seq)) if seq == b.sequence => text.clone(),
                _ => crate::ical::booking::render_booking(ctx.tenant.timezone, b),
            }),
            Node::Object(_, o) => Some(o.ics.clone()),
            Node::Member(_, m) => m.body.clone(),
            Node::InboxItem(_, item) => Some(item.ics.clone()),
            _ => None,
        }
    }

    pub fn etag(&self, ctx: &Ctx<'_>) -> Result<Option<String>, DavError> {
        Ok(match self {
            Node::Booking(b) => Some(b.etag.clone()),
            Node::Object(_, o) => Some(o.etag.clone()),
            Node::Member(_, m) => Some(m.etag.clone()),
            Node::InboxItem(_, item) => Some(item.etag.clone()),
            Node::Inbox(user) => Some(format!(
                "\"{}\"",
                ctx.app.store.inbox_version(&ctx.tenant.id, user)?
            )),
            Node::Calendar(c) => Some(format!(
                "\"{}\"",
                ctx.app.store.collection_version(&ctx.tenant.id, c.id())?
            )),
            _ => None,
        })
    }

    /// Names of the properties this resource has (allprop / propname).
    pub fn prop_names(&self) -> Vec<PropName> {
        let dav = |n: &str| PropName::new(NS_DAV, n);
        let cal = |n: &str| PropName::new(NS_CALDAV, n);
        let mut names = vec![
            dav("resourcetype"),
            dav("current-user-principal"),
            dav("current-user-privilege-set"),
        ];
        match self {
            Node::Root | Node::Principals | Node::Home | Node::Outbox => {
                names.push(dav("displayname"))
            }
            Node::Inbox(_) => names.extend([
                dav("displayname"),
                dav("getetag"),
                dav("sync-token"),
                dav("supported-report-set"),
                PropName::new(NS_CALENDARSERVER, "getctag"),
            ]),
            Node::Principal(_) => names.extend([
                dav("displayname"),
                dav("principal-URL"),
                cal("calendar-home-set"),
                cal("calendar-user-address-set"),
                cal("schedule-outbox-URL"),
                cal("calendar-user-type"),
            ]),
            Node::Calendar(_) => names.extend([
                dav("displayname"),
                dav("owner"),
                dav("getetag"),
                dav("sync-token"),
                dav("supported-report-set"),
                cal("calendar-description"),
                cal("calendar-timezone"),
                cal("supported-calendar-component-set"),
                cal("supported-calendar-data"),
                cal("max-resource-size"),
                cal("schedule-calendar-transp"),
                PropName::new(NS_CALENDARSERVER, "getctag"),
                PropName::new(NS_APPLE_ICAL, "calendar-color"),
                PropName::new(NS_APPLE_ICAL, "calendar-order"),
            ]),
            Node::Booking(_) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..) => names
                .extend([
                    dav("getetag"),
                    dav("getcontenttype"),
                    dav("getcontentlength"),
                    dav("getlastmodified"),
                ]),
        }
        names
    }

    /// The value of one property, or None (answered as 404 in its propstat).
    pub fn prop(&self, ctx: &Ctx<'_>, name: &PropName) -> Result<Option<PropContent>, DavError> {
        let t = ctx.tenant;
        let principal = paths::principal_href(&ctx.user.username);
        let ns = name.ns.as_str();
        let local = name.name.as_str();
        let value = match (ns, local) {
            (NS_DAV, "resourcetype") => Some(PropContent::raw(match self {
                Node::Root | Node::Principals | Node::Home => "<d:collection/>",
                Node::Principal(_) => "<d:principal/>",
                Node::Outbox => "<d:collection/><cal:schedule-outbox/>",
                Node::Inbox(_) => "<d:collection/><cal:schedule-inbox/>",
                Node::Calendar(_) => "<d:collection/><cal:calendar/>",
                Node::Booking(_) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..) => "",
            })),
            (NS_DAV, "current-user-principal") => Some(PropContent::hrefs(&[principal])),
            (NS_DAV, "current-user-privilege-set") => Some(PropContent::raw(privileges(self))),
            (NS_DAV, "owner") if self.is_collection() => Some(PropContent::hrefs(&[principal])),
            (NS_DAV, "displayname") => match self {
                Node::Root => Some(PropContent::text("calgate")),
                Node::Principals => Some(PropContent::text("principals")),
                Node::Principal(u) => Some(PropContent::text(u.clone())),
                Node::Home => Some(PropContent::text(t.name.clone())),
                Node::Outbox => Some(PropContent::text("outbox")),
                Node::Inbox(_) => Some(PropContent::text("inbox")),
                Node::Calendar(Calendar::Bookings) => {
                    Some(PropContent::text(format!("{} bookings", t.name)))
                }
                Node::Calendar(Calendar::Source(s)) => Some(PropContent::text(s.name.clone())),
                _ => None,
            },
            (NS_DAV, "principal-URL") if matches!(self, Node::Principal(_)) => {
                Some(PropContent::hrefs(&[self.href(ctx)]))
            }
            (NS_CALDAV, "calendar-home-set") if matches!(self, Node::Principal(_)) => {
                Some(PropContent::hrefs(&[paths::home_href(&t.id)]))
            }
            (NS_CALDAV, "calendar-user-address-set") => match self {
                Node::Principal(u) => t
                    .users
                    .iter()
                    .find(|user| user.username == *u)
                    .map(|user| PropContent::hrefs(&calendar_user_addresses(user, &t.id))),
                _ => None,
            },
            (NS_CALDAV, "schedule-inbox-URL") => match self {
                Node::Principal(u) if scheduling::enabled(ctx) => {
                    Some(PropContent::hrefs(&[paths::inbox_href(u)]))
                }
                _ => None,
            },
            (NS_CALDAV, "schedule-tag") => match self {
                Node::Booking(_) | Node::Object(..) => self
                    .body(ctx)
                    .and_then(|text| scheduling::schedule_tag(ctx, &text))
                    .map(PropContent::text),
                _ => None,
            },
            (NS_CALDAV, "schedule-outbox-URL") if matches!(self, Node::Principal(_)) => {
                Some(PropContent::hrefs(&[paths::calendar_href(&t.id, OUTBOX)]))
            }
            (NS_CALDAV, "calendar-user-type") if matches!(self, Node::Principal(_)) => {
                Some(PropContent::text("INDIVIDUAL"))
            }
            (NS_DAV, "getetag") => self.etag(ctx)?.map(PropContent::text),
            (NS_DAV, "sync-token") | (NS_CALENDARSERVER, "getctag") => match self {
                Node::Calendar(c) => Some(PropContent::text(sync_token(
                    &t.id,
                    c.id(),
                    ctx.app.store.collection_version(&t.id, c.id())?,
                ))),
                Node::Inbox(user) => Some(PropContent::text(sync_token(
                    &t.id,
                    &inbox_collection(user),
                    ctx.app.store.inbox_version(&t.id, user)?,
                ))),
                _ => None,
            },
            (NS_DAV, "supported-report-set") => match self {
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
            (NS_CALDAV, "calendar-description") => match self {
                Node::Calendar(Calendar::Source(s)) => s.description.clone().map(PropContent::text),
                Node::Calendar(Calendar::Bookings) => Some(PropContent::text(format!(
                    "Bookings of {}, kept in sync with the booking engine",
                    t.name
                ))),
                _ => None,
            },
            (NS_CALDAV, "calendar-timezone") if matches!(self, Node::Calendar(_)) => {
                Some(PropContent::text(tenant_timezone(t)))
            }
            (NS_CALDAV, "supported-calendar-component-set") => match self {
                Node::Calendar(Calendar::Source(s)) => Some(PropContent::raw(
                    s.component_set()
                        .iter()
                        .map(|c| format!("<cal:comp name=\"{c}\"/>"))
                        .collect::<String>(),
                )),
                Node::Calendar(Calendar::Bookings) => {
                    Some(PropContent::raw("<cal:comp name=\"VEVENT\"/>"))
                }
                _ => None,
            },
            (NS_CALDAV, "supported-calendar-data") if matches!(self, Node::Calendar(_)) => {
                Some(PropContent::raw(
                    "<cal:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>",
                ))
            }
            (NS_CALDAV, "max-resource-size") if matches!(self, Node::Calendar(_)) => {
                Some(PropContent::text(ctx.app.config.max_body_bytes.to_string()))
            }
            // The occurrences an object may have in the indexed window (RFC 4791
            // §5.2.8); more is refused with the `max-instances` precondition.
            (NS_CALDAV, "max-instances") if matches!(self, Node::Calendar(_)) => Some(
                PropContent::text(crate::ical::expand::MAX_INSTANCES.to_string()),
            ),
            (NS_CALDAV, "min-date-time") => match self {
                Node::Calendar(c) => Some(PropContent::text(c.years().min_date_time())),
                _ => None,
            },
            (NS_CALDAV, "max-date-time") => match self {
                Node::Calendar(c) => Some(PropContent::text(c.years().max_date_time())),
                _ => None,
            },
            (NS_CALDAV, "schedule-calendar-transp") => match self {
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
            (NS_APPLE_ICAL, "calendar-color") => match self {
                Node::Calendar(Calendar::Source(s)) => s.color.clone().map(PropContent::text),
                _ => None,
            },
            (NS_APPLE_ICAL, "calendar-order") => match self {
                Node::Calendar(Calendar::Source(s)) => {
                    s.order.map(|o| PropContent::text(o.to_string()))
                }
                _ => None,
            },
            (NS_DAV, "getcontenttype") if !self.is_collection() => {
                Some(PropContent::text("text/calendar; charset=utf-8"))
            }
            (NS_DAV, "getcontentlength") => match self {
                Node::Member(_, m) => Some(PropContent::text(m.length_text())),
                _ => self
                    .body(ctx)
                    .map(|b| PropContent::text(b.len().to_string())),
            },
            (NS_DAV, "getlastmodified") => match self {
                Node::Booking(b) => Some(PropContent::text(crate::http::http_date(b.updated))),
                Node::Object(_, o) => Some(PropContent::text(crate::http::http_date(o.updated))),
                Node::Member(_, m) => Some(PropContent::text(m.last_modified.clone())),
                Node::InboxItem(_, item) => {
                    Some(PropContent::text(crate::http::http_date(item.created)))
                }
                _ => None,
            },
            _ => None,
        };
        Ok(value)
    }
}

/// What the current user may do here (RFC 3744 §5.4).
fn privileges(node: &Node) -> String {
    let privilege = |p: &str| format!("<d:privilege><d:{p}/></d:privilege>");
    let writable = match node {
        Node::Calendar(c) | Node::Object(c, _) | Node::Member(c, _) => c.writable(),
        Node::Booking(_) | Node::Home => true,
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

/// The address other users schedule with (`mailto:` form clients expect).
pub fn calendar_user_address(user: &str, tenant: &str) -> String {
    format!("mailto:{user}@{tenant}.calgate.invalid")
}

/// Every calendar user address of a user, the one clients should use first:
/// their e-mail address when configured, the gateway's own, the principal URL.
pub fn calendar_user_addresses(user: &UserConfig, tenant: &str) -> Vec<String> {
    let mut addresses: Vec<String> = user.email.iter().map(|e| format!("mailto:{e}")).collect();
    addresses.push(calendar_user_address(&user.username, tenant));
    addresses.push(paths::principal_href(&user.username));
    addresses
}

/// The change-log name of a user's inbox in sync tokens (no calendar id holds a `/`).
pub fn inbox_collection(user: &str) -> String {
    format!("inbox/{user}")
}

/// `urn:calgate:sync:{tenant}:{collection}:{seq}`: tied to one collection, so a
/// token cannot be replayed against another tenant's or calendar's history.
pub fn sync_token(tenant: &str, collection: &str, seq: u64) -> String {
    format!("urn:calgate:sync:{tenant}:{collection}:{seq}")
}

/// The tenant's zone as a VCALENDAR holding one VTIMEZONE (CalDAV calendar-timezone).
fn tenant_timezone(t: &TenantConfig) -> String {
    let mut w = crate::ical::ContentWriter::with_capacity(1024);
    w.begin("VCALENDAR");
    w.text("PRODID", &[], crate::ical::booking::PRODID);
    w.raw("VERSION", &[], "2.0");
    let now = chrono::Utc::now();
    crate::ical::vtimezone::write_vtimezone(
        &mut w,
        t.timezone,
        now,
        now + chrono::Duration::days(730),
    );
    w.end("VCALENDAR");
    w.finish()
}

/// 403 for writes on resources that have none.
pub fn read_only(what: &str) -> DavError {
    DavError::forbidden(format!("{what} cannot be changed over CalDAV"))
}

/// Sanity for names clients choose: no dot segments or hidden names, separators
/// or control characters.
pub fn valid_resource_name(name: &str) -> Result<(), DavError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| !c.is_control() && c != '/' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(DavError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "\"{name}\" is not a usable resource name: use 1-200 characters, not starting with \".\", without / \\ or control characters"
            ),
        ))
    }
}
