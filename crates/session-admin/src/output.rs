//! Human output: aligned tables, local times, ages, short ids; and the one
//! writer to stdout.

use std::collections::HashSet;
use std::io::Write;

use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A table with a header row, printed with columns aligned by two spaces.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new<'a>(header: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            header: header.into_iter().map(str::to_owned).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra ones are kept).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in self.rows.iter().chain([&self.header]) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = (!self.header.is_empty()).then_some(&self.header);
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()),
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How times are shown: in the operator's local offset, taken once at
/// start (reading it later, from a threaded process, is not reliable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local {
    /// The offset shown.
    pub(crate) offset: UtcOffset,
}

impl Local {
    /// An RFC 3339 time as `2026-01-31 13:00:00 +01:00`; anything else as is;
    /// `null` or missing as `-`.
    pub(crate) fn time(&self, v: Option<&Value>) -> String {
        match v {
            Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => self.format(t),
                Err(_) => s.clone(),
            },
            Some(Value::Null) | None => "-".to_owned(),
            Some(other) => other.to_string(),
        }
    }

    /// A time read from a body, as [`Local::time`] shows it; `None` as `-`.
    pub(crate) fn at(&self, t: Option<OffsetDateTime>) -> String {
        t.map_or_else(|| "-".to_owned(), |t| self.format(t))
    }

    /// `t` in the local offset.
    pub(crate) fn format(&self, t: OffsetDateTime) -> String {
        let fmt = format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
        );
        t.to_offset(self.offset)
            .format(&fmt)
            .unwrap_or_else(|_| t.to_string())
    }
}

/// A duration as its two largest units: `3d 4h`, `5m 10s`, `12s`.
pub(crate) fn age(d: Duration) -> String {
    let (sign, d) = if d.is_negative() { ("-", -d) } else { ("", d) };
    let s = d.whole_seconds();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let text = if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    };
    format!("{sign}{text}")
}

/// `n` and `noun`, plural unless `n` is 1: `1 session`, `2 sessions`.
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A string field, or `-`.
pub(crate) fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(Value::String(_)) => "-".to_owned(),
        Some(Value::Object(m)) if m.is_empty() => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// A field read from a body, shown as [`text`] shows its JSON: a string as
/// itself, an enum by its wire name, `None` or empty as `-`.
pub(crate) fn shown<T: Serialize + ?Sized>(v: Option<&T>) -> String {
    text(v.and_then(|v| serde_json::to_value(v).ok()).as_ref())
}

/// The shortest prefix length, at least `min`, at which the distinct `ids`
/// stay distinct; `None` when only the full ids are (or shortening would
/// save nothing).
pub(crate) fn unambiguous_prefix<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    min: usize,
) -> Option<usize> {
    let ids: HashSet<&str> = ids.into_iter().collect();
    let longest = ids.iter().map(|id| id.chars().count()).max()?;
    (min..longest.saturating_sub(1)).find(|&n| {
        let prefixes: HashSet<String> = ids.iter().map(|id| id.chars().take(n).collect()).collect();
        prefixes.len() == ids.len() && ids.iter().all(|id| id.chars().count() > n)
    })
}

/// `id` cut to `len` characters with an ellipsis, when `len` is given and
/// shorter.
pub(crate) fn shorten(id: &str, len: Option<usize>) -> String {
    match len {
        Some(n) if id.chars().count() > n => {
            let mut s: String = id.chars().take(n).collect();
            s.push('…');
            s
        }
        _ => id.to_owned(),
    }
}

/// Stdout closed under us (`session-admin … | head`): stop quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub(crate) struct StdoutClosed;

/// Writes `text` to stdout as is.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes one line.
pub(crate) fn println(line: &str) -> anyhow::Result<()> {
    print(&format!("{line}\n"))
}

/// Writes one pretty JSON document.
pub(crate) fn json(v: &Value) -> anyhow::Result<()> {
    println(&serde_json::to_string_pretty(v)?)
}

