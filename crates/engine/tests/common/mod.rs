//! Shared setup of the engine tests: a tenant, the engines wired together as
//! the server wires them (`App::with_store`) over a sled store in a temporary
//! directory, and small builders for times, bookings and iCalendar text.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use calgate_engine::bookings::{
    BookingEngine, BookingError, BookingPatch, ConflictPolicy, Created, UpdateMode,
};
use calgate_engine::calendars::CalendarService;
use calgate_engine::conflicts::ConflictTracker;
use calgate_engine::connect::{Connections, PublicUrl};
use calgate_engine::export::Exporter;
use calgate_engine::model::{Booking, Horizon, Source, Span};
use calgate_engine::providers::Providers;
use calgate_engine::secrets::SecretBox;
use calgate_engine::settings::{ProvidersConfig, TenantConfig};
use calgate_engine::store::{BusyEntry, SledStore, Store};
use calgate_engine::sync::{ImportObserver, SyncEngine};
use calgate_engine::tenants::Tenants;
use chrono::{DateTime, Duration as Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A tenant in UTC, open all the time, without buffer, webhook or sources.
pub fn tenant(id: &str) -> TenantConfig {
    TenantConfig::new(id, id, chrono_tz::UTC)
}

/// The engines of one store, wired as `App::with_store` wires them.
pub struct Engines {
    pub store: Store,
    pub conflicts: Arc<ConflictTracker>,
    pub bookings: BookingEngine,
    pub calendars: CalendarService,
    pub tenants: Arc<Tenants>,
    pub connections: Arc<Connections>,
    pub export: Arc<Exporter>,
    /// The key the connections seal provider tokens with.
    pub secrets: SecretBox,
    /// Last, so the directory goes after every store handle above.
    setup: Setup,
}

/// What the engines are made from, kept to open them again.
/// Feed URLs on the loopback mocks are allowed.
const LOOPBACK: &[&str] = &["127.0.0.0/8"];

/// The providers and connections, with feed URLs limited to `allow`.
fn connections(
    store: &Store,
    secrets: &SecretBox,
    apps: &ProvidersConfig,
    horizon: Horizon,
    allow: &[&str],
    tenants: &Arc<Tenants>,
) -> Arc<Connections> {
    let allow: Vec<String> = allow.iter().map(|a| (*a).to_owned()).collect();
    let providers = Arc::new(Providers::new(apps, &allow).expect("providers"));
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let public_url = Arc::new(PublicUrl::new(None, listen));
    Arc::new(Connections::new(
        store.clone(),
        secrets.clone(),
        providers,
        Path::new("gateway.toml"),
        public_url,
        horizon,
        Arc::clone(tenants),
    ))
}

struct Setup {
    tenant: TenantConfig,
    horizon: Horizon,
    providers: ProvidersConfig,
    dir: tempfile::TempDir,
}

impl Engines {
    /// The engines for `tenant` over a fresh store, with the default horizon.
    pub fn start(tenant: &TenantConfig) -> Engines {
        Engines::with(tenant, Horizon::default(), ProvidersConfig::default())
    }

    pub fn with(tenant: &TenantConfig, horizon: Horizon, providers: ProvidersConfig) -> Engines {
        Engines::wire(Setup {
            tenant: tenant.clone(),
            horizon,
            providers,
            dir: tempfile::tempdir().expect("temporary directory"),
        })
    }

    fn wire(setup: Setup) -> Engines {
        let Setup {
            tenant,
            horizon,
            providers,
            dir,
        } = &setup;
        let store: Store = Arc::new(SledStore::open(&dir.path().join("db")).expect("store opens"));
        let secrets = SecretBox::open(dir.path()).expect("secret key");
        let conflicts = ConflictTracker::new(store.clone());
        let bookings = BookingEngine::new(store.clone(), Arc::clone(&conflicts));
        let calendars = CalendarService::new(store.clone(), *horizon, Arc::clone(&conflicts));
        let tenants = Arc::new(Tenants::new([tenant.clone()]));
        let connections = connections(&store, &secrets, providers, *horizon, LOOPBACK, &tenants);
        let export = Arc::new(Exporter::new(
            store.clone(),
            bookings.clone(),
            Arc::clone(&connections),
            Arc::clone(&tenants),
            *horizon,
        ));
        Engines {
            store,
            conflicts,
            bookings,
            calendars,
            tenants,
            connections,
            export,
            secrets,
            setup,
        }
    }

    /// Closes every engine and store handle, then opens the same directory
    /// again (what a restart of the gateway sees).
    pub fn reopen(self) -> Engines {
        Engines::wire(self.close())
    }

    /// Everything but the setup is dropped on return, releasing the store.
    fn close(self) -> Setup {
        self.conflicts.stop_deliveries();
        self.setup
    }

    /// A sync engine reporting imports to `observer`; feed URLs may reach the
    /// loopback mocks.
    pub fn sync(&self, observer: Arc<dyn ImportObserver>) -> SyncEngine {
        self.sync_with(observer, Arc::clone(&self.connections))
    }

    /// A sync engine whose feed URLs may reach only `allow` (CIDR strings).
    pub fn sync_allowing(&self, observer: Arc<dyn ImportObserver>, allow: &[&str]) -> SyncEngine {
        let Setup {
            horizon, providers, ..
        } = &self.setup;
        let connections = connections(
            &self.store,
            &self.secrets,
            providers,
            *horizon,
            allow,
            &self.tenants,
        );
        self.sync_with(observer, connections)
    }

    fn sync_with(
        &self,
        observer: Arc<dyn ImportObserver>,
        connections: Arc<Connections>,
    ) -> SyncEngine {
        SyncEngine::new(
            self.store.clone(),
            self.calendars.clone(),
            connections,
            observer,
            Arc::clone(&self.tenants),
        )
    }

    /// Stores a calendar source.
    pub fn add_source(&self, tenant: &TenantConfig, source: Source) {
        self.calendars
            .put_source(tenant, &source)
            .expect("source stored");
    }

    /// Creates a booking with the default policy (conflicts refused).
    pub async fn try_book(
        &self,
        tenant: &TenantConfig,
        patch: BookingPatch,
    ) -> Result<Created, BookingError> {
        self.bookings
            .create(tenant, patch, None, ConflictPolicy::Refuse)
            .await
    }

    /// Creates a booking that must be refused as a conflict; what it overlaps.
    pub async fn refused(&self, tenant: &TenantConfig, patch: BookingPatch) -> Vec<BusyEntry> {
        match self.try_book(tenant, patch).await {
            Err(BookingError::Conflict(found)) => found,
            other => panic!("expected a conflict, got {:?}", other.map(|c| c.booking)),
        }
    }

    /// Creates a booking that must succeed.
    pub async fn book(&self, tenant: &TenantConfig, patch: BookingPatch) -> Created {
        self.try_book(tenant, patch)
            .await
            .unwrap_or_else(|e| panic!("booking refused: {e:?}"))
    }

    /// Merges `patch` into booking `id` (a PATCH).
    pub async fn change(
        &self,
        tenant: &TenantConfig,
        id: &str,
        patch: BookingPatch,
        if_match: Option<&str>,
        policy: ConflictPolicy,
    ) -> Result<Booking, BookingError> {
        self.bookings
            .update(tenant, id, &patch, UpdateMode::Merge, if_match, policy)
            .await
    }
}

/// Midnight UTC, `days` from today.
pub fn day(days: i64) -> DateTime<Utc> {
    let today = Utc::now().date_naive().and_time(NaiveTime::MIN).and_utc();
    today + Days::days(days)
}

/// `hour:minute` UTC, `days` from today.
pub fn at(days: i64, hour: u32, minute: u32) -> DateTime<Utc> {
    day(days) + Days::hours(hour.into()) + Days::minutes(minute.into())
}

/// Local wall-clock time in `zone`, as an instant.
pub fn local(zone: Tz, date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    zone.from_local_datetime(&date.and_hms_opt(hour, minute, 0).expect("time"))
        .single()
        .expect("unambiguous local time")
        .with_timezone(&Utc)
}

pub fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
    Span::from_instants(start, end)
}

