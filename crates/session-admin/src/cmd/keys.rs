//! `keys list|rotate`.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};
use session_core::wire::{ArchivedKeyInfo, KeyInfo};
use time::OffsetDateTime;

use super::{Ctx, read};
use crate::cli::KeysCommand;
use crate::client::{AdminClient, ApiError, NO_BODY};
use crate::output::{self, Local, Table, age, shown};

pub(super) async fn run(ctx: &Ctx, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List => {
            let body = get_keys(ctx.authed()?).await?;
            if ctx.json {
                // As the server sent it.
                return output::json(&body);
            }
            let keys = key_list(&body)?;
            if keys.is_empty() {
                return output::println("the server has no signing keys");
            }
            let mut table = key_table(&keys, ctx.local, ctx.now());
            // Keys that have left the ring: public halves kept to verify the
            // audit checkpoints they signed.
            let archived: Vec<ArchivedKeyInfo> = match body.get("archived") {
                None | Some(Value::Null) => Vec::new(),
                Some(list) => read(list)?,
            };
            for k in &archived {
                let state = if k.revoked_at.is_some() {
                    "archived (revoked)"
                } else {
                    "archived"
                };
                table.row(vec![
                    shown(Some(&k.kid)),
                    shown(Some(&k.alg)),
                    state.to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    ctx.local.at(Some(k.activated_at)),
                    ctx.local.at(Some(k.dropped_at)),
                    "public half only".to_owned(),
                ]);
            }
            output::print(&table.render())
        }
        KeysCommand::Rotate { immediate } => {
            let query: Vec<(&str, String)> = if immediate {
                vec![("immediate", "true".to_owned())]
            } else {
                Vec::new()
            };
            let answer = ctx
                .authed()?
                .call(
                    Method::POST,
                    &["admin", "v1", "keys", "rotate"],
                    &query,
                    NO_BODY,
                )
                .await
                .context("key rotation")?;
            if ctx.json {
                let doc = match answer.body {
                    Value::Null => json!({ "rotated": true }),
                    body => body,
                };
                return output::json(&doc);
            }
            // The new key, wherever the server put it.
            let key: KeyInfo = read(answer.body.get("key").unwrap_or(&answer.body))?;
            let kid = if key.kid.is_empty() {
                "(unnamed)"
            } else {
                &key.kid
            };
            let line = if immediate {
                format!(
                    "signing key {kid} ({}) signs now; the previous key is out of the JWKS and its tokens are refused",
                    shown(Some(&key.alg))
                )
            } else {
                format!(
                    "scheduled signing key {kid} ({}): published now, signs from {}; the previous key then retires and verifies until its tokens expire",
                    shown(Some(&key.alg)),
                    ctx.local.at(Some(key.activated_at))
                )
            };
            output::println(&line)
        }
    }
}

/// `GET /admin/v1/keys`.
pub(super) async fn get_keys(client: &AdminClient) -> anyhow::Result<Value> {
    client
        .get(&["admin", "v1", "keys"], &[])
        .await
        .context("signing keys")
}

/// The keys in an answer: `{"keys": [...]}` (or a bare list).
pub(super) fn key_list(body: &Value) -> Result<Vec<KeyInfo>, ApiError> {
    let list = body.get("keys").unwrap_or(body);
    if !list.is_array() {
        return Err(ApiError::Unexpected {
            reason: "the answer has no \"keys\" list".to_owned(),
        });
    }
    read(list)
}

/// The keys as a table: each one's state, age at `now`, and when it was
/// (or will be) activated and retired.
pub(crate) fn key_table(keys: &[KeyInfo], local: Local, now: OffsetDateTime) -> Table {
    let mut table = Table::new([
        "KID",
        "ALG",
        "STATE",
        "CREATED",
        "AGE",
        "ACTIVATED",
        "RETIRED",
        "KEPT UNTIL",
    ]);
    for k in keys {
        table.row(vec![
            shown(Some(&k.kid)),
            shown(Some(&k.alg)),
            shown(Some(&k.state)),
            local.at(Some(k.created_at)),
            age(now - k.created_at),
            local.at(Some(k.activated_at)),
            local.at(k.retired_at),
            local.at(k.expires_at),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use time::UtcOffset;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn key_tables_show_each_keys_age() {
        let keys = json!({"keys": [
            {"kid": "k2", "alg": "EdDSA", "state": "active", "created_at": "2026-01-30T12:00:00Z",
             "activated_at": "2026-01-30T12:00:00Z", "retired_at": null, "expires_at": null},
            {"kid": "k1", "alg": "EdDSA", "state": "retired", "created_at": "2026-01-01T00:00:00Z",
             "activated_at": "2026-01-01T00:00:00Z", "retired_at": "2026-01-30T12:00:00Z",
             "expires_at": "2026-01-30T12:15:00Z"}
        ]});
        let local = Local {
            offset: UtcOffset::UTC,
        };
        let rendered = key_table(
            &key_list(&keys).unwrap(),
            local,
            datetime!(2026-01-31 15:30:00 UTC),
        )
        .render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("k2   EdDSA  active   2026-01-30 12:00:00 +00:00  1d 3h"),
            "{rendered}"
        );
        assert!(lines[2].contains("30d 15h"), "{rendered}");
        assert!(
            lines[2].ends_with("2026-01-30 12:15:00 +00:00"),
            "{rendered}"
        );
    }

    #[test]
    fn a_key_answer_without_a_list_is_unexpected() {
        assert!(key_list(&json!({"nope": 1})).is_err());
        assert_eq!(key_list(&json!([])).unwrap().len(), 0);
    }
}
