//! iCal URL import against the mock feed host: conditional GET, digest, redirects,
//! gzip, size and time limits, and the address guard of the safe client.

use calgate_test_mocks as providers;

use std::time::Duration;

use calgate::providers::fetch::{AllowList, FetchLimits, SafeClient};
use calgate::providers::{Cursor, FetchMode, Fetched, ProviderError, ics};
use providers::Fault;
use providers::ics::{IcsMock, fixture, generated_feed};

const FEED: &str = "/cal/private-SECRET0TOKEN/basic.ics";

fn limits() -> FetchLimits {
    FetchLimits {
        max_bytes: 1024 * 1024,
        timeout: Duration::from_secs(5),
        max_redirects: 5,
    }
}

fn client_with(allow: &[&str], limits: FetchLimits) -> SafeClient {
    calgate::install_crypto_provider();
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    SafeClient::new(AllowList::parse(&allow).expect("allow-list"), limits).expect("client")
}

/// The suite's mocks listen on loopback: allowed by the operator's list.
fn client() -> SafeClient {
    client_with(&["127.0.0.1/32"], limits())
}

fn full(f: Fetched) -> (Vec<calgate::providers::ItemChange>, Cursor) {
    match f {
        Fetched::Full { items, cursor } => (items, cursor),
        other => panic!("expected Full, got {other:?}"),
    }
}

fn permanent(r: Result<Fetched, ProviderError>) -> String {
    match r {
        Err(ProviderError::Permanent(m)) => m,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

/// The message of a refused address (never worth retrying).
fn refused(r: Result<Fetched, ProviderError>) -> String {
    match r {
        Err(ProviderError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn first_fetch_is_full_and_the_second_a_304() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "google_style.ics");
    let http = client();
    let url = mock.url(FEED);

    let (items, cursor) = full(
        ics::fetch(&http, &url, &Cursor::default(), FetchMode::Incremental)
            .await
            .expect("first fetch"),
    );
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|i| i.series == i.item && i.body.is_some()));
    assert_eq!(cursor.etag, mock.etag(FEED));
    assert_eq!(cursor.last_modified, mock.last_modified(FEED));
    assert_eq!(cursor.body_sha256.as_ref().map(String::len), Some(64));
    assert_eq!(cursor.url, None);
    let req = &mock.requests()[0];
    assert!(
        req.header("accept")
            .is_some_and(|a| a.starts_with("text/calendar"))
    );
    assert!(
        req.header("accept-encoding")
            .is_some_and(|a| a.contains("gzip"))
    );
    assert!(req.header("user-agent").is_some());

    let again = ics::fetch(&http, &url, &cursor, FetchMode::Incremental)
        .await
        .expect("second fetch");
    match again {
        Fetched::Unchanged { cursor: c } => assert_eq!(c, cursor),
        other => panic!("expected Unchanged, got {other:?}"),
    }
    assert_eq!(mock.conditional_hits(FEED), 1);
    let req = mock.requests().pop().expect("request");
    assert_eq!(req.header("if-none-match"), cursor.etag.as_deref());
    assert_eq!(
        req.header("if-modified-since"),
        cursor.last_modified.as_deref()
    );

    // Full mode asks unconditionally and always parses.
    let (items, _) = full(
        ics::fetch(&http, &url, &cursor, FetchMode::Full)
            .await
            .expect("full fetch"),
    );
    assert_eq!(items.len(), 6);
    assert_eq!(mock.conditional_hits(FEED), 1);
    assert!(
        mock.requests()
            .pop()
            .is_some_and(|r| r.header("if-none-match").is_none())
    );
}

#[tokio::test]
async fn a_host_ignoring_validators_is_caught_by_the_digest_and_changes_come_through() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "outlook_style.ics");
    mock.set_ignore_validators(FEED, true);
    let http = client();
    let url = mock.url(FEED);

    let (items, cursor) = full(
        ics::fetch(&http, &url, &Cursor::default(), FetchMode::Incremental)
            .await
            .expect("first"),
    );
    assert_eq!(items.len(), 7);
    assert_eq!(cursor.etag, None);
    let again = ics::fetch(&http, &url, &cursor, FetchMode::Incremental)
        .await
        .expect("second");
    assert!(matches!(again, Fetched::Unchanged { .. }), "{again:?}");
    assert_eq!(mock.conditional_hits(FEED), 0);

    // One event fewer, one new: the complete new set comes back.
    let text = String::from_utf8(fixture("outlook_style.ics")).expect("utf-8");
    let cut = text.find("BEGIN:VEVENT").expect("an event");
    let end = text[cut..].find("END:VEVENT\r\n").expect("its end") + cut + 12;
    let changed = format!(
        "{}BEGIN:VEVENT\r\nUID:new-1\r\nDTSTART:20300520T100000Z\r\nDTEND:20300520T110000Z\r\nEND:VEVENT\r\n{}",
        &text[..cut],
        &text[end..]
    );
    mock.set_feed(FEED, changed);
    let (items, next) = full(
        ics::fetch(&http, &url, &cursor, FetchMode::Incremental)
            .await
            .expect("third"),
    );
    assert_eq!(items.len(), 7);
    assert_eq!(items[0].series, "new-1");
    assert!(
        !items
            .iter()
            .any(|i| i.series.ends_with("3A7F2E1B4C5D6E7F8091A2B3C4D5E601"))
    );
    assert_ne!(next.body_sha256, cursor.body_sha256);
}

