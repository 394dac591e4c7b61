//! `audit`, `audit --follow`, `audit export`, `audit verify`, `audit
//! checkpoints`.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize as _;
use serde_json::Value;
use session_core::AuditQuery;
use session_core::wire::{AuditEvent, CheckpointList, CheckpointView};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Ctx, array, list as read_list, read};
use crate::cli::{AuditArgs, AuditCommand, AuditFilter};
use crate::client::{AdminClient, ApiError, NO_BODY};
use crate::error::Failure;
use crate::output::{self, Local, Table, count, shorten, shown, text, unambiguous_prefix};

/// Events a `--follow` starts with when no `--limit` is given.
const FOLLOW_BACKLOG: u32 = 10;

pub(super) async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<()> {
    match args.action {
        Some(AuditCommand::Export { filter, page_size }) => export(ctx, &filter, page_size).await,
        Some(AuditCommand::Verify { checkpoints }) => verify(ctx, checkpoints.as_deref()).await,
        Some(AuditCommand::Checkpoints { export }) => checkpoints(ctx, export.as_deref()).await,
        None if args.follow => follow(ctx, &args).await,
        None => list(ctx, &args).await,
    }
}

/// The filters as the query string of `GET /admin/v1/audit`.
pub(crate) fn query(
    filter: &AuditFilter,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let mut q = Vec::new();
    if let Some(user) = &filter.user {
        q.push(("user_id", user.clone()));
    }
    if let Some(session) = &filter.session {
        q.push(("session_id", session.clone()));
    }
    if let Some(kind) = &filter.kind {
        q.push(("kind", kind.clone()));
    }
    if let Some(since) = filter.since {
        let at = since.resolve(now).to_offset(time::UtcOffset::UTC);
        q.push(("since", at.format(&Rfc3339)?));
    }
    Ok(q)
}

/// One audit event: as read, and as the server sent it (what `--json` and
/// exports print, unchanged).
#[derive(Debug, Clone)]
struct Event {
    event: AuditEvent,
    sent: Value,
}

/// The events of an answer of `GET /admin/v1/audit`.
fn events(body: &Value) -> Result<Vec<Event>, ApiError> {
    array(body, "events")?
        .iter()
        .map(|sent| {
            Ok(Event {
                event: read(sent)?,
                sent: sent.clone(),
            })
        })
        .collect()
}

async fn fetch(client: &AdminClient, query: &[(&str, String)]) -> anyhow::Result<Value> {
    client
        .get(&["admin", "v1", "audit"], query)
        .await
        .context("audit log")
}

async fn list(ctx: &Ctx, args: &AuditArgs) -> anyhow::Result<()> {
    let mut q = query(&args.filter, ctx.now())?;
    if let Some(limit) = args.limit {
        q.push(("limit", limit.to_string()));
    }
    let body = fetch(ctx.authed()?, &q).await?;
    let events: Vec<AuditEvent> = read_list(&body, "events")?;
    if ctx.json {
        // As the server sent it.
        return output::json(&body);
    }
    if events.is_empty() {
        return output::println("no matching audit events");
    }
    output::print(&event_table(&events, ctx.local).render())
}

/// Events as a table, in the order given. Session ids are cut to the
/// shortest prefix that keeps them apart within the table.
pub(crate) fn event_table(events: &[AuditEvent], local: Local) -> Table {
    let sessions = events.iter().filter_map(|e| e.session_id.as_deref());
    let cut = unambiguous_prefix(sessions, 8);
    let mut table = Table::new([
        "TIME", "KIND", "USER", "SESSION", "ACTOR", "REASON", "IP", "DETAILS",
    ]);
    for e in events {
        let session = match &e.session_id {
            Some(s) => shorten(s, cut),
            None => "-".to_owned(),
        };
        table.row(vec![
            local.at(Some(e.at)),
            shown(Some(&e.kind)),
            shown(e.user_id.as_deref()),
            session,
            shown(Some(&e.actor)),
            shown(e.reason.as_deref()),
            shown(e.ip.as_deref()),
            shown(Some(&e.details)),
        ]);
    }
    table
}

