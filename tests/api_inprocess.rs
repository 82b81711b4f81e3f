//! The booking API (and CalDAV) driven in process: requests go straight to the router
//! (`calgate::http::handle`) with whole bodies, no socket and no server task.
//! Bodies are checked by the field names of the answer types
//! (`calgate::api::answers`, `calgate::http::problem`), and whole answers against
//! those types built from the engine's own records.

mod common;

use std::sync::Arc;

use calgate::api::answers::{BookingView, ConflictView};
use calgate::app::App;
use chrono::{Datelike, Duration, TimeZone, Utc};
use common::{
    Extra, GARAGE_KEY, SALON_KEY, add_salon_source, booking, open_app, paris_event, problem_fields,
    put_salon_ics,
};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// The gateway's state in a temporary data directory, and a way to ask it.
struct Gateway {
    app: Arc<App>,
    _dir: tempfile::TempDir,
}

/// What the router answered.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Gateway {
    fn open() -> Gateway {
        Gateway::open_with(&Extra::default())
    }

    fn open_with(extra: &Extra) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = Arc::new(open_app(dir.path(), extra));
        Gateway { app, _dir: dir }
    }

    /// A request built by the test, with `body`, answered by the router.
    async fn send(&self, req: http::request::Builder, body: &str) -> Answer {
        let req = req.body(body.to_owned()).expect("request builds");
        let resp = calgate::http::handle(Arc::clone(&self.app), req).await;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("answer read").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `method path` with the salon's key and, if given, a JSON body.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.call_as(Some(SALON_KEY), method, path, body).await
    }

    async fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let text = body.map(Value::to_string).unwrap_or_default();
        self.send(req, &text).await
    }

    /// The query parameters a GET refused (400) names.
    async fn refused_params(&self, path: &str) -> Vec<String> {
        let answer = self.call("GET", path, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(problem_type(&answer), "urn:calgate:problem:bad-request");
        problem_fields(&answer.body)
    }

    async fn create(&self, body: &Value) -> Answer {
        self.call("POST", BOOKINGS, Some(body)).await
    }
}

/// A request with the salon's key, for the headers [`Gateway::call`] does not set.
fn salon(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {SALON_KEY}"))
}

const BOOKINGS: &str = "/api/v1/tenants/salon/bookings";

fn booking_path(id: &str) -> String {
    format!("{BOOKINGS}/{id}")
}

/// The `type` of a problem+json answer, and that it is one.
fn problem_type(answer: &Answer) -> &str {
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        answer.body
    );
    assert_eq!(answer.body["status"], answer.status.as_u16());
    answer.body["type"].as_str().unwrap_or_default()
}

