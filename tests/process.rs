//! The `calgate` binary as a user runs it: crash safety under `kill -9` (also at
//! the fault-injection points of `CALGATE_TEST_CRASH_AFTER`), graceful SIGTERM,
//! config errors at start, and `hash-password`.

mod common;
use calgate_test_mocks as providers;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{Extra, SALON_KEY, config_text, config_text_with};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_calgate");

/// Starts `calgate serve` and waits for its "listening" line; returns the base URL.
/// The log goes to `server.log` next to the config: an unread pipe would fill up and
/// block the server.
fn spawn_server(config: &Path) -> (Child, String) {
    spawn_server_crashing_after(config, None)
}

/// [`spawn_server`], killing itself at the fault-injection point `crash_after`
/// (`CALGATE_TEST_CRASH_AFTER`) when given.
fn spawn_server_crashing_after(config: &Path, crash_after: Option<&str>) -> (Child, String) {
    let log_path = config.with_file_name("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log file");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("CALGATE_TEST_CRASH_AFTER")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(point) = crash_after {
        command.env("CALGATE_TEST_CRASH_AFTER", point);
    }
    let mut child = command.spawn().expect("calgate starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    let base = line
        .trim()
        .strip_prefix("calgate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, base)
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_text(&dir.join("data"), "127.0.0.1:0")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_bookings_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (child, base) = spawn_server(&config);
    let client = common::http_client();
    let url = format!("{base}/api/v1/tenants/salon/bookings");

    // Writers keep creating; the writer that receives the 150th acknowledgement
    // kills the server at once, so the newest acknowledged write is microseconds old
    // and other requests are in flight.
    const KILL_AFTER: usize = 150;
    let server = Arc::new(std::sync::Mutex::new(child));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, acknowledged) = (client.clone(), url.clone(), Arc::clone(&acknowledged));
        let server = Arc::clone(&server);
        writers.push(tokio::spawn(async move {
            for i in 0..1000 {
                // Every booking gets its own hour, so none conflicts with another.
                let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap()
                    + chrono::Duration::hours(w * 1000 + i);
                let body = serde_json::json!({
                    "start": start.to_rfc3339(),
                    "end": (start + chrono::Duration::minutes(45)).to_rfc3339(),
                    "title": format!("w{w}-{i}"),
                });
                let Ok(resp) = client
                    .post(&url)
                    .bearer_auth(SALON_KEY)
                    .json(&body)
                    .send()
                    .await
                else {
                    return; // the server is gone
                };
                if resp.status() != 201 {
                    return;
                }
                let Ok(created) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let mut acked = acknowledged.lock().await;
                acked.push(created["id"].as_str().unwrap().to_owned());
                if acked.len() == KILL_AFTER {
                    // Child::kill is SIGKILL on Unix.
                    server.lock().unwrap().kill().expect("SIGKILL delivered");
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    server.lock().unwrap().wait().unwrap();
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() >= KILL_AFTER,
        "only {} writes were acknowledged before the writers stopped; see {}",
        acknowledged.len(),
        dir.path().join("server.log").display()
    );

    let (mut child, base) = spawn_server(&config);
    let mut missing = Vec::new();
    for id in &acknowledged {
        let resp = client
            .get(format!("{base}/api/v1/tenants/salon/bookings/{id}"))
            .bearer_auth(SALON_KEY)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            missing.push(id.clone());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged bookings lost after kill -9",
        missing.len(),
        acknowledged.len()
    );
}

/// An iCal import is written in batches (several store transactions, one disk
/// sync at the end of the run): once the sync request is answered, every event,
/// its busy time and the conflict it raised are on disk, whatever happens next.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_feed_import_survives_kill_9() {
    // Several import batches; one event an hour from 2030-05-01T00:00Z.
    const EVENTS: usize = 700;
    let feed = providers::ics::IcsMock::start().await;
    feed.set_feed("/team.ics", providers::ics::generated_feed(EVENTS));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let extra = Extra {
        server: "fetch_allow = [\"127.0.0.1/32\"]".into(),
        salon: format!(
            "[[tenant.source]]\nid = \"team-feed\"\nname = \"Team feed\"\nkind = \"ics\"\nurl = \"{}\"\nenabled = false\n",
            feed.url("/team.ics")
        ),
    };
    std::fs::write(
        &config,
        config_text_with(&dir.path().join("data"), "127.0.0.1:0", None, &extra),
    )
    .unwrap();
    let (mut child, base) = spawn_server(&config);
    let client = common::http_client();
    let api = |base: &str, path: &str| format!("{base}/api/v1/tenants/salon{path}");

    // A booking the 35th event (2030-05-02 10:00–11:00 UTC) will overlap.
    let resp = client
        .post(api(&base, "/bookings"))
        .bearer_auth(SALON_KEY)
        .json(&serde_json::json!({
            "start": "2030-05-02T10:15:00Z",
            "end": "2030-05-02T10:45:00Z",
            "title": "Cut",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let booking: serde_json::Value = resp.json().await.unwrap();

    let resp = client
        .post(api(&base, "/sources/team-feed/sync?mode=full"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log: serde_json::Value = resp.json().await.unwrap();
    // Acknowledged: kill at once.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(log["created"], EVENTS, "{log}");

    let (mut child, base) = spawn_server(&config);
    // The busy time of every event: one block from the first to the last.
    let resp = client
        .get(api(
            &base,
            "/freebusy?start=2030-04-30T00:00:00Z&end=2030-06-30T00:00:00Z&sources=team-feed",
        ))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let busy: serde_json::Value = resp.json().await.unwrap();
    let blocks = busy["busy"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{busy}");
    assert_eq!(blocks[0]["start"], "2030-05-01T00:00:00Z", "{busy}");
    assert_eq!(blocks[0]["end"], "2030-05-30T04:00:00Z", "{busy}");
    // The conflict with the booking.
    let resp = client
        .get(api(&base, "/conflicts?status=open"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    let open: serde_json::Value = resp.json().await.unwrap();
    let open = open["conflicts"].as_array().unwrap().clone();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["booking_id"], booking["id"]);
    assert_eq!(open[0]["source"], "team-feed");
    // Every object and mirror item: a full resync finds nothing to do.
    let resp = client
        .post(api(&base, "/sources/team-feed/sync?mode=full"))
        .bearer_auth(SALON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log: serde_json::Value = resp.json().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        (&log["created"], &log["updated"], &log["deleted"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{log}"
    );
}

/// Waits (with a deadline) for a server that is to kill itself.
fn wait_for_crash(child: &mut Child, dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "it crashed, not exited: {status:?}");
            return;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "the server did not reach its crash point; see {}",
                dir.join("server.log").display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A CalDAV request as `user` (password "secret"); None when the server died
/// before answering.
async fn dav(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut req = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        )
        .basic_auth(user, Some("secret"))
        .body(body.to_owned());
    req = match method {
        "PROPFIND" => req.header("depth", "1"),
        _ => req.header("content-type", "text/calendar; charset=utf-8"),
    };
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The messages in Bea's scheduling inbox.
async fn bea_inbox(client: &reqwest::Client, base: &str) -> Vec<String> {
    let inbox = "/dav/principals/bea/inbox/";
    let propfind = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let (status, listing) = dav(client, base, "bea", "PROPFIND", inbox, propfind)
        .await
        .expect("inbox listed");
    assert_eq!(status, 207, "{listing}");
    let mut messages = Vec::new();
    for href in listing.split("<d:href>").skip(1) {
        let href = href.split("</d:href>").next().unwrap();
        if href != inbox {
            let (status, text) = dav(client, base, "bea", "GET", href, "").await.unwrap();
            assert_eq!(status, 200, "{href}: {text}");
            messages.push(text);
        }
    }
    messages
}

/// How many messages of `method` about the meeting at `hour` (UTC) there are.
fn count(messages: &[String], method: &str, hour: u32) -> usize {
    let (method, start) = (
        format!("METHOD:{method}\r\n"),
        format!("DTSTART:20261222T{hour:02}0000Z"),
    );
    messages
        .iter()
        .filter(|m| m.contains(&method) && m.contains(&start))
        .count()
}

/// Sends `method path body` as Ana to a server that kills itself at the
/// fault-injection point `point` on the way; then starts it again.
async fn crash_during(
    config: &Path,
    point: &str,
    (method, path, body): (&str, &str, &str),
) -> (Child, String) {
    let (mut child, base) = spawn_server_crashing_after(config, Some(point));
    let answer = dav(&common::http_client(), &base, "ana", method, path, body).await;
    assert!(answer.is_none(), "answered instead of crashing: {answer:?}");
    wait_for_crash(&mut child, config.parent().unwrap());
    spawn_server(config)
}

/// The messages a meeting sends are stored with it and delivered after it: a
/// `kill -9` between the two (before delivery, or after delivery but before
/// the answer) loses none and duplicates none, for saving, changing and
/// deleting it, in a staff calendar and in the bookings calendar.
#[tokio::test(flavor = "multi_thread")]
async fn scheduling_messages_survive_kill_9_between_write_and_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let client = common::http_client();
    let url = "/dav/calendars/salon/team/meeting.ics";
    let meeting = |hour: u32| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VEVENT\r\nUID:m1\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:20261222T{hour:02}0000Z\r\nDTEND:20261222T{end:02}0000Z\r\nSUMMARY:Team\r\nORGANIZER:mailto:ana@salon.calgate.invalid\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:ana@salon.calgate.invalid\r\nATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bea@salon.calgate.invalid\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            end = hour + 1
        )
    };
    let (mut child, base) = spawn_server(&config);
    let team = "/dav/calendars/salon/team/";
    let made = dav(&client, &base, "ana", "MKCALENDAR", team, "").await;
    assert_eq!(made.map(|(status, _)| status), Some(201));
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed once the meeting and its REQUEST are on disk, before delivery.
    let put = ("PUT", url, &*meeting(9));
    let (mut child, base) = crash_during(&config, "schedule-outbox-write", put).await;
    let (status, stored) = dav(&client, &base, "ana", "GET", url, "").await.unwrap();
    assert_eq!(status, 200, "the meeting was stored");
    let stored = stored.replace("\r\n ", "");
    assert!(stored.contains("SCHEDULE-STATUS=1.2"), "{stored}");
    let inbox = bea_inbox(&client, &base).await;
    assert_eq!(
        (inbox.len(), count(&inbox, "REQUEST", 9)),
        (1, 1),
        "{inbox:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed after the new time's REQUEST is delivered, before the answer.
    let put = ("PUT", url, &*meeting(10));
    let (mut child, base) = crash_during(&config, "schedule-delivered", put).await;
    let inbox = bea_inbox(&client, &base).await;
    let requests = (count(&inbox, "REQUEST", 9), count(&inbox, "REQUEST", 10));
    assert_eq!((inbox.len(), requests), (2, (1, 1)), "{inbox:?}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Deleting it: killed before the CANCEL is delivered.
    let delete = ("DELETE", url, "");
    let (mut child, base) = crash_during(&config, "schedule-outbox-write", delete).await;
    let gone = dav(&client, &base, "ana", "GET", url, "").await.unwrap();
    assert_eq!(gone.0, 404, "the deletion was stored");
    let inbox = bea_inbox(&client, &base).await;
    assert_eq!(
        (inbox.len(), count(&inbox, "CANCEL", 10)),
        (3, 1),
        "{inbox:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // A meeting in the bookings calendar (a booking): killed before delivery.
    let booking = "/dav/calendars/salon/bookings/meeting.ics";
    let put = ("PUT", booking, &*meeting(14));
    let (mut child, base) = crash_during(&config, "schedule-outbox-write", put).await;
    let (status, _) = dav(&client, &base, "ana", "GET", booking, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "the booking was stored");
    let inbox = bea_inbox(&client, &base).await;
    let requests = count(&inbox, "REQUEST", 14);
    assert_eq!((inbox.len(), requests), (4, 1), "{inbox:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let (mut child, _) = spawn_server(&config);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn broken_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = config_text(&dir.path().join("data"), "127.0.0.1:0").replacen(
        "timezone = \"America/New_York\"",
        "timezone = \"America/Gotham\"",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.toml: tenant[1].timezone"), "{err}");
    assert!(err.contains("America/Gotham"), "{err}");
    assert!(!dir.path().join("data").exists(), "no half-started server");

    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn the_shipped_gateway_toml_is_valid_and_has_the_demo_tenant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = calgate::config::Config::load(
        &root.join("gateway.toml"),
        &calgate::config::Overrides::default(),
    )
    .expect("gateway.toml is valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.data_dir, Path::new("./data"));
    let demo = config.tenant("demo").expect("demo tenant");
    assert_eq!(demo.timezone, chrono_tz::Europe::Paris);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut in_temp = config.clone();
    in_temp.data_dir = dir.path().to_owned();
    let app = calgate::app::App::with_store(
        in_temp,
        std::sync::Arc::new(calgate::store::SledStore::open(&dir.path().join("db")).unwrap()),
    )
    .expect("app wired up");
    rt.block_on(async {
        let key = app
            .api_keys
            .verify(None, "demo-key")
            .await
            .expect("demo-key works");
        assert_eq!(key.tenant, "demo");
        let feed = app
            .feed_tokens
            .verify(None, "demo-feed")
            .await
            .expect("demo-feed works");
        assert_eq!(feed.tenant, "demo");
        let user = app
            .users
            .verify(Some("demo"), "demo")
            .await
            .expect("demo/demo works");
        assert_eq!(user.tenant, "demo");
    });
}

#[test]
fn hash_password_prints_a_verifiable_hash() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    calgate::auth::check_hash_format(&hash).unwrap();
    let v = calgate::auth::Verifier::new();
    v.add(None, &hash, ());
    let v = Arc::new(v);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(v.verify(None, "correct horse")).is_some());
    assert!(rt.block_on(v.verify(None, "correct horse\n")).is_none());
}
