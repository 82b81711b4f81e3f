//! CalDAV server (RFC 4791 on WebDAV RFC 4918, sync RFC 6578).
//!
//! - [`xml`]: the pure XML layer: request parsing and multistatus writing.
//! - [`paths`]: the URL layout.
//! - [`request`]: the typed request (DAV headers parsed once, the body read once)
//!   every handler takes.
//! - [`node`]: the resources; [`props`]: their properties, rendered (pure)
//!   from what was loaded for them.
//! - [`scheduling`]: what implicit scheduling (RFC 6638, decided and delivered
//!   by [`crate::scheduling`]) needs from DAV; `inbox`: the REPORTs of the
//!   scheduling inboxes.
//! - [`validate`]: what a calendar object must be before it is stored (RFC 4791 §4.1).
//! - this module: authentication and the HTTP methods; the methods that write
//!   hold the tenant's write permit ([`crate::tenants`]) while they run.
//!
//! Calendars are the tenant's bookings (each booking one object) and its sources
//! (staff calendars made with MKCALENDAR; imported calendars, read-only). Objects
//! written here go through [`crate::calendars`] and [`crate::bookings`], so the
//! booking engine and free/busy see them at once.

mod bookings;
mod error;
mod inbox;
/// The pure protocol layer (crate `calgate-dav-proto`).
pub use calgate_dav_proto::{paths, request, xml};
pub mod listing;
pub mod node;
mod outbox;
pub mod plans;
pub mod props;
mod report;
mod scheduling;
mod stream;
pub mod validate;

use std::sync::Arc;

use crate::http::RequestBody;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use request::{BodyError, DavHeaders, DavRequest, Depth, EtagMatch};

use crate::app::{App, UserPrincipal};
use crate::calendars::CalendarError;
use crate::config::Scheduling;
use crate::http::{Body, empty, full};
use crate::model::{BOOKINGS_SOURCE, Source};
use crate::store::{InboxDelete, Outgoing, Precondition};
pub use error::{Condition, DavError};
use node::{Calendar, Ctx, Node};
use paths::DavPath;
use xml::{
    NS_APPLE_ICAL, NS_CALDAV, NS_DAV, PropContent, PropName, PropPatchOp, PropRequest, PropValue,
};

/// What OPTIONS advertises: WebDAV class 1 and 3, CalDAV, extended MKCOL.
pub const DAV_CLASSES: &str = "1, 3, calendar-access, extended-mkcol";
/// [`DAV_CLASSES`] for users of tenants the server schedules for (RFC 6638).
pub const DAV_CLASSES_SCHEDULING: &str =
    "1, 3, calendar-access, extended-mkcol, calendar-auto-schedule";
pub const ALLOW: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCALENDAR, MKCOL, REPORT";
const REALM: &str = "Basic realm=\"calgate\", charset=\"UTF-8\"";

/// `OPTIONS` anywhere: what this server speaks (no authentication needed, so
/// clients probing before logging in learn that CalDAV is here). Callers who
/// send their credentials also learn whether the server schedules for their
/// tenant (`calendar-auto-schedule`): clients then send no invitations themselves.
pub async fn options(app: &App, headers: &HeaderMap) -> Response<Body> {
    let schedules = headers.contains_key(header::AUTHORIZATION)
        && match authenticate(app, headers).await {
            Ok(user) => app
                .tenant(&user.tenant)
                .is_some_and(|t| t.scheduling == Scheduling::Server),
            Err(_) => false,
        };
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(
        "dav",
        HeaderValue::from_static(if schedules {
            DAV_CLASSES_SCHEDULING
        } else {
            DAV_CLASSES
        }),
    );
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// `/.well-known/caldav` (RFC 6764): to the DAV root.
pub fn well_known() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(paths::ROOT));
    resp
}

