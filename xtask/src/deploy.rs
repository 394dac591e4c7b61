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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize as _;
use serde_json::Value;

use crate::cmd;

const PUBLIC_PORT: i64 = 8080;
const ADMIN_PORT: i64 = 8081;

/// Settings that are secrets (or may carry one): by reference only.
const SECRET_ENV: [&str; 5] = [
    "SESSION_ADMIN_TOKEN",
    "SESSION_STORE",
    "SESSION_AUDIT",
    "SESSION_JWT_HS256_SECRET",
    "SESSION_MASTER_KEY",
];

/// Data-directory key files a fleet on Redis must not mount: the key ring
/// and the token secret live in the store, and a mounted copy would be a
/// stale second source.
const STORE_KEPT_FILES: [&str; 2] = ["keys.json", "token-secret"];

/// Settings that are secrets in any form.
const PURE_SECRET_ENV: [&str; 3] = [
    "SESSION_ADMIN_TOKEN",
    "SESSION_JWT_HS256_SECRET",
    "SESSION_MASTER_KEY",
];

/// The nginx template's placeholders and the values a check fills in.
const NGINX_PLACEHOLDERS: [(&str, &str); 3] = [
    ("LISTEN", "127.0.0.1:18000"),
    ("SESSION_PUBLIC_UPSTREAM", "127.0.0.1:18080"),
    ("APP_UPSTREAM", "127.0.0.1:18090"),
];

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
    match find_program("systemd-analyze") {
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
    match find_program("nginx") {
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

/// `(file name, contents)` of every `*.yaml` / `*.yml` directly in `dir`.
fn read_yaml_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// An executable named `name` on `PATH` or in the sbin directories, which
/// are often not on an unprivileged user's `PATH` (nginx lives there).
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
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

// ---------------------------------------------------------------------------
// Kubernetes

/// One parsed YAML document.
#[derive(Debug)]
struct Object {
    file: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    fn shown(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }
}

fn parse_manifests(files: &[(String, String)]) -> (Vec<Object>, Vec<String>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (file, text) in files {
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => objects.push(Object {
                    file: file.clone(),
                    value,
                }),
                Err(error) => {
                    problems.push(format!(
                        "{file}: document {index} is not valid YAML: {error}"
                    ));
                    break;
                }
            }
        }
    }
    (objects, problems)
}

