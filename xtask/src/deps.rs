//! Dependencies point one way: stores → core; axum → core; server → core +
//! axum + stores; admin → core; examples → core + axum + stores; the
//! bench tools (xtask, the load generator) → their shared report types
//! only; nothing → xtask. Checked on `cargo metadata`'s resolve graph, so that a dependency
//! added anywhere cannot bend the arrows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::cmd;

const CORE: &str = "session-core";
const CONFORMANCE: &str = "session-conformance";
const SERVER: &str = "session-server";
const ADMIN: &str = "session-admin";
const AXUM: &str = "session-axum";
const XTASK: &str = "xtask";
const LOADGEN: &str = "session-loadgen";
const BENCH_REPORT: &str = "session-bench-report";
const STORE_PREFIX: &str = "session-store-";
const EXAMPLE_PREFIX: &str = "example-";

/// The API boundaries: the crates other teams import (session-core,
/// session-axum, the stores). The server and the examples are built on
/// these alone.
fn is_api_boundary(name: &str) -> bool {
    name == CORE || name == AXUM || name.starts_with(STORE_PREFIX)
}

/// What session-core must not pull in, however indirectly: it does no I/O
/// and knows nothing of HTTP, SQL, Redis or command lines.
const BANNED_FROM_CORE: &[&str] = &[
    "axum",
    "tower",
    "tower-http",
    "hyper",
    "sqlx",
    "redis",
    "clap",
    "reqwest",
];

/// Runs `cargo metadata` and checks the workspace's dependency directions.
pub(crate) fn check_workspace() -> Result<()> {
    let violations = workspace_violations()?;
    if violations.is_empty() {
        eprintln!("dependency directions: ok");
        return Ok(());
    }
    for violation in &violations {
        eprintln!("  - {violation}");
    }
    bail!(
        "dependency-direction check: {} violation(s), listed above",
        violations.len()
    )
}

/// What breaks the rules in this workspace, from `cargo metadata`: what
/// `cargo xtask ci` reports, and what
/// `this_workspace_keeps_its_dependency_rules` asserts is empty.
fn workspace_violations() -> Result<Vec<String>> {
    let json = cmd::output(cmd::cargo().args(["metadata", "--format-version", "1"]))?;
    let metadata: Value = serde_json::from_str(&json).context("parsing `cargo metadata`")?;
    Ok(Graph::from_metadata(&metadata)?.violations())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Dev,
    Build,
}

#[derive(Debug)]
struct Edge {
    to: String,
    kinds: Vec<Kind>,
}

impl Edge {
    /// A dependency of the built artefact: normal or build, not dev-only.
    fn is_non_dev(&self) -> bool {
        self.kinds.iter().any(|kind| *kind != Kind::Dev)
    }

    fn is_normal(&self) -> bool {
        self.kinds.contains(&Kind::Normal)
    }
}

/// The resolve graph, keyed by package id.
#[derive(Debug)]
struct Graph {
    names: BTreeMap<String, String>,
    members: BTreeSet<String>,
    edges: BTreeMap<String, Vec<Edge>>,
}