/// Writes one compact JSON line.
pub(crate) fn json_line(v: &Value) -> anyhow::Result<()> {
    println(&serde_json::to_string(v)?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::{datetime, offset};

    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(["ID", "USER", "IP"]);
        t.row(vec!["a".into(), "alice".into(), "10.0.0.1".into()]);
        t.row(vec!["bbbbbb".into(), "bo".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "ID      USER   IP\n\
             a       alice  10.0.0.1\n\
             bbbbbb  bo     -\n"
        );
    }

    #[test]
    fn columns_are_measured_in_characters_not_bytes() {
        let mut t = Table::new(["A", "B"]);
        t.row(vec!["é…".into(), "x".into()]);
        t.row(vec!["abc".into(), "y".into()]);
        assert_eq!(t.render(), "A    B\né…   x\nabc  y\n");
    }

    #[test]
    fn times_are_shown_in_the_local_offset_with_the_offset() {
        let local = Local {
            offset: offset!(+01:00),
        };
        assert_eq!(
            local.time(Some(&json!("2026-01-31T23:30:00Z"))),
            "2026-02-01 00:30:00 +01:00"
        );
        assert_eq!(local.time(Some(&Value::Null)), "-");
        assert_eq!(local.time(Some(&json!("not a time"))), "not a time");
        assert_eq!(
            local.at(Some(datetime!(2026-01-31 23:30:00 UTC))),
            "2026-02-01 00:30:00 +01:00"
        );
        assert_eq!(local.at(None), "-");
        let utc = Local {
            offset: UtcOffset::UTC,
        };
        assert_eq!(
            utc.format(datetime!(2026-01-31 23:30:00 UTC)),
            "2026-01-31 23:30:00 +00:00"
        );
    }

    #[test]
    fn ages_show_their_two_largest_units() {
        assert_eq!(age(Duration::seconds(12)), "12s");
        assert_eq!(age(Duration::seconds(310)), "5m 10s");
        assert_eq!(age(Duration::hours(26) + Duration::minutes(3)), "1d 2h");
        assert_eq!(age(Duration::seconds(-3)), "-3s");
    }

    #[test]
    fn ids_are_shortened_only_while_they_stay_distinct() {
        let ids = [
            "abcdefgh1234567890",
            "abcdefgh9876543210",
            "zzzzzzzzzzzzzzzzzz",
        ];
        assert_eq!(unambiguous_prefix(ids, 8), Some(9));
        assert_eq!(shorten(ids[0], Some(9)), "abcdefgh1…");
        // Distinct only in their last character: keep them whole.
        assert_eq!(unambiguous_prefix(["aaaaaaaaaa1", "aaaaaaaaaa2"], 8), None);
        // One id that is a prefix of another is never cut to look the same.
        assert_eq!(
            unambiguous_prefix(["abcdefghij", "abcdefghijklmnop"], 8),
            None
        );
        // A repeated id is one id.
        assert_eq!(
            unambiguous_prefix(["0123456789abcdef", "0123456789abcdef"], 8),
            Some(8)
        );
        assert_eq!(unambiguous_prefix([], 8), None);
        assert_eq!(shorten("short", None), "short");
    }

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1u64, "session"), "1 session");
        assert_eq!(count(0u64, "session"), "0 sessions");
        assert_eq!(count(2u32, "audit event"), "2 audit events");
    }

    #[test]
    fn missing_and_empty_fields_print_as_a_dash() {
        assert_eq!(text(None), "-");
        assert_eq!(text(Some(&json!(""))), "-");
        assert_eq!(text(Some(&json!({}))), "-");
        assert_eq!(text(Some(&json!({"a": 1}))), r#"{"a":1}"#);
        assert_eq!(text(Some(&json!(3))), "3");
        assert_eq!(shown::<str>(None), "-");
        assert_eq!(shown(Some("")), "-");
        assert_eq!(shown(Some("x")), "x");
        assert_eq!(shown(Some(&session_core::Actor::Admin)), "admin");
        assert_eq!(shown(Some(&true)), "true");
        assert_eq!(shown(Some(&json!({"a": 1}))), r#"{"a":1}"#);
    }
}
