//! Implicit scheduling (RFC 6638 §3) in calgate's model, for tenants with
//! `scheduling = "server"`.
//!
//! All users of a tenant share one calendar home, so the organizer's stored
//! object is also every same-tenant attendee's copy: scheduling never stores a
//! second one (it would double the tenant's busy time and confuse the booking
//! engine). What it does is tell people, and record that it did. Each write of a
//! scheduling object is planned here before it is stored:
//!
//! - a create, or a change that matters to attendees (anyone's: every staff
//!   member may edit the tenant's calendars): a REQUEST into the inbox of each
//!   attendee who is a user of the tenant, SCHEDULE-STATUS 1.2 on them and 5.2
//!   on everyone else (no e-mail goes out); attendees dropped get a CANCEL;
//! - an attendee changing their own participation and nothing else: a REPLY
//!   into the organizer's inbox (1.2 on the ORGANIZER; 5.2 when the organizer
//!   is not a user of the tenant);
//! - a deletion: a CANCEL to the attendees who are users of the tenant.
//!
//! Nobody is sent a message about a change they made themselves. The
//! Schedule-Tag is a digest of what matters to attendees
//! ([`itip::schedule_tag`]), so it moves with such changes and never with
//! replies; `If-Schedule-Tag-Match` is checked against it. A plan depends on
//! what is stored, so it is written under that version's ETag and made again if
//! another write came first.
//!
//! The messages a write sends are stored in the write's own transaction (the
//! store's scheduling outbox) and delivered right after it ([`deliver`]), so
//! the inbox holds them by the time the write is answered; a crash in between
//! leaves them in the outbox, which the store delivers when it opens again.
//!
//! The iCalendar work is [`itip`]'s, the inboxes are the store's, and the
//! protocol stays in the front ends (`dav::scheduling` loads what is stored,
//! reads `If-Schedule-Tag-Match`, knows the principal URLs that name users and
//! writes the Schedule-Tag header); this module decides who is told what and
//! delivers it. It uses no HTTP or DAV types.

use chrono::Utc;

use crate::ical::itip::{self, Agent, Method, Party, Stamp, Statuses, status};
use crate::model::Source;
use crate::settings::{Scheduling, TenantConfig, UserConfig};
use crate::store::{Delivery, Outgoing, Precondition, Store, StoreError};

/// How often a write is planned before a run of concurrent writes wins with a 412.
const ATTEMPTS: u32 = 3;

/// Why a write cannot be planned, or its messages not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SchedulingError {
    /// The client's If-Match / If-None-Match does not hold for what is stored.
    #[error("the resource's ETag does not match")]
    EtagMismatch,
    /// `If-Schedule-Tag-Match` names another version of the meeting.
    #[error("the organizer changed this meeting since its Schedule-Tag was read; fetch it again")]
    ScheduleTagMismatch,
    #[error("reading the stored objects failed: {0}")]
    Store(#[from] StoreError),
    #[error("delivering the scheduling messages failed: {0}")]
    Deliver(StoreError),
}

/// Who a write is planned for: the tenant, the user making it (told nothing
/// about their own change), and how calendar user addresses name the tenant's
/// users (the front end knows the URL forms it gives out).
pub struct Scope<'t> {
    pub tenant: &'t TenantConfig,
    pub caller: &'t str,
    pub resolve: fn(&'t TenantConfig, &str) -> Option<&'t UserConfig>,
}

impl<'t> Scope<'t> {
    /// The tenant's user an address names.
    fn resolve(&self, address: &str) -> Option<&'t UserConfig> {
        (self.resolve)(self.tenant, address)
    }

    /// Whether an address is the calling user's.
    fn is_caller(&self, address: &str) -> bool {
        self.resolve(address)
            .is_some_and(|u| u.username == self.caller)
    }
}

/// Whether the server schedules for a tenant.
pub fn enabled(tenant: &TenantConfig) -> bool {
    tenant.scheduling == Scheduling::Server
}

/// The Schedule-Tag of a stored object, in tenants the server schedules for.
pub fn schedule_tag(tenant: &TenantConfig, text: &str) -> Option<String> {
    if enabled(tenant) {
        itip::schedule_tag(text)
    } else {
        None
    }
}