/// Serves a request for `/dav/...` (`segments` after `dav`), or the server root
/// when a client probes `/` with PROPFIND.
pub async fn serve(app: &Arc<App>, req: Request<RequestBody>, segments: &[&str]) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    if parts.method == Method::OPTIONS {
        return options(app, &parts.headers).await;
    }
    let user = match authenticate(app, &parts.headers).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let Some(tenant) = app.tenants.live(&user.tenant) else {
        return DavError::not_found().into_response();
    };
    let ctx = Ctx {
        app,
        user: &user,
        tenant: &tenant,
    };
    if let Some(dots) = paths::dot_segment(segments) {
        return DavError::new(
            StatusCode::BAD_REQUEST,
            format!("\"{dots}\" is not allowed as a path segment: name the resource itself"),
        )
        .into_response();
    }
    let Some(path) = DavPath::parse(segments) else {
        return DavError::not_found().into_response();
    };
    // Before any method reads a body or a name: another tenant's paths are 404.
    if let Err(e) = node::own_tenant(&ctx, &path) {
        return e.into_response();
    }
    let req = read_request(app, &parts, incoming, &path).await;
    // A write holds the tenant's permit from its body to its answer: a tenant
    // deleted meanwhile is not written to (404), and its deletion waits for
    // the writes under way.
    let writes = matches!(
        req.method.as_str(),
        "PUT" | "DELETE" | "PROPPATCH" | "MKCALENDAR" | "MKCOL"
    );
    let _writing = if writes {
        match tenant.write().await {
            Ok(permit) => Some(permit),
            Err(e) => return DavError::from(e).into_response(),
        }
    } else {
        None
    };
    let result = match req.method.as_str() {
        "PROPFIND" => propfind(&ctx, &path, &req).await,
        "PROPPATCH" => proppatch(&ctx, &path, &req).await,
        "GET" | "HEAD" => get(&ctx, &path, req.method == Method::HEAD).await,
        "PUT" => put(&ctx, &path, &req).await,
        "POST" if matches!(path, DavPath::Outbox(_)) => match node::resolve(&ctx, &path) {
            Ok(_) => match body(&req, BodyKind::Request) {
                Ok(bytes) => outbox::post(&ctx, bytes),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        "DELETE" => delete(&ctx, &path, &req.headers).await,
        "MKCALENDAR" | "MKCOL" => mkcalendar(&ctx, &path, &req).await,
        "REPORT" => match body(&req, BodyKind::Request) {
            Ok(bytes) => match xml::parse_report(bytes) {
                Ok(request) => match &path {
                    DavPath::Inbox(user) => inbox::report(&ctx, user, request),
                    _ => report::report(&ctx, &path, request).await,
                },
                Err(e) => Err(bad_xml(e)),
            },
            Err(e) => Err(e),
        },
        other => Err(DavError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{other} is not supported; use one of {ALLOW}"),
        )),
    };
    result.unwrap_or_else(DavError::into_response)
}

/// The typed request: the DAV headers parsed and the body read, once, for the
/// methods that have one. A body that could not be read is answered only by
/// the handler that uses it, after its own checks, as when each read its own.
async fn read_request(
    app: &App,
    parts: &http::request::Parts,
    incoming: RequestBody,
    path: &DavPath,
) -> DavRequest {
    let reads_body = match parts.method.as_str() {
        "PROPFIND" | "PROPPATCH" | "PUT" | "MKCALENDAR" | "MKCOL" | "REPORT" => true,
        "POST" => matches!(path, DavPath::Outbox(_)),
        _ => false,
    };
    let limit = app.config.max_body_bytes;
    let body = if reads_body {
        crate::http::read_body(incoming, &parts.headers, limit)
            .await
            .map_err(|p| match p.status() {
                StatusCode::PAYLOAD_TOO_LARGE => BodyError::TooLarge { limit },
                _ => BodyError::Unreadable,
            })
    } else {
        Ok(bytes::Bytes::new())
    };
    DavRequest::new(parts, body)
}

/// Basic authentication against the tenants' CalDAV users.
async fn authenticate(app: &App, headers: &HeaderMap) -> Result<UserPrincipal, DavError> {
    let challenge = |message: &str| {
        DavError::new(StatusCode::UNAUTHORIZED, message)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM))
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| challenge("log in with your CalDAV user name and password"))?;
    let credentials = http_auth_basic::Credentials::from_header(value.to_owned())
        .map_err(|_| challenge("only Basic authentication is supported"))?;
    app.users
        .verify(Some(&credentials.user_id), &credentials.password)
        .await
        .ok_or_else(|| challenge("wrong user name or password"))
}

