//! Focused tests proving the provider mocks follow `/work/shared/providers/REFERENCE.md`
//! (Google OAuth §1.1/§1.3 and Calendar API v3 §2/§2.8).

use calgate_test_mocks as providers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use providers::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use providers::{Fault, base64_encode, pkce_s256};
use reqwest::StatusCode;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/oauth/google/callback";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn started() -> (GoogleMock, reqwest::Client, String) {
    let g = GoogleMock::start().await;
    g.set_redirect_uri(REDIRECT);
    let (access, _) = g.oauth().issue_tokens_for_test();
    (g, client(), access)
}

/// Runs the browser leg; returns the redirect's query pairs.
async fn authorize(
    g: &GoogleMock,
    c: &reqwest::Client,
    extra: &[(&str, &str)],
) -> (StatusCode, Vec<(String, String)>) {
    let mut q: Vec<(&str, &str)> = vec![
        ("client_id", GOOGLE_CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        (
            "scope",
            "openid email https://www.googleapis.com/auth/calendar.events",
        ),
        ("state", "st-1"),
    ];
    q.extend_from_slice(extra);
    let resp = c
        .get(with_query(&g.authorize_url(), &q))
        .send()
        .await
        .expect("authorize");
    let status = resp.status();
    let pairs = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.split_once('?'))
        .map(|(base, query)| {
            assert_eq!(base, REDIRECT);
            providers::parse_query(Some(query))
        })
        .unwrap_or_default();
    (status, pairs)
}

/// `url?query` (reqwest's `query`/`form` features are not enabled in this crate).
fn with_query(url: &str, q: &[(&str, &str)]) -> String {
    if q.is_empty() {
        url.to_string()
    } else {
        format!("{url}?{}", providers::encode_query(q))
    }
}

fn form_post(c: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
    c.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(providers::encode_query(form))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    providers::query_get(pairs, name)
}

async fn token(c: &reqwest::Client, g: &GoogleMock, form: &[(&str, &str)]) -> (u16, Value, String) {
    let resp = form_post(c, &g.token_url(), form)
        .send()
        .await
        .expect("token");
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, resp.json().await.expect("json body"), cache)
}

