//! Calendar sources and their iCalendar objects: what a CalDAV client or a provider
//! sync writes, turned into busy-index entries the free/busy engine reads.
//!
//! Each object is parsed and expanded once, when written (and again when the rolling
//! horizon moves), so queries never re-parse stored iCalendar. HTTP and DAV details
//! live with the callers.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::conflicts::ConflictTracker;
use crate::ical::expand::{ExpandOptions, OverBudget, expand_within_budget};
use crate::ical::parse::{self, ParseError};
use crate::model::{BOOKINGS_SOURCE, BusyKind, BusySpan, CalendarObject, Source, Span};
use crate::settings::TenantConfig;
use crate::store::{ObjectOutcome, ObjectWrite, Outgoing, Precondition, Store, StoreError};

pub use crate::model::Horizon;

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("source \"{0}\" does not exist")]
    UnknownSource(String),
    #[error("the calendar data is not valid iCalendar: {0}")]
    Invalid(String),
    #[error("calendar \"{calendar}\" holds {accepted}; this object has {found}")]
    UnsupportedComponent {
        calendar: String,
        accepted: String,
        found: String,
    },
    #[error("the object was changed (now {current:?}); fetch it again")]
    PreconditionFailed { current: Option<String> },
    #[error("another object of this calendar ({0}) already has this UID")]
    UidConflict(String),
    #[error("the calendar data is over the gateway's limits: {0}")]
    OverBudget(#[from] OverBudget),
    #[error("expanding the calendar data failed: {0}")]
    Expansion(String),

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`CalendarService::import_object`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    Created,
    Updated,
    Unchanged,
}

/// An import batch parsed and expanded, not yet written
/// ([`CalendarService::prepare_imports`]).
pub struct PreparedImports {
    results: Vec<Result<Imported, CalendarError>>,
    /// (index in the batch, whether it is new) of each object to write.
    pending: Vec<(usize, bool)>,
    objects: Vec<CalendarObject>,
}

#[derive(Clone)]
pub struct CalendarService {
    store: Store,
    horizon: Horizon,
    conflicts: Arc<ConflictTracker>,
}

impl CalendarService {
    pub fn new(store: Store, horizon: Horizon, conflicts: Arc<ConflictTracker>) -> Self {
        CalendarService {
            store,
            horizon,
            conflicts,
        }
    }

    pub fn horizon(&self) -> Horizon {
        self.horizon
    }

    /// Creates or updates a source's settings.
    pub fn put_source(&self, tenant: &TenantConfig, source: &Source) -> Result<(), CalendarError> {
        Ok(self.store.put_source(&tenant.id, source)?)
    }

    /// Removes a source and everything in it (conflicts with its events resolve).
    pub async fn delete_source(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
    ) -> Result<bool, CalendarError> {
        if self.store.source(&tenant.id, source_id)?.is_none() {
            return Ok(false);
        }
        for object in self.store.objects(&tenant.id, source_id)? {
            self.delete_object(tenant, source_id, &object.id, None, None)
                .await?;
        }
        Ok(self.store.delete_source(&tenant.id, source_id).await?)
    }

    /// Ids of every source of a tenant, bookings first.
    pub fn source_ids(&self, tenant: &TenantConfig) -> Result<Vec<String>, CalendarError> {
        let mut ids = vec![BOOKINGS_SOURCE.to_owned()];
        ids.extend(self.store.sources(&tenant.id)?.into_iter().map(|s| s.id));
        Ok(ids)
    }

    /// Parses, expands and stores an object; durable when it returns.
    pub async fn put_object(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        object_id: &str,
        ics: &str,
        precondition: &Precondition,
    ) -> Result<CalendarObject, CalendarError> {
        self.put_object_sending(tenant, source_id, object_id, ics, precondition, None)
            .await
    }

    /// [`CalendarService::put_object`], with the scheduling messages the write
    /// sends stored in its transaction.
    pub async fn put_object_sending(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        object_id: &str,
        ics: &str,
        precondition: &Precondition,
        outgoing: Option<&Outgoing>,
    ) -> Result<CalendarObject, CalendarError> {
        let source = self
            .store
            .source(&tenant.id, source_id)?
            .ok_or_else(|| CalendarError::UnknownSource(source_id.to_owned()))?;
        let object = materialize_off_thread(
            Materializer::of(self, tenant, Budgeted::Refuse),
            source,
            object_id.to_owned(),
            ics.to_owned(),
        )
        .await?;
        match self
            .store
            .put_object_sending(
                &tenant.id,
                source_id,
                &object,
                precondition,
                ObjectWrite::Change,
                outgoing,
            )
            .await?
        {
            ObjectOutcome::Written(_) => {
                self.conflicts
                    .object_changed(tenant, source_id, object_id, Some(&object))
                    .await?;
                Ok(object)
            }
            ObjectOutcome::PreconditionFailed(current) => {
                Err(CalendarError::PreconditionFailed { current })
            }
            ObjectOutcome::UidConflict(owner) => Err(CalendarError::UidConflict(owner)),
        }
    }