/// The Depth of a PROPFIND: 0 or 1.
fn depth(headers: &DavHeaders) -> Result<u8, DavError> {
    match headers.depth()? {
        // RFC 4918 reads a missing Depth as infinity; clients that omit it mean 0.
        None | Some(Depth::Zero) => Ok(0),
        Some(Depth::One) => Ok(1),
        Some(Depth::Infinity) => Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::PropfindFiniteDepth,
            "Depth: infinity is not supported; use Depth: 0 or 1",
        )),
    }
}

/// What a request body is, which decides the answer when it is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// A calendar object resource (PUT): 403 `CALDAV:max-resource-size`, the
    /// precondition of RFC 4791 §5.3.2.1, tied to the calendar's property.
    Resource,
    /// An XML request (PROPFIND, REPORT, PROPPATCH, MKCALENDAR, POST): 413.
    Request,
}

/// The request's body, or the answer to a body that could not be read.
fn body(req: &DavRequest, kind: BodyKind) -> Result<&bytes::Bytes, DavError> {
    req.body().map_err(|e| match (e, kind) {
        (BodyError::TooLarge { limit }, BodyKind::Resource) => DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::MaxResourceSize,
            format!("calendar objects are limited to {limit} bytes"),
        ),
        (BodyError::TooLarge { .. }, BodyKind::Request) => {
            DavError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        (BodyError::Unreadable, _) => DavError::new(StatusCode::BAD_REQUEST, e.to_string()),
    })
}

fn bad_xml(e: xml::XmlError) -> DavError {
    DavError::new(StatusCode::BAD_REQUEST, format!("malformed XML: {e}"))
}

fn multistatus(text: String) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = StatusCode::MULTI_STATUS;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    resp
}

async fn propfind(
    ctx: &Ctx<'_>,
    path: &DavPath,
    req: &DavRequest,
) -> Result<Response<Body>, DavError> {
    let depth = depth(&req.headers)?;
    let request = xml::parse_propfind(body(req, BodyKind::Request)?).map_err(bad_xml)?;
    let node = node::resolve(ctx, path)?;
    if depth == 1
        && let Node::Calendar(cal) = &node
    {
        // A calendar may hold thousands of members: stream them, from its listing
        // unless what is asked comes from their bodies (Schedule-Tags).
        let cal = cal.clone();
        let from_bodies = scheduling::asks_schedule_tag(ctx, &request);
        return stream::multistatus(ctx, move |ctx, sink| {
            sink.write(&xml::Response::Props(propstats(ctx, &node, &request)?))?;
            if from_bodies {
                node.for_each_child(ctx, &mut |member| {
                    Ok(sink.write(&xml::Response::Props(propstats(ctx, &member, &request)?))?)
                })?;
                return Ok(None);
            }
            let listing = ctx.app.dav_listings.current(ctx, &cal)?;
            let template = listing::Template::new(
                &cal,
                |member| propstats(ctx, member, &request),
                |response| sink.render(response),
            )?;
            sink.write_bytes(listing.render(&template))?;
            Ok(None)
        })
        .await;
    }
    let mut nodes = vec![node];
    if depth == 1 && nodes[0].is_collection() {
        let children = nodes[0].children(ctx)?;
        nodes.extend(children);
    }
    let mut writer = xml::MultistatusWriter::new();
    let mut out = writer.begin();
    for n in &nodes {
        let response = propstats(ctx, n, &request)?;
        writer.write_response(&mut out, &xml::Response::Props(response));
    }
    out.push_str(&writer.end(None));
    Ok(multistatus(out))
}

/// One resource's propstats for a PROPFIND: what they need loaded, then rendered.
fn propstats(
    ctx: &Ctx<'_>,
    node: &Node,
    request: &PropRequest,
) -> Result<xml::PropstatResponse, DavError> {
    let resource = props::Resource::load(ctx, node, request)?;
    Ok(props::propstats(&props::Env::of(ctx), &resource, request))
}

