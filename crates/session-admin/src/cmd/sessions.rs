//! `sessions list|show|revoke`.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, array};
use crate::cli::{RevokeArgs, SessionsCommand};
use crate::client::NO_BODY;
use crate::error::Failure;
use crate::output::{self, Local, Table, count, text};

pub(super) async fn run(ctx: &Ctx, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List { user } => list(ctx, &user).await,
        SessionsCommand::Show { id } => show(ctx, &id).await,
        SessionsCommand::Revoke(args) => match (&args.id, &args.user) {
            (Some(id), _) => revoke_one(ctx, id, args.reason.as_deref()).await,
            (None, Some(user)) => revoke_user(ctx, user, &args).await,
            (None, None) => Err(Failure::Usage("give a session id or --user".to_owned()).into()),
        },
    }
}

async fn list(ctx: &Ctx, user: &str) -> anyhow::Result<()> {
    let body = ctx
        .authed()?
        .get(&["admin", "v1", "users", user, "sessions"], &[])
        .await
        .with_context(|| format!("sessions of user {user:?}"))?;
    let sessions = array(&body, "sessions")?;
    if ctx.json {
        return output::json(&body);
    }
    if sessions.is_empty() {
        return output::println(&format!("user {user:?} has no active sessions"));
    }
    output::print(&session_table(sessions, ctx.local).render())
}

/// The sessions as a table. Session ids stay whole: they are what an
/// operator copies into `sessions revoke`.
pub(crate) fn session_table(sessions: &[Value], local: Local) -> Table {
    // A server with a GeoIP database sends `location` (null where
    // unknown); the column is there only then.
    let located = sessions.iter().any(|s| s.get("location").is_some());
    let mut header = vec!["SESSION", "CREATED", "LAST SEEN", "EXPIRES", "IP"];
    if located {
        header.push("LOCATION");
    }
    header.push("USER AGENT");
    let mut table = Table::new(header);
    for s in sessions {
        let mut row = vec![
            text(s.get("session_id")),
            local.time(s.get("created_at")),
            local.time(s.get("last_seen_at")),
            local.time(s.get("expires_at")),
            text(s.get("ip")),
        ];
        if located {
            row.push(place(s.get("location")));
        }
        row.push(text(s.get("user_agent")));
        table.row(row);
    }
    table
}

