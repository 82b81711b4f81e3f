//! Microsoft Graph import against the Graph mock: delta rounds, incremental
//! changes, expired tokens, 401 refresh, throttling, and rendering of `showAs`.

use calgate_test_mocks as providers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use calgate::ical::expand::{ExpandOptions, expand};
use calgate::ical::parse::parse;
use calgate::model::{BusyKind, Span};
use calgate::providers::microsoft::{GraphApi, render};
use calgate::providers::{
    Cursor, FetchMode, Fetched, ItemChange, ProviderError, RenderContext, TokenSource,
};
use chrono::{DateTime, TimeZone, Utc};
use providers::Fault;
use providers::graph::{DEFAULT_CALENDAR_ID, GraphMock};
use providers::oauth::OAuthServer;
use serde_json::{Value, json};

/// Hands out tokens the mock issued; a forced refresh asks the mock for a new one
/// (or, when `refresh_works` is off, returns one the mock never issued).
struct TestTokens {
    oauth: OAuthServer,
    current: Mutex<String>,
    forced: AtomicUsize,
    refresh_works: bool,
}

impl TestTokens {
    fn new(mock: &GraphMock) -> TestTokens {
        TestTokens {
            oauth: mock.oauth().clone(),
            current: Mutex::new(mock.oauth().issue_access_token_for_test()),
            forced: AtomicUsize::new(0),
            refresh_works: true,
        }
    }
}

impl TokenSource for TestTokens {
    fn access_token(
        &self,
        force_refresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send + '_>> {
        Box::pin(async move {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if force_refresh {
                self.forced.fetch_add(1, Ordering::SeqCst);
                *current = if self.refresh_works {
                    self.oauth.issue_access_token_for_test()
                } else {
                    "never-issued".to_owned()
                };
            }
            Ok(current.clone())
        })
    }
}

fn api(mock: &GraphMock) -> GraphApi {
    calgate::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    GraphApi::new(mock.base_url(), http)
}

fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2030, 5, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2030, 7, 1, 0, 0, 0).unwrap(),
    )
}

fn event(subject: &str, day: u32, hour: u32) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": format!("2030-05-{day:02}T{hour:02}:00:00"), "timeZone": "UTC"},
        "end": {"dateTime": format!("2030-05-{day:02}T{hour:02}:30:00"), "timeZone": "UTC"},
        "showAs": "busy",
    })
}

fn ids(items: &[ItemChange]) -> Vec<&str> {
    let mut v: Vec<&str> = items.iter().map(|i| i.item.as_str()).collect();
    v.sort_unstable();
    v
}