async fn get(ctx: &Ctx<'_>, path: &DavPath, head: bool) -> Result<Response<Body>, DavError> {
    let node = node::resolve(ctx, path)?;
    if let Node::Calendar(cal) = &node {
        return whole_calendar(ctx, cal, head).await;
    }
    let Some(text) = node.body(ctx) else {
        let mut resp = Response::new(full(
            "This is a CalDAV collection; use a calendar client.\n",
        ));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(resp);
    };
    let len = text.len();
    let schedule_tag = match node {
        Node::Booking(..) | Node::Object(..) => scheduling::schedule_tag_header(ctx, &text),
        _ => None,
    };
    let mut resp = Response::new(if head { empty() } else { full(text) });
    let h = resp.headers_mut();
    if let Some(tag) = schedule_tag {
        h.insert(scheduling::SCHEDULE_TAG, tag);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(etag) = node.etag(ctx)?
        && let Ok(v) = HeaderValue::from_str(&etag)
    {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

/// GET of a calendar collection: all its objects as one VCALENDAR (what
/// subscribing to, or downloading, the collection's URL expects), streamed.
async fn whole_calendar(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    head: bool,
) -> Result<Response<Body>, DavError> {
    let etag = Node::Calendar(cal.clone()).etag(ctx)?;
    let mut resp = if head {
        let mut resp = Response::new(empty());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/calendar; charset=utf-8"),
        );
        resp
    } else {
        let name = match &node::Node::Calendar(cal.clone())
            .prop(ctx, &xml::PropName::dav("displayname"))?
        {
            Some(xml::PropContent::Text(name)) => name.clone(),
            _ => cal.id().to_owned(),
        };
        let mut begin = crate::ical::ContentWriter::with_capacity(256);
        begin.begin("VCALENDAR");
        begin.raw("VERSION", &[], "2.0");
        begin.text("PRODID", &[], crate::ical::booking::PRODID);
        begin.text("X-WR-CALNAME", &[], &name);
        let collection = Node::Calendar(cal.clone());
        stream::calendar(ctx, begin.finish(), move |ctx, sink| {
            let mut zones = std::collections::HashSet::new();
            collection.for_each_child(ctx, &mut |member| {
                if let Some(text) = member.body(ctx) {
                    sink.write_with(|out| {
                        crate::ical::merge::append_components(&text, out, &mut zones)
                    })?;
                }
                Ok(())
            })
        })
        .await?
    };
    if let Some(etag) = etag
        && let Ok(v) = HeaderValue::from_str(&etag)
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn put(ctx: &Ctx<'_>, path: &DavPath, req: &DavRequest) -> Result<Response<Body>, DavError> {
    // The tenant in the path is the caller's: `serve` answered 404 otherwise.
    let DavPath::Object(_, cal_id, name) = path else {
        if matches!(path, DavPath::Inbox(_) | DavPath::InboxItem(..)) {
            return Err(DavError::forbidden(
                "only the server writes to a scheduling inbox: invite people by saving the meeting in a calendar",
            ));
        }
        return Err(DavError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT creates calendar objects inside a calendar",
        ));
    };
    node::valid_resource_name(name)?;
    let cal = node::calendar(ctx, cal_id).map_err(|_| {
        DavError::new(
            StatusCode::CONFLICT,
            format!("calendar \"{cal_id}\" does not exist"),
        )
    })?;
    if let Calendar::Source(s) = &cal
        && s.read_only
    {
        return Err(DavError::forbidden(format!(
            "calendar \"{}\" is imported and read-only",
            s.id
        )));
    }
    let content_type = req.headers.content_type().unwrap_or("text/calendar");
    if !content_type.starts_with("text/calendar") {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedCalendarData,
            format!("calendar objects are text/calendar, not {content_type}"),
        ));
    }
    // If-None-Match other than `*`, and a malformed one, say nothing to a PUT.
    let precondition = if req.headers.if_none_match() == Ok(Some(&EtagMatch::Any)) {
        Precondition::MustNotExist
    } else {
        match req.headers.if_match()? {
            Some(EtagMatch::Any) => Precondition::MustExist,
            Some(EtagMatch::Tag(etag)) => Precondition::EtagIs(etag.clone()),
            None => Precondition::None,
        }
    };
    let bytes = body(req, BodyKind::Resource)?;
    let text = std::str::from_utf8(bytes).map_err(|_| {
        DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidCalendarData,
            "calendar data must be UTF-8",
        )
    })?;
    // Parsing is CPU work a hostile object can make long: on the blocking pool,
    // as the expansion that follows, never on the workers other tenants share.
    let (owned, zone, years) = (text.to_owned(), ctx.tenant.timezone, cal.years());
    tokio::task::spawn_blocking(move || validate::object(&owned, zone, years))
        .await
        .map_err(DavError::internal)??;
    let schedule_tag = if crate::scheduling::enabled(ctx.tenant) {
        req.headers.if_schedule_tag_match()?
    } else {
        None
    };
    // A scheduling plan rests on what is stored: another write first, plan again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = if crate::scheduling::enabled(ctx.tenant) {
            scheduling::current(ctx, &cal, name)?
        } else {
            None
        };
        let plan = crate::scheduling::plan_put(
            &scheduling::scope(ctx),
            current.as_ref(),
            text,
            schedule_tag,
            &precondition,
        )?;
        let outgoing = plan.outgoing.as_ref();
        match store_object(ctx, &cal, name, &plan.text, &plan.precondition, outgoing).await {
            Err(e) if scheduling::plan_again(plan.replan, &e, attempts) => {}
            Err(e) => return Err(e),
            Ok(mut resp) => {
                scheduling::deliver(ctx, outgoing).await?;
                scheduling::finish_put(ctx, &mut resp, text, &plan.text);
                return Ok(resp);
            }
        }
    }
}

