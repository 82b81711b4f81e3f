//! Harness pieces shared by the benches: a stall watchdog, CPU time, a
//! deterministic RNG, percentiles and machine facts. Each bench uses a subset.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Steps completed so far (requests, writes), watched by [`watchdog`].
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Records one step of progress.
pub fn tick() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// Ends the process if nothing progresses for `stall_after`: a wedged server can
/// block every runtime thread (client timers included), so only a plain OS thread
/// can still notice. `exit` skips destructors, so it removes `data_dir` itself.
pub fn watchdog(name: &'static str, data_dir: PathBuf, stall_after: Duration) {
    std::thread::spawn(move || {
        let mut last = PROGRESS.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= stall_after {
                eprintln!(
                    "calgate {name} bench: STALLED: no progress for {} s after {now} steps; \
                     inspect with `gdb -p {} -batch -ex 'thread apply all bt'` while it hangs.",
                    stall_after.as_secs(),
                    std::process::id()
                );
                let _ = std::fs::remove_dir_all(&data_dir);
                std::process::exit(2);
            }
        }
    });
}

/// CPU time (user + system) used by this process so far, from `/proc/self/stat`.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15, in USER_HZ (100 on Linux) ticks.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// splitmix64: deterministic, dependency-free, good enough to spread a workload.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut samples: Vec<Duration>) -> Vec<Duration> {
    samples.sort_unstable();
    samples
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Cores, CPU model, OS and architecture, for the report header.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "{cores} cores (nproc), {cpu}, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
