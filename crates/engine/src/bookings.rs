//! The booking engine: create, change, cancel and list a tenant's bookings.
//!
//! Callers (the JSON API today, CalDAV next) describe what they want as a
//! [`BookingPatch`]; the engine turns it into a valid [`Booking`], assigns identity,
//! revision and ETag, and persists it with optimistic concurrency so two writers never
//! silently overwrite each other. Protocol details (JSON, headers) stay with callers.

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::conflicts::ConflictTracker;
use crate::freebusy;
use crate::model::{Booking, BookingStatus, BookingTime, BusyKind, Customer, FieldError, Span};
use crate::settings::TenantConfig;
use crate::store::{
    BusyEntry, DeleteOutcome, IdempotencyClaim, Outgoing, Precondition, Store, StoreError,
    WriteOutcome,
};

/// Optimistic-concurrency retries for unconditional updates racing other writers.
const WRITE_ATTEMPTS: usize = 8;
/// Conflicting entries a refusal lists (with the total): one recurring event can
/// have hundreds of occurrences over a slot.
pub const LISTED_CONFLICTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("booking {0} does not exist")]
    NotFound(String),
    #[error("the booking is invalid")]
    Invalid(Vec<FieldError>),
    #[error("the booking was changed since ETag {expected}; fetch it again and retry")]
    PreconditionFailed { expected: String, current: String },
    #[error("this Idempotency-Key was already used for a different request; use a new key")]
    IdempotencyKeyReused,
    #[error("the time is already taken; choose another slot or set allow_conflict")]
    Conflict(Vec<BusyEntry>),
    #[error("booking {0} already has this UID")]
    UidConflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The conflicting entries a refusal lists: the first [`LISTED_CONFLICTS`] (by
/// start); callers give the total beside them.
pub fn listed_conflicts(found: &[BusyEntry]) -> &[BusyEntry] {
    &found[..found.len().min(LISTED_CONFLICTS)]
}

pub use crate::model::BookingPatch;

/// How an update treats fields the patch leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// PATCH: absent fields keep their value.
    Merge,
    /// PUT: absent optional fields are cleared; required fields must be given.
    Replace,
}

pub struct Created {
    pub booking: Booking,
    /// The Idempotency-Key had been seen: this is the booking made the first time.
    pub replayed: bool,
}

/// Whether a write may land on busy time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Refuse with [`BookingError::Conflict`] (the default).
    Refuse,
    /// The caller knowingly double-books.
    Allow,
}

#[derive(Clone)]
pub struct BookingEngine {
    store: Store,
    /// One lock per tenant around check-and-commit, so two requests can never both
    /// see a slot free and both take it. Held only in memory, never over a disk sync.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    conflicts: Arc<ConflictTracker>,
    /// Signalled after every committed booking change (the exporter waits on it;
    /// the work itself is in the change log, written with the booking).
    changed: Arc<BookingChanges>,
}

/// Which tenants' bookings changed since the exporter last looked, and its
/// wake-up: so a booking costs the exporter that tenant's sources, not a walk
/// over every tenant.
#[derive(Debug, Default)]
pub struct BookingChanges {
    tenants: Mutex<HashSet<String>>,
    notify: tokio::sync::Notify,
}

