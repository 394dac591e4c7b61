//! `sessions list|show|revoke`.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};
use session_core::wire::{AdminSessionView, LocationView};

use super::{Ctx, array, list as read_list, read};
use crate::cli::{RevokeArgs, SessionsCommand};
use crate::client::NO_BODY;
use crate::error::Failure;
use crate::output::{self, Local, Table, count, shown, text};

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
    let sessions: Vec<AdminSessionView> = read_list(&body, "sessions")?;
    if ctx.json {
        // As the server sent it.
        return output::json(&body);
    }
    if sessions.is_empty() {
        return output::println(&format!("user {user:?} has no active sessions"));
    }
    output::print(&session_table(&sessions, ctx.local).render())
}

/// The sessions as a table. Session ids stay whole: they are what an
/// operator copies into `sessions revoke`.
pub(crate) fn session_table(sessions: &[AdminSessionView], local: Local) -> Table {
    // A server with a GeoIP database sends `location` (null where
    // unknown); the column is there only then.
    let located = sessions.iter().any(|s| s.location.is_some());
    let mut header = vec!["SESSION", "CREATED", "LAST SEEN", "EXPIRES", "IP"];
    if located {
        header.push("LOCATION");
    }
    header.push("USER AGENT");
    let mut table = Table::new(header);
    for s in sessions {
        let mut row = vec![
            shown(Some(&s.session_id)),
            local.at(Some(s.created_at.0)),
            local.at(Some(s.last_seen_at.0)),
            local.at(Some(s.expires_at.0)),
            shown(s.ip.as_deref()),
        ];
        if located {
            row.push(place(s.location.as_ref().and_then(Option::as_ref)));
        }
        row.push(shown(s.user_agent.as_deref()));
        table.row(row);
    }
    table
}

/// A `location` as `City, CC`; `-` where unknown.
fn place(location: Option<&LocationView>) -> String {
    let parts: Vec<&str> = location
        .into_iter()
        .flat_map(|l| [l.city.as_deref(), l.country.as_deref()])
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
        // As the server sent it.
        return output::json(&body);
    }
    let session: AdminSessionView = read(&body)?;
    output::print(&session_details(&session, &body, ctx.local))
}

/// One session as `field  value` lines: the contract's fields first (its
/// location only from a server with a GeoIP database), then whatever else
/// the server sent (`sent`, the same answer as JSON: a newer server's
/// fields are shown, not dropped).
pub(crate) fn session_details(session: &AdminSessionView, sent: &Value, local: Local) -> String {
    let s = session;
    let mut rows: Vec<(&str, String)> = vec![
        ("session", shown(Some(&s.session_id))),
        ("user", shown(Some(&s.user_id))),
        ("active", shown(Some(&s.active))),
        ("created", local.at(Some(s.created_at.0))),
        ("last seen", local.at(Some(s.last_seen_at.0))),
        ("expires", local.at(Some(s.expires_at.0))),
        ("idle deadline", local.at(Some(s.idle_expires_at.0))),
        ("absolute deadline", local.at(Some(s.absolute_expires_at.0))),
        ("revoked", local.at(s.revoked_at.map(|t| t.0))),
        ("revoked reason", shown(s.revoked_reason.as_deref())),
        ("ip", shown(s.ip.as_deref())),
        ("user agent", shown(s.user_agent.as_deref())),
    ];
    if let Some(location) = &s.location {
        rows.push(("location", place(location.as_ref())));
    }
    rows.push(("refreshes", shown(Some(&s.refresh_generation))));
    rows.push(("metadata", shown(Some(&s.metadata))));
    let mut table = Table::default();
    for (label, value) in rows {
        table.row(vec![label.to_owned(), value]);
    }
    // The contract's fields, read above; anything else is shown as sent.
    let read = serde_json::to_value(session).unwrap_or_default();
    for (key, value) in sent.as_object().into_iter().flatten() {
        if read.get(key).is_none() && key != "location" {
            let shown = if key.ends_with("_at") {
                local.time(Some(value))
            } else {
                text(Some(value))
            };
            table.row(vec![key.replace('_', " "), shown]);
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

    fn view(id: &str, ip: &str, location: Option<Option<LocationView>>) -> AdminSessionView {
        let mut view: AdminSessionView = serde_json::from_value(json!({
            "session_id": id,
            "user_id": "alice",
            "created_at": "2026-01-31T12:00:00Z",
            "last_seen_at": "2026-01-31T12:05:00Z",
            "expires_at": "2026-01-31T13:05:00Z",
            "idle_expires_at": "2026-01-31T13:05:00Z",
            "absolute_expires_at": "2026-02-01T12:00:00Z",
            "ip": ip,
            "user_agent": "curl/8",
            "metadata": {},
            "active": true,
            "revoked_at": null,
            "revoked_reason": null,
            "refresh_generation": 0,
        }))
        .unwrap();
        view.location = location;
        view
    }

    #[test]
    fn session_tables_show_whole_ids_and_local_times() {
        let s = view("Zk3bq2aH0Jz6Yx1wPq9LmA", "203.0.113.9", None);
        let rendered = session_table(&[s], UTC).render();
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
        let paris = LocationView {
            country: Some("FR".into()),
            city: Some("Paris".into()),
        };
        let sessions = [
            view("a", "203.0.113.9", Some(Some(paris))),
            view("b", "192.0.2.1", Some(None)),
        ];
        assert_eq!(sessions[1].location, Some(None));
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
        let sent = serde_json::to_value(&sessions[0]).unwrap();
        let details = session_details(&sessions[0], &sent, UTC);
        assert!(details.contains("location"), "{details}");
        assert!(details.contains("Paris, FR"), "{details}");
    }

    #[test]
    fn session_details_put_the_contract_fields_first_and_keep_the_rest() {
        let mut s = view("s1", "203.0.113.9", None);
        s.revoked_at = Some(time::macros::datetime!(2026-01-31 12:00:00 UTC).into());
        s.metadata = json!({"device": "phone"});
        let mut sent = serde_json::to_value(&s).unwrap();
        sent["zeta"] = json!(1);
        sent["seen_at"] = json!("2026-01-31T13:00:00Z");
        let text = session_details(&s, &sent, UTC);
        let keys: Vec<&str> = text
            .lines()
            .map(|l| l.split("  ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "session",
                "user",
                "active",
                "created",
                "last seen",
                "expires",
                "idle deadline",
                "absolute deadline",
                "revoked",
                "revoked reason",
                "ip",
                "user agent",
                "refreshes",
                "metadata",
                "seen at",
                "zeta"
            ]
        );
        let row = |label: &str, value: &str| format!("{label:<17}  {value}\n");
        assert!(
            text.contains(&row("revoked", "2026-01-31 12:00:00 +00:00")),
            "{text}"
        );
        assert!(
            text.contains(&row("seen at", "2026-01-31 13:00:00 +00:00")),
            "{text}"
        );
        assert!(text.contains(r#"{"device":"phone"}"#), "{text}");
    }
}