    /// Stores an imported object as part of a batch (conflicts are checked as for
    /// any write); durable after the caller's [`Store::flush`]. Returns whether
    /// something was written: identical text is left alone.
    pub async fn import_object(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        object_id: &str,
        ics: &str,
    ) -> Result<Imported, CalendarError> {
        let existing = self.store.object(&tenant.id, &source.id, object_id)?;
        if existing.as_ref().is_some_and(|o| o.ics == ics) {
            return Ok(Imported::Unchanged);
        }
        let object = materialize_off_thread(
            Materializer::of(self, tenant, Budgeted::Refuse),
            source.clone(),
            object_id.to_owned(),
            ics.to_owned(),
        )
        .await?;
        // Not written when another object holds the UID: say so rather than
        // report (and conflict-check) an object that is not stored.
        if let ObjectOutcome::UidConflict(owner) = self
            .store
            .put_object(
                &tenant.id,
                &source.id,
                &object,
                &Precondition::None,
                ObjectWrite::BatchedChange,
            )
            .await?
        {
            return Err(CalendarError::UidConflict(owner));
        }
        self.conflicts
            .object_changed(tenant, &source.id, object_id, Some(&object))
            .await?;
        Ok(if existing.is_some() {
            Imported::Updated
        } else {
            Imported::Created
        })
    }

    /// [`CalendarService::import_object`] for many objects of one source
    /// (`(object id, text)` pairs with distinct ids): [`prepare_imports`] then
    /// [`commit_imports`]. Durable after the caller's [`Store::flush`].
    ///
    /// [`prepare_imports`]: CalendarService::prepare_imports
    /// [`commit_imports`]: CalendarService::commit_imports
    pub async fn import_batch(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        objects: &[(String, String)],
    ) -> Result<Vec<Result<Imported, CalendarError>>, CalendarError> {
        let prepared = self.prepare_imports(tenant, source, objects, |_| true)?;
        self.commit_imports(tenant, source, prepared).await
    }

    /// The CPU-bound half of an import batch, which writes nothing (callers may
    /// run it on a blocking thread while the previous batch commits): texts equal
    /// to the stored ones are left alone, the rest are parsed and expanded. Ids
    /// `may_exist` rules out are taken as new without a look-up.
    pub fn prepare_imports(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        objects: &[(String, String)],
        may_exist: impl Fn(&str) -> bool,
    ) -> Result<PreparedImports, CalendarError> {
        let materializer = Materializer::of(self, tenant, Budgeted::Refuse);
        let mut prepared = PreparedImports {
            results: Vec::with_capacity(objects.len()),
            pending: Vec::new(),
            objects: Vec::new(),
        };
        for (i, (id, ics)) in objects.iter().enumerate() {
            // The text alone: the stored record's occurrences are not needed.
            let existing = if may_exist(id) {
                self.store.object_text(&tenant.id, &source.id, id)?
            } else {
                None
            };
            if existing.as_ref().is_some_and(|o| o.ics == *ics) {
                prepared.results.push(Ok(Imported::Unchanged));
                continue;
            }
            match materializer.materialize(source, id, ics) {
                Ok(object) => {
                    // Replaced by the write's outcome in `commit_imports`.
                    prepared.results.push(Ok(Imported::Unchanged));
                    prepared.pending.push((i, existing.is_none()));
                    prepared.objects.push(object);
                }
                Err(e) => prepared.results.push(Err(e)),
            }
        }
        Ok(prepared)
    }