#[tokio::test]
async fn gzip_bodies_are_decoded() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "quirks_lf_only.ics");
    mock.set_gzip(FEED, true);
    let (items, _) = full(
        ics::fetch(
            &client(),
            &mock.url(FEED),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await
        .expect("fetch"),
    );
    assert_eq!(items.len(), 7);
    assert!(
        items[0]
            .body
            .as_ref()
            .and_then(|b| b.as_str())
            .is_some_and(|t| t.replace("\r\n ", "").contains("Müller"))
    );
}

#[tokio::test]
async fn redirects_are_followed_and_a_permanent_one_is_reported() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture("/new/feed.ics", "google_style.ics");
    mock.redirect("/old/feed.ics", "/moved/feed.ics", 301);
    mock.redirect("/moved/feed.ics", "/new/feed.ics", 302);
    let http = client();

    let resp = http
        .get(&mock.url("/old/feed.ics"), &[])
        .await
        .expect("fetch");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.final_url, mock.url("/new/feed.ics"));
    // Only the permanent part of the chain is where the feed now lives.
    assert_eq!(
        resp.permanent_redirect.as_deref(),
        Some(mock.url("/moved/feed.ics").as_str())
    );

    let (items, cursor) = full(
        ics::fetch(
            &http,
            &mock.url("/old/feed.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await
        .expect("ics fetch"),
    );
    assert_eq!(items.len(), 6);
    assert_eq!(cursor.url, Some(mock.url("/moved/feed.ics")));

    // A temporary first hop stores nothing.
    mock.redirect("/temp.ics", "/new/feed.ics", 307);
    let resp = http.get(&mock.url("/temp.ics"), &[]).await.expect("fetch");
    assert_eq!(resp.permanent_redirect, None);
    mock.redirect("/perm.ics", "/new/feed.ics", 308);
    let resp = http.get(&mock.url("/perm.ics"), &[]).await.expect("fetch");
    assert_eq!(resp.permanent_redirect, Some(mock.url("/new/feed.ics")));
}

#[tokio::test]
async fn redirect_loops_and_long_chains_are_refused() {
    let mock = IcsMock::start().await;
    mock.redirect("/a.ics", "/b.ics", 302);
    mock.redirect("/b.ics", "/a.ics", 302);
    let http = client();
    let m = permanent(
        ics::fetch(
            &http,
            &mock.url("/a.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("redirect loop"), "{m}");
    assert_eq!(mock.hits("/a.ics"), 1);
    assert_eq!(mock.hits("/b.ics"), 1);

    for i in 0..7 {
        mock.redirect(&format!("/c{i}.ics"), &format!("/c{}.ics", i + 1), 302);
    }
    let m = permanent(
        ics::fetch(
            &http,
            &mock.url("/c0.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("more than 5 redirects"), "{m}");
    assert_eq!(mock.hits("/c6.ics"), 0);
}

#[tokio::test]
async fn html_pages_and_missing_feeds_are_permanent_errors() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "html_login_page.html");
    mock.set_content_type(FEED, "text/html; charset=utf-8");
    let http = client();
    let m =
        permanent(ics::fetch(&http, &mock.url(FEED), &Cursor::default(), FetchMode::Full).await);
    assert!(m.contains("not an iCalendar feed"), "{m}");
    // The secret path never shows in errors.
    assert!(!m.contains("SECRET"), "{m}");
    assert!(m.contains(&format!("{}/…", mock.origin())), "{m}");

    let m = permanent(
        ics::fetch(
            &http,
            &mock.url("/nothing.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("404"), "{m}");
    mock.set_feed_fixture("/gone.ics", "google_style.ics");
    mock.set_gone("/gone.ics", true);
    let m = permanent(
        ics::fetch(
            &http,
            &mock.url("/gone.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("410"), "{m}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retryable() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "google_style.ics");
    let http = client();
    let url = mock.url(FEED);
    mock.faults_for(FEED)
        .push(Fault::status_retry_after(429, "120"));
    match ics::fetch(&http, &url, &Cursor::default(), FetchMode::Full).await {
        Err(ProviderError::Retryable {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)));
            assert!(
                message.contains("429") && !message.contains("SECRET"),
                "{message}"
            );
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    mock.faults_for(FEED)
        .push(Fault::status_retry_after(503, "2.5"));
    assert!(matches!(
        ics::fetch(&http, &url, &Cursor::default(), FetchMode::Full).await,
        Err(ProviderError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_millis(2500)
    ));
    mock.faults_for(FEED).push(Fault::status(500));
    assert!(matches!(
        ics::fetch(&http, &url, &Cursor::default(), FetchMode::Full).await,
        Err(ProviderError::Retryable {
            retry_after: None,
            ..
        })
    ));
    mock.faults_for(FEED).push(Fault::Reset);
    assert!(matches!(
        ics::fetch(&http, &url, &Cursor::default(), FetchMode::Full).await,
        Err(ProviderError::Retryable { .. })
    ));
}

#[tokio::test]
async fn oversized_feeds_are_refused_while_streaming() {
    let mock = IcsMock::start().await;
    let body = generated_feed(2_000);
    assert!(body.len() > 256 * 1024);
    mock.set_feed(FEED, body);
    let small = FetchLimits {
        max_bytes: 64 * 1024,
        ..limits()
    };
    let http = client_with(&["127.0.0.1/32"], small);
    let m =
        permanent(ics::fetch(&http, &mock.url(FEED), &Cursor::default(), FetchMode::Full).await);
    assert!(m.contains("feed larger than 64 KiB"), "{m}");

    // Compressed it is small on the wire, but the cap applies to what it unpacks to.
    mock.set_gzip(FEED, true);
    let m =
        permanent(ics::fetch(&http, &mock.url(FEED), &Cursor::default(), FetchMode::Full).await);
    assert!(m.contains("feed larger than"), "{m}");
}

#[tokio::test]
async fn a_stalled_body_times_out_as_retryable() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "google_style.ics");
    mock.set_body_stall(FEED, Some(Duration::from_secs(30)));
    let http = client_with(
        &["127.0.0.1/32"],
        FetchLimits {
            timeout: Duration::from_millis(300),
            ..limits()
        },
    );
    let started = std::time::Instant::now();
    match ics::fetch(&http, &mock.url(FEED), &Cursor::default(), FetchMode::Full).await {
        Err(ProviderError::Retryable { message, .. }) => {
            assert!(message.contains("300 ms"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn special_addresses_are_refused_without_the_allow_list() {
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "google_style.ics");
    let guarded = client_with(&[], limits());

    // A literal loopback address, and a name that resolves to one.
    let m = refused(
        ics::fetch(
            &guarded,
            &mock.url(FEED),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("loopback"), "{m}");
    assert!(!m.contains("SECRET"), "{m}");
    let by_name = format!("http://localhost:{}{FEED}", mock.addr().port());
    let m = refused(ics::fetch(&guarded, &by_name, &Cursor::default(), FetchMode::Full).await);
    assert!(
        m.contains("localhost resolves to a loopback address") && m.contains("fetch_allow"),
        "{m}"
    );
    assert!(
        !m.contains("127.0.0.1") && !m.contains("::1"),
        "the rule, not the address: {m}"
    );
    assert_eq!(mock.hits(FEED), 0, "nothing reached the server");

    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
    ] {
        let m = refused(ics::fetch(&guarded, url, &Cursor::default(), FetchMode::Full).await);
        assert!(m.contains("refused"), "{url}: {m}");
    }

    // A public host redirecting inward is caught at the hop: here the first hop
    // is allowed (loopback, via the list) and the next one is not.
    let allowed = client_with(&["127.0.0.1/32"], limits());
    mock.redirect("/inward.ics", "http://10.1.2.3/admin", 302);
    let m = refused(
        ics::fetch(
            &allowed,
            &mock.url("/inward.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("10.1.2.3") && m.contains("private"), "{m}");

    // Only http(s) and webcal.
    for url in ["ftp://127.0.0.1/x.ics", "file:///etc/passwd", "gopher://x/"] {
        let m = permanent(ics::fetch(&allowed, url, &Cursor::default(), FetchMode::Full).await);
        assert!(m.contains("only http"), "{url}: {m}");
    }
    mock.redirect("/to-file.ics", "file:///etc/passwd", 302);
    let m = permanent(
        ics::fetch(
            &allowed,
            &mock.url("/to-file.ics"),
            &Cursor::default(),
            FetchMode::Full,
        )
        .await,
    );
    assert!(m.contains("file"), "{m}");
}

#[tokio::test]
async fn webcal_urls_mean_https() {
    // The mock speaks plain http, so the rewritten https request fails to
    // handshake: a retryable connection error rather than a refused scheme.
    let mock = IcsMock::start().await;
    mock.set_feed_fixture(FEED, "google_style.ics");
    let url = mock.webcal_url(FEED);
    match ics::fetch(&client(), &url, &Cursor::default(), FetchMode::Full).await {
        Err(ProviderError::Retryable { message, .. }) => {
            assert!(message.starts_with("https://127.0.0.1:"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
        other => panic!("expected an https failure, got {other:?}"),
    }
}