/// What is stored now where a client writes or deletes.
#[derive(Debug, Clone)]
pub struct Current {
    pub etag: String,
    pub text: String,
}

/// A write of a calendar object, planned.
#[derive(Debug)]
pub struct PutPlan {
    /// What to store: the client's text with the server's SCHEDULE-STATUS.
    pub text: String,
    /// What the write requires of the stored object: the client's precondition,
    /// or the ETag of the version the plan was made from.
    pub precondition: Precondition,
    /// Whether a failed precondition is the plan's own (plan again) rather than
    /// the client's (answer 412).
    pub replan: bool,
    /// Messages to store with the object and deliver once it is stored.
    pub outgoing: Option<Outgoing>,
}

/// A deletion, planned.
#[derive(Debug)]
pub struct DeletePlan {
    /// The ETag the deleted object must still have.
    pub etag: Option<String>,
    pub replan: bool,
    pub outgoing: Option<Outgoing>,
}

/// Checks `If-Schedule-Tag-Match` (RFC 6638 §8.3: `wanted`) against the stored
/// object; true when it was sent.
fn check_schedule_tag(
    wanted: Option<&str>,
    current: Option<&Current>,
) -> Result<bool, SchedulingError> {
    let Some(wanted) = wanted else {
        return Ok(false);
    };
    let tag = current.and_then(|c| itip::schedule_tag(&c.text));
    if tag.as_deref() == Some(wanted) {
        Ok(true)
    } else {
        Err(SchedulingError::ScheduleTagMismatch)
    }
}

/// Plans a PUT of `text` over `current` (None: a create), sent with
/// `If-Schedule-Tag-Match: schedule_tag`. Tenants without server scheduling,
/// and objects that are not and were not scheduling objects, are stored as sent.
pub fn plan_put(
    scope: &Scope<'_>,
    current: Option<&Current>,
    text: &str,
    schedule_tag: Option<&str>,
    precondition: &Precondition,
) -> Result<PutPlan, SchedulingError> {
    let as_sent = PutPlan {
        text: text.to_owned(),
        precondition: precondition.clone(),
        replan: false,
        outgoing: None,
    };
    if !enabled(scope.tenant) {
        return Ok(as_sent);
    }
    let tag_checked = check_schedule_tag(schedule_tag, current)?;
    let old = current.and_then(|c| itip::scheduling(&c.text));
    let new = itip::scheduling(text);
    if old.is_none() && new.is_none() {
        return Ok(as_sent);
    }
    let (precondition, replan) = pinned(precondition, current)?;
    let is_me = |a: &str| scope.is_caller(a);
    let local = |a: &str| scope.resolve(a);
    let meeting_changed = current.is_none_or(|c| itip::changes_meeting(&c.text, text));
    let mut text = text.to_owned();
    if tag_checked
        && !meeting_changed
        && let Some(c) = current
        && let Some(merged) = itip::keep_replies(&text, &c.text, &|a| !is_me(a))
    {
        text = merged;
    }
    let mut sends: Vec<Send> = Vec::new();
    let mut statuses = Statuses::default();
    let organizer = new.as_ref().map(|s| (s, local(&s.organizer.address)));
    match organizer {
        Some((new, Some(organizer))) if meeting_changed => {
            (sends, statuses.attendees) = invitations(scope, new, old.as_ref(), organizer);
        }
        Some((new, organizer)) => {
            let replied = new.organizer.agent == Agent::Server
                && !is_me(&new.organizer.address)
                && current.is_some_and(|c| itip::reply_changed(&c.text, &text, &is_me));
            if replied {
                let code = match organizer {
                    Some(organizer) => {
                        sends.push((organizer, Method::Reply, false));
                        status::DELIVERED
                    }
                    None => status::NO_WAY_TO_DELIVER,
                };
                statuses.organizer = Some(Some(code.to_owned()));
            }
        }
        // No longer a meeting: cancelled below, from the stored version.
        None => {}
    }
    if let Some(new) = &new {
        keep_recorded(&mut statuses, new, old.as_ref());
        if let Some(recorded) = itip::record_statuses(&text, &statuses) {
            text = recorded;
        }
    }
    let stamp = Stamp {
        prodid: crate::ical::booking::PRODID,
        now: Utc::now(),
    };
    let mut deliveries: Vec<Delivery> = sends
        .into_iter()
        .map(|(user, method, from_stored)| {
            let source = match (from_stored, current) {
                (true, Some(c)) => c.text.as_str(),
                _ => text.as_str(),
            };
            Delivery {
                user: user.username.clone(),
                ics: itip::message(source, method, &is_me, stamp),
            }
        })
        .collect();
    if new.is_none()
        && let Some(c) = current
    {
        deliveries.extend(cancellations(scope, &c.text));
    }
    Ok(PutPlan {
        text,
        precondition,
        replan,
        outgoing: Outgoing::new(deliveries),
    })
}

