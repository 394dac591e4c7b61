//! The served OpenAPI document: valid for `openapi-spec-validator` (the
//! Python tool, from the venv `cargo xtask setup` makes), complete
//! (servers, security and the error body on every operation), and naming
//! exactly the routes the routers answer.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::App;

async fn served_document(app: &App) -> Value {
    let r = app
        .admin_req(Method::GET, "/admin/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The tests' Python: `SESSION_TEST_PYTHON`, else `target/ci-venv`.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-venv/bin/python");
    let python = std::env::var_os("SESSION_TEST_PYTHON").map_or(venv, PathBuf::from);
    assert!(
        python.is_file(),
        "{} not found: run `cargo xtask setup` (it makes target/ci-venv with openapi-spec-validator), \
         or set SESSION_TEST_PYTHON to a python that has it",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_served_openapi_document_passes_openapi_spec_validator() {
    let app = App::start().await;
    let doc = served_document(&app).await;
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openapi-spec-validator: {said}");
    assert!(said.contains("OK"), "{said}");
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

#[tokio::test]
async fn every_operation_has_servers_security_and_the_error_body() {
    let app = App::start().await;
    let doc = served_document(&app).await;
    let servers: Vec<&str> = doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]);
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["session_cookie", "bearer", "dpop", "admin_token"] {
        assert!(schemes.contains_key(scheme), "{scheme}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let at = format!("{method} {path}");
            assert!(op["security"].is_array(), "{at} has no security");
            if path.starts_with("/admin/") {
                assert_eq!(
                    op["security"][0]["admin_token"],
                    serde_json::json!([]),
                    "{at}"
                );
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at} {status}"
                    );
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())),
                        "{at}: path parameter {} is not in the path",
                        p["name"]
                    );
                }
            }
        }
    }
    let audit = &doc["paths"]["/admin/v1/audit"]["get"]["parameters"];
    for p in audit.as_array().unwrap() {
        assert_eq!(p["in"], "query", "{p}");
        assert_ne!(p["required"], true, "{p}");
    }
}

/// Every route the two routers serve (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/auth/verify"),
    ("get", "/v1/session"),
    ("get", "/v1/sessions"),
    ("delete", "/v1/sessions/{session_id}"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/ui/"),
];

#[tokio::test]
async fn the_documents_paths_are_the_routers_routes() {
    let app = App::start().await;
    let doc = served_document(&app).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // Each documented operation is answered by its listener's router (no
    // fallback 404 "no such route", no 405).
    for (method, path) in &documented {
        let concrete = path
            .replace("{session_id}", "AAAAAAAAAAAAAAAAAAAAAA")
            .replace("{id}", "AAAAAAAAAAAAAAAAAAAAAA")
            .replace("{user_id}", "nobody")
            .replace("{username}", "nobody");
        let admin = path.starts_with("/admin/") || path == "/metrics";
        let url = if admin {
            app.admin(&concrete)
        } else {
            app.public(&concrete)
        };
        let r = app
            .http
            .request(method.to_uppercase().parse().unwrap(), url)
            .bearer_auth(app.server.admin_token())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
            "{method} {path} is documented but not routed"
        );
    }
    // And every public route is documented.
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is routed but not documented"
        );
    }
}