impl BookingChanges {
    /// A booking of `tenant` changed, durably.
    pub fn mark(&self, tenant: &str) {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_owned());
        self.notify.notify_one();
    }

    /// The tenants marked since the last call.
    pub fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.tenants.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits for the next [`BookingChanges::mark`] (or one made since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl BookingEngine {
    pub fn new(store: Store, conflicts: Arc<ConflictTracker>) -> Self {
        BookingEngine {
            store,
            locks: Arc::default(),
            conflicts,
            changed: Arc::default(),
        }
    }

    /// Marked after every booking change is durable.
    pub fn change_signal(&self) -> Arc<BookingChanges> {
        Arc::clone(&self.changed)
    }

    fn tenant_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(tenant.to_owned()).or_default())
    }

    /// Refuses `booking` if something else blocks its time: on a tenant with
    /// declared resources, per resource it takes and within each one's
    /// capacity; otherwise anything busy (the one implicit resource).
    fn check_conflicts(
        &self,
        tenant: &TenantConfig,
        booking: &Booking,
        policy: ConflictPolicy,
    ) -> Result<(), BookingError> {
        if policy == ConflictPolicy::Allow || booking.busy_kind() == BusyKind::Free {
            return Ok(());
        }
        let found = if tenant.declares_resources() {
            // A booking stored before resources takes every one of them.
            let taken: Vec<String> = if booking.resources.is_empty() {
                tenant.resource_ids()
            } else {
                booking.resources.clone()
            };
            freebusy::resource_conflicts(
                &self.store,
                tenant,
                booking.span(),
                &taken,
                Some(&booking.id),
            )?
        } else {
            freebusy::conflicts(
                &self.store,
                &booking.tenant,
                booking.span(),
                Some(&booking.id),
            )?
        };
        if found.is_empty() {
            Ok(())
        } else {
            Err(BookingError::Conflict(found))
        }
    }

    pub fn get(&self, tenant: &TenantConfig, id: &str) -> Result<Booking, BookingError> {
        self.store
            .booking(&tenant.id, id)?
            .ok_or_else(|| BookingError::NotFound(id.to_owned()))
    }

    /// Bookings overlapping `window`, ordered by start.
    pub fn list(&self, tenant: &TenantConfig, window: Span) -> Result<Vec<Booking>, BookingError> {
        Ok(self.store.bookings_in(&tenant.id, window)?)
    }

    /// Creates a booking under a fresh id.
    pub async fn create(
        &self,
        tenant: &TenantConfig,
        patch: BookingPatch,
        claim: Option<IdempotencyClaim>,
        policy: ConflictPolicy,
    ) -> Result<Created, BookingError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.create_as(tenant, &id, patch, claim, policy, None)
            .await
    }

    /// Creates a booking under `id` (a CalDAV client names its resources); fails
    /// with `PreconditionFailed` if the id is taken. `outgoing`: the scheduling
    /// messages the write sends, stored with it.
    pub async fn create_as(
        &self,
        tenant: &TenantConfig,
        id: &str,
        patch: BookingPatch,
        claim: Option<IdempotencyClaim>,
        policy: ConflictPolicy,
        outgoing: Option<&Outgoing>,
    ) -> Result<Created, BookingError> {
        let now = Utc::now();
        let id = id.to_owned();
        let mut booking = apply(tenant, None, &patch, UpdateMode::Replace, &id, now)?;
        booking.etag = etag_of(&booking);
        let lock = self.tenant_lock(&tenant.id);
        let guard = lock.lock().await;
        // A retry of a create that succeeded must replay, not collide with itself.
        let earlier = match &claim {
            Some(c) => self.store.idempotency_outcome(&tenant.id, c)?,
            None => None,
        };
        let outcome = match earlier {
            Some(outcome) => outcome,
            None => {
                self.check_conflicts(tenant, &booking, policy)?;
                self.store.commit_booking(
                    &booking,
                    &Precondition::MustNotExist,
                    claim.as_ref(),
                    outgoing,
                )?
            }
        };
        drop(guard);
        if matches!(outcome, WriteOutcome::Written(_)) {
            self.store.flush().await?;
            self.changed.mark(&tenant.id);
        }
        match outcome {
            WriteOutcome::Written(_) => Ok(Created {
                booking,
                replayed: false,
            }),
            WriteOutcome::Replayed(first) => Ok(Created {
                booking: self.get(tenant, &first)?,
                replayed: true,
            }),
            WriteOutcome::IdempotencyKeyReused => Err(BookingError::IdempotencyKeyReused),
            WriteOutcome::UidConflict(owner) => Err(BookingError::UidConflict(owner)),
            // The id is taken (for generated ids: a v4 UUID collision).
            WriteOutcome::PreconditionFailed(_) => Err(BookingError::PreconditionFailed {
                expected: "(none)".into(),
                current: id,
            }),
        }
    }

    /// Applies `patch` to booking `id`. With `if_match`, the stored ETag must match;
    /// without it, concurrent writers are retried on the fresh record.
    pub async fn update(
        &self,
        tenant: &TenantConfig,
        id: &str,
        patch: &BookingPatch,
        mode: UpdateMode,
        if_match: Option<&str>,
        policy: ConflictPolicy,
    ) -> Result<Booking, BookingError> {
        self.update_sending(tenant, id, patch, mode, if_match, policy, None)
            .await
    }

    /// [`BookingEngine::update`], storing with the write the scheduling
    /// messages it sends.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_sending(
        &self,
        tenant: &TenantConfig,
        id: &str,
        patch: &BookingPatch,
        mode: UpdateMode,
        if_match: Option<&str>,
        policy: ConflictPolicy,
        outgoing: Option<&Outgoing>,
    ) -> Result<Booking, BookingError> {
        let lock = self.tenant_lock(&tenant.id);
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.get(tenant, id)?;
            if let Some(expected) = if_match
                && expected != current.etag
            {
                return Err(BookingError::PreconditionFailed {
                    expected: expected.to_owned(),
                    current: current.etag,
                });
            }
            let now = Utc::now();
            let mut next = apply(tenant, Some(&current), patch, mode, id, now)?;
            next.etag = etag_of(&next);
            let guard = lock.lock().await;
            // Only a move (or a reactivation) can create a conflict; editing a note
            // on a booking that was knowingly double-booked must still work.
            let moved = next.span() != current.span()
                || current.busy_kind() == BusyKind::Free
                || next.resources != current.resources;
            if moved {
                self.check_conflicts(tenant, &next, policy)?;
            }
            let outcome = self.store.commit_booking(
                &next,
                &Precondition::EtagIs(current.etag.clone()),
                None,
                outgoing,
            )?;
            drop(guard);
            match outcome {
                WriteOutcome::Written(_) => {
                    self.store.flush().await?;
                    self.changed.mark(&tenant.id);
                    // Time, resources or blocking changed: what it conflicts with may have.
                    if moved || next.busy_kind() == BusyKind::Free {
                        self.conflicts
                            .booking_changed(tenant, id, Some(&next))
                            .await?;
                    }
                    return Ok(next);
                }
                WriteOutcome::PreconditionFailed(None) => {
                    return Err(BookingError::NotFound(id.to_owned()));
                }
                WriteOutcome::UidConflict(owner) => return Err(BookingError::UidConflict(owner)),
                WriteOutcome::PreconditionFailed(Some(now_stored)) if if_match.is_some() => {
                    return Err(BookingError::PreconditionFailed {
                        expected: current.etag,
                        current: now_stored.etag,
                    });
                }
                _ => continue,
            }
        }
        Err(BookingError::PreconditionFailed {
            expected: "(latest)".into(),
            current: "changing too often; retry".into(),
        })
    }

    pub async fn delete(
        &self,
        tenant: &TenantConfig,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), BookingError> {
        self.delete_sending(tenant, id, if_match, None).await
    }

    /// [`BookingEngine::delete`], storing with the deletion the scheduling
    /// messages it sends.
    pub async fn delete_sending(
        &self,
        tenant: &TenantConfig,
        id: &str,
        if_match: Option<&str>,
        outgoing: Option<&Outgoing>,
    ) -> Result<(), BookingError> {
        match self
            .store
            .delete_booking(&tenant.id, id, if_match, outgoing)
            .await?
        {
            DeleteOutcome::Deleted(_) => {
                self.changed.mark(&tenant.id);
                self.conflicts.booking_changed(tenant, id, None).await?;
                Ok(())
            }
            DeleteOutcome::NotFound => Err(BookingError::NotFound(id.to_owned())),
            DeleteOutcome::PreconditionFailed(current) => Err(BookingError::PreconditionFailed {
                expected: if_match.unwrap_or_default().to_owned(),
                current: current.etag,
            }),
        }
    }
}