/// Writes a calendar object (a booking in the bookings calendar), with the
/// scheduling messages it sends: 201 or 204, with its ETag.
async fn store_object(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    name: &str,
    text: &str,
    precondition: &Precondition,
    outgoing: Option<&Outgoing>,
) -> Result<Response<Body>, DavError> {
    let source = match cal {
        Calendar::Bookings | Calendar::ResourceBookings { .. } => {
            return bookings::put(ctx, cal.resource(), name, text, precondition, outgoing).await;
        }
        Calendar::Source(s) => s,
    };
    let existed = ctx
        .app
        .store
        .object_text(&ctx.tenant.id, &source.id, name)?
        .is_some();
    let object = ctx
        .app
        .calendars
        .put_object_sending(ctx.tenant, &source.id, name, text, precondition, outgoing)
        .await
        .map_err(|e| calendar_error(ctx, &source.id, e))?;
    let mut resp = Response::new(empty());
    *resp.status_mut() = if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    };
    if let Ok(v) = HeaderValue::from_str(&object.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

fn calendar_error(ctx: &Ctx<'_>, source: &str, e: CalendarError) -> DavError {
    match e {
        CalendarError::Invalid(msg) => {
            DavError::condition(StatusCode::FORBIDDEN, Condition::ValidCalendarData, msg)
        }
        e @ CalendarError::UnsupportedComponent { .. } => DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedCalendarComponent,
            e.to_string(),
        ),
        CalendarError::PreconditionFailed { .. } => DavError::etag_mismatch(),
        CalendarError::UidConflict(owner) => DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::NoUidConflict,
            "another object in this calendar has the same UID",
        )
        .with_inner(format!(
            "<d:href>{}</d:href>",
            xml::escape_text(&paths::object_href(&ctx.tenant.id, source, &owner))
        )),
        CalendarError::UnknownSource(s) => DavError::new(
            StatusCode::CONFLICT,
            format!("calendar \"{s}\" does not exist"),
        ),
        CalendarError::OverBudget(over) => DavError::condition(
            StatusCode::FORBIDDEN,
            // RFC 4791 §5.2.8 names the limit on instances; the other limits
            // (RRULE lines, dates, components) make the object unacceptable here.
            if over.is_instances() {
                Condition::MaxInstances
            } else {
                Condition::ValidCalendarObjectResource
            },
            over.to_string(),
        ),
        e @ CalendarError::Expansion(_) => DavError::internal(e),
        CalendarError::Store(e) => DavError::internal(e),
    }
}

