//! The DAV side of implicit scheduling (RFC 6638), for tenants with
//! `scheduling = "server"`: what [`crate::scheduling`] (which decides who is
//! told what, and delivers it) needs from the protocol.
//!
//! - [`current`]: the stored object a write or deletion is planned against, as
//!   clients read it;
//! - [`resolve`]: the tenant's user a calendar user address names, principal
//!   URLs included;
//! - the `Schedule-Tag` response header, and the answers to failed plans.

use http::{HeaderValue, Response, StatusCode, header};

use super::error::DavError;
use super::node::{self, Calendar, Ctx};
use super::paths;
use crate::config::{TenantConfig, UserConfig};
use crate::http::Body;
use crate::ical::itip;
use crate::scheduling::{Current, SchedulingError, Scope};
use crate::store::Outgoing;

/// The response header carrying a Schedule-Tag (RFC 6638 §8.2).
pub const SCHEDULE_TAG: &str = "schedule-tag";

/// Whether a request names `CALDAV:schedule-tag` where it can have a value:
/// collection listings hold no bodies, so such requests read every object.
pub fn asks_schedule_tag(ctx: &Ctx<'_>, props: &super::xml::PropRequest) -> bool {
    crate::scheduling::enabled(ctx.tenant)
        && matches!(props, super::xml::PropRequest::Prop(names)
            if names.iter().any(|n| n.is(super::xml::NS_CALDAV, "schedule-tag")))
}

/// The tenant's user a calendar user address names: by e-mail, by the
/// gateway's address, or by principal URL.
pub fn resolve<'t>(tenant: &'t TenantConfig, address: &str) -> Option<&'t UserConfig> {
    if let Some(segments) = paths::href_segments(address)
        && let ["principals", user, ..] =
            segments.iter().map(String::as_str).collect::<Vec<_>>()[..]
    {
        return tenant.users.iter().find(|u| u.username == user);
    }
    tenant.users.iter().find(|u| {
        node::calendar_user_addresses(u, &tenant.id)
            .iter()
            .any(|a| itip::same_address(a, address))
    })
}

/// Whom a write by the caller is planned for.
pub fn scope<'a>(ctx: &Ctx<'a>) -> Scope<'a> {
    Scope {
        tenant: ctx.tenant,
        caller: &ctx.user.username,
        resolve,
    }
}

/// The object at `name` in `cal` as clients read it, if any.
pub fn current(ctx: &Ctx<'_>, cal: &Calendar, name: &str) -> Result<Option<Current>, DavError> {
    let store = &ctx.app.store;
    Ok(match cal {
        Calendar::Bookings | Calendar::ResourceBookings { .. } => {
            let id = name.strip_suffix(".ics").unwrap_or(name);
            store.booking(&ctx.tenant.id, id)?.map(|b| {
                let etag = b.etag.clone();
                let text = node::Node::Booking(cal.clone(), Box::new(b))
                    .body(ctx)
                    .unwrap_or_default();
                Current { etag, text }
            })
        }
        Calendar::Source(s) => store
            .object_text(&ctx.tenant.id, &s.id, name)?
            .map(|o| Current {
                etag: o.etag,
                text: o.ics,
            }),
    })
}

/// Whether a write that failed with `e` is planned again
/// ([`crate::scheduling::plan_again`]): a 412 may be the plan's own precondition.
pub fn plan_again(replan: bool, e: &DavError, attempts: u32) -> bool {
    let failed_precondition = e.status() == StatusCode::PRECONDITION_FAILED;
    crate::scheduling::plan_again(replan, failed_precondition, attempts)
}

/// Delivers what a write stored in the outbox ([`crate::scheduling::deliver`]).
pub async fn deliver(ctx: &Ctx<'_>, outgoing: Option<&Outgoing>) -> Result<(), DavError> {
    Ok(crate::scheduling::deliver(&ctx.app.store, &ctx.tenant.id, outgoing).await?)
}

/// A failed plan: 412 for a precondition, 500 (logged) for the store.
impl From<SchedulingError> for DavError {
    fn from(e: SchedulingError) -> Self {
        match e {
            SchedulingError::EtagMismatch => DavError::etag_mismatch(),
            SchedulingError::ScheduleTagMismatch => {
                DavError::new(StatusCode::PRECONDITION_FAILED, e.to_string())
            }
            SchedulingError::Store(e) | SchedulingError::Deliver(e) => DavError::internal(e),
        }
    }
}

/// The headers of a successful PUT: no ETag when what is stored is not what
/// the client sent (RFC 4791 §5.3.4), so it fetches the object again; the
/// Schedule-Tag of a scheduling object (RFC 6638 §3.2.10).
pub fn finish_put(ctx: &Ctx<'_>, resp: &mut Response<Body>, sent: &str, stored: &str) {
    if sent != stored {
        resp.headers_mut().remove(header::ETAG);
    }
    if let Some(tag) = schedule_tag_header(ctx, stored) {
        resp.headers_mut().insert(SCHEDULE_TAG, tag);
    }
}

/// The `Schedule-Tag` header value for an object, when it is a scheduling object.
pub fn schedule_tag_header(ctx: &Ctx<'_>, text: &str) -> Option<HeaderValue> {
    crate::scheduling::schedule_tag(ctx.tenant, text)
        .and_then(|tag| HeaderValue::from_str(&tag).ok())
}