async fn full_round(api: &GraphApi, tokens: &TestTokens) -> (Vec<ItemChange>, Cursor) {
    match api
        .fetch(
            tokens,
            DEFAULT_CALENDAR_ID,
            &Cursor::default(),
            FetchMode::Incremental,
            window(),
        )
        .await
        .expect("full round")
    {
        Fetched::Full { items, cursor } => (items, cursor),
        other => panic!("expected Full, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_round_follows_every_page_and_ends_with_a_delta_link() {
    let mock = GraphMock::start().await;
    mock.insert_empty_pages(true);
    mock.replay_duplicates(true);
    let mut expected = Vec::new();
    for i in 0..7 {
        expected.push(mock.put_event(DEFAULT_CALENDAR_ID, event(&format!("e{i}"), 10 + i, 9)));
    }
    // Outside the window: not part of the view.
    mock.put_event(
        DEFAULT_CALENDAR_ID,
        json!({"subject": "later",
            "start": {"dateTime": "2030-08-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-08-01T10:00:00", "timeZone": "UTC"}}),
    );
    let api = api(&mock).with_page_size(3);
    let tokens = TestTokens::new(&mock);
    let (items, cursor) = full_round(&api, &tokens).await;

    expected.sort();
    assert_eq!(
        ids(&items),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(items.iter().all(|i| i.series == i.item && i.body.is_some()));
    let token = cursor.token.expect("delta link stored");
    assert!(
        token.starts_with(&mock.base_url()) && token.contains("$deltatoken="),
        "{token}"
    );

    let requests = mock.requests();
    // 7 items in pages of 3, plus the empty page: at least 4 requests.
    assert!(requests.len() >= 4, "{}", requests.len());
    let first = &requests[0];
    assert_eq!(
        first.path,
        format!(
            "/v1.0/me/calendars/{}/calendarView/delta",
            calgate::providers::path_segment(DEFAULT_CALENDAR_ID)
        )
    );
    assert_eq!(
        first.query_param("startDateTime"),
        Some("2030-05-01T00:00:00Z")
    );
    assert_eq!(
        first.query_param("endDateTime"),
        Some("2030-07-01T00:00:00Z")
    );
    for r in &requests {
        let prefer = r.header("prefer").unwrap_or("");
        assert!(prefer.contains("odata.maxpagesize=3"), "{prefer}");
        assert!(!prefer.contains("outlook.timezone"), "{prefer}");
    }
    for r in &requests[1..] {
        assert!(
            r.query_param("startDateTime").is_none(),
            "links are followed verbatim"
        );
        assert!(r.query_param("$skiptoken").is_some());
    }

    // The items render: UTC times straight from Graph.
    let ctx = RenderContext {
        default_zone: chrono_tz::Europe::Berlin,
        source: "ms",
    };
    let text = render(&[items[0].body.clone().expect("body")], &ctx).expect("rendered");
    assert!(text.contains("DTSTART:203005"), "{text}");
}

#[tokio::test]
async fn incremental_rounds_bring_upserts_and_removals() {
    let mock = GraphMock::start().await;
    let keep = mock.put_event(DEFAULT_CALENDAR_ID, event("keep", 10, 9));
    let change = mock.put_event(DEFAULT_CALENDAR_ID, event("change", 11, 9));
    let gone = mock.put_event(DEFAULT_CALENDAR_ID, event("gone", 12, 9));
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    let (items, cursor) = full_round(&api, &tokens).await;
    assert_eq!(items.len(), 3);

    assert!(mock.patch_event(&change, json!({"subject": "changed", "showAs": "oof"})));
    assert!(mock.delete_event(&gone));
    let added = mock.put_event(DEFAULT_CALENDAR_ID, event("added", 13, 9));

    let (changes, next) = match api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &cursor,
            FetchMode::Incremental,
            window(),
        )
        .await
        .expect("delta")
    {
        Fetched::Delta { changes, cursor } => (changes, cursor),
        other => panic!("expected Delta, got {other:?}"),
    };
    let find = |id: &str| changes.iter().find(|c| c.item == id);
    assert!(find(&keep).is_none(), "unchanged items stay out");
    assert_eq!(
        find(&gone).map(|c| c.body.is_none()),
        Some(true),
        "{changes:?}"
    );
    let changed = find(&change)
        .and_then(|c| c.body.clone())
        .expect("changed item");
    assert_eq!(changed["subject"], "changed");
    assert!(find(&added).is_some_and(|c| c.body.is_some()));
    assert_eq!(changes.len(), 3);
    assert_ne!(next.token, cursor.token);
    // The round started from the stored deltaLink, verbatim.
    let last = mock.requests().pop().expect("request");
    assert!(last.query_param("$deltatoken").is_some());
    assert!(last.query_param("startDateTime").is_none());

    // Nothing changed since: an empty delta.
    match api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &next,
            FetchMode::Incremental,
            window(),
        )
        .await
        .expect("empty delta")
    {
        Fetched::Delta { changes, .. } => assert!(changes.is_empty()),
        Fetched::Unchanged { .. } => {}
        other => panic!("expected an empty delta, got {other:?}"),
    }

    // Full mode ignores the cursor.
    match api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &next,
            FetchMode::Full,
            window(),
        )
        .await
        .expect("full")
    {
        Fetched::Full { items, .. } => assert_eq!(items.len(), 3),
        other => panic!("expected Full, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_delta_token_asks_for_a_full_sync() {
    let mock = GraphMock::start().await;
    mock.put_event(DEFAULT_CALENDAR_ID, event("a", 10, 9));
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    let (_, cursor) = full_round(&api, &tokens).await;
    mock.expire_delta_tokens();
    let r = api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &cursor,
            FetchMode::Incremental,
            window(),
        )
        .await;
    assert!(matches!(r, Err(ProviderError::CursorExpired)), "{r:?}");

    // The documented reset shape (410 + Location) means the same.
    let (_, cursor) = full_round(&api, &tokens).await;
    mock.set_sync_reset_location(true);
    mock.expire_delta_tokens();
    let r = api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &cursor,
            FetchMode::Incremental,
            window(),
        )
        .await;
    assert!(matches!(r, Err(ProviderError::CursorExpired)), "{r:?}");
}

