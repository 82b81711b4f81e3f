//! The DAV resources of a tenant: finding them, their members, bodies and ETags,
//! and the names of their properties.
//!
//! Resources are a closed set (root, principals and their scheduling inboxes, home,
//! calendars, objects), so they are an enum. Property values are rendered by
//! [`props`] from what is loaded here; what a kind does not have is a
//! 404 propstat, never an error. Writes are decided by the handler, which refuses
//! them on every kind that does not support them.

use http::StatusCode;

use super::error::DavError;
use super::paths::{self, DavPath, OUTBOX};
use super::props::{self, Env, Resource};
use super::validate::Years;
use super::xml::{
    NS_APPLE_ICAL, NS_CALDAV, NS_CALENDARSERVER, NS_DAV, PropContent, PropName, PropRequest,
};
use std::sync::Arc;

use super::listing::Member;
use crate::app::{App, UserPrincipal};
use crate::config::{Scheduling, TenantConfig, UserConfig};
use crate::model::{BOOKINGS_SOURCE, Booking, CalendarObject, Source};
use crate::store::{BOOKINGS_COLLECTION, Change, InboxItem, StoreError};

/// Who is asking, and in which tenant.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub user: &'a UserPrincipal,
    pub tenant: &'a TenantConfig,
}

/// A calendar collection: the bookings (all of them, or one resource's), or a
/// source.
#[derive(Debug, Clone)]
pub enum Calendar {
    Bookings,
    /// The bookings taking one declared resource (`bookings.{resource}`);
    /// `id` is that segment, kept for hrefs.
    ResourceBookings {
        resource: String,
        id: String,
    },
    Source(Source),
}

impl Calendar {
    /// The bookings collection of declared resource `resource`.
    pub fn of_resource(resource: &str) -> Calendar {
        Calendar::ResourceBookings {
            resource: resource.to_owned(),
            id: paths::resource_bookings(resource),
        }
    }

    /// Its segment in URLs and sync tokens.
    pub fn id(&self) -> &str {
        match self {
            Calendar::Bookings => BOOKINGS_SOURCE,
            Calendar::ResourceBookings { id, .. } => id,
            Calendar::Source(s) => &s.id,
        }
    }

    /// Seq of the newest change to its members: its ETag, CTag and sync
    /// token. A resource's moves only with the bookings that take it (or
    /// took it), not with the rest of the bookings log.
    pub fn version(&self, ctx: &Ctx<'_>) -> Result<u64, StoreError> {
        let store = &ctx.app.store;
        match self {
            Calendar::Bookings => store.collection_version(&ctx.tenant.id, BOOKINGS_COLLECTION),
            Calendar::ResourceBookings { resource, .. } => {
                store.resource_version(&ctx.tenant.id, resource)
            }
            Calendar::Source(s) => store.collection_version(&ctx.tenant.id, &s.id),
        }
    }

    /// Changes to its members after `since`, oldest first: a resource's are
    /// those of the bookings that take or took it, a booking that stopped
    /// taking it coming as a deletion (the one bookings log, filtered).
    pub fn changes_since(&self, ctx: &Ctx<'_>, since: u64) -> Result<Vec<Change>, StoreError> {
        let store = &ctx.app.store;
        match self {
            Calendar::Bookings => store.changes_since(&ctx.tenant.id, BOOKINGS_COLLECTION, since),
            Calendar::ResourceBookings { resource, .. } => {
                store.resource_changes_since(&ctx.tenant.id, resource, since)
            }
            Calendar::Source(s) => store.changes_since(&ctx.tenant.id, &s.id, since),
        }
    }

    /// Whether its members are bookings (`{id}.ics`).
    pub fn is_bookings(&self) -> bool {
        !matches!(self, Calendar::Source(_))
    }

