//! `users add|remove|passwd`.

use anyhow::Context as _;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::Ctx;
use crate::cli::UsersCommand;
use crate::client::NO_BODY;
use crate::output::{self, count};
use crate::prompt::new_password;

/// `POST /admin/v1/users`; borrowed so the password is not copied around.
#[derive(Serialize)]
struct NewUser<'a> {
    username: &'a str,
    password: &'a str,
}

/// `POST /admin/v1/users/{username}/password`.
#[derive(Serialize)]
struct NewPassword<'a> {
    password: &'a str,
}

pub(super) async fn run(ctx: &Ctx, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add(args) => {
            let client = ctx.authed()?;
            let password = new_password(&args.name, args.password_stdin)?;
            let body = NewUser {
                username: &args.name,
                password: &password,
            };
            let answer = client
                .call(Method::POST, &["admin", "v1", "users"], &[], Some(&body))
                .await
                .with_context(|| format!("user {:?}", args.name))?;
            if ctx.json {
                let doc = match answer.body {
                    Value::Object(_) => answer.body,
                    _ => json!({ "username": args.name }),
                };
                return output::json(&doc);
            }
            output::println(&format!("added user {:?}", args.name))
        }
        UsersCommand::Remove { name } => {
            ctx.authed()?
                .call(
                    Method::DELETE,
                    &["admin", "v1", "users", &name],
                    &[],
                    NO_BODY,
                )
                .await
                .with_context(|| format!("user {name:?}"))?;
            if ctx.json {
                return output::json(&json!({ "username": name, "removed": true }));
            }
            output::println(&format!("removed user {name:?}"))
        }
        UsersCommand::Passwd(args) => {
            let client = ctx.authed()?;
            let password = new_password(&args.name, args.password_stdin)?;
            let answer = client
                .call(
                    Method::POST,
                    &["admin", "v1", "users", &args.name, "password"],
                    &[],
                    Some(&NewPassword {
                        password: &password,
                    }),
                )
                .await
                .with_context(|| format!("user {:?}", args.name))?;
            if ctx.json {
                return output::json(&answer.body);
            }
            let n = answer
                .body
                .get("revoked")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            output::println(&format!(
                "changed the password of user {:?}; revoked {}",
                args.name,
                count(n, "session")
            ))
        }
    }
}
