//! The Containerfile: its stages, user, ports and health check.

use std::collections::BTreeSet;

pub(super) fn check_containerfile(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // Instructions, with continuation lines joined, comments dropped.
    let mut instructions: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (pending.is_empty() && trimmed.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
        } else {
            pending.push_str(trimmed);
            instructions.push(std::mem::take(&mut pending));
        }
    }
    let keyword = |i: &String| {
        i.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let froms: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| keyword(i) == "FROM")
        .map(|(n, _)| n)
        .collect();
    if froms.len() < 2 {
        problems.push("not a multi-stage build".to_owned());
    }
    if let Some(&first) = froms.first()
        && !instructions[first].contains("rust:1.95-slim-bookworm")
    {
        problems.push("the build stage is not rust:1.95-slim-bookworm".to_owned());
    }
    let runtime = froms
        .last()
        .map_or(&instructions[..], |&n| &instructions[n..]);
    if runtime.first().is_some_and(|f| f.contains("rust:")) {
        problems.push("the runtime stage is the Rust toolchain image".to_owned());
    }
    let find = |word: &'static str| runtime.iter().filter(move |i| keyword(i) == word);
    match find("USER").next_back() {
        Some(user) => {
            let who = user.split_whitespace().nth(1).unwrap_or("");
            let name = who.split(':').next().unwrap_or("");
            if name.is_empty() || name == "root" || name == "0" {
                problems.push(format!("the runtime stage runs as {who:?}"));
            }
        }
        None => problems.push("the runtime stage sets no USER (it would run as root)".to_owned()),
    }
    let exposed: BTreeSet<&str> = find("EXPOSE")
        .flat_map(|i| i.split_whitespace().skip(1))
        .collect();
    for port in ["8080", "8081"] {
        if !exposed.contains(port) {
            problems.push(format!("EXPOSE lacks {port}"));
        }
    }
    match find("HEALTHCHECK").next_back() {
        Some(check) if check.to_ascii_uppercase().contains("NONE") => {
            problems.push("HEALTHCHECK NONE".to_owned());
        }
        Some(_) => {}
        None => problems.push("no HEALTHCHECK".to_owned()),
    }
    if find("VOLUME").all(|v| !v.contains("/var/lib/session-server")) {
        problems.push("no VOLUME for /var/lib/session-server".to_owned());
    }
    for needle in [
        "-p session-server",
        "-p session-admin",
        "SESSION_PUBLIC_ADDR=0.0.0.0:8080",
        "SESSION_ADMIN_ADDR=0.0.0.0:8081",
        "SESSION_DATA_DIR=/var/lib/session-server",
    ] {
        if !instructions.iter().any(|i| i.contains(needle)) {
            problems.push(format!("no `{needle}`"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{assert_problem, deploy_file};

    #[test]
    fn a_containerfile_running_as_root_is_refused() {
        let file = deploy_file("container/Containerfile").replace("USER 65532:65532", "USER root");
        assert_problem(&check_containerfile(&file), "runs as \"root\"");
    }
}