async fn delete(
    ctx: &Ctx<'_>,
    path: &DavPath,
    headers: &DavHeaders,
) -> Result<Response<Body>, DavError> {
    let expected = headers.if_match_tag()?.map(str::to_owned);
    let node = node::resolve(ctx, path)?;
    let app = ctx.app;
    match node {
        Node::Booking(cal, b) => {
            if cal.resource().is_some() && b.resources.is_empty() {
                return Err(DavError::forbidden(bookings::tenant_wide(&b.id)));
            }
            delete_object(ctx, &cal, &b.id, headers, expected).await?;
        }
        Node::Object(cal @ Calendar::Source(_), o) => {
            delete_object(ctx, &cal, &o.id, headers, expected).await?;
        }
        Node::InboxItem(user, item) => {
            match app
                .store
                .delete_inbox_item(&ctx.tenant.id, &user, &item.name, expected.as_deref())
                .await?
            {
                InboxDelete::Deleted => {}
                InboxDelete::NotFound => return Err(DavError::not_found()),
                InboxDelete::PreconditionFailed(_) => return Err(DavError::etag_mismatch()),
            }
        }
        Node::Calendar(Calendar::Source(source)) => {
            // Each meeting in it is cancelled, as deleting it alone would.
            let meetings =
                crate::scheduling::meetings(&scheduling::scope(ctx), &app.store, &source)?;
            let cal = Calendar::Source(source);
            for id in meetings {
                delete_object(ctx, &cal, &id, &DavHeaders::default(), None).await?;
            }
            let id = cal.id();
            app.calendars
                .delete_source(ctx.tenant, id)
                .await
                .map_err(|e| calendar_error(ctx, id, e))?;
        }
        Node::Calendar(Calendar::Bookings | Calendar::ResourceBookings { .. }) => {
            return Err(node::read_only(
                "a bookings calendar (it cannot be deleted)",
            ));
        }
        _ => return Err(node::read_only("this resource")),
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// Deletes an object (`id`: a booking id, or the object's resource name),
/// cancelling the meeting for its attendees when it is one.
async fn delete_object(
    ctx: &Ctx<'_>,
    cal: &Calendar,
    id: &str,
    headers: &DavHeaders,
    expected: Option<String>,
) -> Result<(), DavError> {
    if let Calendar::Source(s) = cal
        && s.read_only
    {
        return Err(DavError::forbidden(format!(
            "calendar \"{}\" is imported and read-only",
            s.id
        )));
    }
    let schedule_tag = if crate::scheduling::enabled(ctx.tenant) {
        headers.if_schedule_tag_match()?
    } else {
        None
    };
    let app = ctx.app;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = if crate::scheduling::enabled(ctx.tenant) {
            scheduling::current(ctx, cal, id)?
        } else {
            None
        };
        let plan = crate::scheduling::plan_delete(
            &scheduling::scope(ctx),
            current.as_ref(),
            schedule_tag,
            expected.as_deref(),
        )?;
        let etag = plan.etag.as_deref();
        let outgoing = plan.outgoing.as_ref();
        let deleted = match cal {
            Calendar::Bookings | Calendar::ResourceBookings { .. } => app
                .bookings
                .delete_sending(ctx.tenant, id, etag, outgoing)
                .await
                .map_err(|e| bookings::booking_error(ctx, e)),
            Calendar::Source(s) => app
                .calendars
                .delete_object(ctx.tenant, &s.id, id, etag, outgoing)
                .await
                .map_err(|e| calendar_error(ctx, &s.id, e)),
        };
        match deleted {
            Err(e) if scheduling::plan_again(plan.replan, &e, attempts) => {}
            Err(e) => return Err(e),
            Ok(()) => return scheduling::deliver(ctx, outgoing).await,
        }
    }
}

/// MKCALENDAR (RFC 4791 §5.3.1) and extended MKCOL (RFC 5689): a staff calendar.
async fn mkcalendar(
    ctx: &Ctx<'_>,
    path: &DavPath,
    req: &DavRequest,
) -> Result<Response<Body>, DavError> {
    let DavPath::Calendar(_, id) = path else {
        return Err(DavError::forbidden(
            "calendars are created in the calendar home: /dav/calendars/{tenant}/{name}/",
        ));
    };
    let is_mkcol = req.method.as_str() == "MKCOL";
    let bytes = body(req, BodyKind::Request)?;
    let request = if is_mkcol {
        xml::parse_mkcol(bytes)
    } else {
        xml::parse_mkcalendar(bytes)
    }
    .map_err(bad_xml)?;
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+~=".contains(&b))
        && id != BOOKINGS_SOURCE
        && id != paths::OUTBOX;
    // Taken whether or not the caller sees it (another resource's calendar is
    // 404 to a linked user, but must not be overwritten); `bookings.*` names
    // are the resources' bookings collections.
    let taken = ctx.app.store.source(&ctx.tenant.id, id)?.is_some()
        || !matches!(paths::CalendarKind::of(id), paths::CalendarKind::Source(_));
    if taken || id == paths::OUTBOX {
        return Err(DavError::condition(
            StatusCode::METHOD_NOT_ALLOWED,
            Condition::ResourceMustBeNull,
            format!("\"{id}\" already exists"),
        ));
    }
    if !valid_id {
        return Err(DavError::forbidden(format!(
            "\"{id}\" is not a usable calendar name: use 1-64 of A-Z a-z 0-9 - _ . @ + ~ =, not starting with \".\""
        )));
    }
    let mut source = Source::new(id, id);
    // A linked user's own calendars are their resource's: they block only it.
    source.resource = node::linked_resource(ctx).map(str::to_owned);
    let mut saw_calendar_type = !is_mkcol;
    for (name, value) in &request.set {
        if name.is(NS_DAV, "resourcetype") {
            saw_calendar_type = value
                .children
                .iter()
                .any(|c| c.name.is(NS_CALDAV, "calendar"));
            continue;
        }
        if name.is(NS_CALDAV, "supported-calendar-component-set") {
            let mut components = Vec::new();
            for c in &value.children {
                let Some(comp) = c.attrs.iter().find(|a| a.name.name == "name") else {
                    continue;
                };
                let comp = comp.value.to_ascii_uppercase();
                if !crate::model::CALENDAR_COMPONENTS.contains(&comp.as_str()) {
                    return Err(DavError::condition(
                        StatusCode::FORBIDDEN,
                        Condition::SupportedCalendarComponent,
                        format!("calendars hold VEVENT, VTODO or VJOURNAL, not {comp}"),
                    ));
                }
                components.push(comp);
            }
            source.components = components;
            continue;
        }
        apply_prop(&mut source, name, Some(value)).map_err(|e| match e {
            PropError::NotWritable(_) => DavError::forbidden(e.to_string()),
            _ => DavError::new(StatusCode::FORBIDDEN, e.to_string()),
        })?;
    }
    if !saw_calendar_type {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidResourcetype,
            "only calendar collections can be created here",
        ));
    }
    ctx.app
        .calendars
        .put_source(ctx.tenant, &source)
        .map_err(DavError::internal)?;
    // Acknowledged means durable.
    ctx.app.store.flush().await?;
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

