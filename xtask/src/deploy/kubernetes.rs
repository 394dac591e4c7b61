//! The Kubernetes manifests: every document read into its typed struct,
//! the kustomization, the Deployment, Services, Ingresses,
//! PodDisruptionBudgets and NetworkPolicies.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Deserialize as _;
use serde_json::Value;

use super::read;

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

/// `(file name, contents)` of every `*.yaml` / `*.yml` directly in `dir`.
pub(super) fn read_yaml_files(dir: &Path) -> Result<Vec<(String, String)>> {
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

pub(super) fn check_kubernetes(files: &[(String, String)]) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;
    use crate::deploy::tests::assert_problem;

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

    #[test]
    fn the_shipped_kubernetes_manifests_pass() {
        assert_eq!(check_kubernetes(&shipped_manifests()), Vec::<String>::new());
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
}
