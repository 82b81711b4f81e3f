//! Google import against the mock provider: the OAuth code flow, token refresh
//! (before expiry, once on 401, revoked grants), the calendar list, paged full
//! listings, incremental sync, expired sync tokens and rate limits.

use calgate_test_mocks as providers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use calgate::providers::google::GoogleApi;
use calgate::providers::oauth::{self, OAuthEndpoints, Session, Tokens};
use calgate::providers::{
    Cursor, FetchMode, Fetched, ItemChange, ProviderError, TokenSource, path_segment,
};
use chrono::Utc;
use providers::Fault;
use providers::google::{GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, GoogleMock};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/oauth/google/callback";
const TEAM: &str = "team#rota@group.calendar.google.com";

fn client() -> reqwest::Client {
    calgate::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn endpoints(g: &GoogleMock) -> OAuthEndpoints {
    OAuthEndpoints::google(GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, REDIRECT)
        .with_endpoints(g.authorize_url(), g.token_url())
}

async fn started() -> (GoogleMock, reqwest::Client) {
    let g = GoogleMock::start().await;
    g.set_redirect_uri(REDIRECT);
    (g, client())
}

/// A session over tokens issued directly by the mock; counts persisted refreshes.
fn session(
    g: &GoogleMock,
    http: &reqwest::Client,
    valid_for: chrono::Duration,
) -> (Arc<Session>, Arc<AtomicUsize>) {
    let (access, refresh) = g.oauth().issue_tokens_for_test();
    let tokens = Tokens {
        access_token: access,
        expires_at: Utc::now() + valid_for,
        refresh_token: Some(refresh),
    };
    let persisted = Arc::new(AtomicUsize::new(0));
    let counter = persisted.clone();
    let session = Session::new(
        endpoints(g),
        http.clone(),
        tokens,
        Arc::new(move |_t: &Tokens| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
    (Arc::new(session), persisted)
}

fn long() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// Follows the mock's authorize URL and returns the callback's query pairs.
async fn browser_leg(http: &reqwest::Client, url: &str) -> Vec<(String, String)> {
    let resp = http.get(url).send().await.expect("authorize request");
    assert_eq!(resp.status(), 302, "authorize must redirect");
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("a Location header")
        .to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let url = reqwest::Url::parse(&location).expect("a URL");
    url.query_pairs().into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn timed(id: &str, summary: &str, day: u32, hour: u32) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": format!("2030-05-{day:02}T{hour:02}:00:00+02:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2030-05-{day:02}T{:02}:00:00+02:00", hour + 1), "timeZone": "Europe/Berlin"},
    })
}

fn weekly(id: &str) -> Value {
    json!({
        "id": id,
        "summary": "Weekly",
        "start": {"dateTime": "2030-05-06T09:00:00+02:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2030-05-06T09:30:00+02:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=8"],
    })
}

fn items_of(fetched: Fetched) -> (Vec<ItemChange>, Cursor) {
    match fetched {
        Fetched::Full { items, cursor } => (items, cursor),
        Fetched::Delta { changes, cursor } => (changes, cursor),
        Fetched::Unchanged { cursor } => (Vec::new(), cursor),
    }
}

#[tokio::test]
async fn oauth_code_flow_then_calendar_list() {
    let (g, http) = started().await;
    g.add_calendar(TEAM, "Team rota", "Europe/Berlin", "reader");
    let e = endpoints(&g);

    let pending = oauth::authorize(&e).expect("authorize URL");
    let callback = browser_leg(&http, &pending.url).await;
    assert_eq!(param(&callback, "state"), Some(pending.state.as_str()));
    let code = param(&callback, "code").expect("a code").to_owned();
    let grant = g.oauth().last_grant().expect("a grant");
    assert_eq!(grant.code_challenge_method.as_deref(), Some("S256"));
    assert!(grant.refresh_token_due, "offline access with consent");
    assert_eq!(
        g.oauth().last_authorize_param("prompt").as_deref(),
        Some("consent")
    );

    let tokens = oauth::exchange_code(&e, &http, &code, &pending.pkce_verifier)
        .await
        .expect("code exchange");
    assert!(tokens.refresh_token.is_some());
    assert!(tokens.expires_at > Utc::now() + chrono::Duration::minutes(50));
    assert_eq!(g.oauth().code_exchanges(), 1);
    let debug = format!("{tokens:?}");
    assert!(!debug.contains(&tokens.access_token));

    // Codes are single use: a replay is a dead grant.
    let replay = oauth::exchange_code(&e, &http, &code, &pending.pkce_verifier).await;
    assert!(
        matches!(replay, Err(ProviderError::Reauth(_))),
        "{replay:?}"
    );

    let session = Session::new(e, http.clone(), tokens, Arc::new(|_: &Tokens| {}));
    let api = GoogleApi::new(g.base_url(), http);
    let calendars = api.list_calendars(&session).await.expect("calendar list");
    assert_eq!(calendars.len(), 2);
    let primary = calendars.iter().find(|c| c.primary).expect("primary");
    assert_eq!(primary.id, g.primary_id());
    assert!(primary.writable);
    assert_eq!(primary.time_zone.as_deref(), Some("Europe/Berlin"));
    let team = calendars.iter().find(|c| c.id == TEAM).expect("team");
    assert!(!team.writable);
    assert_eq!(team.name, "Team rota");
    assert_eq!(g.oauth().refreshes(), 0);
}

#[tokio::test]
async fn wrong_pkce_verifier_is_refused() {
    let (g, http) = started().await;
    let e = endpoints(&g);
    let pending = oauth::authorize(&e).expect("authorize URL");
    let callback = browser_leg(&http, &pending.url).await;
    let code = param(&callback, "code").expect("a code");
    let result = oauth::exchange_code(
        &e,
        &http,
        code,
        "not-the-verifier-not-the-verifier-000000000",
    )
    .await;
    assert!(
        matches!(result, Err(ProviderError::Reauth(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_before_use() {
    let (g, http) = started().await;
    g.oauth().set_access_lifetime(Duration::from_secs(2));
    let e = endpoints(&g);
    let pending = oauth::authorize(&e).expect("authorize URL");
    let callback = browser_leg(&http, &pending.url).await;
    let code = param(&callback, "code").expect("a code");
    let tokens = oauth::exchange_code(&e, &http, code, &pending.pkce_verifier)
        .await
        .expect("code exchange");
    let refresh_token = tokens.refresh_token.clone();
    let persisted = Arc::new(AtomicUsize::new(0));
    let counter = persisted.clone();
    let session = Session::new(
        e,
        http.clone(),
        tokens,
        Arc::new(move |t: &Tokens| {
            assert!(t.refresh_token.is_some());
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let api = GoogleApi::new(g.base_url(), http);
    // 2 s of validity is under the 60 s margin: refreshed first, never a 401.
    api.list_calendars(&session).await.expect("calendar list");
    assert_eq!(g.oauth().refreshes(), 1);
    assert_eq!(persisted.load(Ordering::SeqCst), 1);
    assert_eq!(
        g.api_requests().len(),
        1,
        "no request went out with the old token"
    );
    // Google does not rotate: the stored refresh token is kept.
    assert_eq!(session.tokens().await.refresh_token, refresh_token);
}

#[tokio::test]
async fn a_401_refreshes_once_and_replays() {
    let (g, http) = started().await;
    let (session, persisted) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http);
    api.list_calendars(session.as_ref())
        .await
        .expect("first call");
    assert_eq!(g.oauth().refreshes(), 0);

    g.oauth().expire_access_tokens();
    let before = session.tokens().await;
    let calendars = api
        .list_calendars(session.as_ref())
        .await
        .expect("after refresh");
    assert_eq!(calendars.len(), 1);
    assert_eq!(g.oauth().refreshes(), 1);
    assert_eq!(persisted.load(Ordering::SeqCst), 1);
    let after = session.tokens().await;
    assert_ne!(after.access_token, before.access_token);
    assert_eq!(after.refresh_token, before.refresh_token);
    // 1 + (401 + replay)
    assert_eq!(g.api_requests().len(), 3);
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let (g, http) = started().await;
    let (session, persisted) = session(&g, &http, chrono::Duration::seconds(-5));
    let calls = (0..6).map(|i| {
        let s = session.clone();
        async move { s.access_token(i % 2 == 0).await }
    });
    let tokens = futures_join_all(calls).await;
    let first = tokens[0].as_ref().expect("a token").clone();
    assert!(tokens.iter().all(|t| t.as_ref().ok() == Some(&first)));
    assert_eq!(g.oauth().refreshes(), 1);
    assert_eq!(persisted.load(Ordering::SeqCst), 1);
}

/// `join_all` without the futures crate: spawn and await in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_revoked_refresh_token_needs_reauth() {
    let (g, http) = started().await;
    let (session, persisted) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http.clone());
    g.oauth().revoke_refresh_tokens();
    g.oauth().expire_access_tokens();
    let err = api
        .list_calendars(session.as_ref())
        .await
        .expect_err("grant is gone");
    match &err {
        ProviderError::Reauth(message) => {
            assert_eq!(message, "Token has been expired or revoked.");
        }
        other => panic!("expected Reauth, got {other:?}"),
    }
    assert_eq!(persisted.load(Ordering::SeqCst), 0);
    // The session remembers: no further token requests.
    let requests = g.oauth().token_requests();
    let again = session.access_token(true).await;
    assert!(matches!(again, Err(ProviderError::Reauth(_))));
    assert_eq!(g.oauth().token_requests(), requests);

    // The bare refresh call says the same.
    let (_, refresh_token) = g.oauth().issue_tokens_for_test();
    g.oauth().revoke_refresh_tokens();
    let direct = oauth::refresh(&endpoints(&g), &http, &refresh_token).await;
    assert!(
        matches!(direct, Err(ProviderError::Reauth(_))),
        "{direct:?}"
    );
}

#[tokio::test]
async fn token_endpoint_failures_are_classified() {
    let (g, http) = started().await;
    let e = endpoints(&g);
    let (_, refresh_token) = g.oauth().issue_tokens_for_test();

    g.oauth()
        .fail_token_endpoint(Fault::status_retry_after(503, "7"));
    match oauth::refresh(&e, &http, &refresh_token).await {
        Err(ProviderError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    g.oauth().fail_token_endpoint(Fault::status(429));
    assert!(matches!(
        oauth::refresh(&e, &http, &refresh_token).await,
        Err(ProviderError::Retryable { .. })
    ));
    g.oauth().fail_token_endpoint(Fault::Reset);
    assert!(matches!(
        oauth::refresh(&e, &http, &refresh_token).await,
        Err(ProviderError::Retryable { .. })
    ));
    g.oauth().fail_token_endpoint(Fault::status(401));
    let bad_client = oauth::refresh(&e, &http, &refresh_token).await;
    assert!(
        matches!(bad_client, Err(ProviderError::Permanent(_))),
        "{bad_client:?}"
    );
    let mut wrong_secret = e.clone();
    wrong_secret.client_secret = "nope".into();
    let refused = oauth::refresh(&wrong_secret, &http, &refresh_token).await;
    match refused {
        Err(ProviderError::Permanent(message)) => assert!(!message.contains("nope")),
        other => panic!("expected Permanent, got {other:?}"),
    }

    // Still fine afterwards; the refresh token is kept (no rotation at Google).
    let tokens = oauth::refresh(&e, &http, &refresh_token)
        .await
        .expect("refresh");
    assert_eq!(
        tokens.refresh_token.as_deref(),
        Some(refresh_token.as_str())
    );
}

#[tokio::test]
async fn full_fetch_pages_through_empty_pages() {
    let (g, http) = started().await;
    g.add_calendar(TEAM, "Team rota", "Europe/Berlin", "owner");
    for i in 0..5 {
        g.put_event(TEAM, timed(&format!("evt{i:05}"), "Busy", 10 + i, 10));
    }
    g.put_event(TEAM, weekly("series00001"));
    g.cancel_event(TEAM, "series00001_20300513T070000Z");
    g.set_page_size_cap(2);
    g.insert_empty_pages(true);
    let (session, _) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http);

    let fetched = api
        .fetch(
            session.as_ref(),
            TEAM,
            &Cursor::default(),
            FetchMode::Incremental,
        )
        .await
        .expect("full fetch");
    assert!(matches!(fetched, Fetched::Full { .. }));
    let (items, cursor) = items_of(fetched);
    assert!(cursor.token.is_some(), "the last page's nextSyncToken");
    let mut ids: Vec<&str> = items.iter().map(|c| c.item.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "evt00000",
            "evt00001",
            "evt00002",
            "evt00003",
            "evt00004",
            "series00001",
            "series00001_20300513T070000Z"
        ]
    );
    let cancelled = items
        .iter()
        .find(|c| c.item == "series00001_20300513T070000Z")
        .expect("cancelled instance");
    assert_eq!(cancelled.series, "series00001");
    assert!(items.iter().all(|c| c.body.is_some()));

    let requests = g.api_requests();
    // 7 items in pages of 2 (4 pages) with an empty page between each two.
    assert_eq!(requests.len(), 7);
    let encoded = format!("/calendar/v3/calendars/{}/events", path_segment(TEAM));
    for r in &requests {
        assert_eq!(r.path, encoded);
        assert_eq!(r.query_param("singleEvents"), Some("false"));
        assert_eq!(r.query_param("showDeleted"), Some("false"));
        assert_eq!(r.query_param("maxResults"), Some("2500"));
        assert_eq!(r.query_param("syncToken"), None);
    }
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.query_param("pageToken").is_some())
    );
}

#[tokio::test]
async fn incremental_fetch_returns_the_changes() {
    let (g, http) = started().await;
    g.put_event("primary", timed("keep00001", "Stays", 14, 10));
    g.put_event("primary", timed("gone00001", "Deleted soon", 15, 10));
    g.put_event("primary", weekly("series00001"));
    let (session, _) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http);
    let cal = g.primary_id();
    let (items, cursor) = items_of(
        api.fetch(session.as_ref(), &cal, &Cursor::default(), FetchMode::Full)
            .await
            .expect("full fetch"),
    );
    assert_eq!(items.len(), 3);

    // Nothing changed yet.
    let unchanged = api
        .fetch(session.as_ref(), &cal, &cursor, FetchMode::Incremental)
        .await
        .expect("incremental");
    assert!(
        matches!(unchanged, Fetched::Unchanged { .. }),
        "{unchanged:?}"
    );

    g.put_event("primary", timed("new000001", "New", 16, 11));
    g.patch_event(
        "primary",
        "keep00001",
        json!({"transparency": "transparent"}),
    );
    g.cancel_event("primary", "gone00001");
    g.cancel_event("primary", "series00001_20300520T070000Z");
    g.clear_requests();

    let fetched = api
        .fetch(session.as_ref(), &cal, &cursor, FetchMode::Incremental)
        .await
        .expect("incremental");
    let Fetched::Delta {
        changes,
        cursor: next,
    } = fetched
    else {
        panic!("expected a delta, got {fetched:?}");
    };
    assert!(next.token.is_some());
    assert_ne!(next.token, cursor.token);
    let by_item = |id: &str| {
        changes
            .iter()
            .find(|c| c.item == id)
            .unwrap_or_else(|| panic!("no change for {id}: {changes:?}"))
    };
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(
        by_item("new000001")
            .body
            .as_ref()
            .and_then(|b| b["summary"].as_str()),
        Some("New")
    );
    assert_eq!(
        by_item("keep00001")
            .body
            .as_ref()
            .and_then(|b| b["transparency"].as_str()),
        Some("transparent")
    );
    let gone = by_item("gone00001");
    assert_eq!(gone.body, None);
    assert_eq!(gone.series, "gone00001");
    let instance = by_item("series00001_20300520T070000Z");
    assert_eq!(instance.series, "series00001");
    assert_eq!(
        instance.body.as_ref().and_then(|b| b["status"].as_str()),
        Some("cancelled")
    );

    for r in g.api_requests() {
        assert_eq!(r.query_param("syncToken"), cursor.token.as_deref());
        assert_eq!(r.query_param("showDeleted"), None);
        assert_eq!(r.query_param("singleEvents"), Some("false"));
    }

    // Full mode ignores the cursor.
    g.clear_requests();
    let full = api
        .fetch(session.as_ref(), &cal, &next, FetchMode::Full)
        .await
        .expect("full");
    let (items, _) = items_of(full);
    assert!(items.iter().all(|c| c.item != "gone00001"));
    assert_eq!(g.api_requests()[0].query_param("syncToken"), None);
}

#[tokio::test]
async fn expired_sync_token_asks_for_a_full_sync() {
    let (g, http) = started().await;
    g.put_event("primary", timed("evt000001", "Busy", 14, 10));
    let (session, _) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http);
    let cal = g.primary_id();
    let (_, cursor) = items_of(
        api.fetch(session.as_ref(), &cal, &Cursor::default(), FetchMode::Full)
            .await
            .expect("full fetch"),
    );
    g.invalidate_sync_tokens();
    let err = api
        .fetch(session.as_ref(), &cal, &cursor, FetchMode::Incremental)
        .await
        .expect_err("410");
    assert!(matches!(err, ProviderError::CursorExpired), "{err:?}");
    let (items, fresh) = items_of(
        api.fetch(session.as_ref(), &cal, &cursor, FetchMode::Full)
            .await
            .expect("full again"),
    );
    assert_eq!(items.len(), 1);
    assert!(fresh.token.is_some());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable() {
    let (g, http) = started().await;
    let (session, _) = session(&g, &http, long());
    let api = GoogleApi::new(g.base_url(), http);
    let cal = g.primary_id();

    g.faults().push(Fault::status_retry_after(429, "3"));
    match api
        .fetch(session.as_ref(), &cal, &Cursor::default(), FetchMode::Full)
        .await
    {
        Err(ProviderError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    g.faults().push(Fault::status(500));
    assert!(matches!(
        api.fetch(session.as_ref(), &cal, &Cursor::default(), FetchMode::Full)
            .await,
        Err(ProviderError::Retryable {
            retry_after: None,
            ..
        })
    ));
    g.faults().push(Fault::status(403)); // rateLimitExceeded by default
    assert!(matches!(
        api.list_calendars(session.as_ref()).await,
        Err(ProviderError::Retryable { .. })
    ));
    g.faults().push(Fault::Reset);
    assert!(matches!(
        api.list_calendars(session.as_ref()).await,
        Err(ProviderError::Retryable { .. })
    ));
    let missing = api
        .fetch(
            session.as_ref(),
            "nobody@example.test",
            &Cursor::default(),
            FetchMode::Full,
        )
        .await;
    assert!(
        matches!(missing, Err(ProviderError::Permanent(_))),
        "{missing:?}"
    );
    // And then it works.
    api.fetch(session.as_ref(), &cal, &Cursor::default(), FetchMode::Full)
        .await
        .expect("recovered");
}

/// A token source whose tokens the API never accepts.
struct Bogus {
    forced: AtomicUsize,
}

impl TokenSource for Bogus {
    fn access_token(
        &self,
        force_refresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send + '_>> {
        if force_refresh {
            self.forced.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async { Ok("ya29.not-a-real-token".to_owned()) })
    }
}

#[tokio::test]
async fn a_second_401_needs_reauth() {
    let (g, http) = started().await;
    let api = GoogleApi::new(g.base_url(), http);
    let tokens = Bogus {
        forced: AtomicUsize::new(0),
    };
    let err = api
        .fetch(
            &tokens,
            &g.primary_id(),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await
        .expect_err("401 twice");
    assert!(matches!(err, ProviderError::Reauth(_)), "{err:?}");
    assert_eq!(tokens.forced.load(Ordering::SeqCst), 1);
    assert_eq!(g.api_requests().len(), 2);
}
