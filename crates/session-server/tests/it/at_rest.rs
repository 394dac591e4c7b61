//! Session records encrypted at rest (contract v1.1, "At rest"): the
//! stores' own files and keys hold a session's IP, user agent, metadata
//! and location only sealed; the audit log keeps its IP and user agent
//! readable by design.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const UA_MARKER: &str = "AtRestMarkerBrowser/9.9";
const META_MARKER: &str = "at-rest-metadata-marker";
const IP_MARKER: &str = "198.51.100.213";

async fn open_marked(app: &App, user: &str) -> String {
    let r = app
        .admin_req(Method::POST, "/admin/v1/sessions")
        .json(&json!({
            "user_id": user,
            "ip": IP_MARKER,
            "user_agent": UA_MARKER,
            "metadata": {"note": META_MARKER},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let id = body["session_id"].as_str().unwrap().to_owned();
    // Everything is still readable through the API.
    let view = app.admin_view(&id).await;
    assert_eq!(view["user_agent"], UA_MARKER);
    assert_eq!(view["ip"], IP_MARKER);
    assert_eq!(view["metadata"]["note"], META_MARKER);
    id
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_embedded_store_keeps_private_fields_sealed_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let app = App {
        server: session_server::testing::TestServer::start_in(&dir, |_| Ok(()))
            .await
            .unwrap(),
        http: client(),
    };
    let id = open_marked(&app, "sealed-user").await;
    let mut seen = 0;
    for name in ["sessions.db", "sessions.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        seen += bytes.len();
        for marker in [UA_MARKER, META_MARKER, IP_MARKER] {
            assert!(!contains(&bytes, marker), "{marker} in the clear in {name}");
        }
        // The id stays clear: lookups work on it.
        if contains(&bytes, &id) {
            seen += 1_000_000;
        }
    }
    assert!(seen > 1_000_000, "the session id is stored in the clear");
    // The audit log keeps them readable (forensics), in its own file; a
    // query waits until the outbox in front of it has delivered the event.
    let created = app
        .audit(&format!("kind=session_created&session_id={id}"))
        .await;
    assert_eq!(created[0]["user_agent"], UA_MARKER);
    let audit = std::fs::read(dir.join("audit.db"))
        .into_iter()
        .chain(std::fs::read(dir.join("audit.db-wal")))
        .flatten()
        .collect::<Vec<u8>>();
    assert!(
        contains(&audit, UA_MARKER),
        "the audit log lost the user agent"
    );
    // And a restart on the same data dir opens them again.
    app.server.stop().await;
    let again = session_server::testing::TestServer::start_in(&dir, |_| Ok(()))
        .await
        .unwrap();
    let r = client()
        .get(format!("{}/admin/v1/sessions/{id}", again.admin_url()))
        .bearer_auth(again.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["user_agent"], UA_MARKER);
}

#[tokio::test]
async fn redis_keeps_private_fields_sealed_and_a_session_small() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("atrest{}", free_port());
    let (u, p) = (url.clone(), prefix.clone());
    let app = App::start_with(move |raw| {
        raw.set("store", u)?;
        raw.set("redis_prefix", p)
    })
    .await;
    let id = open_marked(&app, "sealed-redis-user").await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*s:{{{id}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    for marker in [UA_MARKER, META_MARKER, IP_MARKER] {
        assert!(!contains(&raw, marker), "{marker} in the clear in Redis");
    }
    // A sealed session with a 23-byte user agent, an IP and metadata.
    let used: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(used < 600, "{used} bytes for one session record");
}