/// A `location` as `City, CC`; `-` where unknown.
fn place(location: Option<&Value>) -> String {
    let part = |k: &str| {
        location
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let parts: Vec<String> = [part("city"), part("country")]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

async fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let body = ctx
        .authed()?
        .get(&["admin", "v1", "sessions", id], &[])
        .await
        .with_context(|| format!("session {id}"))?;
    if ctx.json {
        return output::json(&body);
    }
    output::print(&session_details(&body, ctx.local))
}

/// One session as `field  value` lines: the contract's fields first, then
/// whatever else the server sent.
pub(crate) fn session_details(session: &Value, local: Local) -> String {
    const KNOWN: [(&str, &str); 16] = [
        ("session_id", "session"),
        ("user_id", "user"),
        ("active", "active"),
        ("created_at", "created"),
        ("last_seen_at", "last seen"),
        ("expires_at", "expires"),
        ("idle_expires_at", "idle deadline"),
        ("absolute_expires_at", "absolute deadline"),
        ("revoked_at", "revoked"),
        ("revoked_reason", "revoked reason"),
        ("ip", "ip"),
        ("user_agent", "user agent"),
        ("location", "location"),
        ("current", "current"),
        ("refresh_generation", "refreshes"),
        ("metadata", "metadata"),
    ];
    let mut table = Table::default();
    let fields = session.as_object().cloned().unwrap_or_default();
    let show = |key: &str, value: Option<&Value>| {
        if key == "location" {
            place(value)
        } else if key.ends_with("_at") {
            local.time(value)
        } else {
            text(value)
        }
    };
    for (key, label) in KNOWN {
        if let Some(value) = fields.get(key) {
            table.row(vec![label.to_owned(), show(key, Some(value))]);
        }
    }
    for (key, value) in &fields {
        if !KNOWN.iter().any(|(k, _)| k == key) {
            table.row(vec![key.replace('_', " "), show(key, Some(value))]);
        }
    }
    table.render()
}

async fn revoke_one(ctx: &Ctx, id: &str, reason: Option<&str>) -> anyhow::Result<()> {
    let query: Vec<(&str, String)> = reason
        .map(|r| ("reason", r.to_owned()))
        .into_iter()
        .collect();
    ctx.authed()?
        .call(
            Method::DELETE,
            &["admin", "v1", "sessions", id],
            &query,
            NO_BODY,
        )
        .await
        .with_context(|| format!("session {id}"))?;
    if ctx.json {
        return output::json(&json!({ "session_id": id, "revoked": true }));
    }
    output::println(&format!("revoked session {id}"))
}

async fn revoke_user(ctx: &Ctx, user: &str, args: &RevokeArgs) -> anyhow::Result<()> {
    let client = ctx.authed()?;
    if !args.yes {
        // Refuse before any request when nobody can answer the question.
        crate::prompt::require_terminal(&format!("revoke every session of user {user:?}"))?;
        let body = client
            .get(&["admin", "v1", "users", user, "sessions"], &[])
            .await
            .with_context(|| format!("sessions of user {user:?}"))?;
        let n = array(&body, "sessions")?.len();
        if n == 0 {
            if ctx.json {
                return output::json(&json!({ "revoked": 0 }));
            }
            return output::println(&format!(
                "user {user:?} has no active sessions; nothing to revoke"
            ));
        }
        let question = format!(
            "Revoke all {} of user {user:?}?",
            count(n as u64, "active session")
        );
        if !crate::prompt::confirm(&question)? {
            return Err(Failure::Usage("not confirmed; nothing was revoked".to_owned()).into());
        }
    }
    let query: Vec<(&str, String)> = args.reason.iter().map(|r| ("reason", r.clone())).collect();
    let answer = client
        .call(
            Method::DELETE,
            &["admin", "v1", "users", user, "sessions"],
            &query,
            NO_BODY,
        )
        .await
        .with_context(|| format!("sessions of user {user:?}"))?;
    if ctx.json {
        return output::json(&answer.body);
    }
    let n = answer
        .body
        .get("revoked")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    output::println(&format!("revoked {} of user {user:?}", count(n, "session")))
}

#[cfg(test)]
mod tests {
    use time::UtcOffset;

    use super::*;

    const UTC: Local = Local {
        offset: UtcOffset::UTC,
    };

    #[test]
    fn session_tables_show_whole_ids_and_local_times() {
        let sessions = [json!({
            "session_id": "Zk3bq2aH0Jz6Yx1wPq9LmA",
            "created_at": "2026-01-31T12:00:00Z",
            "last_seen_at": "2026-01-31T12:05:00Z",
            "expires_at": null,
            "ip": "203.0.113.9",
            "user_agent": "curl/8",
            "current": false
        })];
        let rendered = session_table(&sessions, UTC).render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(
            lines[0].starts_with("SESSION                 CREATED"),
            "{rendered}"
        );
        assert!(
            lines[1].starts_with("Zk3bq2aH0Jz6Yx1wPq9LmA  2026-01-31 12:00:00 +00:00"),
            "{rendered}"
        );
        assert!(lines[1].ends_with("203.0.113.9  curl/8"), "{rendered}");
        assert!(!rendered.contains("LOCATION"), "{rendered}");
    }

    #[test]
    fn session_tables_show_locations_where_the_server_knows_them() {
        let sessions = [
            json!({"session_id": "a", "ip": "203.0.113.9", "user_agent": "curl/8",
                   "location": {"country": "FR", "city": "Paris"}}),
            json!({"session_id": "b", "ip": "192.0.2.1", "user_agent": "curl/8", "location": null}),
        ];
        let rendered = session_table(&sessions, UTC).render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[0].contains("IP           LOCATION"), "{rendered}");
        assert!(
            lines[1].ends_with("203.0.113.9  Paris, FR  curl/8"),
            "{rendered}"
        );
        assert!(
            lines[2].ends_with("192.0.2.1    -          curl/8"),
            "{rendered}"
        );
        let details = session_details(&sessions[0], UTC);
        assert!(details.contains("location"), "{details}");
        assert!(details.contains("Paris, FR"), "{details}");
    }

    #[test]
    fn session_details_put_the_contract_fields_first() {
        let s = json!({
            "zeta": 1,
            "user_id": "alice",
            "session_id": "s1",
            "revoked_at": "2026-01-31T12:00:00Z",
            "seen_at": "2026-01-31T13:00:00Z",
            "metadata": {"device": "phone"}
        });
        let text = session_details(&s, UTC);
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.split("  ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["session", "user", "revoked", "metadata", "seen at", "zeta"]
        );
        assert!(
            text.contains("revoked   2026-01-31 12:00:00 +00:00"),
            "{text}"
        );
        assert!(
            text.contains("seen at   2026-01-31 13:00:00 +00:00"),
            "{text}"
        );
    }
}
