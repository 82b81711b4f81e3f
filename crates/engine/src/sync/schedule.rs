//! The scheduler's bookkeeping, in memory: which source is due when, and how
//! late the runs started.
//!
//! The store stays the truth (each source's `next_run` is in its sync status);
//! this queue is an index of it, so a loop of the scheduler costs the sources
//! that are due, not every source of every tenant. It is filled from the store
//! at start and on a periodic look, and kept current by every run and every
//! change of a source ([`super::SyncEngine::source_changed`]).

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A source of a tenant: (tenant id, source id).
pub type SourceKey = (String, String);

/// Sources by the instant they are due.
#[derive(Debug, Default)]
pub struct DueQueue {
    by_due: BTreeSet<(DateTime<Utc>, SourceKey)>,
    due: HashMap<SourceKey, DateTime<Utc>>,
}

impl DueQueue {
    /// Schedules `key` at `due`, or takes it off the queue (`None`).
    pub fn set(&mut self, key: SourceKey, due: Option<DateTime<Utc>>) {
        if let Some(old) = self.due.remove(&key) {
            self.by_due.remove(&(old, key.clone()));
        }
        if let Some(due) = due {
            self.by_due.insert((due, key.clone()));
            self.due.insert(key, due);
        }
    }

    /// Takes the earliest source due at or before `now` off the queue.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, SourceKey)> {
        let first = self.by_due.first()?;
        if first.0 > now {
            return None;
        }
        let (due, key) = self.by_due.pop_first()?;
        self.due.remove(&key);
        Some((due, key))
    }

    /// When the next source is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.by_due.first().map(|(due, _)| *due)
    }

    pub fn contains(&self, key: &SourceKey) -> bool {
        self.due.contains_key(key)
    }

    /// Queued sources that `found` does not have.
    pub fn keys_not_in<V>(&self, found: &HashMap<SourceKey, V>) -> Vec<SourceKey> {
        self.due
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect()
    }

    /// Forgets every source of `tenant` (it was deleted).
    pub fn forget_tenant(&mut self, tenant: &str) {
        let keys: Vec<SourceKey> = self
            .due
            .keys()
            .filter(|(t, _)| t == tenant)
            .cloned()
            .collect();
        for key in keys {
            self.set(key, None);
        }
    }

    /// Sources waiting, and how many of them are due at `now`.
    pub fn counts(&self, now: DateTime<Utc>) -> (usize, usize) {
        let due = self.by_due.iter().take_while(|(d, _)| *d <= now).count();
        (self.by_due.len(), due)
    }

    /// The longest-waiting due source's wait at `now`, in milliseconds.
    pub fn oldest_wait_ms(&self, now: DateTime<Utc>) -> u64 {
        self.next_due()
            .map_or(0, |due| (now - due).num_milliseconds().max(0) as u64)
    }
}

/// Lateness samples kept for percentiles: the last this many runs.
const RECENT_RUNS: usize = 8192;

/// How late scheduled runs started after they were due.
#[derive(Debug, Default)]
pub struct Lateness {
    runs: u64,
    max_ms: u64,
    over_minute: u64,
    recent: VecDeque<u64>,
}

/// What `GET /api/v1/scheduler` reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Sources the scheduler runs on their own.
    pub sources_scheduled: usize,
    /// Of those, due now and waiting for a free run slot.
    pub sources_due: usize,
    /// Runs under way (scheduled and manual).
    pub runs_in_progress: usize,
    /// Runs allowed at once.
    pub max_concurrent_runs: usize,
    /// How long the longest-waiting due source has waited.
    pub oldest_due_wait_ms: u64,
    /// Scheduled runs started since the gateway started.
    pub runs_started: u64,
    /// Of those, started more than a minute after they were due.
    pub runs_late_over_60s: u64,
    pub lateness_max_ms: u64,
    /// Over the last 8,192 scheduled runs.
    pub lateness_p50_ms: u64,
    pub lateness_p99_ms: u64,
}

impl Lateness {
    /// A scheduled run started `late_ms` after it was due.
    pub fn record(&mut self, late_ms: u64) {
        self.runs += 1;
        self.max_ms = self.max_ms.max(late_ms);
        if late_ms > 60_000 {
            self.over_minute += 1;
        }
        if self.recent.len() == RECENT_RUNS {
            self.recent.pop_front();
        }
        self.recent.push_back(late_ms);
    }

    /// Fills the lateness fields of `report`.
    pub fn fill(&self, report: &mut SchedulerReport) {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let at = |p: usize| {
            sorted
                .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        report.runs_started = self.runs;
        report.runs_late_over_60s = self.over_minute;
        report.lateness_max_ms = self.max_ms;
        report.lateness_p50_ms = at(50);
        report.lateness_p99_ms = at(99);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn key(t: &str, s: &str) -> SourceKey {
        (t.to_owned(), s.to_owned())
    }

    #[test]
    fn pops_in_due_order_and_only_when_due() {
        let now = Utc::now();
        let mut q = DueQueue::default();
        q.set(key("a", "late"), Some(now + Duration::seconds(60)));
        q.set(key("a", "soon"), Some(now - Duration::seconds(1)));
        q.set(key("b", "first"), Some(now - Duration::seconds(5)));
        assert_eq!(q.counts(now), (3, 2));
        assert_eq!(q.pop_due(now).map(|(_, k)| k), Some(key("b", "first")));
        assert_eq!(q.pop_due(now).map(|(_, k)| k), Some(key("a", "soon")));
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.next_due(), Some(now + Duration::seconds(60)));
    }

    #[test]
    fn rescheduling_moves_a_source_and_none_removes_it() {
        let now = Utc::now();
        let mut q = DueQueue::default();
        q.set(key("a", "s"), Some(now - Duration::seconds(10)));
        q.set(key("a", "s"), Some(now + Duration::seconds(10)));
        assert_eq!(q.counts(now), (1, 0));
        q.set(key("a", "s"), None);
        assert_eq!(q.counts(now), (0, 0));
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn forgetting_a_tenant_keeps_the_others() {
        let now = Utc::now();
        let mut q = DueQueue::default();
        q.set(key("gone", "1"), Some(now));
        q.set(key("gone", "2"), Some(now));
        q.set(key("kept", "1"), Some(now));
        q.forget_tenant("gone");
        assert_eq!(q.pop_due(now).map(|(_, k)| k), Some(key("kept", "1")));
        assert_eq!(q.pop_due(now), None);
    }

    #[test]
    fn lateness_reports_percentiles_and_runs_over_a_minute() {
        let mut l = Lateness::default();
        for ms in 1..=100 {
            l.record(ms);
        }
        l.record(61_000);
        let mut r = SchedulerReport::default();
        l.fill(&mut r);
        assert_eq!(r.runs_started, 101);
        assert_eq!(r.runs_late_over_60s, 1);
        assert_eq!(r.lateness_max_ms, 61_000);
        assert_eq!(r.lateness_p50_ms, 51);
        assert_eq!(r.lateness_p99_ms, 100);
    }
}