/// One event as one line, for streams (no table to align against).
pub(crate) fn event_line(e: &AuditEvent, local: Local) -> String {
    let mut line = format!("{}  {:<22}", local.at(Some(e.at)), shown(Some(&e.kind)));
    for (label, value) in [
        ("user", shown(e.user_id.as_deref())),
        ("session", shown(e.session_id.as_deref())),
        ("actor", shown(Some(&e.actor))),
        ("reason", shown(e.reason.as_deref())),
        ("ip", shown(e.ip.as_deref())),
        ("user_agent", shown(e.user_agent.as_deref())),
        ("details", shown(Some(&e.details))),
    ] {
        if value != "-" {
            line.push_str(&format!("  {label}={value}"));
        }
    }
    line.trim_end().to_owned()
}

/// Every event matching `base`, newest first, paged with the `before`
/// cursor (the server's `next_before` when it sends one, else the last
/// id of a full page). `progress` hears the running count.
async fn fetch_all(
    client: &AdminClient,
    base: &[(&'static str, String)],
    page_size: u32,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Vec<Event>> {
    let mut all: Vec<Event> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let mut q = base.to_vec();
        q.push(("limit", page_size.to_string()));
        if let Some(cursor) = &before {
            q.push(("before", cursor.clone()));
        }
        let body = fetch(client, &q).await?;
        let page = events(&body)?;
        let full = page.len() >= page_size as usize;
        let empty = page.is_empty();
        for e in page {
            if !seen.insert(e.event.id.to_string()) {
                return Err(ApiError::Unexpected {
                    reason: "the server sent an event twice while paging; it does not honour the `before` cursor"
                        .to_owned(),
                }
                .into());
            }
            all.push(e);
        }
        progress(all.len());
        before = match body.get("next_before") {
            Some(next) => next.as_str().map(str::to_owned),
            None if full => all.last().map(|e| e.event.id.to_string()),
            None => None,
        };
        if before.is_none() || empty {
            return Ok(all);
        }
    }
}

async fn export(ctx: &Ctx, filter: &AuditFilter, page_size: u32) -> anyhow::Result<()> {
    let client = ctx.authed()?;
    let base = query(filter, ctx.now())?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("fetching audit events");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let events = fetch_all(client, &base, page_size, |n| {
        if let Some(bar) = &bar {
            bar.set_message(format!("fetched {}", count(n as u64, "audit event")));
        }
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let events = events?;
    let mut out = Vec::new();
    for e in events.iter().rev() {
        serde_json::to_writer(&mut out, &e.sent)?;
        out.push(b'\n');
    }
    output::print(&String::from_utf8_lossy(&out))?;
    if bar.is_some() {
        let mut stderr = std::io::stderr().lock();
        writeln!(
            stderr,
            "exported {}",
            count(events.len() as u64, "audit event")
        )?;
    }
    Ok(())
}

async fn follow(ctx: &Ctx, args: &AuditArgs) -> anyhow::Result<()> {
    let client = ctx.authed()?;
    let filtered = query(&args.filter, ctx.now())?;
    let mut first = filtered.clone();
    first.push(("limit", args.limit.unwrap_or(FOLLOW_BACKLOG).to_string()));
    let body = fetch(client, &first).await?;
    let backlog = events(&body)?;
    let mut cursor = Cursor::default();
    if backlog.is_empty() {
        // Nothing matches yet: start from the newest event of the whole log,
        // by the server's clock, so the first poll does not replay history.
        let newest = fetch(client, &[("limit", "1".to_owned())]).await?;
        cursor.at = read_list::<AuditEvent>(&newest, "events")?
            .first()
            .map(|e| e.at);
    }
    emit(ctx, &mut cursor, backlog.iter().rev())?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // One listener for the whole follow, so a Ctrl-C during a fetch counts.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => return Ok(()),
        }
        let q = match cursor.at {
            Some(at) => {
                let mut q: Vec<_> = filtered
                    .iter()
                    .filter(|(k, _)| *k != "since")
                    .cloned()
                    .collect();
                q.push(("since", at.format(&Rfc3339)?));
                q
            }
            None => filtered.clone(),
        };
        let events = fetch_all(client, &q, AuditQuery::MAX_LIMIT, |_| {}).await?;
        emit(ctx, &mut cursor, events.iter().rev())?;
    }
}

/// Where a follow has got to: the newest time printed and the ids printed
/// at that time (the server's `since` includes it, so they come again).
#[derive(Debug, Default)]
struct Cursor {
    at: Option<OffsetDateTime>,
    ids_at: HashSet<String>,
}

impl Cursor {
    /// Whether `e` is new; remembers it.
    fn admit(&mut self, e: &AuditEvent) -> bool {
        let id = e.id.to_string();
        let at = e.at;
        match self.at {
            Some(cur) if at < cur => false,
            Some(cur) if at == cur => self.ids_at.insert(id),
            _ => {
                self.at = Some(at);
                self.ids_at.clear();
                self.ids_at.insert(id);
                true
            }
        }
    }
}

fn emit<'a>(
    ctx: &Ctx,
    cursor: &mut Cursor,
    oldest_first: impl Iterator<Item = &'a Event>,
) -> anyhow::Result<()> {
    for e in oldest_first {
        if !cursor.admit(&e.event) {
            continue;
        }
        if ctx.json {
            output::json_line(&e.sent)?;
        } else {
            output::println(&event_line(&e.event, ctx.local))?;
        }
    }
    Ok(())
}

/// Exported checkpoints sent with one verification at most (the newest
/// ones not also in the database): well within the default body limit.
const MAX_EXPORTED_SENT: usize = 200;

/// The answer when the audit log keeps no chain.
fn no_chain() -> anyhow::Error {
    Failure::Refused(
        "the configured audit log has no chain (only the PostgreSQL audit log keeps one)"
            .to_owned(),
    )
    .into()
}

/// The server's stored checkpoints, oldest first.
async fn stored_checkpoints(client: &AdminClient) -> anyhow::Result<Vec<CheckpointView>> {
    let answer = client
        .raw(
            Method::GET,
            &["admin", "v1", "audit", "checkpoints"],
            &[],
            NO_BODY,
        )
        .await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Err(no_chain());
    }
    if let Some(refusal) = answer.refusal() {
        return Err(anyhow::Error::new(refusal).context("audit checkpoints"));
    }
    Ok(read_list(&answer.body, "checkpoints")?)
}

