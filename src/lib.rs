//! calgate: a CalDAV/iCal gateway for booking systems.
//!
//! Layout (one module per concern):
//! - [`config`]: `gateway.toml` schema and validation.
//! - [`model`] (crate `calgate-model`): the domain types and their invariants.
//! - [`store`]: sled persistence, key encoding, time index, change log.
//! - [`bookings`]: the booking engine (create/update/cancel with concurrency control).
//! - [`calendars`]: calendar sources and their iCalendar objects, expanded into the busy index.
//! - [`freebusy`]: merged busy time and conflict checks.
//! - [`conflicts`]: conflicts found after the fact, and their webhook.
//! - [`ical`] (crate `calgate-model`): the iCalendar codec: parsing, zones,
//!   recurrence within a budget, writing.
//! - [`feeds`]: .ics feed rendering and caching.
//! - [`auth`]: argon2 secrets and their verification.
//! - [`dav`]: CalDAV (RFC 4791/4918/6578) and scheduling between users (RFC 6638).
//! - [`api`]: the JSON booking API handlers.
//! - [`http`]: hyper server, routing, problem+json, conditional requests.
//! - [`export`]: bookings pushed to Google / Microsoft calendars (durable outbox).
//! - [`app`]: the shared state wiring these together.

/// Storage (crate `calgate-store`'s traits and backends; `store::Store` is
/// the shared handle on whichever backend runs, `store::SledStore` the
/// embedded default).
pub use calgate_engine::store;
/// The engines (crate `calgate-engine`).
pub use calgate_engine::{
    bookings, calendars, conflicts, connect, export, freebusy, scheduling, secrets, sync, tenants,
};
/// The lower layer (crate `calgate-model`), under the paths the modules above use.
pub use calgate_model::{ical, model};
/// Provider clients (crate `calgate-providers`).
pub use calgate_providers as providers;

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod dav;
pub mod feeds;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use app::App;
use config::Config;
use store::StoreError;

/// How often expired Idempotency-Keys are swept.
const IDEMPOTENCY_SWEEP: Duration = Duration::from_secs(3600);
/// How often recurring events are re-expanded as the busy horizon moves (daily, in
/// whole days: see [`calendars::Horizon::window`]).
const HORIZON_ROLL: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error("cannot listen on {addr}: {source} (is another server using it? pass --listen ADDR)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot start the background threads for syncs and exports: {0} (check the process's thread limit, ulimit -u)"
    )]
    Background(std::io::Error),
}

pub use providers::install_crypto_provider;

/// Caps glibc's malloc at 4 arenas; call first thing in `main`, before any
/// thread starts.
///
/// glibc gives a thread that meets contention an arena of its own, up to 8 per
/// core, and each arena keeps what its threads freed. The gateway's runtime,
/// blocking-pool and sled threads then hold memory in many arenas: in the
/// CalDAV side-by-side run (BENCHMARKS.md) the server's RSS reached 104 MiB by
/// default and 95 MiB with 4 arenas, with no request slower. 2 arenas saved more
/// (84 MiB) but made provider imports ~20 % slower. Other C libraries keep their
/// own policy.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; glibc documents it as
    // callable at any time, and M_ARENA_MAX as safe to lower while running.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        // A fixed mmap threshold: blocks of 8 MiB and more (argon2's 19 MiB
        // working memory per verification) are mapped and given back on free.
        // glibc otherwise raises the threshold after the first such free and
        // keeps later ones in the arenas: in the scale probe (BENCHMARKS.md)
        // 100 verifications left the RSS at 569 MiB instead of 24 MiB. Below
        // 8 MiB (every response buffer of the CalDAV workload) nothing changes.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

/// A gateway serving in the background of the current tokio runtime.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    roller: JoinHandle<()>,
    exporter: JoinHandle<()>,
    background: Background,
}

/// Nice value of the background threads: the kernel gives a request thread
/// (nice 0) about ten times their share of a busy CPU.
const BACKGROUND_NICE: libc::c_int = 10;