#[tokio::test]
async fn a_401_refreshes_once_and_a_second_401_needs_reauth() {
    let mock = GraphMock::start().await;
    mock.put_event(DEFAULT_CALENDAR_ID, event("a", 10, 9));
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    mock.oauth().expire_access_tokens();
    let (items, _) = full_round(&api, &tokens).await;
    assert_eq!(items.len(), 1);
    assert_eq!(tokens.forced.load(Ordering::SeqCst), 1);
    let statuses = mock.requests().len();
    assert_eq!(statuses, 2, "one rejected call, one replay");

    let broken = TestTokens {
        refresh_works: false,
        ..TestTokens::new(&mock)
    };
    mock.oauth().expire_access_tokens();
    let r = api
        .fetch(
            &broken,
            DEFAULT_CALENDAR_ID,
            &Cursor::default(),
            FetchMode::Full,
            window(),
        )
        .await;
    assert!(matches!(r, Err(ProviderError::Reauth(_))), "{r:?}");
    assert_eq!(broken.forced.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn throttling_is_retryable_after_the_fractional_delay() {
    let mock = GraphMock::start().await;
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    mock.faults().push(Fault::status_retry_after(429, "2.128"));
    match api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &Cursor::default(),
            FetchMode::Full,
            window(),
        )
        .await
    {
        Err(ProviderError::Retryable {
            retry_after: Some(d),
            message,
        }) => {
            assert_eq!(d, Duration::from_millis(2128));
            assert!(message.contains("429"), "{message}");
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    mock.faults().push(Fault::status_retry_after(503, "7"));
    assert!(matches!(
        api.fetch(&tokens, DEFAULT_CALENDAR_ID, &Cursor::default(), FetchMode::Full, window()).await,
        Err(ProviderError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(7)
    ));
    mock.faults().push(Fault::status(403));
    assert!(matches!(
        api.fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &Cursor::default(),
            FetchMode::Full,
            window()
        )
        .await,
        Err(ProviderError::Permanent(_))
    ));
}

#[tokio::test]
async fn calendars_are_listed_with_default_and_write_access() {
    let mock = GraphMock::start().await;
    mock.add_calendar("AAMkAGFAKE-holidays+/=", "Holidays", false);
    mock.set_calendar_can_edit("AAMkAGFAKE-holidays+/=", false);
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    let calendars = api.list_calendars(&tokens).await.expect("calendars");
    assert_eq!(calendars.len(), 2);
    let default = calendars.iter().find(|c| c.primary).expect("default");
    assert_eq!(default.id, DEFAULT_CALENDAR_ID);
    assert!(default.writable);
    let holidays = calendars
        .iter()
        .find(|c| c.name == "Holidays")
        .expect("holidays");
    assert!(!holidays.primary && !holidays.writable);

    // Ids with `/`, `+` and `=` survive the path.
    mock.put_event("AAMkAGFAKE-holidays+/=", event("holiday", 20, 0));
    let r = api
        .fetch(
            &tokens,
            "AAMkAGFAKE-holidays+/=",
            &Cursor::default(),
            FetchMode::Full,
            window(),
        )
        .await
        .expect("fetch");
    assert!(
        matches!(r, Fetched::Full { ref items, .. } if items.len() == 1),
        "{r:?}"
    );
}

fn busy_of(item: Value) -> Option<(BusyKind, String)> {
    let ctx = RenderContext {
        default_zone: chrono_tz::Europe::Berlin,
        source: "ms",
    };
    let text = render(&[item], &ctx)?;
    let cal = parse(&text).expect("parses");
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
    let (occ, diags) = expand(
        &cal,
        &ExpandOptions {
            default_zone: chrono_tz::Europe::Berlin,
            window: Span::new(t("2030-05-01T00:00:00Z"), t("2030-06-01T00:00:00Z")),
        },
    );
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(occ.len(), 1, "{text}");
    Some((occ[0].busy, text))
}

#[test]
fn show_as_maps_to_busy_kinds() {
    let base = |show_as: &str| {
        json!({
            "id": format!("id-{show_as}"),
            "iCalUId": format!("uid-{show_as}"),
            "subject": "s",
            "showAs": show_as,
            "isCancelled": false,
            "start": {"dateTime": "2030-05-14T08:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-14T09:00:00.0000000", "timeZone": "UTC"},
        })
    };
    for (show_as, kind) in [
        ("free", BusyKind::Free),
        ("tentative", BusyKind::Tentative),
        ("busy", BusyKind::Busy),
        ("oof", BusyKind::Oof),
        ("workingElsewhere", BusyKind::Busy),
        ("unknown", BusyKind::Free),
    ] {
        let (busy, text) = busy_of(base(show_as)).expect("rendered");
        assert_eq!(busy, kind, "{show_as}: {text}");
        assert!(text.contains(&format!("UID:uid-{show_as}\r\n")), "{text}");
        assert!(
            text.contains(&format!("X-CALGATE-REMOTE-ID:id-{show_as}\r\n")),
            "{text}"
        );
    }

    let mut cancelled = base("busy");
    cancelled["isCancelled"] = json!(true);
    assert!(busy_of(cancelled).is_none());

    let mut declined = base("busy");
    declined["responseStatus"] = json!({"response": "declined"});
    assert_eq!(busy_of(declined).map(|b| b.0), Some(BusyKind::Free));

    // Our own exported booking comes back marked and never blocks.
    let mut ours = base("busy");
    ours["singleValueExtendedProperties"] = json!([
        {"id": "String {66f5a359-4659-4830-9070-00040ec6ac6e} Name gatewayBookingId", "value": "bk-42"}
    ]);
    let (busy, text) = busy_of(ours).expect("rendered");
    assert_eq!(busy, BusyKind::Free);
    assert!(text.contains("X-CALGATE-BOOKING:bk-42\r\n"), "{text}");

    // Windows and IANA zones; all-day dates from the local date.
    let mut zoned = base("busy");
    zoned["start"] =
        json!({"dateTime": "2030-05-14T10:00:00.0000000", "timeZone": "W. Europe Standard Time"});
    zoned["end"] = json!({"dateTime": "2030-05-14T11:00:00.0000000", "timeZone": "Europe/Berlin"});
    let (_, text) = busy_of(zoned).expect("rendered");
    assert!(text.contains("DTSTART:20300514T080000Z\r\n"), "{text}");
    assert!(text.contains("DTEND:20300514T090000Z\r\n"), "{text}");
    let mut all_day = base("oof");
    all_day["isAllDay"] = json!(true);
    all_day["start"] =
        json!({"dateTime": "2030-05-27T00:00:00.0000000", "timeZone": "Pacific Standard Time"});
    all_day["end"] =
        json!({"dateTime": "2030-05-30T00:00:00.0000000", "timeZone": "Pacific Standard Time"});
    let (busy, text) = busy_of(all_day).expect("rendered");
    assert_eq!(busy, BusyKind::Oof);
    assert!(text.contains("DTSTART;VALUE=DATE:20300527\r\n"), "{text}");
    assert!(text.contains("DTEND;VALUE=DATE:20300530\r\n"), "{text}");
}

#[tokio::test]
async fn links_to_other_hosts_are_not_followed() {
    let mock = GraphMock::start().await;
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    let cursor = Cursor {
        token: Some("https://attacker.example/v1.0/me/calendarView/delta?$deltatoken=x".into()),
        ..Cursor::default()
    };
    let r = api
        .fetch(
            &tokens,
            DEFAULT_CALENDAR_ID,
            &cursor,
            FetchMode::Incremental,
            window(),
        )
        .await;
    // A stored link to elsewhere (say, a reconfigured base URL) means: start over.
    assert!(matches!(r, Err(ProviderError::CursorExpired)), "{r:?}");
    assert!(mock.requests().is_empty());
}

/// Occurrences and exceptions of one Graph series (Outlook gives exceptions the
/// series' `iCalUId`) become one object: one UID, one VEVENT per instance with a
/// RECURRENCE-ID, grouped by `seriesMasterId`. Before, every instance was its own
/// object, so two objects of the calendar could carry the same UID (the store
/// refuses the second, and its busy time went missing).
#[tokio::test]
async fn a_series_is_one_object_with_one_uid() {
    let mock = GraphMock::start().await;
    let single = mock.put_event(DEFAULT_CALENDAR_ID, event("Single", 15, 10));
    let master = mock.put_event(
        DEFAULT_CALENDAR_ID,
        json!({
            "subject": "Weekly",
            "start": {"dateTime": "2030-05-06T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-06T14:30:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "numbered", "startDate": "2030-05-06", "numberOfOccurrences": 4},
            },
        }),
    );
    let series_uid = mock.event(DEFAULT_CALENDAR_ID, &master).unwrap()["iCalUId"]
        .as_str()
        .unwrap()
        .to_owned();
    for (day, hour) in [(13, 16), (20, 17)] {
        mock.put_event(
            DEFAULT_CALENDAR_ID,
            json!({
                "type": "exception", "seriesMasterId": master, "iCalUId": series_uid,
                "originalStart": format!("2030-05-{day:02}T14:00:00Z"),
                "subject": "Weekly (moved)",
                "start": {"dateTime": format!("2030-05-{day:02}T{hour}:00:00"), "timeZone": "UTC"},
                "end": {"dateTime": format!("2030-05-{day:02}T{hour}:30:00"), "timeZone": "UTC"},
            }),
        );
    }
    let api = api(&mock);
    let tokens = TestTokens::new(&mock);
    let (items, _) = full_round(&api, &tokens).await;
    assert_eq!(items.len(), 5, "{items:?}");
    let mut series: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
    for i in &items {
        series
            .entry(i.series.as_str())
            .or_default()
            .push(i.body.clone().expect("live"));
    }
    assert_eq!(series.len(), 2, "{:?}", series.keys());
    assert_eq!(series[single.as_str()].len(), 1);
    assert_eq!(
        series[master.as_str()].len(),
        4,
        "occurrences and exceptions"
    );

    let ctx = RenderContext {
        default_zone: chrono_tz::Europe::Berlin,
        source: "ms",
    };
    let text = render(&series[master.as_str()], &ctx).expect("rendered");
    let cal = parse(&text).expect("parses");
    assert_eq!(cal.events.len(), 4, "{text}");
    // The mock's occurrences carry per-occurrence iCalUIds (as Graph documents),
    // the exceptions the series' one: one UID for all, the series master's id.
    assert!(cal.events.iter().all(|e| e.uid == master), "{text}");
    assert_eq!(text.matches("RECURRENCE-ID:").count(), 4, "{text}");
    assert!(
        text.contains("RECURRENCE-ID:20300513T140000Z\r\n"),
        "{text}"
    );
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
    let (occ, diags) = expand(
        &cal,
        &ExpandOptions {
            default_zone: chrono_tz::Europe::Berlin,
            window: Span::new(t("2030-05-01T00:00:00Z"), t("2030-06-01T00:00:00Z")),
        },
    );
    assert!(diags.is_empty(), "{diags:?}");
    let mut starts: Vec<i64> = occ.iter().map(|o| o.span.start).collect();
    starts.sort_unstable();
    assert_eq!(
        starts,
        [
            t("2030-05-06T14:00:00Z"),
            t("2030-05-13T16:00:00Z"),
            t("2030-05-20T17:00:00Z"),
            t("2030-05-27T14:00:00Z"),
        ]
    );

    // Instances that all carry one iCalUId keep it (Outlook's UID for the series).
    let exceptions: Vec<Value> = series[master.as_str()]
        .iter()
        .filter(|v| v["type"] == "exception")
        .cloned()
        .collect();
    assert_eq!(exceptions.len(), 2);
    let text = render(&exceptions, &ctx)
        .expect("rendered")
        .replace("\r\n ", ""); // unfolded
    assert_eq!(
        text.matches(&format!("UID:{series_uid}\r\n")).count(),
        2,
        "{text}"
    );
    // A single event keeps its own iCalUId and has no RECURRENCE-ID.
    let single_item = &series[single.as_str()][0];
    let text = render(std::slice::from_ref(single_item), &ctx)
        .expect("rendered")
        .replace("\r\n ", "");
    let own = single_item["iCalUId"].as_str().unwrap();
    assert!(text.contains(&format!("UID:{own}\r\n")), "{text}");
    assert!(!text.contains("RECURRENCE-ID"), "{text}");

    // An all-day series: RECURRENCE-ID is the original date, in the series' zone.
    let all_day = json!({
        "id": "occ-1", "type": "occurrence", "seriesMasterId": "master-1", "isAllDay": true,
        "iCalUId": "u", "originalStart": "2030-05-20T22:00:00Z",
        "originalStartTimeZone": "W. Europe Standard Time",
        "start": {"dateTime": "2030-05-21T00:00:00.0000000", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2030-05-22T00:00:00.0000000", "timeZone": "W. Europe Standard Time"},
    });
    let text = render(&[all_day], &ctx).expect("rendered");
    assert!(
        text.contains("RECURRENCE-ID;VALUE=DATE:20300521\r\n"),
        "{text}"
    );
}