/// What makes two checkpoints the same one (all but the time).
type Identity = (i64, String, String, String);

fn identity(c: &CheckpointView) -> Identity {
    (
        c.seq,
        c.head_hash.clone(),
        c.kid.clone(),
        c.signature.clone(),
    )
}

/// Checkpoints as the export file and `--json` write them: the server's
/// JSON, keys in order (as `serde_json::Value` orders them).
fn checkpoint_doc(checkpoints: Vec<CheckpointView>) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(CheckpointList { checkpoints })?)
}

/// The checkpoints of an export file; a file that is not one is refused
/// (and, when exporting, left as it is).
fn read_export(path: &Path) -> anyhow::Result<Vec<CheckpointView>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    if !doc.get("checkpoints").is_some_and(Value::is_array) {
        return Err(Failure::Usage(format!(
            "{} is not a checkpoint export (no \"checkpoints\" list)",
            path.display()
        ))
        .into());
    }
    let list = CheckpointList::deserialize(&doc).map_err(|e| {
        Failure::Usage(format!(
            "{} is not a checkpoint export: {e}",
            path.display()
        ))
    })?;
    Ok(list.checkpoints)
}

/// `exported` merged into `kept`: every checkpoint once, by `seq`.
fn merge(
    mut kept: Vec<CheckpointView>,
    exported: Vec<CheckpointView>,
) -> (Vec<CheckpointView>, usize) {
    let mut seen: HashSet<Identity> = kept.iter().map(identity).collect();
    let before = kept.len();
    for c in exported {
        if seen.insert(identity(&c)) {
            kept.push(c);
        }
    }
    let added = kept.len() - before;
    kept.sort_by_key(|c| c.seq);
    (kept, added)
}

