//! The systemd unit (its sandboxing and lifecycle keys), the env example,
//! and `systemd-analyze verify` / `security` when installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::run_captured;

/// Settings that are secrets in any form.
const PURE_SECRET_ENV: [&str; 3] = [
    "SESSION_ADMIN_TOKEN",
    "SESSION_JWT_HS256_SECRET",
    "SESSION_MASTER_KEY",
];

/// A unit file as `(section, key, value)` triples, in order, continuation
/// lines joined.
fn parse_unit(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        if let Some(name) = logical.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = logical.split_once('=') {
            if section.is_empty() {
                return Err(format!(
                    "line {}: a setting before any [Section]",
                    index + 1
                ));
            }
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        } else {
            return Err(format!(
                "line {}: neither [Section] nor Key=value",
                index + 1
            ));
        }
    }
    Ok(entries)
}

fn normalize_bool(value: &str) -> &str {
    match value {
        "yes" | "true" | "on" | "1" => "yes",
        "no" | "false" | "off" | "0" => "no",
        other => other,
    }
}

pub(super) fn check_unit(text: &str) -> Vec<String> {
    let entries = match parse_unit(text) {
        Ok(entries) => entries,
        Err(error) => return vec![error],
    };
    let values = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let last = |key: &str| values("Service", key).last().copied();
    let mut problems = Vec::new();

    let required = [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("StateDirectory", "session-server"),
        ("EnvironmentFile", "-/etc/session-server/env"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ];
    for (key, wanted) in required {
        match last(key) {
            Some(value) if normalize_bool(value) == wanted => {}
            Some(value) => problems.push(format!("[Service] {key}={value}, expected {wanted}")),
            None => problems.push(format!("[Service] {key}= is missing (expected {wanted})")),
        }
    }
    if last("ExecStart").is_none_or(str::is_empty) {
        problems.push("[Service] ExecStart= is missing".to_owned());
    }
    if last("TimeoutStopSec").is_none() {
        problems.push("[Service] TimeoutStopSec= is missing".to_owned());
    }
    if last("CapabilityBoundingSet") != Some("") {
        problems.push(
            "[Service] CapabilityBoundingSet= must be set empty (no capabilities)".to_owned(),
        );
    }
    let families: BTreeSet<&str> = last("RestrictAddressFamilies")
        .unwrap_or("")
        .split_whitespace()
        .collect();
    if families != BTreeSet::from(["AF_INET", "AF_INET6", "AF_UNIX"]) {
        problems
            .push("[Service] RestrictAddressFamilies= must be AF_INET AF_INET6 AF_UNIX".to_owned());
    }
    if !values("Service", "SystemCallFilter")
        .iter()
        .any(|v| v.split_whitespace().any(|f| f == "@system-service"))
    {
        problems.push("[Service] SystemCallFilter= does not allow-list @system-service".to_owned());
    }
    let dynamic = last("DynamicUser").map(normalize_bool) == Some("yes");
    let user = last("User");
    if !dynamic && user.is_none_or(|u| u.is_empty() || u == "root" || u == "0") {
        problems.push("[Service] runs as root: set DynamicUser=yes or User=".to_owned());
    }
    let environment: Vec<&str> = values("Service", "Environment")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|a| a.trim_matches('"'))
        .collect();
    if !environment.contains(&"SESSION_DATA_DIR=/var/lib/session-server") {
        problems.push(
            "[Service] Environment=SESSION_DATA_DIR=/var/lib/session-server is missing".to_owned(),
        );
    }
    for name in PURE_SECRET_ENV {
        if environment
            .iter()
            .any(|a| a.starts_with(&format!("{name}=")))
        {
            problems.push(format!("[Service] puts the secret {name} into the unit"));
        }
    }
    if values("Install", "WantedBy").is_empty() {
        problems.push("[Install] WantedBy= is missing".to_owned());
    }
    problems
}

/// The env example sets nothing secret: every assignment is a `SESSION_*`
/// name, no pure secret is set, and no URL carries a password.
pub(super) fn check_env_example(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let Some((key, value)) = line.split_once('=') else {
            problems.push(format!("line {number}: not KEY=value"));
            continue;
        };
        if !key.starts_with("SESSION_") || key.contains(char::is_whitespace) {
            problems.push(format!("line {number}: {key} is not a SESSION_* setting"));
        }
        if PURE_SECRET_ENV.contains(&key) {
            problems.push(format!(
                "line {number}: sets the secret {key}; reference it instead"
            ));
        }
        if let Some((_, rest)) = value.split_once("://")
            && rest
                .split('/')
                .next()
                .is_some_and(|auth| auth.contains('@') && auth.contains(':'))
        {
            problems.push(format!(
                "line {number}: {key} carries credentials in its URL"
            ));
        }
    }
    problems
}

