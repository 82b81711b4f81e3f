//! Fuzzing the parsers that read what clients and feeds send (issue 13): the
//! iCalendar reader and recurrence expander, the DAV XML request parsers and the
//! booking JSON reader, on generated hostile input and on mutations of the real
//! clients' fixtures. Every input must be answered without a panic, within a
//! bounded time and a bounded amount of memory.
//!
//! The number of cases per target is `CALGATE_FUZZ_CASES` (default 200, a few
//! seconds each in CI); a longer local run: `CALGATE_FUZZ_CASES=20000 cargo test
//! --release --test fuzz`. Failing inputs are shrunk and reported by proptest.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use calgate::calendars::Horizon;
use calgate::ical::expand::{ExpandOptions, ExpandPlan, MAX_INSTANCES, expand_within_budget};
use calgate::ical::parse::parse;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Counts the bytes each thread has allocated and not freed, and the peak, so a
/// test measures what one parse costs on its own thread while others run.
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // try_with: during thread teardown the counters may be gone already.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are const-initialised thread-locals of plain integers, which never
// allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Most memory one input may take while it is read (the request body itself is
/// at most 256 KiB; a feed is cut into per-event objects).
const MEMORY_BUDGET: isize = 96 << 20;
/// Most time one input may take, generous for an unoptimised test build on a
/// busy 2-core machine: an unbounded input takes minutes.
const TIME_BUDGET: Duration = Duration::from_secs(5);

/// Runs `f`, checking its time and peak memory on this thread.
fn within_budget<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let clock = Instant::now();
    let out = f();
    let elapsed = clock.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    prop_assert!(
        elapsed < TIME_BUDGET,
        "{what} took {elapsed:?} (budget {TIME_BUDGET:?})"
    );
    prop_assert!(
        peak < MEMORY_BUDGET,
        "{what} took {} MiB (budget {} MiB)",
        peak >> 20,
        MEMORY_BUDGET >> 20
    );
    Ok(out)
}

fn runner() -> TestRunner {
    let cases = std::env::var("CALGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn fixtures(dir: &str, ext: &str) -> Vec<String> {
    let path = format!("{}/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    out.sort();
    out
}

/// Edits of a text: lines dropped, repeated, swapped or cut, bytes replaced.
#[derive(Debug, Clone)]
enum Edit {
    DropLine(usize),
    RepeatLine(usize, usize),
    CutLine(usize, usize),
    InsertLine(usize, String),
    ReplaceByte(usize, u8),
}

fn edits(dictionary: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::DropLine),
        (any::<usize>(), 1usize..300).prop_map(|(l, n)| Edit::RepeatLine(l, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(l, at)| Edit::CutLine(l, at)),
        (any::<usize>(), prop::sample::select(dictionary))
            .prop_map(|(l, s)| Edit::InsertLine(l, s.to_owned())),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::ReplaceByte(at, b)),
    ];
    prop::collection::vec(edit, 1..8)
}

fn mutate(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut bytes_edits = Vec::new();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::DropLine(l) => {
                lines.remove(l % n);
            }
            Edit::RepeatLine(l, times) => {
                let line = lines[l % n].clone();
                for _ in 0..*times {
                    lines.insert(l % n, line.clone());
                }
            }
            Edit::CutLine(l, at) => {
                let line = &mut lines[l % n];
                let mut at = at % (line.len() + 1);
                while !line.is_char_boundary(at) {
                    at -= 1;
                }
                line.truncate(at);
            }
            Edit::InsertLine(l, s) => lines.insert(l % n, s.clone()),
            Edit::ReplaceByte(at, b) => bytes_edits.push((*at, *b)),
        }
    }
    let mut bytes = lines.join("\r\n").into_bytes();
    for (at, b) in bytes_edits {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] = b;
        }
    }
    bytes
}