async fn checkpoints(ctx: &Ctx, export: Option<&Path>) -> anyhow::Result<()> {
    let client = ctx.authed()?;
    let Some(path) = export else {
        let list = stored_checkpoints(client).await?;
        if ctx.json {
            return output::json(&checkpoint_doc(list)?);
        }
        let mut table = Table::new(["SEQ", "KEY", "AT", "HEAD"]);
        for c in &list {
            table.row(vec![
                shown(Some(&c.seq)),
                shown(Some(&c.kid)),
                ctx.local.at(Some(c.at.0)),
                shorten(&shown(Some(&c.head_hash)), Some(16)),
            ]);
        }
        return output::print(&table.render());
    };
    // Read what the file holds first: a file that is not an export stops
    // everything before anything is signed or written.
    let kept = if path.exists() {
        read_export(path)?
    } else {
        Vec::new()
    };
    let signed = client
        .raw(
            Method::POST,
            &["admin", "v1", "audit", "checkpoints"],
            &[],
            NO_BODY,
        )
        .await?;
    match signed.status {
        StatusCode::CREATED => {}
        // An empty log has no head to sign; a log without a chain is
        // named by the listing below.
        StatusCode::NOT_FOUND => {}
        _ => {
            if let Some(refusal) = signed.refusal() {
                return Err(anyhow::Error::new(refusal).context("signing the audit chain's head"));
            }
        }
    }
    let stored = stored_checkpoints(client).await?;
    let (all, added) = merge(kept, stored);
    let all_len = all.len();
    let doc = checkpoint_doc(all)?;
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if ctx.json {
        output::json(&serde_json::json!({
            "file": path.display().to_string(),
            "checkpoints": all_len,
            "added": added,
        }))
    } else {
        output::println(&format!(
            "{} in {} ({added} new)",
            count(u64::try_from(all_len).unwrap_or(u64::MAX), "checkpoint"),
            path.display()
        ))
    }
}

async fn verify(ctx: &Ctx, exported: Option<&Path>) -> anyhow::Result<()> {
    let client = ctx.authed()?;
    let mut file_note = None;
    let body = match exported {
        None => None,
        Some(path) => {
            let exported = read_export(path)?;
            let stored: HashSet<Identity> = stored_checkpoints(client)
                .await?
                .iter()
                .map(identity)
                .collect();
            // The server checks its stored checkpoints anyway; an exported
            // one adds something only where the database no longer has it.
            let (mut extra, _) = merge(
                Vec::new(),
                exported
                    .iter()
                    .filter(|c| !stored.contains(&identity(c)))
                    .cloned()
                    .collect(),
            );
            let skipped = extra.len().saturating_sub(MAX_EXPORTED_SENT);
            extra.drain(..skipped);
            file_note = Some(format!(
                "{}, {} not in the database{}",
                count(
                    u64::try_from(exported.len()).unwrap_or(u64::MAX),
                    "checkpoint"
                ),
                extra.len() + skipped,
                if skipped > 0 {
                    format!(" (the newest {MAX_EXPORTED_SENT} checked)")
                } else {
                    String::new()
                }
            ));
            Some(CheckpointList { checkpoints: extra })
        }
    };
    let answer = client
        .raw(
            Method::POST,
            &["admin", "v1", "audit", "verify"],
            &[],
            body.as_ref(),
        )
        .await?;
    if answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::METHOD_NOT_ALLOWED {
        return Err(no_chain());
    }
    if let Some(refusal) = answer.refusal() {
        return Err(anyhow::Error::new(refusal).context("audit chain"));
    }
    let broken = chain_broken(&answer.body);
    if ctx.json {
        output::json(&answer.body)?;
    } else {
        let mut table = Table::default();
        if let Some(fields) = answer.body.as_object() {
            for (k, v) in fields {
                table.row(vec![k.replace('_', " "), text(Some(v))]);
            }
        }
        if let Some(note) = file_note {
            table.row(vec!["exported file".to_owned(), note]);
        }
        let verdict = if broken {
            "audit chain BROKEN"
        } else {
            "audit chain verified"
        };
        output::print(&format!("{verdict}\n{}", table.render()))?;
    }
    if broken {
        return Err(Failure::Refused("the audit chain does not verify".to_owned()).into());
    }
    Ok(())
}

