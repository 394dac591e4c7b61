//! `status`.

use crate::harness::Env;

#[tokio::test]
async fn status_reports_readiness_key_ages_and_clock_skew_in_both_modes() {
    let env = Env::start().await;
    let doc = env.run(&["status", "--json"]).await.json();
    assert_eq!(doc["reachable"], true, "{doc}");
    assert_eq!(doc["ready"], true, "{doc}");
    assert_eq!(doc["readyz"]["status"], "ready", "{doc}");
    assert!(doc["readyz"]["store"].is_string(), "{doc}");
    assert!(doc["readyz"]["validation_mode"].is_string(), "{doc}");
    // Same machine: the clocks agree to within the Date header's second.
    let skew = doc["clock_skew_seconds"].as_f64().unwrap();
    assert!(skew.abs() < 2.0, "{skew}");
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 0);

    let out = env.run(&["status"]).await;
    let text = out.ok();
    let labels: Vec<&str> = text
        .lines()
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["server", "readiness", "clock", "signing key"],
        "{text}"
    );
    assert!(text.contains("reachable"), "{text}");
    assert!(text.contains("ready, store "), "{text}");
    assert!(text.contains(" EdDSA active, "), "{text}");
}