/// A message to send: to whom, which, and whether it describes the stored
/// version (a CANCEL for those no longer invited) rather than the new one.
type Send<'t> = (&'t UserConfig, Method, bool);

/// What the organizer's side of a change sends: a REQUEST to each attendee of
/// the new version who is a user of the tenant (and their SCHEDULE-STATUS, 5.2
/// for the others), a CANCEL to those the old version invited and the new one
/// does not. Neither the organizer nor the caller are sent anything.
fn invitations<'t>(
    scope: &Scope<'t>,
    new: &itip::Scheduling,
    old: Option<&itip::Scheduling>,
    organizer: &'t UserConfig,
) -> (Vec<Send<'t>>, Vec<(String, Option<String>)>) {
    let mut sends = Vec::new();
    let mut statuses = Vec::new();
    let told = |a: &Party| {
        a.agent == Agent::Server
            && !scope.is_caller(&a.address)
            && scope
                .resolve(&a.address)
                .is_none_or(|u| u.username != organizer.username)
    };
    for a in new.attendees.iter().filter(|a| told(a)) {
        let code = match scope.resolve(&a.address) {
            Some(user) => {
                sends.push((user, Method::Request, false));
                status::DELIVERED
            }
            None => status::NO_WAY_TO_DELIVER,
        };
        statuses.push((a.address.clone(), Some(code.to_owned())));
    }
    let organized_here = old.is_some_and(|o| scope.resolve(&o.organizer.address).is_some());
    for a in old
        .filter(|_| organized_here)
        .map_or(&[][..], |o| &o.attendees)
    {
        if new.attendee(&a.address).is_none()
            && told(a)
            && let Some(user) = scope.resolve(&a.address)
        {
            sends.push((user, Method::Cancel, true));
        }
    }
    (sends, statuses)
}

/// SCHEDULE-STATUS is the server's: for participants no message went to this
/// time, what it recorded before (nothing, on a new meeting).
fn keep_recorded(statuses: &mut Statuses, new: &itip::Scheduling, old: Option<&itip::Scheduling>) {
    for a in new.attendees.iter().filter(|a| a.agent == Agent::Server) {
        if statuses
            .attendees
            .iter()
            .any(|(x, _)| itip::same_address(x, &a.address))
        {
            continue;
        }
        let before = old
            .and_then(|o| o.attendee(&a.address))
            .and_then(|p| p.status.clone());
        statuses.attendees.push((a.address.clone(), before));
    }
    if statuses.organizer.is_none() && new.organizer.agent == Agent::Server {
        statuses.organizer = Some(old.and_then(|o| o.organizer.status.clone()));
    }
}

/// The precondition a plan made from `current` is written under, and whether
/// its failure calls for a new plan (the client asked for less) or a 412.
fn pinned(
    asked: &Precondition,
    current: Option<&Current>,
) -> Result<(Precondition, bool), SchedulingError> {
    match (asked, current) {
        (Precondition::EtagIs(e), Some(c)) if *e != c.etag => Err(SchedulingError::EtagMismatch),
        (Precondition::EtagIs(_) | Precondition::MustExist, None)
        | (Precondition::MustNotExist, Some(_)) => Err(SchedulingError::EtagMismatch),
        (Precondition::EtagIs(e), Some(_)) => Ok((Precondition::EtagIs(e.clone()), false)),
        (Precondition::MustNotExist, None) => Ok((Precondition::MustNotExist, false)),
        (_, Some(c)) => Ok((Precondition::EtagIs(c.etag.clone()), true)),
        (_, None) => Ok((Precondition::MustNotExist, true)),
    }
}

