//! The Kubernetes manifests in `deploy/kubernetes/`: every YAML document parses, the kinds a
//! deployment needs are there, and the pieces agree with each other and with tokenmint. The
//! ConfigMap holds a `tokenmint.toml` that tokenmint's own validation accepts, every file it
//! names is mounted from the Secret, and the probes ask gRPC health over TLS on the port
//! tokenmint listens on (the kubelet's `grpc:` probe cannot: it speaks plaintext).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use serde::Deserialize as _;
use serde_yaml_ng::Value;
use tokenmint::config::{Config, StoreUrl};

/// Where the container expects its configuration file.
const CONFIG_FILE: &str = "/etc/tokenmint/tokenmint.toml";

/// What the container must run.
const COMMAND: [&str; 4] = ["tokenmint", "serve", "--config", CONFIG_FILE];

/// Every document in `deploy/kubernetes/*.yaml` (and `.yml`), with the file it came from.
struct Manifests {
    documents: Vec<(String, Value)>,
}

impl Manifests {
    fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading deploy/kubernetes: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no YAML files in deploy/kubernetes");
        let mut documents = Vec::new();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).unwrap();
            for document in serde_yaml_ng::Deserializer::from_str(&text) {
                let value = Value::deserialize(document)
                    .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
                if !value.is_null() {
                    documents.push((name.clone(), value));
                }
            }
        }
        Manifests { documents }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.documents
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["kind"].as_str() == Some(kind))
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "expected exactly one {kind}");
        all[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|v| v["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {kind} named {name}"))
    }

    /// The tokenmint container of the one Deployment.
    fn container(&self) -> &Value {
        let containers = seq(&self.one("Deployment")["spec"]["template"]["spec"]["containers"]);
        containers
            .iter()
            .find(|c| c["name"].as_str() == Some("tokenmint"))
            .expect("a container named tokenmint")
    }

    /// The value of `key` in the Secret `name` (`stringData`, or `data` decoded).
    fn secret_value(&self, name: &str, key: &str) -> String {
        let secret = self.named("Secret", name);
        if let Some(value) = secret["stringData"][key].as_str() {
            return value.to_owned();
        }
        let encoded = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// The keys a ConfigMap or Secret holds.
    fn keys_of(&self, kind: &str, name: &str) -> BTreeSet<String> {
        let object = self.named(kind, name);
        ["data", "stringData", "binaryData"]
            .iter()
            .filter_map(|field| object[*field].as_mapping())
            .flat_map(|m| m.keys().filter_map(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// Which object and key the tokenmint container's file `path` comes from:
    /// `("ConfigMap" | "Secret", name, key)`, through the deepest mount that covers it.
    fn source_of(&self, path: &str) -> Option<(&'static str, String, String)> {
        let pod = &self.one("Deployment")["spec"]["template"]["spec"];
        let mount = seq(&self.container()["volumeMounts"])
            .iter()
            .filter(|m| {
                let at = str_of(&m["mountPath"]);
                match m["subPath"].as_str() {
                    Some(_) => path == at,
                    None => path.starts_with(&format!("{}/", at.trim_end_matches('/'))),
                }
            })
            .max_by_key(|m| str_of(&m["mountPath"]).len())?;
        let relative = match mount["subPath"].as_str() {
            Some(sub_path) => sub_path.to_owned(),
            None => path[str_of(&mount["mountPath"]).trim_end_matches('/').len() + 1..].to_owned(),
        };
        let volume_name = str_of(&mount["name"]);
        let volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(volume_name))
            .unwrap_or_else(|| panic!("volumeMount {volume_name} names no volume"));
        let (kind, name, source) = if volume["configMap"].is_mapping() {
            let source = &volume["configMap"];
            ("ConfigMap", str_of(&source["name"]).to_owned(), source)
        } else if volume["secret"].is_mapping() {
            let source = &volume["secret"];
            ("Secret", str_of(&source["secretName"]).to_owned(), source)
        } else {
            return None;
        };
        let key = match source["items"].as_sequence() {
            Some(items) => items
                .iter()
                .find(|item| item["path"].as_str() == Some(relative.as_str()))
                .map(|item| str_of(&item["key"]).to_owned())?,
            None => relative,
        };
        assert!(
            self.keys_of(kind, &name).contains(&key),
            "{path} is mounted from key {key} of {kind} {name}, which has no such key"
        );
        Some((kind, name, key))
    }

    /// The container's environment as tokenmint would see it (Secret references resolved).
    fn environment(&self) -> Vec<(String, String)> {
        seq(&self.container()["env"])
            .iter()
            .map(|var| {
                let name = str_of(&var["name"]).to_owned();
                let value = match var["value"].as_str() {
                    Some(value) => value.to_owned(),
                    None => {
                        let reference = &var["valueFrom"]["secretKeyRef"];
                        self.secret_value(str_of(&reference["name"]), str_of(&reference["key"]))
                    }
                };
                (name, value)
            })
            .collect()
    }

    /// The configuration the container starts with: the mounted `tokenmint.toml`, validated
    /// by tokenmint with the container's environment.
    fn config(&self) -> Config {
        let (kind, name, key) = self
            .source_of(CONFIG_FILE)
            .unwrap_or_else(|| panic!("nothing is mounted at {CONFIG_FILE}"));
        assert_eq!(kind, "ConfigMap", "{CONFIG_FILE} comes from a ConfigMap");
        let text = str_of(&self.named("ConfigMap", &name)["data"][key.as_str()]).to_owned();
        Config::from_toml_str(
            &text,
            Path::new(CONFIG_FILE),
            Path::new("/etc/tokenmint"),
            self.environment(),
        )
        .unwrap_or_else(|e| panic!("the ConfigMap's tokenmint.toml is refused: {e}"))
    }

    /// The container port named or numbered by `port`.
    fn container_port(&self, port: &Value) -> u16 {
        let number = match port.as_str() {
            Some(name) => seq(&self.container()["ports"])
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
                .as_u64()
                .unwrap(),
            None => port.as_u64().expect("a port number or name"),
        };
        u16::try_from(number).unwrap()
    }

    /// The labels of the Deployment's pods.
    fn pod_labels(&self) -> &serde_yaml_ng::Mapping {
        self.one("Deployment")["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .expect("pod labels")
    }
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value:?}"))
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// Whether every label of `selector` is on the pods.
fn selects(selector: &Value, pods: &serde_yaml_ng::Mapping) -> bool {
    let selector = selector.as_mapping().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| pods.get(k) == Some(v))
}

#[test]
fn every_document_is_a_named_object_and_every_kind_is_there() {
    let manifests = Manifests::load();
    let mut seen = BTreeSet::new();
    for (file, document) in &manifests.documents {
        let kind = document["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: a document without kind"));
        assert!(
            document["apiVersion"].is_string(),
            "{file}: {kind} has no apiVersion"
        );
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: {kind} has no metadata.name"));
        assert!(
            seen.insert((kind.to_owned(), name.to_owned())),
            "{file}: {kind} {name} is defined twice"
        );
    }
    let kinds: BTreeSet<&str> = seen.iter().map(|(kind, _)| kind.as_str()).collect();
    for kind in ["ConfigMap", "Deployment", "Secret", "Service"] {
        assert!(kinds.contains(kind), "no {kind} in deploy/kubernetes");
    }
}

#[test]
fn the_deployment_runs_tokenmint_serve_on_the_mounted_config() {
    let manifests = Manifests::load();
    let deployment = manifests.one("Deployment");
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    assert!(replicas >= 2, "several replicas, not {replicas}");
    let container = manifests.container();
    let command: Vec<&str> = seq(&container["command"])
        .iter()
        .chain(seq(&container["args"]))
        .map(str_of)
        .collect();
    assert_eq!(command, COMMAND);
    assert!(
        seq(&container["volumeMounts"])
            .iter()
            .all(|m| m["readOnly"].as_bool() == Some(true)),
        "every mount is read-only"
    );
    let (kind, _, key) = manifests.source_of(CONFIG_FILE).unwrap();
    assert_eq!((kind, key.as_str()), ("ConfigMap", "tokenmint.toml"));
}

#[test]
fn the_config_is_valid_and_fit_for_replicas() {
    let manifests = Manifests::load();
    let config = manifests.config();
    assert!(
        matches!(config.store.url, StoreUrl::Postgres(_)),
        "replicas share a PostgreSQL store, not {:?}",
        config.store.url
    );
    assert!(
        config.server.listen.ip().is_unspecified(),
        "server.listen {} must accept connections from outside the pod",
        config.server.listen
    );
    let ports: Vec<u16> = seq(&manifests.container()["ports"])
        .iter()
        .map(|p| manifests.container_port(&p["containerPort"]))
        .collect();
    assert_eq!(ports, [config.server.listen.port()]);
    tokenmint::server::check_clients(&config).unwrap();
}

#[test]
fn tls_material_and_kek_are_mounted_from_the_secret() {
    let manifests = Manifests::load();
    let config = manifests.config();
    let secret_name = str_of(&manifests.one("Secret")["metadata"]["name"]).to_owned();
    let mut files = vec![
        ("tls.cert", config.tls.cert.clone()),
        ("tls.key", config.tls.key.clone()),
        ("tls.client_ca", config.tls.client_ca.clone()),
    ];
    assert!(
        !config.keys.kek_files.is_empty() || config.kek_from_env,
        "a KEK"
    );
    files.extend(
        config
            .keys
            .kek_files
            .iter()
            .map(|file| ("keys.kek_files", file.clone())),
    );
    for (field, path) in files {
        let path = path.to_str().unwrap();
        let (kind, name, _) = manifests
            .source_of(path)
            .unwrap_or_else(|| panic!("{field} = {path} is not mounted"));
        assert_eq!(
            (kind, name.as_str()),
            ("Secret", secret_name.as_str()),
            "{field} = {path}"
        );
    }
}

#[test]
fn probes_ask_grpc_health_over_tls_on_the_listen_port() {
    let manifests = Manifests::load();
    let port = manifests.config().server.listen.port();
    let container = manifests.container();
    for probe_name in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe = &container[probe_name];
        if probe.is_null() && probe_name == "startupProbe" {
            continue;
        }
        assert!(probe.is_mapping(), "no {probe_name}");
        // The kubelet's gRPC probe speaks plaintext and tokenmint has no plain listener yet.
        assert!(
            probe["grpc"].is_null(),
            "{probe_name}: grpc probes do not speak TLS"
        );
        assert!(
            probe["httpGet"].is_null(),
            "{probe_name}: there is no plain-HTTP health listener"
        );
        if let Some(command) = probe["exec"]["command"].as_sequence() {
            let command: Vec<&str> = command.iter().map(str_of).collect();
            assert!(
                command[0].ends_with("grpc_health_probe"),
                "{probe_name}: {command:?}"
            );
            assert!(
                command.iter().any(|a| matches!(*a, "-tls" | "--tls")),
                "{probe_name}: the probe must use TLS"
            );
            let address = command
                .iter()
                .find_map(|a| a.strip_prefix("-addr=").or(a.strip_prefix("--addr=")))
                .unwrap_or_else(|| panic!("{probe_name}: no -addr= in {command:?}"));
            let (host, probed) = address.rsplit_once(':').unwrap();
            assert!(
                matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
                "{probe_name}: the probe dials its own pod, not {host}"
            );
            assert_eq!(probed.parse::<u16>().unwrap(), port, "{probe_name}");
        } else {
            let socket = &probe["tcpSocket"];
            assert!(socket.is_mapping(), "{probe_name}: exec or tcpSocket");
            assert_eq!(
                manifests.container_port(&socket["port"]),
                port,
                "{probe_name}"
            );
        }
    }
}

#[test]
fn services_and_budget_select_the_deployment_pods() {
    let manifests = Manifests::load();
    let port = manifests.config().server.listen.port();
    let pods = manifests.pod_labels();
    let deployment = manifests.one("Deployment");
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pods
    ));
    for service in manifests.all("Service") {
        let name = str_of(&service["metadata"]["name"]);
        assert!(
            selects(&service["spec"]["selector"], pods),
            "Service {name} selects the pods"
        );
        let ports = seq(&service["spec"]["ports"]);
        assert!(!ports.is_empty(), "Service {name} has ports");
        for p in ports {
            let target = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            assert_eq!(manifests.container_port(target), port, "Service {name}");
            // TLS passes through: nothing may treat the port as HTTP or gRPC.
            assert!(p["appProtocol"].is_null(), "Service {name}: no appProtocol");
        }
    }
    for budget in manifests.all("PodDisruptionBudget") {
        assert!(selects(&budget["spec"]["selector"]["matchLabels"], pods));
    }
}