/// Longest values of the calendar properties clients write, in bytes: a name
/// fits in a list, a description in a dialog; a colour is `#RRGGBBAA`.
const MAX_DISPLAYNAME: usize = 1024;
const MAX_DESCRIPTION: usize = 16 * 1024;
const MAX_COLOR: usize = 32;

/// Why a calendar property was not set.
#[derive(Debug, thiserror::Error)]
enum PropError {
    #[error("{0} cannot be set here")]
    NotWritable(PropName),
    #[error("{name} is {len} bytes long; at most {max} are kept: shorten it")]
    TooLong {
        name: PropName,
        len: usize,
        max: usize,
    },
    #[error("calendar-order \"{0}\" is not a whole number from 0 to 4294967295")]
    BadOrder(String),
}

impl PropError {
    /// The propstat status RFC 4918 §9.2.1 gives each case.
    fn status(&self) -> xml::Status {
        match self {
            PropError::NotWritable(_) => xml::Status::FORBIDDEN,
            PropError::TooLong { .. } => xml::Status::INSUFFICIENT_STORAGE,
            PropError::BadOrder(_) => xml::Status::CONFLICT,
        }
    }
}

/// Sets (or, with None, removes) one writable calendar property on a source.
fn apply_prop(
    source: &mut Source,
    name: &PropName,
    value: Option<&PropValue>,
) -> Result<(), PropError> {
    let text = value
        .map(|v| v.text.trim().to_owned())
        .filter(|t| !t.is_empty());
    let capped = |max: usize| match &text {
        Some(t) if t.len() > max => Err(PropError::TooLong {
            name: name.clone(),
            len: t.len(),
            max,
        }),
        _ => Ok(text.clone()),
    };
    if name.is(NS_DAV, "displayname") {
        source.name = capped(MAX_DISPLAYNAME)?.unwrap_or_else(|| source.id.clone());
    } else if name.is(NS_CALDAV, "calendar-description") {
        source.description = capped(MAX_DESCRIPTION)?;
    } else if name.is(NS_APPLE_ICAL, "calendar-color") {
        source.color = capped(MAX_COLOR)?;
    } else if name.is(NS_APPLE_ICAL, "calendar-order") {
        source.order = match text {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| PropError::BadOrder(t))?),
        };
    } else if name.is(NS_CALDAV, "schedule-calendar-transp") {
        source.transparent = value.is_some_and(|v| {
            v.children
                .iter()
                .any(|c| c.name.is(NS_CALDAV, "transparent"))
        });
    } else if name.is(NS_CALDAV, "calendar-timezone") {
        // Accepted: objects carry their own zones; the tenant's zone stays the default.
    } else {
        return Err(PropError::NotWritable(name.clone()));
    }
    Ok(())
}

