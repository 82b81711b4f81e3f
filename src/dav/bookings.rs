//! Bookings written by CalDAV clients: a VEVENT PUT into the bookings calendar is a
//! booking the engine checks (conflicts, validation) like one from the API.
//!
//! The client's text is kept and served back unchanged (alarms, X- properties,
//! attendees) until the booking changes elsewhere; then the booking is rendered.

use http::{HeaderValue, Response, StatusCode, header};

use super::error::{Condition, DavError};
use super::node::Ctx;
use super::paths;
use super::xml::escape_text;
use crate::bookings::{BookingError, ConflictPolicy, UpdateMode, listed_conflicts};
use crate::http::{Body, empty};
use crate::model::BOOKINGS_SOURCE;
use crate::store::{Outgoing, Precondition};

/// Booking ids that a resource name may give (they are store keys and URL segments).
fn id_of(name: &str) -> Result<&str, DavError> {
    let id = name.strip_suffix(".ics").unwrap_or(name);
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(DavError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "\"{name}\" is not a usable booking resource name: use letters, digits, - _ . @ and .ics"
            ),
        ))
    }
}

fn invalid_object(message: impl Into<String>) -> DavError {
    DavError::condition(
        StatusCode::FORBIDDEN,
        Condition::ValidCalendarObjectResource,
        message,
    )
}

/// PUT of `/dav/calendars/{tenant}/bookings/{name}`, or of
/// `…/bookings.{resource}/{name}` (`resource`: the booking takes it).
pub async fn put(
    ctx: &Ctx<'_>,
    resource: Option<&str>,
    name: &str,
    text: &str,
    precondition: &Precondition,
    outgoing: Option<&Outgoing>,
) -> Result<Response<Body>, DavError> {
    let id = id_of(name)?;
    let parsed = crate::ical::parse::parse(text).map_err(|e| {
        DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::ValidCalendarData,
            e.to_string(),
        )
    })?;
    let Some(event) = parsed.events.first() else {
        return Err(DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::SupportedCalendarComponent,
            "bookings are events (VEVENT)",
        ));
    };
    if parsed.events.iter().any(|e| e.uid != event.uid) {
        return Err(invalid_object(
            "one calendar object holds one event (one UID)",
        ));
    }
    if parsed
        .events
        .iter()
        .any(|e| !e.rrules.is_empty() || !e.rdates.is_empty() || e.recurrence_id.is_some())
    {
        return Err(invalid_object(
            "a booking is a single appointment; put recurring events in a staff calendar",
        ));
    }
    let store = &ctx.app.store;
    // A precondition, so before the engine's conflict check (the transaction checks
    // again, for writers racing this one).
    if let Some(owner) = store.booking_with_uid(&ctx.tenant.id, &event.uid)?
        && owner != id
    {
        return Err(booking_error(ctx, BookingError::UidConflict(owner)));
    }
    let existing = store.booking(&ctx.tenant.id, id)?;
    let mut patch =
        crate::ical::booking::patch_from_event(event, ctx.tenant.timezone, existing.as_ref(), text)
            .map_err(|e| invalid_object(e.to_string()))?;
    patch.resources = resources_taken(ctx, resource, id, existing.as_ref())?;
    let engine = &ctx.app.bookings;
    let result = match (&existing, precondition) {
        (Some(_), Precondition::MustNotExist)
        | (None, Precondition::EtagIs(_))
        | (None, Precondition::MustExist) => {
            return Err(DavError::etag_mismatch());
        }
        (None, _) => engine
            .create_as(
                ctx.tenant,
                id,
                patch,
                None,
                ConflictPolicy::Refuse,
                outgoing,
            )
            .await
            .map(|c| (c.booking, true)),
        (Some(_), p) => {
            let if_match = match p {
                Precondition::EtagIs(e) => Some(e.as_str()),
                _ => None,
            };
            engine
                .update_sending(
                    ctx.tenant,
                    id,
                    &patch,
                    UpdateMode::Merge,
                    if_match,
                    ConflictPolicy::Refuse,
                    outgoing,
                )
                .await
                .map(|b| (b, false))
        }
    };
    let (booking, created) = result.map_err(|e| booking_error(ctx, e))?;
    let mut resp = Response::new(empty());
    *resp.status_mut() = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    if let Ok(v) = HeaderValue::from_str(&booking.etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// The resources a booking written through a bookings collection takes:
/// None keeps what the engine decides (an update keeps its resources; a new
/// booking on a tenant with one resource takes it). Through a resource's
/// collection, a new booking takes that resource and an update keeps its
/// others and adds it. A new booking in `bookings/` of a tenant with several
/// resources cannot say which it takes: refused, naming the collections to
/// use instead.
fn resources_taken(
    ctx: &Ctx<'_>,
    resource: Option<&str>,
    id: &str,
    existing: Option<&crate::model::Booking>,
) -> Result<Option<Vec<String>>, DavError> {
    match (resource, existing) {
        (Some(r), None) => Ok(Some(vec![r.to_owned()])),
        (Some(_), Some(b)) if b.resources.is_empty() => Err(invalid_object(tenant_wide(id))),
        (Some(r), Some(b)) if !b.resources.iter().any(|x| x == r) => {
            let mut taken = b.resources.clone();
            taken.push(r.to_owned());
            Ok(Some(taken))
        }
        (None, None) if ctx.tenant.resources.len() > 1 => {
            let collections: Vec<String> = ctx
                .tenant
                .resources
                .iter()
                .map(|r| format!("{}/", paths::resource_bookings(&r.id)))
                .collect();
            Err(invalid_object(format!(
                "this tenant has several resources and a booking must say which it takes: save new events in a resource's bookings calendar ({}), or book through the booking API with \"resources\"",
                collections.join(", ")
            )))
        }
        _ => Ok(None),
    }
}

/// Why a booking naming no resource (stored before the tenant declared them)
/// is not changed or cancelled through a resource's collection: it is in
/// every resource's, since it takes every one, and acting there would act for
/// all of them.
pub(super) fn tenant_wide(id: &str) -> String {
    format!(
        "booking \"{id}\" takes every resource (it was stored before the tenant declared resources): change it through bookings/ or the booking API"
    )
}

/// A booking-engine refusal as CalDAV answers it.
pub(super) fn booking_error(ctx: &Ctx<'_>, e: BookingError) -> DavError {
    match e {
        BookingError::Invalid(fields) => invalid_object(
            fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        BookingError::Conflict(found) => {
            let when: Vec<String> = listed_conflicts(&found)
                .iter()
                .map(|c| {
                    let at = |ms| {
                        crate::api::instant_json(ms)
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    };
                    format!("{} - {} ({})", at(c.span.start), at(c.span.end), c.source)
                })
                .collect();
            let more = match found.len().saturating_sub(when.len()) {
                0 => String::new(),
                n => format!(" and {n} more ({} in all)", found.len()),
            };
            DavError::new(
                StatusCode::CONFLICT,
                format!("the time is already taken: {}{more}", when.join(", ")),
            )
        }
        BookingError::UidConflict(owner) => DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::NoUidConflict,
            "another booking has the same UID",
        )
        .with_inner(format!(
            "<d:href>{}</d:href>",
            escape_text(&paths::object_href(
                &ctx.tenant.id,
                BOOKINGS_SOURCE,
                &format!("{owner}.ics")
            ))
        )),
        BookingError::PreconditionFailed { .. } => DavError::etag_mismatch(),
        BookingError::NotFound(_) => DavError::not_found(),
        other => DavError::internal(other),
    }
}