async fn get(c: &reqwest::Client, url: &str, access: &str, q: &[(&str, &str)]) -> (u16, Value) {
    let resp = c
        .get(with_query(url, q))
        .bearer_auth(access)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn events_url(g: &GoogleMock, cal: &str) -> String {
    format!(
        "{}/calendars/{}/events",
        g.base_url(),
        providers::percent_encode(cal)
    )
}

fn timed(id: &str, start: &str, end: &str) -> Value {
    json!({
        "id": id,
        "summary": format!("event {id}"),
        "start": {"dateTime": start, "timeZone": "Europe/Berlin"},
        "end": {"dateTime": end, "timeZone": "Europe/Berlin"},
    })
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Pages through a listing; returns (all items, number of empty pages, nextSyncToken).
async fn list_all(
    c: &reqwest::Client,
    url: &str,
    access: &str,
    q: &[(&str, &str)],
) -> (Vec<Value>, usize, Option<String>) {
    let mut items = Vec::new();
    let mut empty = 0;
    let mut page: Option<String> = None;
    loop {
        let mut qq: Vec<(&str, &str)> = q.to_vec();
        if let Some(p) = &page {
            qq.push(("pageToken", p));
        }
        let (status, body) = get(c, url, access, &qq).await;
        assert_eq!(status, 200, "{body}");
        let page_items = body["items"].as_array().expect("items").clone();
        let next_page = body.get("nextPageToken").and_then(Value::as_str);
        let next_sync = body.get("nextSyncToken").and_then(Value::as_str);
        assert!(
            !(next_page.is_some() && next_sync.is_some()),
            "both tokens on one page"
        );
        if page_items.is_empty() && next_page.is_some() {
            empty += 1;
        }
        items.extend(page_items);
        match next_page {
            Some(p) => page = Some(p.to_string()),
            None => return (items, empty, next_sync.map(str::to_string)),
        }
    }
}

#[tokio::test]
async fn oauth_code_flow_pkce_and_single_use_codes() {
    let g = GoogleMock::start().await;
    g.set_redirect_uri(REDIRECT);
    let c = client();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier-0001";
    let challenge = pkce_s256(verifier);

    // Wrong redirect_uri: error page, no redirect.
    let resp = c
        .get(with_query(
            &g.authorize_url(),
            &[
                ("client_id", GOOGLE_CLIENT_ID),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("response_type", "code"),
                ("scope", "openid"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());

    // Denied consent.
    g.oauth().set_deny(true);
    let (status, q) = authorize(&g, &c, &[]).await;
    assert_eq!(status, 302);
    assert_eq!(param(&q, "error"), Some("access_denied"));
    assert_eq!(param(&q, "state"), Some("st-1"));
    g.oauth().set_deny(false);

    // First grant, offline, S256: bad verifier → invalid_grant (exact body); the code is spent.
    let pkce = [
        ("access_type", "offline"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let (status, q) = authorize(&g, &c, &pkce).await;
    assert_eq!(status, 302);
    assert_eq!(param(&q, "state"), Some("st-1"));
    assert!(param(&q, "scope").is_some_and(|s| s.contains("calendar.events")));
    let code = param(&q, "code").unwrap().to_string();
    assert_eq!(
        g.oauth().last_authorize_param("code_challenge").as_deref(),
        Some(challenge.as_str())
    );
    let form = |code: &str, verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", REDIRECT.to_string()),
            ("client_id", GOOGLE_CLIENT_ID.to_string()),
            ("client_secret", GOOGLE_CLIENT_SECRET.to_string()),
            ("code_verifier", verifier.to_string()),
        ]
    };
    let as_refs = |f: &[(&'static str, String)]| -> Vec<(&'static str, String)> { f.to_vec() };
    let bad = as_refs(&form(
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-00",
    ));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body, cache) = token(&c, &g, &bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    assert!(cache.contains("no-store"));

    // Second authorization, no prompt=consent: not the first grant → no refresh token.
    let (_, q) = authorize(&g, &c, &pkce).await;
    let code = param(&q, "code").unwrap().to_string();
    let good = form(&code, verifier);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body, cache) = token(&c, &g, &good).await;
    assert_eq!(status, 200, "{body}");
    assert!(cache.contains("no-store"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body["id_token"].is_string());
    assert!(
        body["scope"]
            .as_str()
            .unwrap()
            .contains("https://www.googleapis.com/auth/userinfo.email")
    );
    // Code reuse → invalid_grant.
    let (status, body, _) = token(&c, &g, &good).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    // prompt=consent → refresh token again; plain challenge (method omitted).
    let (_, q) = authorize(
        &g,
        &c,
        &[
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("code_challenge", verifier),
        ],
    )
    .await;
    let code = param(&q, "code").unwrap().to_string();
    let grant = g.oauth().last_grant().unwrap();
    assert_eq!(grant.code_challenge_method.as_deref(), Some("plain"));
    assert!(grant.refresh_token_due);
    let good = form(&code, verifier);
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body, _) = token(&c, &g, &good).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().unwrap();
    let (status, _) = get(
        &c,
        &format!("{}/users/me/calendarList", g.base_url()),
        access,
        &[],
    )
    .await;
    assert_eq!(status, 200);

    // Only form bodies are accepted.
    let resp = c
        .post(g.token_url())
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(g.oauth().code_exchanges(), 2);
}

#[tokio::test]
async fn refresh_without_rotation_revoke_and_expiry() {
    let (g, c, _) = started().await;
    let (_, refresh) = g.oauth().issue_tokens_for_test();
    // HTTP Basic client authentication.
    let basic = base64_encode(format!("{GOOGLE_CLIENT_ID}:{GOOGLE_CLIENT_SECRET}").as_bytes());
    let resp = form_post(
        &c,
        &g.token_url(),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .header("authorization", format!("Basic {basic}"))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "Google does not rotate"
    );
    let access = body["access_token"].as_str().unwrap().to_string();
    let list = format!("{}/users/me/calendarList", g.base_url());
    assert_eq!(get(&c, &list, &access, &[]).await.0, 200);

    // Bad client secret → 401 invalid_client.
    let (status, body, _) = token(
        &c,
        &g,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", GOOGLE_CLIENT_ID),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // Revoked → exact invalid_grant body.
    g.oauth().revoke_refresh_tokens();
    let (status, body, _) = token(
        &c,
        &g,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", GOOGLE_CLIENT_ID),
            ("client_secret", GOOGLE_CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
    assert_eq!(g.oauth().refreshes(), 1);

    // Real expiry → 401 authError + WWW-Authenticate.
    g.oauth().set_access_lifetime(Duration::from_millis(150));
    let short = g.oauth().issue_access_token_for_test();
    assert_eq!(get(&c, &list, &short, &[]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = c.get(&list).bearer_auth(&short).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
    assert_eq!(body["error"]["errors"][0]["location"], "Authorization");
    // Switch: everything expires at once; no header at all → 401 too.
    g.oauth().expire_access_tokens();
    assert_eq!(get(&c, &list, &access, &[]).await.0, 401);
    assert_eq!(c.get(&list).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn pagination_with_empty_middle_page_ends_in_sync_token() {
    let (g, c, access) = started().await;
    for i in 0..5 {
        g.put_event(
            "primary",
            timed(
                &format!("evt0000{i}"),
                &format!("2030-05-1{i}T10:00:00+02:00"),
                &format!("2030-05-1{i}T11:00:00+02:00"),
            ),
        );
    }
    g.set_page_size_cap(2);
    g.insert_empty_pages(true);
    let url = events_url(&g, "primary");
    let q = [
        ("timeMin", "2030-05-01T00:00:00Z"),
        ("singleEvents", "false"),
    ];
    let (items, empty, sync) = list_all(&c, &url, &access, &q).await;
    assert_eq!(items.len(), 5);
    assert!(empty >= 1, "expected an empty page carrying nextPageToken");
    assert!(sync.is_some(), "final page carries nextSyncToken");

    // A page token replayed with different parameters → 400.
    let (_, first) = get(&c, &url, &access, &q).await;
    let tok = first["nextPageToken"].as_str().unwrap();
    let (status, body) = get(
        &c,
        &url,
        &access,
        &[
            ("timeMin", "2030-05-02T00:00:00Z"),
            ("singleEvents", "false"),
            ("pageToken", tok),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Calendar list paginates too (cap 2, 3 calendars).
    g.add_calendar(
        "team@group.calendar.google.com",
        "Team",
        "Europe/Berlin",
        "reader",
    );
    g.add_calendar(
        "en.german#holiday@group.v.calendar.google.com",
        "Holidays",
        "Europe/Berlin",
        "reader",
    );
    let list = format!("{}/users/me/calendarList", g.base_url());
    let (cals, _, sync) = list_all(&c, &list, &access, &[]).await;
    assert_eq!(cals.len(), 3);
    assert_eq!(cals[0]["primary"], true);
    assert!(sync.is_some());
    // `#` in a calendar id travels percent-encoded.
    let (status, _) = get(
        &c,
        &events_url(&g, "en.german#holiday@group.v.calendar.google.com"),
        &access,
        &[],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn incremental_sync_tombstones_and_invalidation() {
    let (g, c, access) = started().await;
    let url = events_url(&g, "primary");
    g.put_event(
        "primary",
        timed(
            "keep00001",
            "2030-05-14T10:00:00+02:00",
            "2030-05-14T11:00:00+02:00",
        ),
    );
    g.put_event(
        "primary",
        timed(
            "gone00001",
            "2030-05-15T10:00:00+02:00",
            "2030-05-15T11:00:00+02:00",
        ),
    );
    let (items, _, sync) = list_all(&c, &url, &access, &[]).await;
    assert_eq!(items.len(), 2);
    let t1 = sync.unwrap();

    // No changes → empty items + a token.
    let (status, body) = get(&c, &url, &access, &[("syncToken", &t1)]).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]));
    assert!(body["nextSyncToken"].is_string());

    g.cancel_event("primary", "gone00001");
    g.patch_event(
        "primary",
        "keep00001",
        json!({"transparency": "transparent"}),
    );
    let (status, body) = get(&c, &url, &access, &[("syncToken", &t1)]).await;
    assert_eq!(status, 200);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let stub = items.iter().find(|i| i["id"] == "gone00001").unwrap();
    let mut keys: Vec<&String> = stub.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["etag", "id", "kind", "status"]);
    assert_eq!(stub["status"], "cancelled");
    let t2 = body["nextSyncToken"].as_str().unwrap().to_string();
    // An old but valid token still works.
    assert_eq!(
        get(&c, &url, &access, &[("syncToken", &t1)]).await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Full listings hide the deleted event unless showDeleted.
    assert_eq!(ids(&get(&c, &url, &access, &[]).await.1), ["keep00001"]);
    assert_eq!(
        get(&c, &url, &access, &[("showDeleted", "true")]).await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    g.invalidate_sync_tokens();
    let (status, body) = get(&c, &url, &access, &[("syncToken", &t2)]).await;
    assert_eq!(status, 410);
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired",
            "message": "Sync token is no longer valid, a full sync is required.",
            "locationType": "parameter", "location": "syncToken"}],
            "code": 410, "message": "Sync token is no longer valid, a full sync is required."}})
    );
}

#[tokio::test]
async fn list_parameter_validation() {
    let (g, c, access) = started().await;
    let url = events_url(&g, "primary");
    let (_, _, sync) = list_all(&c, &url, &access, &[]).await;
    let sync = sync.unwrap();
    for bad in [
        vec![
            ("syncToken", sync.as_str()),
            ("timeMin", "2030-05-01T00:00:00Z"),
        ],
        vec![
            ("syncToken", sync.as_str()),
            ("privateExtendedProperty", "a=b"),
        ],
        vec![("syncToken", sync.as_str()), ("orderBy", "updated")],
    ] {
        let (status, body) = get(&c, &url, &access, &bad).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error"]["errors"][0]["reason"],
            "syncTokenWithRequestRestrictions"
        );
    }
    let (status, _) = get(
        &c,
        &url,
        &access,
        &[("syncToken", &sync), ("showDeleted", "false")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = get(&c, &url, &access, &[("orderBy", "startTime")]).await;
    assert_eq!(status, 400);
    let (status, body) = get(
        &c,
        &url,
        &access,
        &[
            ("timeMin", "2030-05-02T00:00:00Z"),
            ("timeMax", "2030-05-02T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["errors"][0]["reason"], "timeRangeEmpty");
    assert_eq!(body["error"]["errors"][0]["location"], "timeMax");
    // orderBy / extended-property filters: listing works but carries no nextSyncToken.
    for q in [
        vec![("singleEvents", "true"), ("orderBy", "startTime")],
        vec![("privateExtendedProperty", "gatewayBookingId=bk1")],
    ] {
        let (status, body) = get(&c, &url, &access, &q).await;
        assert_eq!(status, 200);
        assert!(body.get("nextSyncToken").is_none() && body.get("nextPageToken").is_none());
    }
    let (status, _) = get(&c, &events_url(&g, "nobody@example.test"), &access, &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn writes_ids_etags_and_extended_property_lookup() {
    let (g, c, access) = started().await;
    let url = events_url(&g, "primary");
    let mut ev = timed(
        "bkfake00000000000002",
        "2030-05-16T09:00:00+02:00",
        "2030-05-16T10:00:00+02:00",
    );
    ev["extendedProperties"] =
        json!({"private": {"gatewayBookingId": "bk_2", "gatewaySource": "calendar-gateway"}});
    let insert = |body: Value| {
        c.post(with_query(&url, &[("sendUpdates", "none")]))
            .bearer_auth(&access)
            .json(&body)
            .send()
    };
    let resp = insert(ev.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["iCalUID"], "bkfake00000000000002@google.com");
    assert_eq!(created["status"], "confirmed");
    assert!(
        created["etag"].is_string()
            && created["updated"].is_string()
            && created["htmlLink"].is_string()
    );

    let resp = insert(ev.clone()).await.unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"errors": [{"domain": "global", "reason": "duplicate",
            "message": "The requested identifier already exists."}],
            "code": 409, "message": "The requested identifier already exists."}})
    );
    let mut bad = ev.clone();
    bad["id"] = json!("BK_not_base32hex");
    assert_eq!(insert(bad).await.unwrap().status(), 400);

    let (status, body) = get(
        &c,
        &url,
        &access,
        &[("privateExtendedProperty", "gatewayBookingId=bk_2")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), ["bkfake00000000000002"]);

    let ev_url = format!("{url}/bkfake00000000000002");
    let stale = c
        .patch(&ev_url)
        .bearer_auth(&access)
        .header("if-match", "\"1\"")
        .json(&json!({"summary": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let patched: Value = c
        .patch(&ev_url)
        .bearer_auth(&access)
        .header("if-match", created["etag"].as_str().unwrap())
        .json(
            &json!({"summary": "Busy (moved)", "extendedProperties": {"private": {"extra": "1"}}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["summary"], "Busy (moved)");
    assert_eq!(
        patched["extendedProperties"]["private"]["gatewayBookingId"], "bk_2",
        "objects merge"
    );
    assert_ne!(patched["etag"], created["etag"]);

    let del = || c.delete(&ev_url).bearer_auth(&access).send();
    assert_eq!(del().await.unwrap().status(), 204);
    assert_eq!(del().await.unwrap().status(), 410);
    let resp = c
        .delete(format!("{url}/unknown00000"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(g.live_events("primary").is_empty());
}

#[tokio::test]
async fn recurrence_and_free_busy() {
    let (g, c, access) = started().await;
    let url = events_url(&g, "primary");
    let mut master = timed(
        "fakerecur0001",
        "2030-05-06T09:00:00+02:00",
        "2030-05-06T09:30:00+02:00",
    );
    master["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=3"]);
    g.put_event("primary", master);
    g.cancel_event("primary", "fakerecur0001_20300513T070000Z");

    let (_, body) = get(&c, &url, &access, &[("singleEvents", "false")]).await;
    assert_eq!(
        ids(&body),
        ["fakerecur0001", "fakerecur0001_20300513T070000Z"]
    );
    assert_eq!(body["items"][1]["status"], "cancelled");
    assert_eq!(body["items"][1]["recurringEventId"], "fakerecur0001");

    let (_, body) = get(
        &c,
        &url,
        &access,
        &[("singleEvents", "true"), ("orderBy", "startTime")],
    )
    .await;
    assert_eq!(
        ids(&body),
        [
            "fakerecur0001_20300506T070000Z",
            "fakerecur0001_20300520T070000Z"
        ]
    );
    assert_eq!(
        body["items"][1]["originalStartTime"]["dateTime"],
        "2030-05-20T09:00:00+02:00"
    );
    assert!(body["items"][0].get("recurrence").is_none());

    let resp = c
        .post(format!("{}/freeBusy", g.base_url()))
        .bearer_auth(&access)
        .json(
            &json!({"timeMin": "2030-05-01T00:00:00Z", "timeMax": "2030-06-01T00:00:00Z",
            "items": [{"id": "primary"}, {"id": "nobody@example.test"}]}),
        )
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["calendars"]["primary"]["busy"],
        json!([{"start": "2030-05-06T07:00:00Z", "end": "2030-05-06T07:30:00Z"},
               {"start": "2030-05-20T07:00:00Z", "end": "2030-05-20T07:30:00Z"}])
    );
    assert_eq!(
        body["calendars"]["nobody@example.test"]["errors"][0]["reason"],
        "notFound"
    );
}

#[tokio::test]
async fn faults_latency_and_watch_notifications() {
    let (g, c, access) = started().await;
    let list = format!("{}/users/me/calendarList", g.base_url());
    g.faults().push(Fault::status_retry_after(429, "1"));
    g.faults().push(Fault::status(403));
    g.faults().push(Fault::Reset);
    let resp = c.get(&list).bearer_auth(&access).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "rateLimitExceeded");
    let (status, body) = get(&c, &list, &access, &[]).await;
    assert_eq!(
        (status, body["error"]["errors"][0]["reason"].as_str()),
        (403, Some("rateLimitExceeded"))
    );
    assert!(
        c.get(&list).bearer_auth(&access).send().await.is_err(),
        "reset"
    );
    assert_eq!(get(&c, &list, &access, &[]).await.0, 200);

    g.set_latency(Duration::from_millis(50));
    let t = std::time::Instant::now();
    assert_eq!(get(&c, &list, &access, &[]).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(50));
    g.set_latency(Duration::ZERO);

    // Watch: a `sync` message, then `exists` per change.
    let hits: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = hits.clone();
    let (addr, _hook) = providers::serve(move |req| {
        let h = |n: &str| {
            providers::header_str(req.headers(), n)
                .unwrap_or_default()
                .to_string()
        };
        sink.lock()
            .unwrap()
            .push((h("x-goog-resource-state"), h("x-goog-message-number")));
        providers::empty_response(200)
    })
    .await;
    let resp = c
        .post(format!("{}/watch", events_url(&g, "primary")))
        .bearer_auth(&access)
        .json(&json!({"id": "chan-1", "type": "web_hook", "address": format!("http://{addr}/hook"), "token": "tok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let chan: Value = resp.json().await.unwrap();
    assert_eq!(chan["kind"], "api#channel");
    g.put_event(
        "primary",
        timed(
            "watch0001",
            "2030-05-14T10:00:00+02:00",
            "2030-05-14T11:00:00+02:00",
        ),
    );
    for _ in 0..100 {
        if hits.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *hits.lock().unwrap(),
        [
            ("sync".to_string(), "1".to_string()),
            ("exists".to_string(), "2".to_string())
        ]
    );
    let resp = c
        .post(format!("{}/channels/stop", g.base_url()))
        .bearer_auth(&access)
        .json(&json!({"id": "chan-1", "resourceId": chan["resourceId"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn microsoft_flavour_rotates_refresh_tokens() {
    use providers::oauth::{Flavour, OAuthServer};
    let ms = OAuthServer::new(Flavour::Microsoft, "ms-client", "ms-secret", REDIRECT);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let query = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let body_of = |resp: providers::Resp| -> (u16, Value) {
        use http_body_util::BodyExt;
        let status = resp.status().as_u16();
        let bytes = collect_ready(resp.into_body().boxed());
        (status, serde_json::from_slice(&bytes).unwrap())
    };
    // Without offline_access: no refresh token.
    let verifier = "ms-verifier-ms-verifier-ms-verifier-ms-verifier-0001";
    let challenge = pkce_s256(verifier);
    let redirect = ms.handle_authorize(&query(&[
        ("client_id", "ms-client"),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "offline_access User.Read Calendars.ReadWrite"),
        ("state", "s"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]));
    assert_eq!(redirect.status(), 302);
    let code = ms.last_grant().unwrap().code;
    let form = providers::encode_query(&[
        ("client_id", "ms-client"),
        ("client_secret", "ms-secret"),
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ]);
    let (status, body) = body_of(ms.handle_token(&headers, form.as_bytes()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["scope"],
        "https://graph.microsoft.com/User.Read https://graph.microsoft.com/Calendars.ReadWrite"
    );
    let r1 = body["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = body_of(ms.handle_token(&headers, form.as_bytes()));
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"], json!([54005]));

    let refresh = |rt: &str| {
        providers::encode_query(&[
            ("client_id", "ms-client"),
            ("client_secret", "ms-secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
        ])
    };
    let (status, body) = body_of(ms.handle_token(&headers, refresh(&r1).as_bytes()));
    assert_eq!(status, 200);
    let r2 = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert!(ms.was_rotated(&r1));
    // The old one still works by default.
    assert_eq!(
        body_of(ms.handle_token(&headers, refresh(&r1).as_bytes())).0,
        200
    );
    assert!(ms.validate_bearer(Some(&format!(
        "Bearer {}",
        body["access_token"].as_str().unwrap()
    ))));
    ms.revoke_refresh_tokens();
    let (status, body) = body_of(ms.handle_token(&headers, refresh(&r2).as_bytes()));
    assert_eq!(status, 400);
    assert_eq!(
        body,
        OAuthServer::invalid_grant_example_body(Flavour::Microsoft)
    );
    assert_eq!(ms.rotations(), 2);
}

/// Collects a `Full` body synchronously (it is always ready).
fn collect_ready(
    body: http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>,
) -> Vec<u8> {
    use http_body_util::BodyExt;
    let fut = body.collect();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(c)) => c.to_bytes().to_vec(),
        _ => panic!("Full body not ready"),
    }
}

#[tokio::test]
async fn series_edits_over_http() {
    let (g, c, access) = started().await;
    let url = events_url(&g, "primary");
    let mut master = timed(
        "series00001",
        "2030-05-06T09:00:00+02:00",
        "2030-05-06T09:30:00+02:00",
    );
    master["recurrence"] = json!(["RRULE:FREQ=DAILY;UNTIL=20300510T070000Z"]);
    g.put_event("primary", master);
    let (_, _, sync) = list_all(&c, &url, &access, &[("singleEvents", "true")]).await;
    let sync = sync.unwrap();
    let (_, body) = get(&c, &url, &access, &[("singleEvents", "true")]).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 5);

    // Deleting a generated instance creates a cancelled exception.
    let inst = format!("{url}/series00001_20300508T070000Z");
    let resp = c.delete(&inst).bearer_auth(&access).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let (_, body) = get(&c, &url, &access, &[("singleEvents", "true")]).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 4);
    let (_, body) = get(
        &c,
        &url,
        &access,
        &[("syncToken", &sync), ("singleEvents", "true")],
    )
    .await;
    assert_eq!(ids(&body), ["series00001_20300508T070000Z"]);
    assert_eq!(body["items"][0]["status"], "cancelled");

    // Moving one instance via PATCH; timeZone re-expresses dateTimes.
    let resp = c
        .patch(format!("{url}/series00001_20300509T070000Z"))
        .bearer_auth(&access)
        .json(&json!({"start": {"dateTime": "2030-05-09T15:00:00+02:00"}, "end": {"dateTime": "2030-05-09T15:30:00+02:00"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, body) = get(
        &c,
        &url,
        &access,
        &[
            ("singleEvents", "true"),
            ("timeMin", "2030-05-09T00:00:00Z"),
            ("timeMax", "2030-05-10T00:00:00Z"),
            ("timeZone", "UTC"),
        ],
    )
    .await;
    assert_eq!(ids(&body), ["series00001_20300509T070000Z"]);
    assert_eq!(
        body["items"][0]["start"]["dateTime"],
        "2030-05-09T13:00:00Z"
    );
    assert_eq!(
        body["items"][0]["originalStartTime"]["dateTime"],
        "2030-05-09T07:00:00Z"
    );

    // Calendar list incremental reports a removed calendar.
    let list = format!("{}/users/me/calendarList", g.base_url());
    g.add_calendar(
        "team@group.calendar.google.com",
        "Team",
        "Europe/Berlin",
        "reader",
    );
    let (_, _, t) = list_all(&c, &list, &access, &[]).await;
    g.remove_calendar("team@group.calendar.google.com");
    let (_, body) = get(&c, &list, &access, &[("syncToken", &t.unwrap())]).await;
    assert_eq!(body["items"][0]["deleted"], true);
    // Writes to a reader calendar are refused.
    g.add_calendar(
        "rota@group.calendar.google.com",
        "Rota",
        "Europe/Berlin",
        "reader",
    );
    let resp = c
        .post(events_url(&g, "rota@group.calendar.google.com"))
        .bearer_auth(&access)
        .json(&timed(
            "rota00001",
            "2030-05-06T09:00:00+02:00",
            "2030-05-06T10:00:00+02:00",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