    /// The resource a bookings collection is of.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Calendar::ResourceBookings { resource, .. } => Some(resource),
            _ => None,
        }
    }

    /// The years its objects may use.
    pub fn years(&self) -> Years {
        match self {
            Calendar::Bookings | Calendar::ResourceBookings { .. } => Years::BOOKINGS,
            Calendar::Source(_) => Years::ANY,
        }
    }

    pub fn writable(&self) -> bool {
        match self {
            Calendar::Bookings | Calendar::ResourceBookings { .. } => true,
            Calendar::Source(s) => !s.read_only,
        }
    }

    /// Whether a user linked to resource `linked` (None: not linked) sees
    /// it: a linked user sees their resource's bookings and calendars and
    /// the tenant-wide calendars, not the tenant-wide bookings (they hold
    /// other resources' bookings) nor other resources' collections.
    pub fn visible_to(&self, linked: Option<&str>) -> bool {
        let Some(mine) = linked else {
            return true;
        };
        match self {
            Calendar::Bookings => false,
            Calendar::ResourceBookings { resource, .. } => resource == mine,
            Calendar::Source(s) => s.resource.as_deref().is_none_or(|r| r == mine),
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
    /// A booking, in the bookings collection it was reached through.
    Booking(Calendar, Box<Booking>),
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

/// The calendar `id` of the tenant, or 404 when it does not exist or the
/// caller may not see it ([`Calendar::visible_to`]): the same answer, so
/// nothing about other resources leaks.
pub fn calendar(ctx: &Ctx<'_>, id: &str) -> Result<Calendar, DavError> {
    let cal = match paths::CalendarKind::of(id) {
        paths::CalendarKind::Bookings => Calendar::Bookings,
        paths::CalendarKind::ResourceBookings(r)
            if ctx.tenant.resources.iter().any(|x| x.id == r) =>
        {
            Calendar::of_resource(r)
        }
        // A staff calendar made with such a name before resources existed.
        _ => ctx
            .app
            .store
            .source(&ctx.tenant.id, id)?
            .map(Calendar::Source)
            .ok_or_else(DavError::not_found)?,
    };
    if !cal.visible_to(linked_resource(ctx)) {
        return Err(DavError::not_found());
    }
    Ok(cal)
}

/// The resource the calling user is linked to, if any.
pub fn linked_resource<'a>(ctx: &Ctx<'a>) -> Option<&'a str> {
    ctx.tenant.user_resource(&ctx.user.username)
}

