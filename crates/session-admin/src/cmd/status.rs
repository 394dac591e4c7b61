//! `status`: reachable, ready, key ages, clock skew.

use reqwest::header::DATE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use session_core::wire::Timestamp;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use super::Ctx;
use super::keys::{get_keys, key_list};
use crate::client::NO_BODY;
use crate::error::Failure;
use crate::output::{self, Table, age, text};

/// The token leeway of the contract: beyond it, tokens look expired or
/// not yet valid.
const LEEWAY_SECONDS: f64 = 60.0;

pub(super) async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let url = ctx.client.shown_url();
    let sent = ctx.now();
    let health = ctx
        .client
        .raw(Method::GET, &["healthz"], &[], NO_BODY)
        .await;
    let received = ctx.now();
    let health = match health {
        Ok(answer) => answer,
        Err(e) => {
            if ctx.json {
                output::json(&json!({ "url": url, "reachable": false, "error": e.to_string() }))?;
            }
            return Err(e.into());
        }
    };
    let skew = health
        .headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .map(|date| clock_skew(date, sent, received));

    let mut problems = Vec::new();
    if !health.status.is_success() {
        problems.push(format!("/healthz answered {}", health.status));
    }
    if let Some(s) = skew
        && s.abs() > LEEWAY_SECONDS
    {
        problems.push(format!(
            "the clocks differ by {s:.0} s, more than the 60 s token leeway"
        ));
    }

    let client = ctx.authed()?;
    let readyz = client.raw(Method::GET, &["readyz"], &[], NO_BODY).await?;
    let ready_word = readyz
        .body
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ready =
        readyz.status == StatusCode::OK && ready_word.as_deref().is_none_or(|w| w == "ready");
    if readyz.status == StatusCode::UNAUTHORIZED
        && let Some(refusal) = readyz.refusal()
    {
        return Err(anyhow::Error::new(refusal).context("readiness"));
    }
    if !ready {
        problems.push(format!(
            "not ready (/readyz answered {}{})",
            readyz.status,
            readyz
                .body
                .get("store")
                .map(|s| format!(", store {}", text(Some(s))))
                .unwrap_or_default()
        ));
    }

    let keys_body = get_keys(client).await?;
    let now = ctx.now();
    let keys: Vec<Value> = key_list(&keys_body)?
        .iter()
        .map(|k| {
            json!({
                "kid": k.kid,
                "alg": k.alg,
                "state": k.state,
                "created_at": Timestamp(k.created_at),
                "age_seconds": (now - k.created_at).whole_seconds(),
            })
        })
        .collect();

    if ctx.json {
        output::json(&json!({
            "url": url,
            "reachable": true,
            "healthz_status": health.status.as_u16(),
            "ready": ready,
            "readyz_status": readyz.status.as_u16(),
            "readyz": readyz.body,
            "clock_skew_seconds": skew,
            "keys": keys,
            "problems": problems,
        }))?;
    } else {
        let mut t = Table::default();
        t.row(vec![
            "server".into(),
            format!("{url} reachable (/healthz {})", health.status.as_u16()),
        ]);
        let mut readiness = ready_word.unwrap_or_else(|| {
            if ready {
                "ready".into()
            } else {
                "not_ready".into()
            }
        });
        for (key, label) in [
            ("store", "store"),
            ("audit", "audit"),
            ("validation_mode", "validation"),
        ] {
            if let Some(v) = readyz.body.get(key) {
                readiness.push_str(&format!(", {label} {}", text(Some(v))));
            }
        }
        t.row(vec!["readiness".into(), readiness]);
        t.row(vec![
            "clock".into(),
            skew.map_or_else(
                || "the server sent no Date header".to_owned(),
                describe_skew,
            ),
        ]);
        for k in &keys {
            let age_text = k["age_seconds"].as_i64().map_or_else(
                || "age unknown".to_owned(),
                |s| format!("{} old", age(Duration::seconds(s))),
            );
            t.row(vec![
                "signing key".into(),
                format!(
                    "{} {} {}, {age_text}",
                    text(k.get("kid")),
                    text(k.get("alg")),
                    text(k.get("state"))
                ),
            ]);
        }
        if keys.is_empty() {
            t.row(vec!["signing key".into(), "none".into()]);
        }
        output::print(&t.render())?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Refused(problems.join("; ")).into())
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Seconds the server's clock is ahead of ours (negative: behind). The
/// Date header is truncated to the second, so its middle is taken, and
/// compared with the middle of the request.
fn clock_skew(date: OffsetDateTime, sent: OffsetDateTime, received: OffsetDateTime) -> f64 {
    let ours: OffsetDateTime = sent + (received - sent) / 2;
    let theirs: OffsetDateTime = date + Duration::milliseconds(500);
    let skew: Duration = theirs - ours;
    skew.as_seconds_f64()
}

fn describe_skew(s: f64) -> String {
    if s.abs() < 1.0 {
        "in step with this machine (within the Date header's 1 s precision)".to_owned()
    } else if s > 0.0 {
        format!("the server is {s:.0} s ahead of this machine")
    } else {
        format!("the server is {:.0} s behind this machine", -s)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn http_dates_are_read_as_utc() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(datetime!(1994-11-06 08:49:37 UTC))
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn clock_skew_compares_the_middles() {
        let sent = datetime!(2026-01-31 12:00:00.000 UTC);
        let received = datetime!(2026-01-31 12:00:00.200 UTC);
        let skew = clock_skew(datetime!(2026-01-31 12:00:00 UTC), sent, received);
        assert!((skew - 0.4).abs() < 1e-9, "{skew}");
        let behind = clock_skew(datetime!(2026-01-31 11:58:00 UTC), sent, received);
        assert!((behind + 119.6).abs() < 1e-9, "{behind}");
        assert_eq!(
            describe_skew(0.4),
            "in step with this machine (within the Date header's 1 s precision)"
        );
        assert_eq!(
            describe_skew(-119.6),
            "the server is 120 s behind this machine"
        );
        assert_eq!(
            describe_skew(3.2),
            "the server is 3 s ahead of this machine"
        );
    }
}