    /// Writes a prepared batch in one store transaction and checks its conflicts
    /// together (conflict records are durable on return, the objects after the
    /// caller's [`Store::flush`]). One result per object of the batch, in order;
    /// an object that cannot be read, or whose UID another object holds, fails
    /// alone.
    pub async fn commit_imports(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        prepared: PreparedImports,
    ) -> Result<Vec<Result<Imported, CalendarError>>, CalendarError> {
        let PreparedImports {
            mut results,
            pending,
            objects,
        } = prepared;
        let outcomes = self
            .store
            .put_objects_batched(&tenant.id, &source.id, &objects)?;
        let mut written = Vec::with_capacity(objects.len());
        for (((i, created), object), outcome) in pending.into_iter().zip(&objects).zip(outcomes) {
            results[i] = match outcome {
                ObjectOutcome::Written(_) => {
                    written.push(object);
                    Ok(if created {
                        Imported::Created
                    } else {
                        Imported::Updated
                    })
                }
                // Not written: say so rather than report (and conflict-check) it.
                ObjectOutcome::UidConflict(owner) => Err(CalendarError::UidConflict(owner)),
                ObjectOutcome::PreconditionFailed(current) => {
                    Err(CalendarError::PreconditionFailed { current })
                }
            };
        }
        self.conflicts
            .objects_changed(tenant, &source.id, &written)
            .await?;
        Ok(results)
    }

    /// Removes an imported object in a batch; durable after the caller's flush.
    pub async fn remove_imported(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        object_id: &str,
    ) -> Result<bool, CalendarError> {
        let outcome = self
            .store
            .delete_object_batched(&tenant.id, source_id, object_id, None)?;
        let removed = matches!(outcome, ObjectOutcome::Written(_));
        if removed {
            self.conflicts
                .object_changed(tenant, source_id, object_id, None)
                .await?;
        }
        Ok(removed)
    }

    /// Deletes an object, with the scheduling messages the deletion sends.
    pub async fn delete_object(
        &self,
        tenant: &TenantConfig,
        source_id: &str,
        object_id: &str,
        etag: Option<&str>,
        outgoing: Option<&Outgoing>,
    ) -> Result<(), CalendarError> {
        match self
            .store
            .delete_object(&tenant.id, source_id, object_id, etag, outgoing)
            .await?
        {
            ObjectOutcome::Written(_) => {
                self.conflicts
                    .object_changed(tenant, source_id, object_id, None)
                    .await?;
                Ok(())
            }
            ObjectOutcome::PreconditionFailed(current) => {
                Err(CalendarError::PreconditionFailed { current })
            }
            ObjectOutcome::UidConflict(owner) => Err(CalendarError::UidConflict(owner)),
        }
    }

