//! DPoP-bound tokens, CSRF origins and CORS in an app behind
//! `SessionLayer`, over real HTTP, on the embedded SQLite store (whose
//! replay set remembers each proof). Proofs are signed here with
//! ed25519-dalek; the server's own tests use an independent signer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::routing::{get, post};
use axum::{Router, middleware};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_axum::cors::{Cors, cors};
use session_axum::{
    Authenticated, DpopVerifier, OriginPolicy, PublicUrl, SessionLayer, ValidationMode,
};
use session_core::dpop::{Jkt, access_token_hash, thumbprint_of_jwk};
use session_core::keys::{KeyRing, SigningAlgorithm, VerifyPolicy};
use session_core::service::{Issued, ServiceConfig, ServiceParts, SessionService};
use session_core::{Actor, ClientInfo, Clock as _, SystemClock, TokenSecrets};
use session_store_sqlite::SqliteStore;

async fn me(auth: Authenticated) -> String {
    auth.claims.sub
}

/// A service on a fresh SQLite store (kept alive by the returned dir).
async fn service() -> (Arc<SessionService>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("sessions.db"))
            .await
            .unwrap(),
    );
    let policy = VerifyPolicy {
        issuer: "app".into(),
        audience: "app".into(),
        leeway: time::Duration::seconds(30),
    };
    let keys = KeyRing::generate(SigningAlgorithm::EdDSA, policy, SystemClock.now(), None).unwrap();
    let service = Arc::new(SessionService::new(ServiceParts {
        sessions: store.clone(),
        users: store.clone(),
        audit: store,
        keys: Arc::new(keys),
        secrets: TokenSecrets::from_master(&[5; 32]),
        clock: Arc::new(SystemClock),
        config: ServiceConfig::default(),
    }));
    (service, dir)
}

/// Serves `/me` (GET), `/change` (POST) behind `layer`; returns the URL.
async fn serve(layer: SessionLayer, cors_for: Option<OriginPolicy>) -> String {
    let mut app = Router::new()
        .route("/me", get(me))
        .route("/change", post(me))
        .layer(layer);
    if let Some(policy) = cors_for {
        let methods = |path: &str| match path {
            "/me" => Some("GET, HEAD"),
            "/change" => Some("POST"),
            _ => None,
        };
        app = app.layer(middleware::from_fn_with_state(
            Cors::new(policy, methods),
            cors,
        ));
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A client's DPoP key.
struct Key(ed25519_dalek::SigningKey);

impl Key {
    fn new(seed: u8) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.0.verifying_key().as_bytes())})
    }

    fn jkt(&self) -> Jkt {
        thumbprint_of_jwk(&self.jwk()).unwrap()
    }

    /// A proof for `htm` `htu`, bound to `token`, with a fresh `jti`.
    fn proof(&self, htm: &str, htu: &str, token: &str, nonce: Option<&str>) -> String {
        static JTI: AtomicU64 = AtomicU64::new(0);
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": self.jwk()});
        let mut claims = json!({
            "jti": format!("jti-{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::SeqCst)),
            "htm": htm,
            "htu": htu,
            "iat": SystemClock.now().unix_timestamp(),
            "ath": access_token_hash(token),
        });
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.0.sign(t.as_bytes()).to_bytes();
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(sig));
        t
    }
}

async fn open(service: &SessionService, user: &str, jkt: Option<Jkt>) -> Issued {
    let client = ClientInfo {
        dpop_jkt: jkt,
        ..ClientInfo::default()
    };
    service
        .open_session(user, None, &client, Actor::Admin)
        .await
        .unwrap()
}