/// The runtime of the work no client waits on: source syncs and export
/// delivery. Its threads (blocking pool included) run at a lower OS priority,
/// so when 20,000 sources come due at once, booking and CalDAV requests still
/// get the CPU first. Shut down when the gateway stops.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn start() -> std::io::Result<Background> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(4),
            )
            .thread_name("calgate-background")
            .on_thread_start(lower_thread_priority)
            .enable_all()
            .build()?;
        Ok(Background(Some(runtime)))
    }

    fn spawn(
        &self,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        match &self.0 {
            Some(runtime) => runtime.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// Cancels what still runs there, waiting up to 5 s for blocking work.
    async fn stop(mut self) {
        if let Some(runtime) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(Duration::from_secs(5))
            })
            .await;
        }
    }
}

impl Drop for Background {
    /// Dropped without [`Background::stop`] (e.g. within a runtime): no waiting.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; on Linux, `who = 0` with
    // PRIO_PROCESS is the calling thread (nice is a per-thread attribute).
    // Raising one's own nice value needs no privilege; a failure leaves the
    // thread at normal priority, which is only slower for requests.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE);
    }
}

/// What an opened [`App`] does before it serves, whether behind a listener or
/// in process: finishes the tenant deletions a crash interrupted, and sends
/// again the conflict webhooks a restart interrupted.
pub async fn prepare(app: &App) -> Result<(), StoreError> {
    api::tenants::finish_interrupted_deletions(app).await?;
    app.conflicts.redeliver_pending(&app.config.tenants);
    Ok(())
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let app = Arc::new(App::open(config)?);
    prepare(&app).await?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(Arc::clone(&app), listener, async {
        let _ = signal.await;
    }));
    let store = app.store.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(IDEMPOTENCY_SWEEP);
        loop {
            tick.tick().await;
            match store.purge_idempotency(chrono::Utc::now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired idempotency keys swept"),
                Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
            }
        }
    });
    let roller = tokio::spawn(roll_horizon(Arc::clone(&app)));
    let background = Background::start().map_err(StartError::Background)?;
    let scheduler = background.spawn(sync::scheduler(Arc::clone(&app.sync)));
    let exporter = background.spawn(export::deliverer(Arc::clone(&app.export)));
    Ok(Running {
        addr,
        app,
        shutdown,
        server,
        sweeper,
        roller,
        scheduler,
        exporter,
        background,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and flushes the store.
    pub async fn stop(self) -> Result<(), StoreError> {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
        self.sweeper.abort();
        self.roller.abort();
        self.scheduler.abort();
        self.exporter.abort();
        // Wait until the background tasks have really let go of the store.
        let _ = self.sweeper.await;
        let _ = self.roller.await;
        let _ = self.scheduler.await;
        let _ = self.exporter.await;
        // Runs the scheduler started are cancelled with their runtime.
        self.background.stop().await;
        release(self.app).await
    }
}

/// The end of a gateway's life, behind a listener or in process: webhook
/// deliveries stop, the handles still held on the app (a finished
/// connection's task drops its own a moment after the server reports it
/// done) are waited for up to 5 s, and the store is flushed, so the database
/// and its lock are free when this returns and a new App can open it.
pub async fn release(app: Arc<App>) -> Result<(), StoreError> {
    // A webhook delivery may be waiting minutes for its next attempt.
    app.conflicts.stop_deliveries();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&app) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.store.flush().await
}

/// Keeps infinite and long rules materialised as time moves: whenever the horizon
/// has moved to a new day, recurring objects are re-expanded.
async fn roll_horizon(app: Arc<App>) {
    let mut tick = tokio::time::interval(HORIZON_ROLL);
    let mut rolled_for = None;
    loop {
        tick.tick().await;
        let window = app.calendars.horizon().window(chrono::Utc::now());
        if rolled_for == Some(window) {
            continue;
        }
        for tenant in app.tenants.all() {
            // A write like any other: a tenant deleted meanwhile gets nothing
            // written back (see `tenants`).
            let Some(live) = app.tenants.live(&tenant.id) else {
                continue;
            };
            let Ok(_writing) = live.write().await else {
                continue;
            };
            match app.calendars.rebuild(&live, true, false).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(tenant = %tenant.id, objects = n, "recurring events re-expanded")
                }
                Err(e) => tracing::warn!(tenant = %tenant.id, error = %e, "re-expansion failed"),
            }
        }
        rolled_for = Some(window);
    }
}