/// PROPPATCH (RFC 4918 §9.2): all or nothing; protected and unknown properties
/// (403), values that are too long (507) or malformed (409) make the whole
/// request fail, each with a description, and the rest 424.
async fn proppatch(
    ctx: &Ctx<'_>,
    path: &DavPath,
    req: &DavRequest,
) -> Result<Response<Body>, DavError> {
    let request = xml::parse_proppatch(body(req, BodyKind::Request)?).map_err(bad_xml)?;
    let node = node::resolve(ctx, path)?;
    let href = node.href(ctx);
    let mut response = xml::PropstatResponse::new(href);
    let Node::Calendar(Calendar::Source(mut source)) = node else {
        for op in &request.ops {
            let name = match op {
                PropPatchOp::Set(n, _) | PropPatchOp::Remove(n) => n.clone(),
            };
            response.add(xml::Status::FORBIDDEN, name, PropContent::Empty);
        }
        return Ok(multistatus(xml::multistatus(
            &[xml::Response::Props(response)],
            None,
        )));
    };
    let was_transparent = source.transparent;
    let mut failed = Vec::new();
    let mut applied = Vec::new();
    for op in &request.ops {
        let (name, value) = match op {
            PropPatchOp::Set(n, v) => (n, Some(v)),
            PropPatchOp::Remove(n) => (n, None),
        };
        match apply_prop(&mut source, name, value) {
            Ok(()) => applied.push(name.clone()),
            Err(e) => failed.push((name.clone(), e)),
        }
    }
    if failed.is_empty() {
        ctx.app
            .calendars
            .put_source(ctx.tenant, &source)
            .map_err(DavError::internal)?;
        ctx.app.store.flush().await?;
        if source.transparent != was_transparent {
            // Its events now block (or stop blocking) time.
            ctx.app
                .calendars
                .rebuild(ctx.tenant, false, false)
                .await
                .map_err(DavError::internal)?;
        }
        for name in applied {
            response.ok(name, PropContent::Empty);
        }
    } else {
        for (name, e) in failed {
            response.add_described(e.status(), name, PropContent::Empty, Some(e.to_string()));
        }
        for name in applied {
            response.add(xml::Status::FAILED_DEPENDENCY, name, PropContent::Empty);
        }
    }
    Ok(multistatus(xml::multistatus(
        &[xml::Response::Props(response)],
        None,
    )))
}