/// Plans the DELETE of `current` (None: read nothing, or found nothing), asked
/// under If-Match `expected` and If-Schedule-Tag-Match `schedule_tag`.
pub fn plan_delete(
    scope: &Scope<'_>,
    current: Option<&Current>,
    schedule_tag: Option<&str>,
    expected: Option<&str>,
) -> Result<DeletePlan, SchedulingError> {
    let as_asked = DeletePlan {
        etag: expected.map(str::to_owned),
        replan: false,
        outgoing: None,
    };
    if !enabled(scope.tenant) {
        return Ok(as_asked);
    }
    let tag_checked = check_schedule_tag(schedule_tag, current)?;
    let Some(current) = current else {
        return Ok(as_asked);
    };
    if expected.is_some_and(|e| e != current.etag) {
        return Err(SchedulingError::EtagMismatch);
    }
    let deliveries = cancellations(scope, &current.text);
    let pinned = tag_checked || !deliveries.is_empty();
    Ok(DeletePlan {
        etag: (pinned || expected.is_some()).then(|| current.etag.clone()),
        replan: pinned && expected.is_none(),
        outgoing: Outgoing::new(deliveries),
    })
}

/// The objects of a staff calendar whose deletion sends CANCELs: deleting the
/// calendar deletes each of them as a DELETE of it alone would, first. An
/// imported calendar holds other people's events and sends none.
pub fn meetings(
    scope: &Scope<'_>,
    store: &Store,
    source: &Source,
) -> Result<Vec<String>, SchedulingError> {
    if !enabled(scope.tenant) || source.read_only {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for object in store.iter_objects(&scope.tenant.id, &source.id) {
        let object = object?;
        if !cancellations(scope, &object.ics).is_empty() {
            ids.push(object.id);
        }
    }
    Ok(ids)
}

/// A CANCEL for each attendee of a meeting organized in the tenant who is a
/// user of the tenant (the organizer and the caller aside).
fn cancellations(scope: &Scope<'_>, text: &str) -> Vec<Delivery> {
    let Some(meeting) = itip::scheduling(text) else {
        return Vec::new();
    };
    let Some(organizer) = scope.resolve(&meeting.organizer.address) else {
        return Vec::new();
    };
    let stamp = Stamp {
        prodid: crate::ical::booking::PRODID,
        now: Utc::now(),
    };
    meeting
        .attendees
        .iter()
        .filter(|a| a.agent == Agent::Server && !scope.is_caller(&a.address))
        .filter_map(|a| scope.resolve(&a.address))
        .filter(|user| user.username != organizer.username)
        .map(|user| Delivery {
            user: user.username.clone(),
            ics: itip::message(text, Method::Cancel, &|_| false, stamp),
        })
        .collect()
}

/// Whether a write that failed on its `attempts`-th plan is planned again:
/// when its precondition failed (`precondition_failed`) and was the plan's own,
/// not the client's.
pub fn plan_again(replan: bool, precondition_failed: bool, attempts: u32) -> bool {
    replan && precondition_failed && attempts < ATTEMPTS
}

/// Delivers the messages a write stored in the outbox, once the write is
/// durable (durable on return).
pub async fn deliver(
    store: &Store,
    tenant: &str,
    outgoing: Option<&Outgoing>,
) -> Result<(), SchedulingError> {
    let Some(outgoing) = outgoing else {
        return Ok(());
    };
    crash_point("schedule-outbox-write");
    store
        .deliver(tenant, outgoing)
        .await
        .map_err(SchedulingError::Deliver)?;
    crash_point("schedule-delivered");
    Ok(())
}

/// Fault injection for the `kill -9` tests (tests/process.rs): with
/// `CALGATE_TEST_CRASH_AFTER` set to a point's name, the process kills itself
/// with SIGKILL on reaching it. Points: `schedule-outbox-write` (a meeting and
/// its messages are durable, nothing is delivered yet) and `schedule-delivered`
/// (delivered, not yet answered). Does nothing unless the variable is set.
fn crash_point(point: &str) {
    static CRASH_AFTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = CRASH_AFTER.get_or_init(|| std::env::var("CALGATE_TEST_CRASH_AFTER").ok());
    if armed.as_deref() != Some(point) {
        return;
    }
    tracing::warn!(point, "CALGATE_TEST_CRASH_AFTER: killing the process");
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory
    // effects; SIGKILL cannot be caught, so nothing runs after it.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort();
}