pub fn object(ctx: &Ctx<'_>, cal: Calendar, name: &str) -> Result<Node, DavError> {
    match cal {
        Calendar::Bookings | Calendar::ResourceBookings { .. } => {
            let id = name.strip_suffix(".ics").ok_or_else(DavError::not_found)?;
            let booking = ctx
                .app
                .store
                .booking(&ctx.tenant.id, id)?
                .filter(|b| takes(&cal, b))
                .ok_or_else(DavError::not_found)?;
            Ok(Node::Booking(cal, Box::new(booking)))
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

/// Whether booking `b` is a member of bookings collection `cal`: a
/// resource's holds the bookings taking it ([`Booking::takes`], the rule the
/// conflict check, free/busy and feeds use), tenant-wide ones stored before
/// resources included.
pub fn takes(cal: &Calendar, b: &Booking) -> bool {
    cal.resource().is_none_or(|r| b.takes(r))
}

impl Node {
    pub fn href(&self, ctx: &Ctx<'_>) -> String {
        self.href_in(&ctx.tenant.id)
    }

    /// [`Node::href`] in tenant `t`.
    pub fn href_in(&self, t: &str) -> String {
        match self {
            Node::Root => paths::ROOT.to_owned(),
            Node::Principals => "/dav/principals/".to_owned(),
            Node::Principal(u) => paths::principal_href(u),
            Node::Inbox(u) => paths::inbox_href(u),
            Node::InboxItem(u, item) => paths::inbox_item_href(u, &item.name),
            Node::Home => paths::home_href(t),
            Node::Outbox => paths::calendar_href(t, OUTBOX),
            Node::Calendar(c) => paths::calendar_href(t, c.id()),
            Node::Booking(c, b) => paths::object_href(t, c.id(), &booking_resource(b)),
            Node::Object(c, o) => paths::object_href(t, c.id(), &o.id),
            Node::Member(c, m) => paths::object_href(t, c.id(), &m.name),
        }
    }

    pub fn is_collection(&self) -> bool {
        !matches!(
            self,
            Node::Booking(..) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..)
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
                let linked = linked_resource(ctx);
                let bookings = std::iter::once(Calendar::Bookings).chain(
                    ctx.tenant
                        .resources
                        .iter()
                        .map(|r| Calendar::of_resource(&r.id)),
                );
                for cal in bookings.filter(|c| c.visible_to(linked)) {
                    visit(Node::Calendar(cal))?;
                }
                visit(Node::Outbox)?;
                for s in store.sources(&ctx.tenant.id)? {
                    let cal = Calendar::Source(s);
                    if cal.visible_to(linked) {
                        visit(Node::Calendar(cal))?;
                    }
                }
                Ok(())
            }
            Node::Calendar(c @ (Calendar::Bookings | Calendar::ResourceBookings { .. })) => {
                for b in store.iter_bookings(&ctx.tenant.id) {
                    let b = b?;
                    if takes(c, &b) {
                        visit(Node::Booking(c.clone(), Box::new(b)))?;
                    }
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
        self.body_in(ctx.tenant.timezone)
    }

    /// [`Node::body`], bookings rendered in `zone` (the tenant's).
    pub fn body_in(&self, zone: chrono_tz::Tz) -> Option<String> {
        match self {
            // The client's own text while nothing changed it since; else rendered.
            Node::Booking(_, b) => Some(match (&b.calendar_text, b.calendar_text_sequence) {
                (Some(text), Some(seq)) if seq == b.sequence => text.clone(),
                _ => crate::ical::booking::render_booking(zone, b),
            }),
            Node::Object(_, o) => Some(o.ics.clone()),
            Node::Member(_, m) => m.body.clone(),
            Node::InboxItem(_, item) => Some(item.ics.clone()),
            _ => None,
        }
    }

    pub fn etag(&self, ctx: &Ctx<'_>) -> Result<Option<String>, DavError> {
        Ok(self.etag_at(self.version(ctx)?))
    }

    /// The change-log sequence of a calendar or an inbox, read from the store:
    /// their ETag, sync-token and ctag. None for other resources.
    pub fn version(&self, ctx: &Ctx<'_>) -> Result<Option<u64>, DavError> {
        let store = &ctx.app.store;
        Ok(match self {
            Node::Inbox(user) => Some(store.inbox_version(&ctx.tenant.id, user)?),
            Node::Calendar(c) => Some(c.version(ctx)?),
            _ => None,
        })
    }

    /// The ETag, a collection's from its `version` ([`Node::version`]).
    pub fn etag_at(&self, version: Option<u64>) -> Option<String> {
        match self {
            Node::Booking(_, b) => Some(b.etag.clone()),
            Node::Object(_, o) => Some(o.etag.clone()),
            Node::Member(_, m) => Some(m.etag.clone()),
            Node::InboxItem(_, item) => Some(item.etag.clone()),
            Node::Inbox(_) | Node::Calendar(_) => version.map(|v| format!("\"{v}\"")),
            _ => None,
        }
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
            Node::Booking(..) | Node::Object(..) | Node::Member(..) | Node::InboxItem(..) => names
                .extend([
                    dav("getetag"),
                    dav("getcontenttype"),
                    dav("getcontentlength"),
                    dav("getlastmodified"),
                ]),
        }
        names
    }

    /// The value of one property, or None (answered as 404 in its propstat):
    /// loaded, then rendered ([`props`]).
    pub fn prop(&self, ctx: &Ctx<'_>, name: &PropName) -> Result<Option<PropContent>, DavError> {
        let resource = Resource::load(ctx, self, &PropRequest::Prop(vec![name.clone()]))?;
        Ok(props::render(&Env::of(ctx), &resource, name))
    }
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