/// The unit with every non-empty `ExecStart=` pointed at `/bin/true`, so
/// that `systemd-analyze verify` does not stop at the binary not being
/// installed on the machine that checks.
fn unit_for_verification(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.strip_prefix("ExecStart=") {
            Some(value) if !value.trim().is_empty() => out.push_str("ExecStart=/bin/true"),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn write_unit_copy(unit: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("session-server.service");
    std::fs::write(&path, unit_for_verification(unit))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((dir, path))
}

pub(super) fn systemd_verify(program: &Path, unit: &str) -> Result<Vec<String>> {
    let (_dir, path) = write_unit_copy(unit)?;
    let (success, output) = run_captured(
        Command::new(program)
            .args(["verify", "--man=no"])
            .arg(&path),
    )?;
    // Messages about other units (pulled in by After=) are the host's
    // business; only lines about this unit count.
    let mut problems: Vec<String> = output
        .lines()
        .filter(|l| l.contains("session-server.service"))
        .map(|l| l.replace(&path.display().to_string(), "session-server.service"))
        .collect();
    if !success && problems.is_empty() {
        problems.push(format!("systemd-analyze verify failed: {}", output.trim()));
    }
    Ok(problems)
}

/// `None` when this systemd-analyze cannot judge a unit file offline.
pub(super) fn systemd_security(program: &Path, unit: &str) -> Result<Option<Vec<String>>> {
    let (_dir, path) = write_unit_copy(unit)?;
    let (success, output) = run_captured(
        Command::new(program)
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&path),
    )?;
    if success {
        return Ok(Some(Vec::new()));
    }
    if output.contains("unrecognized option") || output.contains("Unknown option") {
        return Ok(None);
    }
    let verdict = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or(output.trim());
    Ok(Some(vec![format!("exposure above 2.0: {verdict}")]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{assert_problem, deploy_file};

    #[test]
    fn a_unit_without_sandboxing_is_refused() {
        let unit = "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/local/bin/session-server\n[Install]\nWantedBy=multi-user.target\n";
        let problems = check_unit(unit);
        assert_problem(&problems, "NoNewPrivileges= is missing");
        assert_problem(&problems, "ProtectSystem= is missing");
        assert_problem(&problems, "runs as root");
        assert_problem(&problems, "CapabilityBoundingSet= must be set empty");
    }

    #[test]
    fn unit_continuation_lines_are_joined_and_booleans_normalized() {
        let entries = parse_unit(
            "[Service]\nRestrictAddressFamilies=AF_INET \\\n  AF_UNIX\nNoNewPrivileges=true\n",
        )
        .unwrap();
        assert_eq!(entries[0].2, "AF_INET  AF_UNIX");
        assert_eq!(normalize_bool(&entries[1].2), "yes");
        assert!(parse_unit("Key=value\n").is_err());
    }

    #[test]
    fn a_secret_in_the_unit_is_refused() {
        let unit = deploy_file("systemd/session-server.service").replace(
            "Environment=SESSION_LOG_FORMAT=json",
            "Environment=SESSION_LOG_FORMAT=json SESSION_ADMIN_TOKEN=hunter2",
        );
        assert_problem(
            &check_unit(&unit),
            "puts the secret SESSION_ADMIN_TOKEN into the unit",
        );
    }

    #[test]
    fn verification_copy_runs_bin_true_and_keeps_resets() {
        let copy = unit_for_verification(
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/session-server --x\nUser=a\n",
        );
        assert_eq!(copy, "[Service]\nExecStart=\nExecStart=/bin/true\nUser=a\n");
    }

    #[test]
    fn env_example_refuses_secrets_and_passwords_in_urls() {
        let problems = check_env_example(
            "# fine\nSESSION_ADMIN_TOKEN=abc\nSESSION_STORE=redis://:pw@redis:6379/0\nSESSION_AUDIT=postgres://u:pw@db/x\nSESSION_STORE=redis://redis:6379/0\nFOO=1\n",
        );
        assert_problem(&problems, "line 2: sets the secret SESSION_ADMIN_TOKEN");
        assert_problem(&problems, "line 3: SESSION_STORE carries credentials");
        assert_problem(&problems, "line 4: SESSION_AUDIT carries credentials");
        assert_problem(&problems, "line 6: FOO is not a SESSION_* setting");
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }
}