impl Graph {
    fn from_metadata(metadata: &Value) -> Result<Self> {
        let packages = metadata["packages"]
            .as_array()
            .context("cargo metadata: no `packages`")?;
        let names = packages
            .iter()
            .map(|package| Ok((string(&package["id"])?, string(&package["name"])?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let members = metadata["workspace_members"]
            .as_array()
            .context("cargo metadata: no `workspace_members`")?
            .iter()
            .map(string)
            .collect::<Result<BTreeSet<_>>>()?;
        let nodes = metadata["resolve"]["nodes"]
            .as_array()
            .context("cargo metadata: no `resolve.nodes`")?;
        let mut edges = BTreeMap::new();
        for node in nodes {
            let deps = node["deps"]
                .as_array()
                .context("cargo metadata: a resolve node without `deps`")?
                .iter()
                .map(|dep| {
                    let kinds = dep["dep_kinds"]
                        .as_array()
                        .context("cargo metadata: a dependency without `dep_kinds`")?
                        .iter()
                        .map(|kind| match kind["kind"].as_str() {
                            None => Kind::Normal,
                            Some("dev") => Kind::Dev,
                            Some(_) => Kind::Build,
                        })
                        .collect();
                    Ok(Edge {
                        to: string(&dep["pkg"])?,
                        kinds,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            edges.insert(string(&node["id"])?, deps);
        }
        Ok(Self {
            names,
            members,
            edges,
        })
    }

    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    fn member(&self, name: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|id| self.name(id) == name)
            .map(String::as_str)
    }

    /// The workspace crates that `id` depends on through edges that `keep`.
    fn member_deps(&self, id: &str, keep: fn(&Edge) -> bool) -> BTreeSet<&str> {
        self.edges
            .get(id)
            .into_iter()
            .flatten()
            .filter(|edge| keep(edge) && self.members.contains(&edge.to))
            .map(|edge| self.name(&edge.to))
            .collect()
    }

    /// Every package reachable from `id` through edges that `keep`, each
    /// with the path that reaches it (`id` first).
    fn closure<'a>(
        &'a self,
        id: &'a str,
        keep: fn(&Edge) -> bool,
    ) -> BTreeMap<&'a str, Vec<&'a str>> {
        let mut paths: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut queue = VecDeque::from([id]);
        paths.insert(id, vec![self.name(id)]);
        while let Some(current) = queue.pop_front() {
            for edge in self.edges.get(current).into_iter().flatten() {
                if keep(edge) && !paths.contains_key(edge.to.as_str()) {
                    let mut path = paths[current].clone();
                    path.push(self.name(&edge.to));
                    paths.insert(&edge.to, path);
                    queue.push_back(&edge.to);
                }
            }
        }
        paths
    }

    fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for required in [CORE, CONFORMANCE] {
            if self.member(required).is_none() {
                found.push(format!("workspace crate `{required}` not found"));
            }
        }
        for id in &self.members {
            let name = self.name(id);
            let non_dev = self.member_deps(id, Edge::is_non_dev);
            let all = self.member_deps(id, |_| true);
            if name == CORE {
                for dep in &non_dev {
                    found.push(format!("`{CORE}` depends on workspace crate `{dep}`"));
                }
                for (package, path) in self.closure(id, Edge::is_normal) {
                    if BANNED_FROM_CORE.contains(&self.name(package)) {
                        found.push(format!(
                            "`{CORE}` depends on `{}` (through {})",
                            self.name(package),
                            path.join(" -> ")
                        ));
                    }
                }
            }
            if name.starts_with(STORE_PREFIX) {
                if !non_dev.contains(CORE) {
                    found.push(format!("`{name}` does not depend on `{CORE}`"));
                }
                for dep in non_dev.iter().filter(|dep| **dep != CORE) {
                    found.push(format!(
                        "`{name}` depends on workspace crate `{dep}` (only `{CORE}` is allowed, others as dev-dependencies)"
                    ));
                }
            }
            if name == AXUM {
                for dep in non_dev.iter().filter(|dep| **dep != CORE) {
                    found.push(format!(
                        "`{AXUM}` depends on workspace crate `{dep}` (only `{CORE}` is allowed: it reaches every store through session-core's traits)"
                    ));
                }
            }
            if name == CONFORMANCE {
                for dep in all.iter().filter(|dep| **dep != CORE) {
                    found.push(format!(
                        "`{CONFORMANCE}` depends on workspace crate `{dep}` (only `{CORE}` is allowed)"
                    ));
                }
            }
            if name == SERVER || name.starts_with(EXAMPLE_PREFIX) {
                for dep in non_dev.iter().filter(|dep| !is_api_boundary(dep)) {
                    found.push(format!(
                        "`{name}` depends on workspace crate `{dep}` (only the API boundaries `{CORE}`, `{AXUM}` and the stores are allowed, others as dev-dependencies)"
                    ));
                }
            }
            if name == ADMIN {
                for dep in non_dev.iter().filter(|dep| **dep != CORE) {
                    found.push(format!(
                        "`{ADMIN}` depends on workspace crate `{dep}` (only `{CORE}` is allowed: it reaches the server over HTTP)"
                    ));
                }
                for (package, path) in self.closure(id, Edge::is_non_dev) {
                    let dep = self.name(package);
                    if self.members.contains(package)
                        && (dep == SERVER || dep.starts_with(STORE_PREFIX))
                    {
                        found.push(format!(
                            "`{ADMIN}` depends on `{dep}` (through {})",
                            path.join(" -> ")
                        ));
                    }
                }
            }
            if name == LOADGEN || name == XTASK || name == BENCH_REPORT {
                for dep in all.iter().filter(|dep| **dep != BENCH_REPORT) {
                    found.push(format!(
                        "`{name}` depends on workspace crate `{dep}` (only `{BENCH_REPORT}` is allowed: the bench tools build apart from what they measure)"
                    ));
                }
            }
            if non_dev.contains(CONFORMANCE) {
                found.push(format!(
                    "`{name}` depends on `{CONFORMANCE}` outside [dev-dependencies]"
                ));
            }
            if all.contains(XTASK) {
                found.push(format!("`{name}` depends on `{XTASK}`"));
            }
        }
        found
    }
}

fn string(value: &Value) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("cargo metadata: expected a string, found {value}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Metadata for a workspace of `members` with `deps`: (from, to, kind),
    /// kind `None` for normal, `Some("dev")` or `Some("build")`.
    fn metadata(
        members: &[&str],
        externals: &[&str],
        deps: &[(&str, &str, Option<&str>)],
    ) -> Value {
        let id = |name: &str| format!("{name} 0.1.0 (id)");
        let all: Vec<&str> = members.iter().chain(externals).copied().collect();
        let packages: Vec<Value> = all
            .iter()
            .map(|name| json!({ "id": id(name), "name": name }))
            .collect();
        let nodes: Vec<Value> = all
            .iter()
            .map(|from| {
                let mut edges: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
                for (_, to, kind) in deps.iter().filter(|(f, _, _)| f == from) {
                    edges.entry(to).or_default().push(json!({ "kind": kind }));
                }
                let deps: Vec<Value> = edges
                    .into_iter()
                    .map(|(to, kinds)| json!({ "pkg": id(to), "dep_kinds": kinds }))
                    .collect();
                json!({ "id": id(from), "deps": deps })
            })
            .collect();
        json!({
            "packages": packages,
            "workspace_members": members.iter().map(|name| id(name)).collect::<Vec<_>>(),
            "resolve": { "nodes": nodes },
        })
    }

    const MEMBERS: &[&str] = &[
        "session-core",
        "session-conformance",
        "session-store-redis",
        "session-axum",
        "session-server",
        "session-admin",
        "example-app",
        "session-loadgen",
        "session-bench-report",
        "xtask",
    ];

    fn healthy() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
        vec![
            ("session-core", "serde", None),
            ("session-core", "session-conformance", Some("dev")),
            ("session-conformance", "session-core", None),
            ("session-store-redis", "session-core", None),
            ("session-store-redis", "redis", None),
            ("session-store-redis", "session-conformance", Some("dev")),
            ("session-axum", "session-core", None),
            ("session-axum", "session-server", Some("dev")),
            ("session-server", "session-core", None),
            ("session-server", "session-axum", None),
            ("session-server", "session-store-redis", None),
            ("session-server", "axum", None),
            ("axum", "tower", None),
            ("session-admin", "session-core", None),
            ("session-admin", "reqwest", None),
            ("session-admin", "session-server", Some("dev")),
            ("example-app", "session-axum", None),
            ("example-app", "session-store-redis", None),
            ("example-app", "session-server", Some("dev")),
            ("xtask", "clap", None),
            ("xtask", "session-bench-report", None),
            ("session-loadgen", "session-bench-report", None),
            ("session-bench-report", "serde", None),
        ]
    }

    const EXTERNALS: &[&str] = &["serde", "redis", "axum", "tower", "reqwest", "clap", "shim"];

    fn violations(deps: &[(&str, &str, Option<&str>)]) -> Vec<String> {
        Graph::from_metadata(&metadata(MEMBERS, EXTERNALS, deps))
            .unwrap()
            .violations()
    }

    fn with(extra: &[(&'static str, &'static str, Option<&'static str>)]) -> Vec<String> {
        let mut deps = healthy();
        deps.extend_from_slice(extra);
        violations(&deps)
    }

    /// The rules on this workspace itself, so that `cargo test` breaks as
    /// soon as a dependency bends an arrow, not only `cargo xtask ci`.
    #[test]
    fn this_workspace_keeps_its_dependency_rules() {
        assert_eq!(workspace_violations().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_workspace_whose_arrows_point_one_way_has_no_violations() {
        assert_eq!(violations(&healthy()), Vec::<String>::new());
    }

    #[test]
    fn core_pulling_in_tower_through_another_crate_is_reported_with_the_path() {
        let found = with(&[("session-core", "shim", None), ("shim", "tower", None)]);
        assert_eq!(
            found,
            ["`session-core` depends on `tower` (through session-core -> shim -> tower)"]
        );
    }

    #[test]
    fn core_may_use_banned_crates_only_as_dev_dependencies() {
        assert_eq!(
            with(&[("session-core", "axum", Some("dev"))]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn core_depending_on_a_workspace_crate_is_reported() {
        let found = with(&[("session-core", "session-store-redis", None)]);
        assert!(found.contains(
            &"`session-core` depends on workspace crate `session-store-redis`".to_owned()
        ));
    }

    #[test]
    fn a_store_depending_on_the_server_is_reported() {
        let found = with(&[("session-store-redis", "session-server", None)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .starts_with("`session-store-redis` depends on workspace crate `session-server`")
        );
    }

    #[test]
    fn a_store_without_core_is_reported() {
        let deps: Vec<_> = healthy()
            .into_iter()
            .filter(|(from, to, _)| !(*from == "session-store-redis" && *to == "session-core"))
            .collect();
        assert_eq!(
            violations(&deps),
            ["`session-store-redis` does not depend on `session-core`"]
        );
    }

    #[test]
    fn conformance_as_a_normal_dependency_is_reported() {
        let found = with(&[("session-store-redis", "session-conformance", None)]);
        assert!(found.contains(
            &"`session-store-redis` depends on `session-conformance` outside [dev-dependencies]"
                .to_owned()
        ));
    }

    #[test]
    fn conformance_depending_on_a_store_is_reported_even_as_dev_dependency() {
        let found = with(&[("session-conformance", "session-store-redis", Some("dev"))]);
        assert_eq!(
            found,
            [
                "`session-conformance` depends on workspace crate `session-store-redis` (only `session-core` is allowed)"
            ]
        );
    }

    #[test]
    fn admin_reaching_a_store_indirectly_is_reported() {
        let found = with(&[
            ("session-admin", "shim", None),
            ("shim", "session-store-redis", None),
        ]);
        assert_eq!(
            found,
            [
                "`session-admin` depends on `session-store-redis` (through session-admin -> shim -> session-store-redis)"
            ]
        );
    }

    #[test]
    fn the_server_depending_on_the_admin_cli_is_reported() {
        assert_eq!(
            with(&[("session-server", "session-admin", None)]),
            [
                "`session-server` depends on workspace crate `session-admin` (only the API boundaries `session-core`, `session-axum` and the stores are allowed, others as dev-dependencies)"
            ]
        );
    }

    #[test]
    fn an_example_may_test_against_the_server_but_not_be_built_on_it() {
        assert_eq!(
            with(&[("example-app", "session-server", None)]),
            [
                "`example-app` depends on workspace crate `session-server` (only the API boundaries `session-core`, `session-axum` and the stores are allowed, others as dev-dependencies)"
            ]
        );
    }

    #[test]
    fn admin_depending_on_session_axum_is_reported() {
        assert_eq!(
            with(&[("session-admin", "session-axum", None)]),
            [
                "`session-admin` depends on workspace crate `session-axum` (only `session-core` is allowed: it reaches the server over HTTP)"
            ]
        );
    }

    #[test]
    fn the_load_generator_depending_on_what_it_measures_is_reported() {
        assert_eq!(
            with(&[("session-loadgen", "session-core", Some("dev"))]),
            [
                "`session-loadgen` depends on workspace crate `session-core` (only `session-bench-report` is allowed: the bench tools build apart from what they measure)"
            ]
        );
    }

    #[test]
    fn depending_on_xtask_is_reported_for_any_kind() {
        let found = with(&[("session-server", "xtask", Some("dev"))]);
        assert_eq!(found, ["`session-server` depends on `xtask`"]);
    }

    #[test]
    fn a_missing_core_crate_is_reported_so_the_check_cannot_pass_vacuously() {
        let graph = Graph::from_metadata(&metadata(&["xtask"], &[], &[])).unwrap();
        assert_eq!(
            graph.violations(),
            [
                "workspace crate `session-core` not found",
                "workspace crate `session-conformance` not found"
            ]
        );
    }
}