/// Whether a verification answer says the chain is broken: any of the
/// usual verdict fields set to `false`.
fn chain_broken(body: &Value) -> bool {
    ["valid", "ok", "intact"]
        .iter()
        .any(|k| body.get(*k).and_then(Value::as_bool) == Some(false))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::UtcOffset;
    use time::macros::datetime;

    use super::*;
    use crate::cli::Since;

    const UTC: Local = Local {
        offset: UtcOffset::UTC,
    };

    /// An event as the server writes it, read back: `fields` over a
    /// `session_created` by the user at 2026-01-31 12:00 UTC.
    fn event(fields: Value) -> AuditEvent {
        let mut sent = json!({
            "id": "0194b7c4-5a00-7000-8000-000000000000",
            "at": "2026-01-31T12:00:00Z",
            "kind": "session_created",
            "session_id": null,
            "user_id": null,
            "actor": "user",
            "ip": null,
            "user_agent": null,
            "reason": null,
            "details": {},
        });
        for (k, v) in fields.as_object().unwrap() {
            sent[k] = v.clone();
        }
        serde_json::from_value(sent).unwrap()
    }

    #[test]
    fn filters_become_the_contract_query_parameters() {
        let filter = AuditFilter {
            user: Some("alice".into()),
            session: Some("s1".into()),
            kind: Some("session_revoked".into()),
            since: Some(Since::Ago(time::Duration::hours(1))),
        };
        let q = query(&filter, datetime!(2026-01-31 12:00:00 +01:00)).unwrap();
        assert_eq!(
            q,
            [
                ("user_id", "alice".to_owned()),
                ("session_id", "s1".to_owned()),
                ("kind", "session_revoked".to_owned()),
                ("since", "2026-01-31T10:00:00Z".to_owned()),
            ]
        );
        assert!(
            query(&AuditFilter::default(), datetime!(2026-01-31 12:00:00 UTC))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn event_tables_shorten_session_ids_only_while_unambiguous() {
        let ev = |sid: &str| event(json!({"session_id": sid}));
        let text = event_table(
            &[ev("AAAAAAAAxxxxxxxxxxxxxx"), ev("AAAAAAAAyyyyyyyyyyyyyy")],
            UTC,
        )
        .render();
        assert!(text.contains("AAAAAAAAx…"), "{text}");
        assert!(text.contains("AAAAAAAAy…"), "{text}");
        let text = event_table(
            &[ev("AAAAAAAAAAAAAAAAAAAAAx"), ev("AAAAAAAAAAAAAAAAAAAAAy")],
            UTC,
        )
        .render();
        assert!(text.contains("AAAAAAAAAAAAAAAAAAAAAx"), "{text}");
    }

    #[test]
    fn stream_lines_leave_out_empty_fields() {
        let e = event(json!({"kind": "key_rotated", "actor": "admin",
                             "user_id": null, "details": {"kid": "k2"}}));
        assert_eq!(
            event_line(&e, UTC),
            r#"2026-01-31 12:00:00 +00:00  key_rotated             actor=admin  details={"kid":"k2"}"#
        );
    }

    #[test]
    fn a_verification_is_broken_only_when_a_verdict_says_so() {
        assert!(!chain_broken(&json!({"valid": true, "checked": 10})));
        assert!(!chain_broken(&json!({"checked": 10})));
        assert!(chain_broken(&json!({"valid": false, "first_bad_id": "x"})));
        assert!(chain_broken(&json!({"ok": false})));
    }

    #[test]
    fn a_follow_prints_each_event_once_even_when_since_repeats_it() {
        // Ids and times as in a page of `GET /admin/v1/audit`.
        let mut c = Cursor::default();
        let at = |id: u8, at: &str| {
            event(json!({"id": format!("0194b7c4-5a00-7000-8000-0000000000{id:02x}"), "at": at}))
        };
        let a = at(0xa, "2026-01-31T12:00:00Z");
        let b = at(0xb, "2026-01-31T12:00:00Z");
        let older = at(0x0, "2026-01-31T11:00:00Z");
        let later = at(0x1, "2026-01-31T12:00:01Z");
        assert!(c.admit(&a));
        assert!(c.admit(&b));
        assert!(!c.admit(&a));
        assert!(!c.admit(&older));
        assert!(c.admit(&later));
        assert!(!c.admit(&b));
    }

    #[test]
    fn checkpoints_merge_once_each_by_seq_and_keep_the_servers_json() {
        let c = |seq: i64, kid: &str| CheckpointView {
            seq,
            head_hash: "ab".repeat(32),
            kid: kid.into(),
            signature: "c2ln".into(),
            at: datetime!(2026-01-31 12:00:00.5 UTC).into(),
        };
        let (all, added) = merge(vec![c(3, "k1"), c(1, "k1")], vec![c(2, "k1"), c(3, "k1")]);
        assert_eq!(added, 1);
        assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let (all, added) = merge(all, vec![c(3, "k2")]);
        assert_eq!((all.len(), added), (4, 1));
        let sent = json!({"seq": 1, "head_hash": "ab".repeat(32), "kid": "k1",
                          "signature": "c2ln", "at": "2026-01-31T12:00:00.5Z"});
        assert_eq!(
            serde_json::to_string_pretty(&checkpoint_doc(vec![read(&sent).unwrap()]).unwrap())
                .unwrap(),
            serde_json::to_string_pretty(&json!({ "checkpoints": [sent] })).unwrap()
        );
    }
}
