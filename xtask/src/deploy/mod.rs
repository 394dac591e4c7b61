//! `cargo xtask deploy-check`: checks the deployment files in `deploy/`.
//!
//! Always, with no tool but this one:
//! - every file starts with a comment saying what it is for;
//! - the Kubernetes manifests: every YAML document parses into its typed
//!   Kubernetes struct (k8s-openapi, API v1.33; unknown kinds and unknown
//!   fields refused), the kustomization has only kustomize's keys and
//!   lists exactly the files beside it, the Deployment has at least two
//!   replicas, `/readyz` and `/healthz` probes on the public port, no host
//!   ports, a locked-down security context and secrets only by reference;
//!   the admin port appears only on a ClusterIP Service of its own, no
//!   NetworkPolicy rule admits it from everywhere, a PodDisruptionBudget
//!   covers the pods;
//! - the systemd unit: its sandboxing and lifecycle keys (an INI parse);
//!   the env example sets no secret;
//! - the nginx template: the forward-auth wiring, and that every location
//!   that proxies sets (so strips) `X-Session-User` and `X-Session-Id`
//!   itself or inherits that from the server;
//! - the Containerfile's stages, user, ports and health check.
//!
//! When the tool is installed (never installed from here):
//! - `systemd-analyze verify` and `systemd-analyze security --offline` on a
//!   copy of the unit whose `ExecStart` is `/bin/true`;
//! - `nginx -t` on a copy of the nginx files with the placeholders filled in.
//!
//! It prints which checks ran and which were skipped, then every problem.

mod containerfile;
mod kubernetes;
mod nginx;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

use containerfile::check_containerfile;
use kubernetes::{check_kubernetes, read_yaml_files};
use nginx::{check_nginx_template, nginx_test};
use systemd::{check_env_example, check_unit, systemd_security, systemd_verify};

pub(crate) fn check() -> Result<()> {
    run_checks(&cmd::root().join("deploy"))?.finish()
}

/// Every check on the files under `deploy`; the report says which ran.
fn run_checks(deploy: &Path) -> Result<Report> {
    let mut report = Report::default();

    report.ran("header comments", check_headers(deploy)?);

    let manifests = read_yaml_files(&deploy.join("kubernetes"))?;
    report.ran("kubernetes manifests", check_kubernetes(&manifests));

    let unit = read(&deploy.join("systemd/session-server.service"))?;
    report.ran("systemd unit keys", check_unit(&unit));
    let env = read(&deploy.join("systemd/session-server.env.example"))?;
    report.ran("systemd env example", check_env_example(&env));
    match cmd::find_program("systemd-analyze") {
        Some(program) => {
            report.ran("systemd-analyze verify", systemd_verify(&program, &unit)?);
            match systemd_security(&program, &unit)? {
                Some(problems) => {
                    report.ran("systemd-analyze security (exposure <= 2.0)", problems)
                }
                None => report.skipped(
                    "systemd-analyze security",
                    "this systemd-analyze has no --offline (systemd 250 or later)",
                ),
            }
        }
        None => report.skipped(
            "systemd-analyze verify/security",
            "systemd-analyze not found (Debian package systemd)",
        ),
    }

    let auth_conf = read(&deploy.join("nginx/session-auth.conf"))?;
    let nginx_conf = read(&deploy.join("nginx/nginx.conf"))?;
    report.ran(
        "nginx template rules",
        check_nginx_template(&auth_conf, &nginx_conf),
    );
    match cmd::find_program("nginx") {
        Some(program) => report.ran(
            "nginx -t (templated copy)",
            nginx_test(&program, &auth_conf, &nginx_conf)?,
        ),
        None => report.skipped("nginx -t", "nginx not installed (apt-get install nginx)"),
    }

    let containerfile = read(&deploy.join("container/Containerfile"))?;
    report.ran("Containerfile rules", check_containerfile(&containerfile));

    Ok(report)
}

// ---------------------------------------------------------------------------
// Reporting

#[derive(Debug, Default)]
struct Report {
    ran: Vec<String>,
    skipped: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn ran(&mut self, name: &str, problems: Vec<String>) {
        self.ran.push(name.to_owned());
        let verdict = if problems.is_empty() { "ok" } else { "FAILED" };
        println!("deploy-check: ran     {name}: {verdict}");
        self.problems
            .extend(problems.into_iter().map(|p| format!("{name}: {p}")));
    }

    fn skipped(&mut self, name: &str, why: &str) {
        self.skipped.push(name.to_owned());
        println!("deploy-check: skipped {name}: {why}");
    }

    fn finish(self) -> Result<()> {
        for problem in &self.problems {
            println!("deploy-check: problem: {problem}");
        }
        if self.problems.is_empty() {
            println!(
                "deploy-check: all {} checks that ran passed ({} skipped)",
                self.ran.len(),
                self.skipped.len()
            );
            Ok(())
        } else {
            bail!("deploy-check found {} problem(s)", self.problems.len())
        }
    }
}

// ---------------------------------------------------------------------------
// Files and tools

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every deployment file but the README starts with a comment line.
fn check_headers(deploy: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for path in files_under(deploy)? {
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let text = read(&path)?;
        if !text.starts_with('#') {
            let shown = path.strip_prefix(deploy).unwrap_or(&path).display();
            problems.push(format!(
                "{shown} does not start with a comment saying what it is for"
            ));
        }
    }
    Ok(problems)
}

fn run_captured(command: &mut Command) -> Result<(bool, String)> {
    let shown = cmd::display(command);
    println!("deploy-check: $ {shown}");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn deploy_file(relative: &str) -> String {
        read(&cmd::root().join("deploy").join(relative)).unwrap()
    }

    pub(super) fn assert_problem(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:#?}"
        );
    }

    #[test]
    fn the_shipped_unit_env_nginx_and_containerfile_pass() {
        assert_eq!(
            check_unit(&deploy_file("systemd/session-server.service")),
            Vec::<String>::new()
        );
        assert_eq!(
            check_env_example(&deploy_file("systemd/session-server.env.example")),
            Vec::<String>::new()
        );
        assert_eq!(
            check_nginx_template(
                &deploy_file("nginx/session-auth.conf"),
                &deploy_file("nginx/nginx.conf")
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            check_containerfile(&deploy_file("container/Containerfile")),
            Vec::<String>::new()
        );
        assert_eq!(
            check_headers(&cmd::root().join("deploy")).unwrap(),
            Vec::<String>::new()
        );
    }

    /// The whole `cargo xtask deploy-check` on the repository's files, with
    /// `nginx -t` and `systemd-analyze` wherever they are installed (CI
    /// installs nginx; a CI machine without it fails here).
    #[test]
    fn shipped_deploy_files_pass_every_check() {
        let report = run_checks(&cmd::root().join("deploy")).unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        let ran = |name: &str| report.ran.iter().any(|r| r == name);
        let nginx = cmd::find_program("nginx").is_some();
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            assert!(nginx, "install nginx (apt-get install nginx-light)");
        }
        assert_eq!(ran("nginx -t (templated copy)"), nginx, "{report:#?}");
        if cmd::find_program("systemd-analyze").is_some() {
            assert!(ran("systemd-analyze verify"), "{report:#?}");
        }
        for always in [
            "header comments",
            "kubernetes manifests",
            "systemd unit keys",
            "systemd env example",
            "nginx template rules",
            "Containerfile rules",
        ] {
            assert!(ran(always), "{always} did not run: {report:#?}");
        }
        report.finish().unwrap();
    }
}