fn id_of(answer: &Answer) -> String {
    answer.body["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn bookings_are_created_read_updated_and_cancelled() {
    let g = Gateway::open();
    let mut body = booking("2026-03-02", "10:00", "10:30", "Cut");
    body["customer"] = json!({"name": "Zoé", "email": "zoe@example.com"});
    let created = g.create(&body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created);
    assert_eq!(
        created.headers[header::LOCATION],
        booking_path(&id).as_str()
    );
    assert_eq!(
        created.headers[header::ETAG],
        created.body["etag"].as_str().unwrap_or_default()
    );
    let b = &created.body;
    assert_eq!(b["uid"], id.as_str());
    assert_eq!(b["start"], "2026-03-02T10:00:00+01:00");
    assert_eq!(b["end"], "2026-03-02T10:30:00+01:00");
    assert_eq!(b["time_zone"], "Europe/Paris");
    assert_eq!(b["all_day"], false);
    assert_eq!(b["title"], "Cut");
    assert_eq!(b["service"], Value::Null);
    assert_eq!(
        b["customer"],
        json!({"name": "Zoé", "email": "zoe@example.com", "phone": null})
    );
    assert_eq!(b["status"], "confirmed");
    assert_eq!(b["metadata"], json!({}));
    assert_eq!(b["sequence"], 0);
    assert!(b.get("exports").is_none(), "no exporting source: {b}");

    // The answer is the answer type of the stored booking, nothing more or less.
    let tenant = &*g.app.tenant("salon").expect("salon");
    let stored = g.app.bookings.get(tenant, &id).expect("stored");
    let got = g.call("GET", &booking_path(&id), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body,
        serde_json::to_value(BookingView::from(&stored)).expect("serialises")
    );
    assert_eq!(got.body, created.body);

    let etag = b["etag"].as_str().unwrap_or_default();
    let conditional = salon("GET", &booking_path(&id)).header(header::IF_NONE_MATCH, etag);
    let not_modified = g.send(conditional, "").await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    let moved = g
        .call(
            "PATCH",
            &booking_path(&id),
            Some(&json!({"title": "Cut and dry", "location": "Chair 2"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["title"], "Cut and dry");
    assert_eq!(moved.body["location"], "Chair 2");
    assert_eq!(moved.body["sequence"], 1);
    assert_ne!(moved.body["etag"], b["etag"]);

    // A write against the old ETag is refused.
    let conditional = salon("PATCH", &booking_path(&id))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, etag);
    let stale = g.send(conditional, r#"{"title": "stale"}"#).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        problem_type(&stale),
        "urn:calgate:problem:precondition-failed"
    );

    let cancelled = g
        .call(
            "PATCH",
            &booking_path(&id),
            Some(&json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], "cancelled");

    let listed = g
        .call(
            "GET",
            &format!("{BOOKINGS}?start=2026-03-01T00:00:00Z&end=2026-03-03T00:00:00Z"),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["bookings"][0]["id"], id.as_str());
    assert_eq!(listed.body["bookings"][0]["status"], "cancelled");

    let deleted = g.call("DELETE", &booking_path(&id), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = g.call("GET", &booking_path(&id), None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(problem_type(&gone), "urn:calgate:problem:not-found");
    assert_eq!(gone.body["title"], "Not found");
    assert!(
        gone.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&id),
        "{}",
        gone.body
    );
}

#[tokio::test]
async fn overlapping_booking_is_refused_with_the_conflicting_entries() {
    let g = Gateway::open();
    let first = g
        .create(&booking("2026-03-02", "10:00", "11:00", "First"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let refused = g
        .create(&booking("2026-03-02", "10:30", "11:30", "Second"))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&refused),
        "urn:calgate:problem:booking-conflict"
    );
    assert_eq!(refused.body["title"], "The time is already taken");
    assert_eq!(
        refused.body["conflicts"],
        json!([{
            "start": "2026-03-02T09:00:00Z",
            "end": "2026-03-02T10:00:00Z",
            "kind": "busy",
            "source": "bookings",
            "id": id_of(&first),
        }])
    );
    assert_eq!(refused.body["conflicts_total"], 1);
    assert_eq!(refused.body["conflicts_truncated"], false);
    assert!(refused.body.get("invalid_params").is_none());

    let mut allowed = booking("2026-03-02", "10:30", "11:30", "Second");
    allowed["allow_conflict"] = json!(true);
    assert_eq!(g.create(&allowed).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let g = Gateway::open();
    let mut body = booking("2026-03-02", "10:00", "10:30", "Cut");
    body["colour"] = json!("red");
    body["sequence"] = json!(4);
    body["time_zone"] = json!("Mars/Olympus");
    let invalid = g.create(&body).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(&invalid), "urn:calgate:problem:invalid-params");
    assert_eq!(
        problem_fields(&invalid.body),
        ["colour", "sequence", "time_zone"]
    );
    let reason = &invalid.body["invalid_params"][1]["reason"];
    assert!(
        reason.as_str().unwrap_or_default().contains("read-only"),
        "{reason}"
    );

    let json = salon("POST", BOOKINGS).header(header::CONTENT_TYPE, "application/json");
    let malformed = g.send(json, "{nope").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem_type(&malformed),
        "urn:calgate:problem:malformed-json"
    );

    let text = salon("POST", BOOKINGS).header(header::CONTENT_TYPE, "text/plain");
    let not_json = g.send(text, "{}").await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(
        g.refused_params(&format!("{BOOKINGS}?start=yesterday"))
            .await,
        ["start", "end"]
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let g = Gateway::open();
    let mut body = booking("2026-03-02", "10:00", "10:30", "Cut");
    body["notes"] = json!("x".repeat(70_000));
    // Without Content-Length: the limit is found while reading.
    let too_large = g.create(&body).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem_type(&too_large),
        "urn:calgate:problem:body-too-large"
    );
    // With a Content-Length over the limit: refused before reading.
    let declared = salon("POST", BOOKINGS)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "1000000");
    assert_eq!(
        g.send(declared, "").await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn keys_are_checked_per_tenant() {
    let g = Gateway::open();
    let missing = g.call_as(None, "GET", BOOKINGS, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem_type(&missing), "urn:calgate:problem:unauthorized");
    assert_eq!(
        missing.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"calgate\", error=\"invalid_request\""
    );
    let wrong = g.call_as(Some("nope"), "GET", BOOKINGS, None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"calgate\", error=\"invalid_token\""
    );
    let other = g.call_as(Some(GARAGE_KEY), "GET", BOOKINGS, None).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(problem_type(&other), "urn:calgate:problem:forbidden");
    let garage = g
        .call_as(
            Some(GARAGE_KEY),
            "GET",
            "/api/v1/tenants/garage/bookings?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(garage.status, StatusCode::OK);
    assert_eq!(garage.body, json!({"bookings": []}));
    let unknown = g.call("GET", "/api/v1/tenants/nobody/bookings", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let nowhere = g.call("GET", "/api/v1/tenants/salon/nothing", None).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(nowhere.headers.contains_key("x-request-id"));
    let wrong_method = g.call("PUT", BOOKINGS, Some(&json!({}))).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers[header::ALLOW], "GET, POST");
}

#[tokio::test]
async fn freebusy_and_availability_show_bookings() {
    let g = Gateway::open();
    let first = g
        .create(&booking("2026-03-02", "10:00", "11:00", "First"))
        .await;
    let id = id_of(&first);
    let window = "start=2026-03-02T00:00:00Z&end=2026-03-03T00:00:00Z";
    let fb = g
        .call(
            "GET",
            &format!("/api/v1/tenants/salon/freebusy?{window}"),
            None,
        )
        .await;
    assert_eq!(fb.status, StatusCode::OK, "{}", fb.body);
    assert_eq!(
        fb.body,
        json!({
            "start": "2026-03-02T00:00:00Z",
            "end": "2026-03-03T00:00:00Z",
            "busy": [{"start": "2026-03-02T09:00:00Z", "end": "2026-03-02T10:00:00Z", "kind": "busy"}],
        })
    );
    let detailed = g
        .call(
            "GET",
            &format!("/api/v1/tenants/salon/freebusy?{window}&detail=true"),
            None,
        )
        .await;
    assert_eq!(
        detailed.body["busy"][0]["sources"],
        json!([{"source": "bookings", "id": id}])
    );
    assert_eq!(
        g.refused_params(&format!(
            "/api/v1/tenants/salon/freebusy?{window}&sources=nope"
        ))
        .await,
        ["sources"]
    );

    let availability = g
        .call(
            "POST",
            "/api/v1/tenants/salon/availability",
            Some(&json!({"slots": [
                {"start": "2026-03-02T09:30:00Z", "end": "2026-03-02T10:30:00Z"},
                {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:30:00Z"},
            ]})),
        )
        .await;
    assert_eq!(availability.status, StatusCode::OK, "{}", availability.body);
    let slots = &availability.body["slots"];
    assert_eq!(slots[0]["free"], false);
    assert_eq!(slots[0]["conflicts"][0]["id"], id.as_str());
    assert_eq!(slots[0]["conflicts_total"], 1);
    assert_eq!(slots[0]["conflicts_truncated"], false);
    assert_eq!(
        slots[1],
        json!({
            "start": "2026-03-02T10:00:00Z",
            "end": "2026-03-02T10:30:00Z",
            "free": true,
            "conflicts": [],
            "conflicts_total": 0,
            "conflicts_truncated": false,
        })
    );
    let bad = g
        .call(
            "POST",
            "/api/v1/tenants/salon/availability",
            Some(&json!({"slots": [{"start": "2026-03-02T10:00:00Z"}], "colour": 1})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_fields(&bad.body), ["colour", "slots[0]"]);
}

#[tokio::test]
async fn slots_lie_in_opening_hours() {
    let g = Gateway::open();
    // A Monday at least a week ahead: slots are never in the past.
    let today = Utc::now().date_naive() + Duration::days(7);
    let monday = today + Duration::days(7 - i64::from(today.weekday().num_days_from_monday()));
    let paris = chrono_tz::Europe::Paris;
    let at = |h: u32, m: u32| {
        paris
            .from_local_datetime(&monday.and_hms_opt(h, m, 0).expect("time"))
            .earliest()
            .expect("not in a gap")
            .with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    };
    let enc = |s: String| s.replace('+', "%2B");
    let path = format!(
        "/api/v1/tenants/salon/slots?start={}&end={}&duration=PT30M&step=15",
        enc(at(0, 0)),
        enc(at(23, 0))
    );
    let slots = g.call("GET", &path, None).await;
    assert_eq!(slots.status, StatusCode::OK, "{}", slots.body);
    assert_eq!(slots.body["duration_minutes"], 30);
    assert_eq!(slots.body["step_minutes"], 15);
    assert_eq!(slots.body["buffer_minutes"], 10);
    assert_eq!(slots.body["truncated"], false);
    let list = slots.body["slots"].as_array().expect("slots");
    assert_eq!(
        list.first(),
        Some(&json!({"start": at(9, 0), "end": at(9, 30)}))
    );
    assert_eq!(
        list.last(),
        Some(&json!({"start": at(16, 30), "end": at(17, 0)}))
    );
    // 09:00-12:00 and 13:00-17:00 in steps of 15 minutes.
    assert_eq!(list.len(), 11 + 15);

    let path = "/api/v1/tenants/salon/slots?start=2026-03-02T00:00:00Z&end=2026-03-03T00:00:00Z";
    let short = g.refused_params(&format!("{path}&duration=3")).await;
    assert_eq!(short, ["duration"]);
}

#[tokio::test]
async fn conflicts_found_later_are_listed_and_acknowledged() {
    let g = Gateway::open();
    let empty = g.call("GET", "/api/v1/tenants/salon/conflicts", None).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"conflicts": [], "next_cursor": null}));

    let made = g
        .create(&booking("2026-03-02", "10:00", "11:00", "Cut"))
        .await;
    let booking_id = id_of(&made);
    add_salon_source(&g.app, "staff", false);
    put_salon_ics(
        &g.app,
        "staff",
        "dentist.ics",
        &paris_event("dentist", "20260302T103000", "20260302T113000"),
    )
    .await;

    let listed = g.call("GET", "/api/v1/tenants/salon/conflicts", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["next_cursor"], Value::Null);
    let conflicts = listed.body["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{}", listed.body);
    let c = &conflicts[0];
    assert_eq!(c["booking_id"], booking_id.as_str());
    assert_eq!(c["source"], "staff");
    assert_eq!(c["start"], "2026-03-02T09:30:00Z");
    assert_eq!(c["end"], "2026-03-02T10:00:00Z");
    assert_eq!(c["occurrences"], 1);
    assert_eq!(c["kind"], "busy");
    assert_eq!(c["acknowledged"], Value::Null);
    assert_eq!(c["resolved"], Value::Null);
    assert_eq!(c["webhook"]["attempts"], 0);

    let conflict_id = c["id"].as_str().expect("conflict id");
    let acknowledged = g
        .call(
            "POST",
            &format!("/api/v1/tenants/salon/conflicts/{conflict_id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(acknowledged.status, StatusCode::OK, "{}", acknowledged.body);
    assert!(acknowledged.body["acknowledged"].is_string());
    // The answer is the conflict type of the stored record.
    let page = g
        .app
        .store
        .conflicts_page("salon", None, 10, &|_| true)
        .expect("conflicts read");
    assert_eq!(
        acknowledged.body,
        serde_json::to_value(ConflictView::from(&page.conflicts[0])).expect("serialises")
    );
    let open = g.call("GET", "/api/v1/tenants/salon/conflicts", None).await;
    assert_eq!(open.body["conflicts"], json!([]));
    assert_eq!(
        g.refused_params("/api/v1/tenants/salon/conflicts?status=later&limit=0")
            .await,
        ["status"]
    );
}

#[tokio::test]
async fn sources_are_listed_with_their_status() {
    let g = Gateway::open_with(&Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: "[[tenant.source]]\nid = \"team\"\nname = \"Team feed\"\nkind = \"ics\"\nurl = \"http://127.0.0.1:9/secret-token/team.ics\"\ninterval_minutes = 15\n".into(),
    });
    let listed = g.call("GET", "/api/v1/tenants/salon/sources", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let sources = listed.body["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "{}", listed.body);
    let s = &sources[0];
    assert_eq!(s["id"], "team");
    assert_eq!(s["name"], "Team feed");
    assert_eq!(s["kind"], "ics");
    assert_eq!(s["direction"], "import");
    assert_eq!(s["interval_minutes"], 15);
    assert_eq!(s["enabled"], true);
    assert_eq!(s["transparent"], false);
    assert_eq!(s["events"], 0);
    assert!(
        s["caldav"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/salon/team/"),
        "{s}"
    );
    let target = s["target"].as_str().unwrap_or_default();
    assert!(
        !target.contains("secret-token"),
        "feed URLs are redacted: {target}"
    );
    let status = &s["status"];
    for field in [
        "last_success",
        "last_attempt",
        "last_error",
        "next_run",
        "needs_reauth",
        "permanent_error",
        "connected",
        "consecutive_failures",
        "export",
    ] {
        assert!(status.get(field).is_some(), "status.{field} missing: {s}");
    }
    assert_eq!(status["export"], Value::Null, "import-only source");

    let one = g
        .call("GET", "/api/v1/tenants/salon/sources/team", None)
        .await;
    assert_eq!(one.body, *s);
    let logs = g
        .call("GET", "/api/v1/tenants/salon/sources/team/logs", None)
        .await;
    assert_eq!(logs.body, json!({"logs": []}));
    let declared = g
        .call(
            "PATCH",
            "/api/v1/tenants/salon/sources/team",
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(declared.status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&declared),
        "urn:calgate:problem:declared-in-config"
    );
    let missing = g
        .call("GET", "/api/v1/tenants/salon/sources/nope", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let other = g
        .call_as(
            Some(GARAGE_KEY),
            "GET",
            "/api/v1/tenants/garage/sources",
            None,
        )
        .await;
    assert_eq!(other.body, json!({"sources": []}));
}

/// CalDAV through the same router, in process: a calendar made, an event put,
/// found by PROPFIND and by a time-range query, refused for another tenant's user.
#[tokio::test]
async fn caldav_is_served_in_process() {
    let gw = Gateway::open();
    let basic = |user: &str| http_auth_basic::Credentials::new(user, "secret").as_http_header();
    let dav = |method: &str, path: &str, user: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, basic(user))
    };
    let text = |resp: http::Response<calgate::http::Body>| async move {
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("answer read")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    let ask = |req: http::request::Builder, body: &str| {
        let req = req.body(body.to_owned()).expect("request builds");
        calgate::http::handle(Arc::clone(&gw.app), req)
    };

    let (status, _) =
        text(ask(dav("MKCALENDAR", "/dav/calendars/salon/staff/", "ana"), "").await).await;
    assert_eq!(status, StatusCode::CREATED);
    let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:in-process-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20300304T100000Z\r\nDTEND:20300304T110000Z\r\nSUMMARY:Colour\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let put = dav("PUT", "/dav/calendars/salon/staff/colour.ics", "ana")
        .header(header::CONTENT_TYPE, "text/calendar")
        .header(header::IF_NONE_MATCH, "*");
    let (status, _) = text(ask(put, event).await).await;
    assert_eq!(status, StatusCode::CREATED);

    let propfind = dav("PROPFIND", "/dav/calendars/salon/staff/", "ana").header("Depth", "1");
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let (status, xml) = text(ask(propfind, body).await).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert!(
        xml.contains("/dav/calendars/salon/staff/colour.ics"),
        "{xml}"
    );

    let query = dav("REPORT", "/dav/calendars/salon/staff/", "ana").header("Depth", "1");
    let body = r#"<?xml version="1.0"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"><c:time-range start="20300304T000000Z" end="20300305T000000Z"/></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"#;
    let (status, xml) = text(ask(query, body).await).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert!(xml.contains("UID:in-process-1"), "{xml}");

    // The garage's user cannot see the salon's calendars.
    let (status, _) = text(
        ask(
            dav("PROPFIND", "/dav/calendars/salon/staff/", "gus").header("Depth", "0"),
            body,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