    /// Re-expands every object of a tenant against the current horizon (after the
    /// horizon moved, a source became transparent, or with `force` after an engine
    /// upgrade); returns how many were rewritten. Without `force`, objects whose
    /// occurrences are unchanged are left alone. Rewrites are synced once, at the end.
    pub async fn rebuild(
        &self,
        tenant: &TenantConfig,
        only_recurring: bool,
        force: bool,
    ) -> Result<usize, CalendarError> {
        // Stored objects are kept: one over today's limits is indexed as far as
        // its budget goes, never refused (nor does it stop the others).
        let materializer = Materializer::of(self, tenant, Budgeted::Cap);
        let mut changed = 0;
        for source in self.store.sources(&tenant.id)? {
            let mut stored: Vec<CalendarObject> = self
                .store
                .objects(&tenant.id, &source.id)?
                .into_iter()
                .filter(|o| !only_recurring || o.recurring)
                .collect();
            while !stored.is_empty() {
                let batch: Vec<CalendarObject> =
                    stored.drain(..stored.len().min(REBUILD_BATCH)).collect();
                let (materializer, source_copy) = (materializer.clone(), source.clone());
                // One trip to the blocking pool per batch, not per object.
                let expanded = tokio::task::spawn_blocking(move || {
                    batch
                        .into_iter()
                        .map(|old| {
                            let fresh = materializer.materialize(&source_copy, &old.id, &old.ics);
                            (old, fresh)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| CalendarError::Expansion(e.to_string()))?;
                changed += self.write_rebuilt(tenant, &source, expanded, force).await?;
            }
        }
        self.store.flush().await?;
        Ok(changed)
    }

    /// Writes the re-expanded objects of one batch of [`CalendarService::rebuild`];
    /// returns how many were rewritten.
    async fn write_rebuilt(
        &self,
        tenant: &TenantConfig,
        source: &Source,
        expanded: Vec<(CalendarObject, Result<CalendarObject, CalendarError>)>,
        force: bool,
    ) -> Result<usize, CalendarError> {
        let mut changed = 0;
        for (old, fresh) in expanded {
            let mut fresh = match fresh {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, source = %source.id, object = %old.id, error = %e, "stored object not re-expanded");
                    continue;
                }
            };
            if !force && fresh.occurrences == old.occurrences {
                continue;
            }
            fresh.etag = old.etag.clone();
            fresh.updated = old.updated;
            let outcome = self
                .store
                .put_object(
                    &tenant.id,
                    &source.id,
                    &fresh,
                    &Precondition::EtagIs(old.etag),
                    ObjectWrite::Reindex,
                )
                .await?;
            // Otherwise a concurrent write won the race and expanded it itself.
            // Conflicts depend on occurrences only: unchanged ones need no check.
            if matches!(outcome, ObjectOutcome::Written(_)) && fresh.occurrences != old.occurrences
            {
                self.conflicts
                    .object_changed(tenant, &source.id, &fresh.id, Some(&fresh))
                    .await?;
            }
            if matches!(outcome, ObjectOutcome::Written(_)) {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

/// Objects re-expanded per trip to the blocking pool by [`CalendarService::rebuild`].
const REBUILD_BATCH: usize = 256;

/// What to do with an object over its expansion budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budgeted {
    /// Refuse it (a client's write, an import): the writer is told why.
    Refuse,
    /// Index what the budget allows (an object already stored).
    Cap,
}

/// Everything [`Materializer::materialize`] needs, owned, so that the CPU-bound
/// work can run on a blocking thread.
#[derive(Clone)]
struct Materializer {
    zone: chrono_tz::Tz,
    window: Span,
    budgeted: Budgeted,
    now: DateTime<Utc>,
}

impl Materializer {
    fn of(service: &CalendarService, tenant: &TenantConfig, budgeted: Budgeted) -> Materializer {
        let now = Utc::now();
        Materializer {
            zone: tenant.timezone,
            window: service.horizon.window(now),
            budgeted,
            now,
        }
    }

    /// Parses `ics` and computes its blocking occurrences within the horizon.
    fn materialize(
        &self,
        source: &Source,
        object_id: &str,
        ics: &str,
    ) -> Result<CalendarObject, CalendarError> {
        let parsed = parse::parse(ics).map_err(|e| match e {
            ParseError::Syntax(msg) => CalendarError::Invalid(msg),
            ParseError::NoCalendar => CalendarError::Invalid(e.to_string()),
        })?;
        if self.budgeted == Budgeted::Refuse && !parsed.errors.is_empty() {
            return Err(CalendarError::Invalid(parsed.errors.join("; ")));
        }
        // Every component of the object must be one the calendar holds.
        let accepted = source.component_set();
        let mut found: Vec<&str> = parsed.other_components.iter().map(String::as_str).collect();
        if !parsed.events.is_empty() {
            found.push("VEVENT");
        }
        if found.is_empty() || found.iter().any(|c| !accepted.contains(c)) {
            return Err(CalendarError::UnsupportedComponent {
                calendar: source.id.clone(),
                accepted: accepted.join(", "),
                found: if found.is_empty() {
                    "no component".into()
                } else {
                    found.join(", ")
                },
            });
        }
        let opts = ExpandOptions {
            default_zone: self.zone,
            window: self.window,
        };
        let expansion = expand_within_budget(&parsed, &opts);
        let mut diagnostics = parsed.diagnostics.clone();
        diagnostics.extend(expansion.diagnostics);
        if let Some(over) = expansion.over_budget {
            if self.budgeted == Budgeted::Refuse {
                return Err(over.into());
            }
            diagnostics.push(format!("{over}; only the first occurrences are indexed"));
        }
        // Every occurrence is indexed (CalDAV time-range queries match transparent
        // and cancelled events too); in a transparent source none of them blocks.
        let occurrences = expansion
            .occurrences
            .iter()
            .map(|o| BusySpan {
                span: o.span,
                kind: if source.transparent {
                    BusyKind::Free
                } else {
                    o.busy
                },
            })
            .collect();
        Ok(CalendarObject {
            id: object_id.to_owned(),
            uid: parsed.events.first().map(|e| e.uid.clone()),
            ics: ics.to_owned(),
            etag: format!("\"{}\"", hex::encode(&Sha256::digest(ics.as_bytes())[..12])),
            updated: self.now,
            recurring: parsed
                .events
                .iter()
                .any(|e| !e.rrules.is_empty() || !e.rdates.is_empty()),
            diagnostics,
            occurrences,
        })
    }
}

/// [`Materializer::materialize`] on a blocking thread: parsing and expanding an
/// object is CPU work, bounded by its budget but still too long to hold one of
/// the few async workers every other tenant's requests run on.
async fn materialize_off_thread(
    materializer: Materializer,
    source: Source,
    object_id: String,
    ics: String,
) -> Result<CalendarObject, CalendarError> {
    tokio::task::spawn_blocking(move || materializer.materialize(&source, &object_id, &ics))
        .await
        .map_err(|e| CalendarError::Expansion(e.to_string()))?
}
