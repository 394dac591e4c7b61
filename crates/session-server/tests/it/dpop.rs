//! DPoP (RFC 9449, contract v1.1) over real HTTP, with proofs made by an
//! independent implementation: Python's `cryptography` (pyca), run from a
//! virtual environment the harness makes once under `target/`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const SIGNER: &str = include_str!("dpop_signer.py");

/// The venv's python with `cryptography` (see [`test_venv`]).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        test_venv(
            "test-venv",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
            &["cryptography"],
        )
    })
}

/// A client's DPoP key, held by the Python signer.
pub struct Key {
    alg: &'static str,
    pem: String,
    /// Its RFC 7638 thumbprint, as the signer computed it.
    pub jkt: String,
}

/// What one proof should say; `None` fields take the signer's defaults.
#[derive(Default, Clone)]
struct Spec {
    token: Option<String>,
    iat_offset: i64,
    jti: Option<String>,
    nonce: Option<String>,
    header: Option<Value>,
    jwk_extra: Option<Value>,
    claims: Option<Value>,
}

fn sign(alg: &str, pem: Option<&str>, proofs: Vec<Value>) -> Value {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(SIGNER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let req = json!({ "alg": alg, "pem": pem, "proofs": proofs });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the signer failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Key {
    pub fn new(alg: &'static str) -> Self {
        let out = sign(alg, None, Vec::new());
        Self {
            alg,
            pem: out["pem"].as_str().unwrap().to_owned(),
            jkt: out["jkt"].as_str().unwrap().to_owned(),
        }
    }

    fn proof_with(&self, htm: &str, htu: &str, spec: Spec) -> String {
        let mut p = json!({ "htm": htm, "htu": htu, "iat_offset": spec.iat_offset });
        for (name, v) in [
            ("token", spec.token.map(Value::from)),
            ("jti", spec.jti.map(Value::from)),
            ("nonce", spec.nonce.map(Value::from)),
            ("header", spec.header),
            ("jwk_extra", spec.jwk_extra),
            ("claims", spec.claims),
        ] {
            if let Some(v) = v {
                p[name] = v;
            }
        }
        let out = sign(self.alg, Some(&self.pem), vec![p]);
        out["proofs"][0].as_str().unwrap().to_owned()
    }

    pub fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        self.proof_with(
            htm,
            htu,
            Spec {
                token: token.map(str::to_owned),
                ..Spec::default()
            },
        )
    }
}

async fn dpop_login(app: &App, user: &str, proof: &str) -> Response {
    app.http
        .post(app.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("DPoP", proof)
        .json(&json!({ "username": user, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
}

async fn dpop_refresh(app: &App, refresh: &str, proof: Option<&str>) -> Response {
    let mut r = app
        .http
        .post(app.public("/v1/auth/refresh"))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "refresh_token": refresh }));
    if let Some(p) = proof {
        r = r.header("DPoP", p);
    }
    r.send().await.unwrap()
}

/// `GET path` with `Authorization: <scheme> <token>` and an optional proof.
async fn get_with(
    app: &App,
    path: &str,
    scheme: &str,
    token: &str,
    proof: Option<&str>,
) -> Response {
    let mut r = app
        .http
        .get(app.public(path))
        .header("Authorization", format!("{scheme} {token}"));
    if let Some(p) = proof {
        r = r.header("DPoP", p);
    }
    r.send().await.unwrap()
}

async fn assert_dpop_refused(r: Response, case: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(
        challenge, r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#,
        "{case}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof", "{case}");
}

async fn assert_invalid_token(r: Response, case: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{case}");
}

fn claims_of(access: &str) -> Value {
    let payload = access.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A bound session of a new user: (key, access token, refresh token).
async fn bound_session(app: &App, user: &str, alg: &'static str) -> (Key, String, String) {
    app.add_user(user).await;
    let key = Key::new(alg);
    let proof = key.proof("POST", &app.public("/v1/auth/login"), None);
    let r = dpop_login(app, user, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    (key, access, refresh)
}

async fn the_bound_flow_works_with_proofs_and_only_with_them(alg: &'static str) {
    let app = App::start().await;
    let (key, access, refresh) = bound_session(&app, "dora", alg).await;
    assert_eq!(
        claims_of(&access)["cnf"],
        json!({ "jkt": key.jkt }),
        "cnf.jkt is the RFC 7638 thumbprint the client computed"
    );

    for path in ["/v1/session", "/v1/sessions"] {
        let proof = key.proof("GET", &app.public(path), Some(&access));
        let r = get_with(&app, path, "DPoP", &access, Some(&proof)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let proof = key.proof("GET", &app.public("/v1/session"), Some(&access));
    assert_invalid_token(
        get_with(&app, "/v1/session", "Bearer", &access, Some(&proof)).await,
        "a bound token sent as Bearer",
    )
    .await;
    assert_dpop_refused(
        get_with(&app, "/v1/session", "DPoP", &access, None).await,
        "no proof",
    )
    .await;

    // Introspection reports the binding.
    let r = app
        .admin_req(Method::POST, "/admin/v1/introspect")
        .json(&json!({ "token": access }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["cnf"], json!({ "jkt": key.jkt }));

    // Refresh needs a proof by the same key; without one nothing rotates.
    let url = app.public("/v1/auth/refresh");
    assert_dpop_refused(
        dpop_refresh(&app, &refresh, None).await,
        "refresh without proof",
    )
    .await;
    let other = Key::new(alg);
    let proof = other.proof("POST", &url, None);
    assert_dpop_refused(
        dpop_refresh(&app, &refresh, Some(&proof)).await,
        "refresh with another key's proof",
    )
    .await;
    let proof = key.proof("POST", &url, None);
    let r = dpop_refresh(&app, &refresh, Some(&proof)).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the same refresh token still works"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&access)["cnf"]["jkt"], key.jkt.as_str());

    let proof = key.proof("POST", &app.public("/v1/auth/logout"), Some(&access));
    let r = app
        .http
        .post(app.public("/v1/auth/logout"))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_dpop_login_binds_the_session_and_its_tokens_work_only_with_es256_proofs() {
    the_bound_flow_works_with_proofs_and_only_with_them("ES256").await;
}

#[tokio::test]
async fn a_dpop_login_binds_the_session_and_its_tokens_work_only_with_eddsa_proofs() {
    the_bound_flow_works_with_proofs_and_only_with_them("EdDSA").await;
}

#[tokio::test]
async fn every_bad_or_replayed_proof_is_refused_as_invalid_dpop_proof() {
    let app = App::start().await;
    for alg in ["ES256", "EdDSA"] {
        let user = format!("erin-{alg}");
        let (key, access, _) = bound_session(&app, &user, alg).await;
        let url = app.public("/v1/session");
        let good = || Spec {
            token: Some(access.clone()),
            ..Spec::default()
        };
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "typ JWT",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        header: Some(json!({"typ": "JWT"})),
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "alg none",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        header: Some(json!({"alg": "none"})),
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "alg HS256",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        header: Some(json!({"alg": "HS256"})),
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "private key in jwk",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        jwk_extra: Some(json!({"d": "AAAA"})),
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "htm POST on a GET",
                key.proof_with("POST", &url, good()),
                "GET",
            ),
            (
                "htu of another path",
                key.proof_with("GET", &app.public("/v1/sessions"), good()),
                "GET",
            ),
            (
                "htu of another host",
                key.proof_with("GET", "https://evil.example/v1/session", good()),
                "GET",
            ),
            (
                "iat two minutes old",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        iat_offset: -120,
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "iat two minutes ahead",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        iat_offset: 120,
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "ath of another token",
                key.proof_with(
                    "GET",
                    &url,
                    Spec {
                        token: Some("another".into()),
                        ..good()
                    },
                ),
                "GET",
            ),
            (
                "no ath",
                key.proof_with("GET", &url, Spec::default()),
                "GET",
            ),
            ("not a JWT", "not.a.jwt".to_owned(), "GET"),
        ];
        for (case, proof, _) in &cases {
            assert_dpop_refused(
                get_with(&app, "/v1/session", "DPoP", &access, Some(proof)).await,
                &format!("{alg}: {case}"),
            )
            .await;
        }
        // A good proof works once; the same proof again is a replay.
        let proof = key.proof_with("GET", &url, good());
        let r = get_with(&app, "/v1/session", "DPoP", &access, Some(&proof)).await;
        assert_eq!(r.status(), StatusCode::OK, "{alg}: a good proof");
        assert_dpop_refused(
            get_with(&app, "/v1/session", "DPoP", &access, Some(&proof)).await,
            &format!("{alg}: replayed jti"),
        )
        .await;
        // Two DPoP headers are refused.
        let r = app
            .http
            .get(app.public("/v1/session"))
            .header("Authorization", format!("DPoP {access}"))
            .header("DPoP", key.proof("GET", &url, Some(&access)))
            .header("DPoP", key.proof("GET", &url, Some(&access)))
            .send()
            .await
            .unwrap();
        assert_dpop_refused(r, "two DPoP headers").await;
    }
    // An unbound token is not a DPoP token.
    let t = app.bearer_session("frank").await;
    let key = Key::new("EdDSA");
    let proof = key.proof("GET", &app.public("/v1/session"), Some(&t.access));
    assert_invalid_token(
        get_with(&app, "/v1/session", "DPoP", &t.access, Some(&proof)).await,
        "an unbound token as DPoP",
    )
    .await;
}

#[tokio::test]
async fn a_login_proof_is_checked_before_the_session_opens() {
    let app = App::start().await;
    app.add_user("gina").await;
    let key = Key::new("ES256");
    let url = app.public("/v1/auth/login");
    for (case, proof) in [
        ("htm GET", key.proof("GET", &url, None)),
        (
            "private key",
            key.proof_with(
                "POST",
                &url,
                Spec {
                    jwk_extra: Some(json!({"d": "AAAA"})),
                    ..Spec::default()
                },
            ),
        ),
        (
            "iat old",
            key.proof_with(
                "POST",
                &url,
                Spec {
                    iat_offset: -300,
                    ..Spec::default()
                },
            ),
        ),
    ] {
        assert_dpop_refused(dpop_login(&app, "gina", &proof).await, case).await;
    }
    let proof = key.proof("POST", &url, None);
    assert_eq!(
        dpop_login(&app, "gina", &proof).await.status(),
        StatusCode::OK
    );
    assert_dpop_refused(
        dpop_login(&app, "gina", &proof).await,
        "a replayed login proof",
    )
    .await;
}

#[tokio::test]
async fn an_admin_created_session_binds_to_the_thumbprint_it_is_given() {
    let app = App::start().await;
    let key = Key::new("EdDSA");
    let r = app
        .admin_req(Method::POST, "/admin/v1/sessions")
        .json(&json!({ "user_id": "hana", "dpop_jkt": key.jkt }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["cnf"]["jkt"], key.jkt.as_str());
    let proof = key.proof("GET", &app.public("/v1/session"), Some(access));
    let r = get_with(&app, "/v1/session", "DPoP", access, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::OK);

    for bad in [
        json!("abc"),
        json!(format!("{}=", &key.jkt[..42])),
        json!(7),
    ] {
        let r = app
            .admin_req(Method::POST, "/admin/v1/sessions")
            .json(&json!({ "user_id": "hana", "dpop_jkt": bad }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn forward_auth_checks_the_proof_against_the_original_request() {
    let app = App::start().await;
    let (key, access, _) = bound_session(&app, "ivan", "ES256").await;
    let verify = |proof: Option<String>, original: Option<(&str, &str)>| {
        let mut r = app
            .http
            .get(app.public("/v1/auth/verify"))
            .header("Authorization", format!("DPoP {access}"));
        if let Some(p) = proof {
            r = r.header("DPoP", p);
        }
        if let Some((m, u)) = original {
            r = r.header("X-Original-Method", m).header("X-Original-URL", u);
        }
        r.send()
    };
    let original = ("POST", "https://app.example/api/orders?page=2");
    let proof = key.proof("POST", "https://app.example/api/orders", Some(&access));
    let r = verify(Some(proof), Some(original)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-session-user"], "ivan");

    for (case, proof, orig) in [
        (
            "proof for another URL",
            key.proof("POST", "https://app.example/api/admin", Some(&access)),
            Some(original),
        ),
        (
            "proof for another method",
            key.proof("GET", "https://app.example/api/orders", Some(&access)),
            Some(original),
        ),
        (
            "no original request headers",
            key.proof("POST", "https://app.example/api/orders", Some(&access)),
            None,
        ),
    ] {
        assert_dpop_refused(verify(Some(proof), orig).await.unwrap(), case).await;
    }
}

#[tokio::test]
async fn with_server_nonces_on_a_proof_must_carry_a_fresh_nonce() {
    let app = App::start_with(|raw| raw.set("dpop_nonce", "on")).await;
    app.add_user("jo").await;
    let key = Key::new("EdDSA");
    let url = app.public("/v1/auth/login");
    let r = dpop_login(&app, "jo", &key.proof("POST", &url, None)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    let bad = key.proof_with(
        "POST",
        &url,
        Spec {
            nonce: Some("made-up".into()),
            ..Spec::default()
        },
    );
    assert_eq!(
        dpop_login(&app, "jo", &bad).await.status(),
        StatusCode::BAD_REQUEST
    );
    let good = key.proof_with(
        "POST",
        &url,
        Spec {
            nonce: Some(nonce.clone()),
            ..Spec::default()
        },
    );
    let r = dpop_login(&app, "jo", &good).await;
    assert_eq!(r.status(), StatusCode::OK);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A resource request without the nonce: 401 with a DPoP challenge.
    let proof = key.proof("GET", &app.public("/v1/session"), Some(&access));
    let r = get_with(&app, "/v1/session", "DPoP", &access, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"DPoP error="use_dpop_nonce", algs="ES256 EdDSA""#
    );
    assert!(r.headers().contains_key("dpop-nonce"));
}

#[tokio::test]
async fn a_proof_replayed_on_another_instance_on_one_redis_is_refused() {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Both instances are one service at one public URL, so a proof made
    // for one is valid for the other but for its `jti`.
    let public_url = "https://auth.example";
    let a = {
        let redis = redis.clone();
        App::start_with(move |raw| {
            raw.set("store", redis)?;
            raw.set("public_url", public_url)
        })
        .await
    };
    let b = App {
        server: session_server::testing::TestServer::start_in(a.server.data_dir(), move |raw| {
            raw.set("store", redis)?;
            raw.set("master_key", MASTER_KEY)?;
            raw.set("public_url", public_url)
        })
        .await
        .unwrap(),
        http: client(),
    };
    let user = format!("kim-{}", std::process::id());
    a.add_user(&user).await;
    let key = Key::new("ES256");
    let proof = key.proof("POST", &format!("{public_url}/v1/auth/login"), None);
    let r = dpop_login(&a, &user, &proof).await;
    assert_eq!(r.status(), StatusCode::OK);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{public_url}/v1/session");
    let proof = key.proof("GET", &url, Some(&access));
    let r = get_with(&a, "/v1/session", "DPoP", &access, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::OK, "first use on A");
    assert_dpop_refused(
        get_with(&b, "/v1/session", "DPoP", &access, Some(&proof)).await,
        "the same proof on B",
    )
    .await;
    let fresh = key.proof("GET", &url, Some(&access));
    let r = get_with(&b, "/v1/session", "DPoP", &access, Some(&fresh)).await;
    assert_eq!(r.status(), StatusCode::OK, "a fresh proof on B");
}