/// Strong ETag of a booking revision: a digest of everything but the tag itself.
pub fn etag_of(booking: &Booking) -> String {
    let mut unsigned = booking.clone();
    unsigned.etag.clear();
    let bytes = serde_json::to_vec(&unsigned).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// Builds the next revision from `base` (None when creating) and `patch`.
fn apply(
    tenant: &TenantConfig,
    base: Option<&Booking>,
    patch: &BookingPatch,
    mode: UpdateMode,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Booking, BookingError> {
    let mut errors = Vec::new();
    let replace = mode == UpdateMode::Replace;
    if replace {
        // start and end are checked (and reported) by parse_time.
        if patch.title.is_none() {
            errors.push(FieldError::new("title", "is required"));
        }
    }
    // Optional fields: given value, else (merge) the old one, else nothing.
    fn pick<T: Clone>(
        given: &Option<Option<T>>,
        old: Option<&Option<T>>,
        replace: bool,
    ) -> Option<T> {
        match given {
            Some(v) => v.clone(),
            None if replace => None,
            None => old.cloned().flatten(),
        }
    }
    let time_zone = patch
        .time_zone
        .or(if replace {
            None
        } else {
            base.map(|b| b.time_zone)
        })
        .unwrap_or(tenant.timezone);
    let all_day = patch
        .all_day
        .or(if replace {
            None
        } else {
            base.map(Booking::is_all_day)
        })
        .unwrap_or(false);
    let time = match parse_time(all_day, patch, if replace { None } else { base }) {
        Ok(t) => Some(t),
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    if !errors.is_empty() {
        return Err(BookingError::Invalid(errors));
    }
    let Some(time) = time else {
        return Err(BookingError::Invalid(errors));
    };
    let customer = pick(&patch.customer, base.map(|b| &b.customer), replace)
        .filter(|c: &Customer| !c.is_empty());
    let booking = Booking {
        id: id.to_owned(),
        uid: base.map_or_else(
            || patch.uid.clone().unwrap_or_else(|| id.to_owned()),
            |b| b.uid.clone(),
        ),
        tenant: tenant.id.clone(),
        time,
        time_zone,
        title: patch
            .title
            .clone()
            .or_else(|| base.map(|b| b.title.clone()))
            .unwrap_or_default(),
        service: pick(&patch.service, base.map(|b| &b.service), replace),
        customer,
        location: pick(&patch.location, base.map(|b| &b.location), replace),
        notes: pick(&patch.notes, base.map(|b| &b.notes), replace),
        status: patch
            .status
            .or(if replace {
                None
            } else {
                base.map(|b| b.status)
            })
            .unwrap_or(BookingStatus::Confirmed),
        metadata: patch
            .metadata
            .clone()
            .or_else(|| {
                if replace {
                    None
                } else {
                    base.map(|b| b.metadata.clone())
                }
            })
            .unwrap_or_default(),
        created: base.map_or(now, |b| b.created),
        updated: now,
        sequence: base.map_or(0, |b| b.sequence + 1),
        etag: String::new(),
        calendar_text: None,
        calendar_text_sequence: None,
        resources: booking_resources(tenant, base, patch.resources.as_deref())
            .map_err(|e| BookingError::Invalid(vec![e]))?,
    };
    let mut booking = booking;
    match &patch.calendar_text {
        Some(text) => {
            booking.calendar_text = Some(text.clone());
            booking.calendar_text_sequence = Some(booking.sequence);
        }
        None => {
            booking.calendar_text = base.and_then(|b| b.calendar_text.clone());
            booking.calendar_text_sequence = base.and_then(|b| b.calendar_text_sequence);
        }
    }
    booking.validate().map_err(BookingError::Invalid)?;
    Ok(booking)
}

/// The resources a booking stores: the ones given (checked), else the old
/// booking's, else the tenant's only resource. A tenant without declared
/// resources stores none (its bookings take the implicit one, and stored data
/// stays as it was before resources).
fn booking_resources(
    tenant: &TenantConfig,
    base: Option<&Booking>,
    given: Option<&[String]>,
) -> Result<Vec<String>, FieldError> {
    let Some(given) = given else {
        return Ok(match base {
            Some(b) => b.resources.clone(),
            None if tenant.resources.len() == 1 => vec![tenant.resources[0].id.clone()],
            None if tenant.declares_resources() => {
                return Err(FieldError::new(
                    "resources",
                    format!(
                        "is required: name the resources the booking takes, from {}",
                        quoted(&tenant.resource_ids())
                    ),
                ));
            }
            None => Vec::new(),
        });
    };
    if given.is_empty() {
        return Err(FieldError::new(
            "resources",
            format!(
                "must name at least one resource, from {}",
                quoted(&tenant.resource_ids())
            ),
        ));
    }
    for (i, id) in given.iter().enumerate() {
        if !tenant.has_resource(id) {
            return Err(FieldError::new(
                "resources",
                format!(
                    "\"{id}\" is not a resource of this tenant; it has {}",
                    quoted(&tenant.resource_ids())
                ),
            ));
        }
        if given[..i].contains(id) {
            return Err(FieldError::new(
                "resources",
                format!("\"{id}\" is named twice; a booking takes one unit of each resource"),
            ));
        }
    }
    Ok(if tenant.declares_resources() {
        given.to_vec()
    } else {
        Vec::new()
    })
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses start/end for the final `all_day` value, falling back to `base` for the
/// side the patch leaves out (only when base has the same kind of time).
fn parse_time(
    all_day: bool,
    patch: &BookingPatch,
    base: Option<&Booking>,
) -> Result<BookingTime, Vec<FieldError>> {
    let mut errors = Vec::new();
    let missing = match (base, all_day) {
        (None, _) => "is required",
        (Some(_), true) => "is required when a booking becomes all-day",
        (Some(_), false) => "is required when a booking stops being all-day",
    };
    let old = base.map(|b| &b.time);
    let time = if all_day {
        let old = match old {
            Some(BookingTime::AllDay { start, end }) => Some((*start, *end)),
            _ => None,
        };
        let parse = |t: &str| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok();
        let hint = "a date (YYYY-MM-DD), as all-day bookings take";
        both_ends(&mut errors, patch, old, parse, hint, missing)
            .map(|(start, end)| BookingTime::AllDay { start, end })
    } else {
        let old = match old {
            Some(BookingTime::Timed { start, end }) => Some((*start, *end)),
            _ => None,
        };
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok();
        let hint = "an RFC 3339 date-time with offset, e.g. 2026-12-01T10:00:00+01:00";
        both_ends(&mut errors, patch, old, parse, hint, missing)
            .map(|(start, end)| BookingTime::Timed { start, end })
    };
    match time {
        Some(time) if errors.is_empty() => Ok(time),
        _ => Err(errors),
    }
}

/// Start and end: each given text parsed, or the old value.
fn both_ends<T: Copy>(
    errors: &mut Vec<FieldError>,
    patch: &BookingPatch,
    old: Option<(T, T)>,
    parse: impl Fn(&str) -> Option<T>,
    hint: &str,
    missing: &str,
) -> Option<(T, T)> {
    let start = side(
        errors,
        "start",
        &patch.start,
        old.map(|o| o.0),
        &parse,
        hint,
        missing,
    );
    let end = side(
        errors,
        "end",
        &patch.end,
        old.map(|o| o.1),
        &parse,
        hint,
        missing,
    );
    start.zip(end)
}

/// One end of a booking: the given text parsed, or the old value.
fn side<T>(
    errors: &mut Vec<FieldError>,
    field: &str,
    given: &Option<String>,
    old: Option<T>,
    parse: &impl Fn(&str) -> Option<T>,
    hint: &str,
    missing: &str,
) -> Option<T> {
    match given {
        Some(text) => {
            let parsed = parse(text);
            if parsed.is_none() {
                errors.push(FieldError::new(field, format!("\"{text}\" is not {hint}")));
            }
            parsed
        }
        None => {
            if old.is_none() {
                errors.push(FieldError::new(field, missing));
            }
            old
        }
    }
}