/// Lines a hostile calendar might add.
const ICAL_LINES: &[&str] = &[
    "RRULE:FREQ=SECONDLY",
    "RRULE:FREQ=MINUTELY;BYSECOND=1,2,3,4,5,6,7,8,9,10",
    "RRULE:FREQ=YEARLY;BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;BYMONTHDAY=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23",
    "RRULE:FREQ=DAILY;COUNT=4000000000",
    "RRULE:FREQ=HOURLY;INTERVAL=0",
    "RRULE:FREQ=WEEKLY;BYSETPOS=-366",
    "DTSTART:00000101T000000Z",
    "DTSTART:99991231T235959Z",
    "DTSTART;VALUE=DATE:19000101",
    "DTSTART;TZID=Nowhere/Land:20270101T000000",
    "DTEND:19000101T000000Z",
    "DURATION:P999999999999999999W",
    "DURATION:PT9999999999999999H",
    "DURATION:-P36600D",
    "RDATE;VALUE=PERIOD:20270101T000000Z/P999999999D",
    "EXDATE:20270101T000000Z,20270102T000000Z,20270103T000000Z",
    "RECURRENCE-ID;RANGE=THISANDFUTURE:19000101T000000Z",
    "SEQUENCE:99999999999999999999",
    "BEGIN:VEVENT",
    "END:VEVENT",
    "BEGIN:VTIMEZONE",
    "TZID:Nowhere/Land",
    "BEGIN:STANDARD",
    "DTSTART:16010101T000000",
    "RRULE:FREQ=SECONDLY",
    "TZOFFSETFROM:+2359",
    "TZOFFSETTO:-2359",
    "END:STANDARD",
    "END:VTIMEZONE",
];

/// A generated series: random rule parts over the whole range of dates.
fn series() -> impl Strategy<Value = String> {
    let freq = prop::sample::select(
        &[
            "SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY",
        ][..],
    );
    let by = prop::sample::subsequence(
        &[
            "BYSECOND=0,15,30,45",
            "BYMINUTE=0,30",
            "BYHOUR=9,17",
            "BYDAY=MO,WE,FR",
            "BYDAY=-1SU",
            "BYMONTHDAY=1,-1,31",
            "BYYEARDAY=1,-1,200",
            "BYWEEKNO=1,53",
            "BYMONTH=2",
            "BYSETPOS=1,-1",
            "WKST=SU",
        ][..],
        0..4,
    );
    let ends = prop_oneof![
        Just(String::new()),
        (1u64..5_000_000_000).prop_map(|n| format!(";COUNT={n}")),
        (1900i32..2300).prop_map(|y| format!(";UNTIL={y:04}0101T000000Z")),
    ];
    (
        freq,
        1u32..2_000,
        by,
        ends,
        0i32..10_000,
        1usize..6,
        prop::sample::select(&["PT1M", "PT1H", "P1D", "P36600D", "PT0S"][..]),
    )
        .prop_map(|(freq, interval, by, ends, year, rules, duration)| {
            let mut rule = format!("FREQ={freq};INTERVAL={interval}{ends}");
            for part in by {
                rule.push(';');
                rule.push_str(part);
            }
            let mut event = format!(
                "BEGIN:VEVENT\r\nUID:g\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:{year:04}0101T093000Z\r\nDURATION:{duration}\r\n"
            );
            for _ in 0..rules {
                event.push_str(&format!("RRULE:{rule}\r\n"));
            }
            event.push_str("END:VEVENT\r\n");
            format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:fuzz\r\n{event}END:VCALENDAR\r\n")
        })
}

fn expand_all(text: &[u8]) -> Result<(), TestCaseError> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Ok(());
    };
    let window = Horizon::default().window(chrono::Utc::now());
    within_budget("parse and expand", || {
        if let Ok(cal) = parse(text) {
            let e = expand_within_budget(
                &cal,
                &ExpandOptions {
                    default_zone: chrono_tz::Europe::Paris,
                    window,
                },
            );
            assert!(e.occurrences.len() <= MAX_INSTANCES);
        }
    })?;
    within_budget("CalDAV expand", || {
        if let Ok(plan) = ExpandPlan::new(text) {
            let _ = plan.expand(window, chrono_tz::Europe::Paris);
        }
    })
}

#[test]
fn icalendar_generated_series() {
    runner()
        .run(&series(), |text| expand_all(text.as_bytes()))
        .expect("every generated series is read within budget");
}

#[test]
fn icalendar_mutated_real_calendars() {
    let corpus = fixtures("recurrence", "ics");
    assert!(corpus.len() > 50, "the recurrence fixtures are there");
    runner()
        .run(&(0..corpus.len(), edits(ICAL_LINES)), |(i, edits)| {
            expand_all(&mutate(&corpus[i], &edits))
        })
        .expect("every mutated calendar is read within budget");
}