/// Status, `error` code and `WWW-Authenticate` of an answer.
async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, String, String) {
    let r = req.send().await.unwrap();
    let status = r.status();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    (status, code, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_token_is_accepted_with_a_good_proof_and_refused_as_bearer_or_with_a_replayed_proof()
 {
    let (service, _dir) = service().await;
    let url = serve(
        SessionLayer::new(service.clone(), ValidationMode::Cached),
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let key = Key::new(1);
    let issued = open(&service, "erin", Some(key.jkt())).await;
    let token = issued.access_token.expose().to_owned();
    let me_url = format!("{url}/me");
    let dpop = |proof: &str| {
        http.get(&me_url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
    };

    let proof = key.proof("GET", &me_url, &token, None);
    let r = dpop(&proof).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a good proof by the token's key"
    );
    assert_eq!(r.text().await.unwrap(), "erin");

    let (status, code, challenge) = answer(dpop(&proof)).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
        "the same proof again is a replay"
    );
    assert!(
        challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{challenge}"
    );

    let (status, code, challenge) = answer(http.get(&me_url).bearer_auth(&token)).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token"),
        "a bound token is no bearer token"
    );
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (status, code, _) = answer(
        http.get(&me_url)
            .bearer_auth(&token)
            .header("dpop", key.proof("GET", &me_url, &token, None)),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token"),
        "not even with a good proof"
    );

    for (why, proof) in [
        (
            "a proof by another key",
            Key::new(2).proof("GET", &me_url, &token, None),
        ),
        (
            "a proof for another URL",
            key.proof("GET", &format!("{url}/change"), &token, None),
        ),
        (
            "a proof for another method",
            key.proof("POST", &me_url, &token, None),
        ),
        (
            "a proof for another token",
            key.proof("GET", &me_url, "another-token", None),
        ),
    ] {
        let (status, code, _) = answer(dpop(&proof)).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
            "{why}"
        );
    }
    let (status, code, _) = answer(
        http.get(&me_url)
            .header("authorization", format!("DPoP {token}")),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
        "no proof at all"
    );

    // A change with a bound token needs a proof for it, and no CSRF token.
    let change_url = format!("{url}/change");
    let r = http
        .post(&change_url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("POST", &change_url, &token, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // An unbound token is no DPoP token.
    let unbound = open(&service, "frank", None).await;
    let unbound = unbound.access_token.expose().to_owned();
    let (status, code, _) = answer(
        http.get(&me_url)
            .header("authorization", format!("DPoP {unbound}"))
            .header("dpop", key.proof("GET", &me_url, &unbound, None)),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_public_url_with_nonces_a_proof_names_the_public_url_and_a_fresh_nonce() {
    let (service, _dir) = service().await;
    let public = PublicUrl::parse("https://api.example/auth").unwrap();
    let verifier = DpopVerifier::for_service(&service)
        .with_public_url(Some(public))
        .with_nonces(true);
    let url = serve(
        SessionLayer::new(service.clone(), ValidationMode::Strict).with_dpop(Some(verifier)),
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let key = Key::new(3);
    let token = open(&service, "gina", Some(key.jkt())).await;
    let token = token.access_token.expose().to_owned();
    let call = |proof: String| {
        http.get(format!("{url}/me"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
    };
    let public_me = "https://api.example/auth/me";

    let r = call(key.proof("GET", public_me, &token, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("DPoP error=\"use_dpop_nonce\"")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");

    let (status, code, _) = answer(call(key.proof(
        "GET",
        &format!("{url}/me"),
        &token,
        Some(&nonce),
    )))
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
        "the listener's own URL is not the public one"
    );
    let r = call(key.proof("GET", public_me, &token, Some(&nonce)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_verifier_a_bound_token_is_refused_even_with_a_good_proof() {
    let (service, _dir) = service().await;
    let url = serve(
        SessionLayer::new(service.clone(), ValidationMode::Stateless).with_dpop(None),
        None,
    )
    .await;
    let key = Key::new(4);
    let token = open(&service, "hal", Some(key.jkt())).await;
    let token = token.access_token.expose().to_owned();
    let me_url = format!("{url}/me");
    let (status, code, _) = answer(
        reqwest::Client::new()
            .get(&me_url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", key.proof("GET", &me_url, &token, None)),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_may_change_state_with_the_cookie_and_gets_cors() {
    let (service, _dir) = service().await;
    let policy = OriginPolicy::new(None, vec!["https://app.example".into()]);
    let url = serve(
        SessionLayer::new(service.clone(), ValidationMode::Cached).with_origins(policy.clone()),
        Some(policy),
    )
    .await;
    let http = reqwest::Client::new();
    let issued = open(&service, "ivy", None).await;
    let cookie = format!("__Host-session={}", issued.access_token.expose());
    let csrf = issued.csrf_token.expose().to_owned();
    let change = |origin: &str| {
        http.post(format!("{url}/change"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("origin", origin)
    };

    let r = change("https://app.example").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a listed origin");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["vary"], "Origin");
    let host = url.trim_start_matches("http://");
    let r = change(&format!("http://{host}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the own origin");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let (status, code, _) = answer(change("https://evil.example")).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "csrf_failed")
    );
    let (status, code, _) =
        answer(change("https://app.example").header("sec-fetch-site", "cross-site")).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "csrf_failed"),
        "Sec-Fetch-Site: cross-site is refused whatever the origin"
    );

    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{url}/change"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(
        h["access-control-allow-headers"],
        session_axum::cors::ALLOW_HEADERS
    );
    let other = http
        .request(reqwest::Method::OPTIONS, format!("{url}/change"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