/// Whether every `matchLabels` pair of `selector` is among `labels`.
/// An empty selector matches everything, as in Kubernetes.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector["matchLabels"].as_object() else {
        return selector.get("matchExpressions").is_none();
    };
    wanted
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn is_port(value: &Value, number: i64, names: &BTreeSet<String>) -> bool {
    value.as_i64() == Some(number) || value.as_str().is_some_and(|n| names.contains(n))
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn is_true(value: &Value) -> bool {
    value.as_bool() == Some(true)
}

/// The names the Deployment gives to a container port number.
fn port_names(deployments: &[&Object], number: i64) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for deployment in deployments {
        for container in array(&deployment.value["spec"]["template"]["spec"]["containers"]) {
            for port in array(&container["ports"]) {
                if port["containerPort"].as_i64() == Some(number)
                    && let Some(name) = port["name"].as_str()
                {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

/// Each document read into its typed Kubernetes struct (k8s-openapi, API
/// v1.33) by its `kind`: a field of the wrong type, a missing required
/// field, an `apiVersion` that does not serve the kind, an unknown
/// (misspelt or misplaced) field or an unknown kind is a problem. The
/// kustomization, which is no API object, has its top-level keys checked.
fn check_schemas(objects: &[Object]) -> Vec<String> {
    use k8s_openapi::api::{apps, core, networking, policy};

    let mut problems = Vec::new();
    for object in objects {
        let value = &object.value;
        let unknown = match object.kind() {
            "Kustomization" => check_kustomization_keys(value),
            "Namespace" => typed::<core::v1::Namespace>(value),
            "ServiceAccount" => typed::<core::v1::ServiceAccount>(value),
            "ConfigMap" => typed::<core::v1::ConfigMap>(value),
            "Secret" => typed::<core::v1::Secret>(value),
            "Service" => typed::<core::v1::Service>(value),
            "Deployment" => typed::<apps::v1::Deployment>(value),
            "StatefulSet" => typed::<apps::v1::StatefulSet>(value),
            "PodDisruptionBudget" => typed::<policy::v1::PodDisruptionBudget>(value),
            "NetworkPolicy" => typed::<networking::v1::NetworkPolicy>(value),
            "Ingress" => typed::<networking::v1::Ingress>(value),
            "" => continue, // reported by check_kubernetes
            other => Err(format!(
                "kind {other} is not one this check has a schema for"
            )),
        };
        match unknown {
            Ok(paths) => problems.extend(
                paths
                    .into_iter()
                    .map(|path| format!("{}: unknown field {path}", object.shown())),
            ),
            Err(error) => problems.push(format!("{}: {error}", object.shown())),
        }
    }
    problems
}

/// Deserializes `value` as `T`; the paths of the fields `T` does not have.
fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    let parsed: Result<T, _> =
        serde_ignored::deserialize(value, |path| unknown.push(field_path(&path)));
    match parsed {
        Ok(_) => Ok(unknown),
        Err(error) => Err(format!("does not match the Kubernetes schema: {error}")),
    }
}

/// `spec.template.spec.containers[0].name`: serde_ignored's path without
/// its `?` steps for `Option`s.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            prefix if prefix.is_empty() => key.clone(),
            prefix => format!("{prefix}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The fields of kustomize's `Kustomization` (kustomize.config.k8s.io/v1beta1).
const KUSTOMIZATION_KEYS: [&str; 30] = [
    "apiVersion",
    "kind",
    "metadata",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "resources",
    "components",
    "crds",
    "images",
    "labels",
    "commonLabels",
    "commonAnnotations",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "replicas",
    "replacements",
    "vars",
    "buildMetadata",
    "openapi",
    "helmCharts",
    "helmGlobals",
    "sortOptions",
    "transformers",
    "generators",
    "validators",
];

fn check_kustomization_keys(value: &Value) -> Result<Vec<String>, String> {
    let version = value["apiVersion"].as_str().unwrap_or("");
    if version != "kustomize.config.k8s.io/v1beta1" {
        return Err(format!(
            "apiVersion {version:?} is not kustomize.config.k8s.io/v1beta1"
        ));
    }
    let Some(fields) = value.as_object() else {
        return Err("is not a mapping".to_owned());
    };
    Ok(fields
        .keys()
        .filter(|key| !KUSTOMIZATION_KEYS.contains(&key.as_str()))
        .cloned()
        .collect())
}

fn check_kubernetes(files: &[(String, String)]) -> Vec<String> {
    let (objects, mut problems) = parse_manifests(files);
    problems.extend(check_schemas(&objects));

    for object in &objects {
        if object.value["apiVersion"].as_str().is_none() || object.kind().is_empty() {
            problems.push(format!(
                "{}: a document without apiVersion or kind",
                object.file
            ));
        } else if object.kind() != "Kustomization" && object.name().is_empty() {
            problems.push(format!(
                "{}: an object without metadata.name",
                object.shown()
            ));
        }
    }
    check_kustomization(files, &objects, &mut problems);

    let of_kind =
        |kind: &str| -> Vec<&Object> { objects.iter().filter(|o| o.kind() == kind).collect() };
    let deployments = of_kind("Deployment");
    if deployments.is_empty() {
        problems.push("no Deployment".to_owned());
    }
    let public_names = port_names(&deployments, PUBLIC_PORT);
    let admin_names = port_names(&deployments, ADMIN_PORT);
    let config_maps: BTreeSet<&str> = of_kind("ConfigMap").iter().map(|o| o.name()).collect();

    for deployment in &deployments {
        check_deployment(deployment, &public_names, &config_maps, &mut problems);
    }
    for config_map in of_kind("ConfigMap") {
        for name in SECRET_ENV {
            if config_map.value["data"].get(name).is_some() {
                problems.push(format!(
                    "{}: {name} belongs in a Secret, not a ConfigMap",
                    config_map.shown()
                ));
            }
        }
    }
    check_services(
        &of_kind("Service"),
        &public_names,
        &admin_names,
        &mut problems,
    );
    for ingress in of_kind("Ingress") {
        check_ingress(ingress, &of_kind("Service"), &admin_names, &mut problems);
    }
    let pod_labels: Vec<(&Object, &Value)> = deployments
        .iter()
        .map(|d| (*d, &d.value["spec"]["template"]["metadata"]["labels"]))
        .collect();
    check_pdbs(&of_kind("PodDisruptionBudget"), &pod_labels, &mut problems);
    check_network_policies(
        &of_kind("NetworkPolicy"),
        &pod_labels,
        &admin_names,
        &mut problems,
    );
    problems
}

fn check_kustomization(files: &[(String, String)], objects: &[Object], problems: &mut Vec<String>) {
    let Some(kustomization) = objects.iter().find(|o| o.file == "kustomization.yaml") else {
        problems.push("no kustomization.yaml".to_owned());
        return;
    };
    let listed: BTreeSet<&str> = array(&kustomization.value["resources"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let present: BTreeSet<&str> = files
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != "kustomization.yaml" && !name.contains(".example."))
        .collect();
    for missing in listed.difference(&present) {
        problems.push(format!(
            "kustomization.yaml lists {missing}, which does not exist"
        ));
    }
    for unlisted in present.difference(&listed) {
        problems.push(format!("kustomization.yaml does not list {unlisted}"));
    }
}

fn check_deployment(
    deployment: &Object,
    public_names: &BTreeSet<String>,
    config_maps: &BTreeSet<&str>,
    problems: &mut Vec<String>,
) {
    let shown = deployment.shown();
    let spec = &deployment.value["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    if replicas < 2 {
        problems.push(format!(
            "{shown}: replicas is {replicas}, at least 2 are needed"
        ));
    }
    let pod = &spec["template"]["spec"];
    if !selects(&spec["selector"], &spec["template"]["metadata"]["labels"]) {
        problems.push(format!(
            "{shown}: the selector does not match the pod labels"
        ));
    }
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(&pod[key]) {
            problems.push(format!("{shown}: {key} is set"));
        }
    }
    let pod_security = &pod["securityContext"];
    let containers = array(&pod["containers"]);
    if containers.is_empty() {
        problems.push(format!("{shown}: no containers"));
    }
    for container in containers.iter().chain(array(&pod["initContainers"])) {
        let name = container["name"].as_str().unwrap_or("?");
        let at = format!("{shown} container {name}");
        for port in array(&container["ports"]) {
            if port.get("hostPort").is_some() {
                problems.push(format!("{at}: hostPort is set"));
            }
        }
        let security = &container["securityContext"];
        if !(is_true(&security["runAsNonRoot"]) || is_true(&pod_security["runAsNonRoot"])) {
            problems.push(format!("{at}: runAsNonRoot is not true"));
        }
        if !is_true(&security["readOnlyRootFilesystem"]) {
            problems.push(format!("{at}: readOnlyRootFilesystem is not true"));
        }
        if security["allowPrivilegeEscalation"].as_bool() != Some(false) {
            problems.push(format!("{at}: allowPrivilegeEscalation is not false"));
        }
        if is_true(&security["privileged"]) {
            problems.push(format!("{at}: privileged"));
        }
        let drops_all = array(&security["capabilities"]["drop"])
            .iter()
            .any(|c| c.as_str() == Some("ALL"));
        if !drops_all {
            problems.push(format!("{at}: capabilities.drop does not contain ALL"));
        }
        if security["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            problems.push(format!("{at}: adds capabilities"));
        }
        let resources = &container["resources"];
        if resources["requests"]
            .as_object()
            .is_none_or(|r| r.is_empty())
        {
            problems.push(format!("{at}: no resources.requests"));
        }
        if resources["limits"]["memory"].is_null() {
            problems.push(format!("{at}: no resources.limits.memory"));
        }
        check_env(&at, container, config_maps, problems);
    }
    let Some(server) = containers.first() else {
        return;
    };
    check_shared_keys(&shown, server, problems);
    let at = format!(
        "{shown} container {}",
        server["name"].as_str().unwrap_or("?")
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &server[probe]["httpGet"];
        if get.is_null() {
            problems.push(format!("{at}: no {probe} with httpGet"));
            continue;
        }
        if get["path"].as_str() != Some(path) {
            problems.push(format!("{at}: {probe} path is not {path}"));
        }
        if !is_port(&get["port"], PUBLIC_PORT, public_names) {
            problems.push(format!(
                "{at}: {probe} is not on the public port {PUBLIC_PORT}"
            ));
        }
    }
}

/// A fleet shares its keys through the store: every replica takes the same
/// master key from a Secret, and no key file is mounted into the pods.
fn check_shared_keys(shown: &str, server: &Value, problems: &mut Vec<String>) {
    let master = array(&server["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some("SESSION_MASTER_KEY"));
    if master.is_none_or(|e| e["valueFrom"]["secretKeyRef"].is_null()) {
        problems.push(format!(
            "{shown}: SESSION_MASTER_KEY does not come from a Secret (every replica needs the same one)"
        ));
    }
    for mount in array(&server["volumeMounts"]) {
        let path = mount["mountPath"].as_str().unwrap_or_default();
        let sub_path = mount["subPath"].as_str().unwrap_or_default();
        if let Some(file) = STORE_KEPT_FILES
            .iter()
            .find(|f| path.ends_with(&format!("/{f}")) || sub_path == **f)
        {
            problems.push(format!(
                "{shown}: {file} is mounted, but on Redis the key ring and the token secret live in the store"
            ));
        }
    }
}

fn check_env(
    at: &str,
    container: &Value,
    config_maps: &BTreeSet<&str>,
    problems: &mut Vec<String>,
) {
    for source in array(&container["envFrom"]) {
        if let Some(name) = source["configMapRef"]["name"].as_str()
            && !config_maps.contains(name)
        {
            problems.push(format!(
                "{at}: envFrom names ConfigMap {name}, which is not here"
            ));
        }
    }
    let env = array(&container["env"]);
    for name in SECRET_ENV {
        let Some(entry) = env.iter().find(|e| e["name"].as_str() == Some(name)) else {
            continue;
        };
        if entry.get("value").is_some() || entry["valueFrom"]["secretKeyRef"].is_null() {
            problems.push(format!("{at}: {name} must come from a secretKeyRef"));
        }
    }
    let admin_token_by_ref = env.iter().any(|e| {
        e["name"].as_str() == Some("SESSION_ADMIN_TOKEN")
            && !e["valueFrom"]["secretKeyRef"].is_null()
    });
    if !admin_token_by_ref {
        problems.push(format!(
            "{at}: SESSION_ADMIN_TOKEN is not set from a Secret (each replica would make its own)"
        ));
    }
}

/// Whether a Service port entry reaches the container port `number`.
fn service_port_is(port: &Value, number: i64, names: &BTreeSet<String>) -> bool {
    let target = if port["targetPort"].is_null() {
        &port["port"]
    } else {
        &port["targetPort"]
    };
    is_port(target, number, names)
}

fn check_services(
    services: &[&Object],
    public_names: &BTreeSet<String>,
    admin_names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let mut public_seen = false;
    for service in services {
        let spec = &service.value["spec"];
        let ports = array(&spec["ports"]);
        let admin = ports.iter().any(|p| {
            service_port_is(p, ADMIN_PORT, admin_names) || p["port"].as_i64() == Some(ADMIN_PORT)
        });
        public_seen |= ports
            .iter()
            .any(|p| service_port_is(p, PUBLIC_PORT, public_names));
        if !admin {
            continue;
        }
        let shown = service.shown();
        let kind = spec["type"].as_str().unwrap_or("ClusterIP");
        if kind != "ClusterIP" {
            problems.push(format!(
                "{shown}: exposes the admin port through type {kind}; only ClusterIP is allowed"
            ));
        }
        if ports.iter().any(|p| p.get("nodePort").is_some()) {
            problems.push(format!("{shown}: exposes the admin port with a nodePort"));
        }
        if spec["externalIPs"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            problems.push(format!("{shown}: exposes the admin port on externalIPs"));
        }
        if ports
            .iter()
            .any(|p| !service_port_is(p, ADMIN_PORT, admin_names))
        {
            problems.push(format!(
                "{shown}: mixes the admin port with other ports; give it a Service of its own"
            ));
        }
    }
    if !public_seen {
        problems.push(format!("no Service exposes the public port {PUBLIC_PORT}"));
    }
}

fn check_ingress(
    ingress: &Object,
    services: &[&Object],
    admin_names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let admin_services: BTreeSet<&str> = services
        .iter()
        .filter(|s| {
            array(&s.value["spec"]["ports"])
                .iter()
                .any(|p| service_port_is(p, ADMIN_PORT, admin_names))
        })
        .map(|s| s.name())
        .collect();
    let mut backends = Vec::new();
    collect_key(&ingress.value, "service", &mut backends);
    for backend in backends {
        let name = backend["name"].as_str().unwrap_or("");
        let port = &backend["port"];
        if admin_services.contains(name)
            || port["number"].as_i64() == Some(ADMIN_PORT)
            || port["name"]
                .as_str()
                .is_some_and(|n| admin_names.contains(n))
        {
            problems.push(format!("{}: routes to the admin port", ingress.shown()));
        }
    }
}

fn collect_key<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    found.push(v);
                }
                collect_key(v, key, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_key(v, key, found)),
        _ => {}
    }
}

fn check_pdbs(pdbs: &[&Object], pods: &[(&Object, &Value)], problems: &mut Vec<String>) {
    for (deployment, labels) in pods {
        let covering: Vec<&&Object> = pdbs
            .iter()
            .filter(|p| selects(&p.value["spec"]["selector"], labels))
            .collect();
        if covering.is_empty() {
            problems.push(format!(
                "{}: no PodDisruptionBudget covers its pods",
                deployment.shown()
            ));
        }
        let replicas = deployment.value["spec"]["replicas"].as_i64().unwrap_or(1);
        for pdb in covering {
            let spec = &pdb.value["spec"];
            match spec["minAvailable"].as_i64() {
                Some(n) if n < 1 => {
                    problems.push(format!("{}: minAvailable below 1", pdb.shown()));
                }
                Some(n) if n >= replicas => problems.push(format!(
                    "{}: minAvailable {n} with {replicas} replicas blocks every drain",
                    pdb.shown()
                )),
                Some(_) => {}
                None if spec.get("minAvailable").is_none()
                    && spec.get("maxUnavailable").is_none() =>
                {
                    problems.push(format!(
                        "{}: neither minAvailable nor maxUnavailable",
                        pdb.shown()
                    ));
                }
                None => {}
            }
        }
    }
}

/// Whether a NetworkPolicy ingress rule lets the admin port in.
fn rule_admits_port(rule: &Value, number: i64, names: &BTreeSet<String>) -> bool {
    let ports = array(&rule["ports"]);
    ports.is_empty()
        || ports.iter().any(|p| {
            let port = &p["port"];
            if port.is_null() {
                return true; // every port of the protocol
            }
            if let (Some(start), Some(end)) = (port.as_i64(), p["endPort"].as_i64()) {
                return (start..=end).contains(&number);
            }
            is_port(port, number, names)
        })
}

/// Whether a rule's peers amount to "anyone".
fn rule_admits_everyone(rule: &Value) -> bool {
    let peers = array(&rule["from"]);
    peers.is_empty()
        || peers.iter().any(|peer| {
            let cidr = peer["ipBlock"]["cidr"].as_str();
            let everywhere_ip = matches!(cidr, Some("0.0.0.0/0" | "::/0"));
            let all_namespaces = peer["namespaceSelector"]
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
                && peer.get("podSelector").is_none();
            everywhere_ip || all_namespaces
        })
}

fn check_network_policies(
    policies: &[&Object],
    pods: &[(&Object, &Value)],
    admin_names: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (deployment, labels) in pods {
        let governing: Vec<&&Object> = policies
            .iter()
            .filter(|p| {
                let spec = &p.value["spec"];
                let types = array(&spec["policyTypes"]);
                let restricts_ingress = if types.is_empty() {
                    true // Kubernetes implies Ingress
                } else {
                    types.iter().any(|t| t.as_str() == Some("Ingress"))
                };
                restricts_ingress && selects(&spec["podSelector"], labels)
            })
            .collect();
        if governing.is_empty() {
            problems.push(format!(
                "{}: no NetworkPolicy restricts traffic to its pods (the admin port would be open to the cluster)",
                deployment.shown()
            ));
        }
        for policy in governing {
            for rule in array(&policy.value["spec"]["ingress"]) {
                if rule_admits_port(rule, ADMIN_PORT, admin_names) && rule_admits_everyone(rule) {
                    problems.push(format!(
                        "{}: an ingress rule admits anyone to the admin port {ADMIN_PORT}",
                        policy.shown()
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// systemd

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

fn check_unit(text: &str) -> Vec<String> {
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
fn check_env_example(text: &str) -> Vec<String> {
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

fn systemd_verify(program: &Path, unit: &str) -> Result<Vec<String>> {
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
fn systemd_security(program: &Path, unit: &str) -> Result<Option<Vec<String>>> {
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

// ---------------------------------------------------------------------------
// nginx

/// One nginx directive: its name, arguments (quotes removed) and block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                chars.next();
                tokens.push(match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err("an unterminated quoted string".to_owned()),
                        Some('\\') => {
                            if let Some(escaped) = chars.next() {
                                word.push('\\');
                                word.push(escaped);
                            }
                        }
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                    }
                }
                tokens.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                        break;
                    }
                    // `${NAME}` stays one word.
                    if c == '$' {
                        word.push(c);
                        chars.next();
                        if chars.peek() == Some(&'{') {
                            for c in chars.by_ref() {
                                word.push(c);
                                if c == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

fn parse_nginx(text: &str) -> Result<Vec<Directive>, String> {
    fn block(
        tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        nested: bool,
    ) -> Result<Vec<Directive>, String> {
        let mut directives = Vec::new();
        loop {
            let name = match tokens.next() {
                None if nested => return Err("a block is not closed".to_owned()),
                None => return Ok(directives),
                Some(Token::Close) if nested => return Ok(directives),
                Some(Token::Word(word)) => word,
                Some(other) => return Err(format!("unexpected {other:?}")),
            };
            let mut args = Vec::new();
            loop {
                match tokens.next() {
                    Some(Token::Word(word)) => args.push(word),
                    Some(Token::Semicolon) => {
                        directives.push(Directive {
                            name,
                            args,
                            block: None,
                        });
                        break;
                    }
                    Some(Token::Open) => {
                        let inner = block(tokens, true)?;
                        directives.push(Directive {
                            name,
                            args,
                            block: Some(inner),
                        });
                        break;
                    }
                    Some(Token::Close) | None => {
                        return Err(format!("directive {name} does not end with ; or {{"));
                    }
                }
            }
        }
    }
    let mut tokens = tokenize(text)?.into_iter().peekable();
    block(&mut tokens, false)
}

impl Directive {
    fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    fn has(&self, name: &str, args: &[&str]) -> bool {
        self.children()
            .iter()
            .any(|d| d.name == name && d.args.iter().map(String::as_str).eq(args.iter().copied()))
    }

    fn first(&self, name: &str) -> Option<&Directive> {
        self.children().iter().find(|d| d.name == name)
    }

    /// The header names set by this block's own `proxy_set_header`s, lower case.
    fn set_headers(&self) -> BTreeSet<String> {
        self.children()
            .iter()
            .filter(|d| d.name == "proxy_set_header")
            .filter_map(|d| d.args.first())
            .map(|h| h.to_ascii_lowercase())
            .collect()
    }

    fn locations(&self) -> Vec<&Directive> {
        let mut found = Vec::new();
        for child in self.children() {
            if child.name == "location" {
                found.push(child);
                found.extend(child.locations());
            }
        }
        found
    }
}

/// Fills in the placeholders, and nothing else (nginx's own `$variables`
/// stay), as `envsubst '${LISTEN} ...'` does.
fn template_nginx(text: &str) -> String {
    NGINX_PLACEHOLDERS
        .iter()
        .fold(text.to_owned(), |out, (name, value)| {
            out.replace(&format!("${{{name}}}"), value)
        })
}

/// Names written as `${NAME}` in `text`.
fn placeholders(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

fn check_nginx_template(auth_conf: &str, nginx_conf: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let expected: BTreeSet<String> = NGINX_PLACEHOLDERS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let found = placeholders(auth_conf);
    if found != expected {
        problems.push(format!(
            "session-auth.conf placeholders are {found:?}, expected exactly {expected:?}"
        ));
    }
    match parse_nginx(nginx_conf) {
        Ok(main) => {
            let includes = main
                .iter()
                .filter(|d| d.name == "http")
                .any(|http| http.has("include", &["session-auth.conf"]));
            if !includes {
                problems
                    .push("nginx.conf does not include session-auth.conf in http {}".to_owned());
            }
        }
        Err(error) => problems.push(format!("nginx.conf does not parse: {error}")),
    }
    let top = match parse_nginx(auth_conf) {
        Ok(top) => top,
        Err(error) => {
            problems.push(format!("session-auth.conf does not parse: {error}"));
            return problems;
        }
    };
    let servers: Vec<&Directive> = top.iter().filter(|d| d.name == "server").collect();
    if servers.is_empty() {
        problems.push("session-auth.conf has no server block".to_owned());
    }
    for server in servers {
        check_nginx_server(server, &mut problems);
    }
    problems
}

fn check_nginx_server(server: &Directive, problems: &mut Vec<String>) {
    if !server.has("listen", &["${LISTEN}"]) {
        problems.push("server does not `listen ${LISTEN}`".to_owned());
    }
    let server_headers = server.set_headers();
    let locations = server.locations();
    // Every proxying location must set X-Session-User / X-Session-Id, so
    // that a client's copies never pass; a location with any
    // proxy_set_header of its own inherits none of the server's.
    for location in &locations {
        if location.first("proxy_pass").is_none() {
            continue;
        }
        let own = location.set_headers();
        let effective = if own.is_empty() {
            &server_headers
        } else {
            &own
        };
        for header in ["x-session-user", "x-session-id"] {
            if !effective.contains(header) {
                problems.push(format!(
                    "location {}: a client-supplied {header} would reach the upstream",
                    location.args.join(" ")
                ));
            }
        }
    }
    let find = |path: &[&str]| {
        locations
            .iter()
            .find(|l| l.args.iter().map(String::as_str).eq(path.iter().copied()))
            .copied()
    };
    for prefix in ["/v1/auth/", "/.well-known/"] {
        match find(&[prefix]) {
            Some(l) if l.first("proxy_pass").is_some() && l.first("auth_request").is_none() => {}
            _ => problems.push(format!(
                "location {prefix} is not proxied straight to the session service"
            )),
        }
    }
    let protected: Vec<&&Directive> = locations
        .iter()
        .filter(|l| l.first("auth_request").is_some())
        .collect();
    if protected.is_empty() {
        problems.push("no location uses auth_request".to_owned());
    }
    for location in protected {
        let at = format!("location {}", location.args.join(" "));
        for (what, args) in [
            (
                "auth_request_set",
                ["$session_user", "$upstream_http_x_session_user"],
            ),
            (
                "auth_request_set",
                ["$session_id", "$upstream_http_x_session_id"],
            ),
            ("proxy_set_header", ["X-Session-User", "$session_user"]),
            ("proxy_set_header", ["X-Session-Id", "$session_id"]),
        ] {
            if !location.has(what, &args) {
                problems.push(format!("{at}: no `{what} {}`", args.join(" ")));
            }
        }
        let login = location
            .children()
            .iter()
            .find(|d| d.name == "error_page" && d.args.first().is_some_and(|a| a == "401"))
            .and_then(|d| d.args.last())
            .filter(|target| target.starts_with('@'));
        match login.and_then(|name| find(&[name])) {
            Some(named) => {
                let redirects = named.first("return").is_some_and(|r| {
                    r.args.first().is_some_and(|c| c == "302" || c == "303")
                        && r.args.get(1).is_some_and(|u| u.starts_with("/login?next="))
                });
                if !redirects {
                    problems.push(format!(
                        "location {}: does not redirect to /login?next=...",
                        named.args.join(" ")
                    ));
                }
            }
            None => problems.push(format!(
                "{at}: no `error_page 401 = @login` with its location"
            )),
        }
        let target = location.first("auth_request").and_then(|d| d.args.first());
        match target.and_then(|path| find(&["=", path])) {
            Some(verify) => check_verify_location(verify, problems),
            None => problems.push(format!(
                "{at}: the auth_request target is not an exact location"
            )),
        }
    }
    let login_page = find(&["=", "/login"]);
    if login_page.is_none_or(|l| l.first("auth_request").is_some()) {
        problems.push(
            "location = /login must exist without auth_request (else the redirect loops)"
                .to_owned(),
        );
    }
}

fn check_verify_location(verify: &Directive, problems: &mut Vec<String>) {
    let at = format!("location {}", verify.args.join(" "));
    for (name, args) in [
        ("internal", &[][..]),
        ("proxy_pass_request_body", &["off"][..]),
        ("proxy_set_header", &["Content-Length", ""][..]),
        ("proxy_set_header", &["X-Original-URI", "$request_uri"][..]),
        (
            "proxy_set_header",
            &["X-Original-URL", "$scheme://$http_host$request_uri"][..],
        ),
        (
            "proxy_set_header",
            &["X-Original-Method", "$request_method"][..],
        ),
        ("proxy_set_header", &["DPoP", "$http_dpop"][..]),
        ("proxy_set_header", &["Cookie", "$http_cookie"][..]),
        (
            "proxy_set_header",
            &["Authorization", "$http_authorization"][..],
        ),
        ("proxy_method", &["GET"][..]),
    ] {
        if !verify.has(name, args) {
            problems.push(format!("{at}: no `{name} {}`", args.join(" ")));
        }
    }
    let passes_to_verify = verify
        .first("proxy_pass")
        .and_then(|d| d.args.first())
        .is_some_and(|url| url.ends_with("/v1/auth/verify"));
    if !passes_to_verify {
        problems.push(format!("{at}: does not proxy_pass to .../v1/auth/verify"));
    }
}

fn nginx_test(program: &Path, auth_conf: &str, nginx_conf: &str) -> Result<Vec<String>> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    std::fs::create_dir(dir.path().join("tmp")).context("creating nginx's temp directory")?;
    for (name, text) in [("session-auth.conf", auth_conf), ("nginx.conf", nginx_conf)] {
        let path = dir.path().join(name);
        std::fs::write(&path, template_nginx(text))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let (success, output) = run_captured(
        Command::new(program)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log")),
    )?;
    Ok(if success {
        Vec::new()
    } else {
        vec![format!("nginx -t failed: {}", output.trim())]
    })
}

// ---------------------------------------------------------------------------
// Containerfile

fn check_containerfile(text: &str) -> Vec<String> {
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

    fn deploy_file(relative: &str) -> String {
        read(&cmd::root().join("deploy").join(relative)).unwrap()
    }

    fn shipped_manifests() -> Vec<(String, String)> {
        read_yaml_files(&cmd::root().join("deploy/kubernetes")).unwrap()
    }

    /// The shipped manifests with `from` replaced by `to` in `file`
    /// (which must contain it, so that a test cannot go stale silently).
    fn manifests_with(file: &str, from: &str, to: &str) -> Vec<(String, String)> {
        let mut files = shipped_manifests();
        let (_, text) = files.iter_mut().find(|(name, _)| name == file).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        *text = text.replacen(from, to, 1);
        files
    }

    fn assert_problem(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:#?}"
        );
    }

    #[test]
    fn the_shipped_kubernetes_manifests_pass() {
        assert_eq!(check_kubernetes(&shipped_manifests()), Vec::<String>::new());
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
        let nginx = find_program("nginx").is_some();
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            assert!(nginx, "install nginx (apt-get install nginx-light)");
        }
        assert_eq!(ran("nginx -t (templated copy)"), nginx, "{report:#?}");
        if find_program("systemd-analyze").is_some() {
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

    #[test]
    fn a_single_replica_is_refused() {
        let problems = check_kubernetes(&manifests_with(
            "deployment.yaml",
            "replicas: 3",
            "replicas: 1",
        ));
        assert_problem(&problems, "replicas is 1");
    }

    #[test]
    fn a_readiness_probe_on_healthz_is_refused() {
        let files = manifests_with("deployment.yaml", "path: /readyz", "path: /healthz");
        assert_problem(
            &check_kubernetes(&files),
            "readinessProbe path is not /readyz",
        );
    }

    #[test]
    fn a_host_port_is_refused() {
        let files = manifests_with(
            "deployment.yaml",
            "containerPort: 8080",
            "containerPort: 8080\n              hostPort: 8080",
        );
        assert_problem(&check_kubernetes(&files), "hostPort is set");
    }

    #[test]
    fn a_fleet_without_a_shared_master_key_is_refused() {
        let files = manifests_with(
            "deployment.yaml",
            "- name: SESSION_MASTER_KEY\n",
            "- name: SESSION_MASTER_KEY_UNUSED\n",
        );
        assert_problem(
            &check_kubernetes(&files),
            "SESSION_MASTER_KEY does not come from a Secret",
        );
    }

    #[test]
    fn a_mounted_key_file_is_refused() {
        let files = manifests_with(
            "deployment.yaml",
            "            - name: tmp\n              mountPath: /tmp\n",
            "            - name: tmp\n              mountPath: /tmp\n            - name: tmp\n              mountPath: /var/lib/session-server/keys.json\n              subPath: keys.json\n",
        );
        assert_problem(&check_kubernetes(&files), "keys.json is mounted");
    }

    #[test]
    fn a_literal_admin_token_is_refused() {
        let files = manifests_with(
            "deployment.yaml",
            "- name: SESSION_ADMIN_TOKEN\n              valueFrom:",
            "- name: SESSION_ADMIN_TOKEN\n              value: hunter2\n              valueFrom:",
        );
        assert_problem(
            &check_kubernetes(&files),
            "SESSION_ADMIN_TOKEN must come from a secretKeyRef",
        );
    }

    #[test]
    fn the_admin_port_on_a_load_balancer_is_refused() {
        let files = manifests_with(
            "service.yaml",
            "name: session-server-admin\n  labels:\n    app.kubernetes.io/name: session-server\n    app.kubernetes.io/component: admin\nspec:\n  type: ClusterIP",
            "name: session-server-admin\n  labels:\n    app.kubernetes.io/name: session-server\n    app.kubernetes.io/component: admin\nspec:\n  type: LoadBalancer",
        );
        assert_problem(&check_kubernetes(&files), "only ClusterIP is allowed");
    }

    #[test]
    fn the_admin_port_in_the_public_service_is_refused() {
        let files = manifests_with(
            "service.yaml",
            "      targetPort: public\n",
            "      targetPort: public\n    - name: admin\n      port: 8081\n      targetPort: admin\n",
        );
        assert_problem(
            &check_kubernetes(&files),
            "mixes the admin port with other ports",
        );
    }

    #[test]
    fn an_ingress_to_the_admin_service_is_refused() {
        let mut files = shipped_manifests();
        files.push((
            "ingress.yaml".to_owned(),
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: oops\nspec:\n  rules:\n    - http:\n        paths:\n          - path: /\n            pathType: Prefix\n            backend:\n              service:\n                name: session-server-admin\n                port:\n                  number: 8081\n".to_owned(),
        ));
        let problems = check_kubernetes(&files);
        assert_problem(&problems, "routes to the admin port");
        assert_problem(&problems, "kustomization.yaml does not list ingress.yaml");
    }

    #[test]
    fn a_missing_pdb_is_refused() {
        let files: Vec<_> = shipped_manifests()
            .into_iter()
            .filter(|(name, _)| name != "pdb.yaml")
            .collect();
        let problems = check_kubernetes(&files);
        assert_problem(&problems, "no PodDisruptionBudget covers its pods");
        assert_problem(
            &problems,
            "kustomization.yaml lists pdb.yaml, which does not exist",
        );
    }

    #[test]
    fn a_network_policy_that_admits_everyone_to_the_admin_port_is_refused() {
        let files = manifests_with(
            "networkpolicy.yaml",
            "    - from:\n        - podSelector:\n            matchLabels:\n              session-server/admin-client: \"true\"",
            "    - ports:\n        - port: admin\n    - from:\n        - podSelector:\n            matchLabels:\n              session-server/admin-client: \"true\"",
        );
        assert_problem(&check_kubernetes(&files), "admits anyone to the admin port");
    }

    #[test]
    fn a_network_policy_rule_without_ports_opens_the_admin_port_too() {
        let rule = serde_json::json!({"from": [{"namespaceSelector": {}}]});
        let names = BTreeSet::from(["admin".to_owned()]);
        assert!(rule_admits_port(&rule, ADMIN_PORT, &names));
        assert!(rule_admits_everyone(&rule));
        let narrow = serde_json::json!({
            "from": [{"podSelector": {"matchLabels": {"a": "b"}}}],
            "ports": [{"port": 8080}]
        });
        assert!(!rule_admits_port(&narrow, ADMIN_PORT, &names));
        assert!(!rule_admits_everyone(&narrow));
        let range = serde_json::json!({"ports": [{"port": 8000, "endPort": 9000}]});
        assert!(rule_admits_port(&range, ADMIN_PORT, &names));
    }

    #[test]
    fn a_misspelt_field_is_refused_by_the_kubernetes_schema() {
        let files = manifests_with("deployment.yaml", "replicas: 3", "replica: 3");
        assert_problem(
            &check_kubernetes(&files),
            "deployment.yaml Deployment/session-server: unknown field spec.replica",
        );
        let files = manifests_with(
            "deployment.yaml",
            "readOnlyRootFilesystem:",
            "readOnlyRootFS:",
        );
        assert_problem(
            &check_kubernetes(&files),
            "unknown field spec.template.spec.containers[0].securityContext.readOnlyRootFS",
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_is_refused_by_the_kubernetes_schema() {
        let files = manifests_with("deployment.yaml", "replicas: 3", "replicas: three");
        assert_problem(
            &check_kubernetes(&files),
            "Deployment/session-server: does not match the Kubernetes schema",
        );
    }

    #[test]
    fn a_kind_under_the_wrong_api_version_is_refused() {
        let files = manifests_with("pdb.yaml", "apiVersion: policy/v1", "apiVersion: apps/v1");
        assert_problem(
            &check_kubernetes(&files),
            "PodDisruptionBudget/session-server: does not match the Kubernetes schema",
        );
    }

    #[test]
    fn an_unknown_kind_or_kustomization_key_is_refused() {
        let mut files = manifests_with(
            "kustomization.yaml",
            "namespace: session-server",
            "namespace: session-server\nnamespaces: typo",
        );
        files.push((
            "crd.yaml".to_owned(),
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n".to_owned(),
        ));
        let problems = check_kubernetes(&files);
        assert_problem(&problems, "Kustomization/: unknown field namespaces");
        assert_problem(
            &problems,
            "kind Widget is not one this check has a schema for",
        );
    }

    #[test]
    fn invalid_yaml_is_reported_with_its_file() {
        let mut files = shipped_manifests();
        files.push(("broken.yaml".to_owned(), "kind: [unclosed\n".to_owned()));
        assert_problem(
            &check_kubernetes(&files),
            "broken.yaml: document 0 is not valid YAML",
        );
    }

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

    #[test]
    fn templating_fills_only_the_placeholders() {
        let out = template_nginx("listen ${LISTEN}; set $x $session_user; server ${APP_UPSTREAM};");
        assert_eq!(
            out,
            "listen 127.0.0.1:18000; set $x $session_user; server 127.0.0.1:18090;"
        );
        assert!(placeholders(&template_nginx(&deploy_file("nginx/session-auth.conf"))).is_empty());
    }

    #[test]
    fn a_location_whose_own_headers_drop_the_session_headers_is_refused() {
        // The nginx trap: one proxy_set_header in a location and none of
        // the server's (which strip X-Session-User) apply any more.
        let conf = deploy_file("nginx/session-auth.conf");
        let from = "    location /.well-known/ {\n        proxy_pass http://session_public;\n";
        assert!(conf.contains(from));
        let broken = conf.replacen(
            from,
            "    location /.well-known/ {\n        proxy_set_header Host $host;\n        proxy_pass http://session_public;\n",
            1,
        );
        let problems = check_nginx_template(&broken, &deploy_file("nginx/nginx.conf"));
        assert_problem(
            &problems,
            "location /.well-known/: a client-supplied x-session-user would reach the upstream",
        );
    }

    #[test]
    fn a_verify_location_that_forwards_the_body_is_refused() {
        let conf =
            deploy_file("nginx/session-auth.conf").replacen("proxy_pass_request_body off;", "", 1);
        assert_problem(
            &check_nginx_template(&conf, &deploy_file("nginx/nginx.conf")),
            "no `proxy_pass_request_body off`",
        );
    }

    #[test]
    fn an_unknown_placeholder_is_refused() {
        let conf = deploy_file("nginx/session-auth.conf").replacen(
            "server_name _;",
            "server_name ${HOST};",
            1,
        );
        assert_problem(
            &check_nginx_template(&conf, &deploy_file("nginx/nginx.conf")),
            "placeholders are",
        );
    }

    #[test]
    fn the_nginx_parser_reads_quotes_comments_and_nested_blocks() {
        let parsed = parse_nginx("# c\nserver { location @x { if ($a) { return 401; } } add_header A 'b \"c\" d' always; x \"\"; }").unwrap();
        let server = &parsed[0];
        assert_eq!(server.name, "server");
        assert_eq!(server.locations().len(), 1);
        assert!(server.has("add_header", &["A", "b \"c\" d", "always"]));
        assert!(server.has("x", &[""]));
        assert!(parse_nginx("server {").is_err());
    }

    #[test]
    fn a_containerfile_running_as_root_is_refused() {
        let file = deploy_file("container/Containerfile").replace("USER 65532:65532", "USER root");
        assert_problem(&check_containerfile(&file), "runs as \"root\"");
    }
}