/// A change of a booking's time only.
pub fn moved_to(start: DateTime<Utc>, end: DateTime<Utc>) -> BookingPatch {
    BookingPatch {
        start: Some(start.to_rfc3339()),
        end: Some(end.to_rfc3339()),
        ..BookingPatch::default()
    }
}

/// A timed booking request.
pub fn timed(title: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> BookingPatch {
    BookingPatch {
        title: Some(title.to_owned()),
        ..moved_to(start, end)
    }
}

/// iCalendar UTC date-time text.
pub fn ics_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The VEVENT lines of one event, with `extra` properties (RRULE, TRANSP, …).
pub fn vevent(uid: &str, start: DateTime<Utc>, end: DateTime<Utc>, extra: &[&str]) -> String {
    let mut lines = vec![
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{uid}"),
        "DTSTAMP:20250101T000000Z".to_owned(),
        format!("DTSTART:{}", ics_time(start)),
        format!("DTEND:{}", ics_time(end)),
        format!("SUMMARY:{uid}"),
    ];
    lines.extend(extra.iter().map(|l| (*l).to_owned()));
    lines.push("END:VEVENT".to_owned());
    lines.join("\r\n") + "\r\n"
}

/// A VCALENDAR around the given VEVENT texts.
pub fn calendar(events: &[String]) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calgate//engine tests//EN\r\n{}END:VCALENDAR\r\n",
        events.concat()
    )
}

/// A calendar of one event.
pub fn event(uid: &str, start: DateTime<Utc>, end: DateTime<Utc>, extra: &[&str]) -> String {
    calendar(&[vevent(uid, start, end, extra)])
}