/// Lines a hostile DAV client might add.
const XML_LINES: &[&str] = &[
    "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]>",
    "<!ENTITY x SYSTEM \"file:///etc/passwd\">",
    "<D:prop><D:prop><D:prop><D:prop><D:prop><D:prop><D:prop><D:prop>",
    "</D:prop></D:prop>",
    "<C:time-range start=\"00000101T000000Z\" end=\"99991231T235959Z\"/>",
    "<C:time-range start=\"20270101T000000Z\"/>",
    "<C:comp-filter name=\"VEVENT\"><C:comp-filter name=\"VEVENT\">",
    "<C:text-match collation=\"i;unknown\" negate-condition=\"maybe\">x</C:text-match>",
    "<D:href>/%00/../../</D:href>",
    "<D:limit><D:nresults>-1</D:nresults></D:limit>",
    "<x xmlns=\"\">",
    "&#0;&#xD800;",
];

#[test]
fn dav_xml_mutated_client_requests() {
    let corpus = fixtures("dav/requests", "xml");
    assert!(corpus.len() > 50, "the DAV request fixtures are there");
    runner()
        .run(&(0..corpus.len(), edits(XML_LINES)), |(i, edits)| {
            let body = mutate(&corpus[i], &edits);
            within_budget("DAV XML", || {
                use calgate::dav::xml::request::*;
                let _ = parse_propfind(&body);
                let _ = parse_proppatch(&body);
                let _ = parse_mkcalendar(&body);
                let _ = parse_mkcol(&body);
                let _ = calgate::dav::xml::report::parse_report(&body);
            })
        })
        .expect("every mutated request is parsed within budget");
}

#[test]
fn dav_xml_generated_nesting_and_breadth() {
    let shape = (1usize..5_000, 1usize..5_000, any::<bool>());
    runner()
        .run(&shape, |(depth, breadth, report)| {
            let mut body = String::from(if report {
                "<C:calendar-query xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\"><D:prop>"
            } else {
                "<D:propfind xmlns:D=\"DAV:\"><D:prop>"
            });
            body.push_str(&"<D:x>".repeat(depth));
            body.push_str(&"</D:x>".repeat(depth));
            body.push_str(&"<D:getetag/>".repeat(breadth));
            body.push_str(if report {
                "</D:prop></C:calendar-query>"
            } else {
                "</D:prop></D:propfind>"
            });
            within_budget("DAV XML", || {
                let _ = calgate::dav::xml::request::parse_propfind(body.as_bytes());
                let _ = calgate::dav::xml::report::parse_report(body.as_bytes());
            })
        })
        .expect("deep and broad requests are parsed within budget");
}

/// JSON values shaped like booking writes: the real field names with any value.
fn booking_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::String),
        prop::sample::select(
            &[
                "2027-06-30T23:59:60Z",
                "2027-01-01T10:00:00+01:00",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "2027-01-01",
                "Europe/Paris",
                "cancelled",
                "a@b.c\"><script>",
            ][..]
        )
        .prop_map(|s| serde_json::Value::String(s.to_owned())),
    ];
    let value = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop::sample::select(
        &[
            "start",
            "end",
            "all_day",
            "time_zone",
            "title",
            "service",
            "customer",
            "location",
            "notes",
            "status",
            "metadata",
            "allow_conflict",
            "id",
            "sequence",
        ][..],
    );
    prop::collection::btree_map(field, value, 0..14).prop_map(|m| {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

#[test]
fn booking_json_generated_writes() {
    runner()
        .run(&booking_json(), |value| {
            let body = serde_json::to_vec(&value).expect("serialisable");
            within_budget("booking JSON", || {
                let _ = calgate::api::json::parse_write(&body);
            })
        })
        .expect("every booking body is read within budget");
}

#[test]
fn booking_json_mutated_text() {
    const BODY: &str = "{\n\"start\":\"2026-12-01T10:00:00+01:00\",\n\"end\":\"2026-12-01T10:45:00+01:00\",\n\"title\":\"Haircut\",\n\"customer\":{\"name\":\"Ana\",\"email\":\"ana@example.com\"},\n\"metadata\":{\"a\":[1,2,{\"b\":null}]}\n}";
    const JSON_LINES: &[&str] = &[
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "\"\\ud800\"",
        "1e999999",
        "\"start\":null,",
        "\"metadata\":{\"x\":\"",
    ];
    runner()
        .run(&edits(JSON_LINES), |edits| {
            let body = mutate(BODY, &edits);
            within_budget("booking JSON", || {
                let _ = calgate::api::json::parse_write(&body);
            })
        })
        .expect("every mutated body is read within budget");
}
