//! The deploy files (`deploy/`) without docker or a cluster: the Dockerfile, the compose file and
//! its configs, the Kubernetes manifests and their ConfigMaps, the Prometheus scrape config and
//! the Grafana dashboard parse, and agree with each other and with the binaries.
//!
//! - Every TOML config (compose files, ConfigMaps), with the environment overrides the
//!   deployment sets applied the way the binaries apply them, has only keys the binaries'
//!   config structs know. The structs are read from the Rust sources (every struct reachable
//!   from `EdgeConfig` / the orchestrator's `Config`), so a key added or renamed there is seen
//!   here without editing this file.
//! - Ports: what compose publishes and what the DaemonSet declares are the ports in the
//!   configs; probes hit `/readyz` and `/healthz` on the configured HTTP port; Services'
//!   target ports are container ports; URLs between the parts name real services and ports.
//! - The drain deadline (`[node] drain_secs`, 30 s by default) fits in the stop grace.
//! - Every `waveguide_*` metric the dashboard queries is one the sources register.

use serde::Deserialize;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Files

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file (empty documents dropped).
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: bad YAML: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if exts
                .iter()
                .any(|ext| path.to_string_lossy().ends_with(&format!(".{ext}")))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// YAML access

fn at<'a>(v: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(v, |v, key| match v {
        Yaml::Sequence(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(*key),
    })
}

fn req<'a>(v: &'a Yaml, path: &[&str]) -> &'a Yaml {
    at(v, path).unwrap_or_else(|| panic!("missing {} in {}", path.join("."), brief(v)))
}

fn text<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    req(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string in {}", path.join("."), brief(v)))
}

fn list<'a>(v: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(v, path)
        .and_then(Yaml::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn uint(v: &Yaml, path: &[&str]) -> u64 {
    req(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number in {}", path.join("."), brief(v)))
}

/// A short name for error messages: `Kind/name`, else the start of the value.
fn brief(v: &Yaml) -> String {
    match (
        at(v, &["kind"]).and_then(Yaml::as_str),
        at(v, &["metadata", "name"]).and_then(Yaml::as_str),
    ) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        _ => {
            let s = serde_norway::to_string(v).unwrap_or_default();
            s.chars().take(120).collect()
        }
    }
}

/// A scalar as a string (YAML numbers and strings alike).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The binaries' config schema, read from the Rust sources

#[derive(Debug)]
struct RustStruct {
    name: String,
    file: PathBuf,
    /// Key name, Rust type.
    fields: Vec<(String, String)>,
}

/// Every braced struct in the `.rs` files under `dirs`, in that order of directories.
fn rust_structs(dirs: &[&str]) -> Vec<RustStruct> {
    let mut out = Vec::new();
    for dir in dirs {
        for file in files_under(&workspace().join(dir), &["rs"]) {
            let source = read(&file);
            let lines: Vec<&str> = source.lines().collect();
            let mut i = 0;
            while i < lines.len() {
                let line = lines[i];
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                let decl = trimmed
                    .strip_prefix("pub struct ")
                    .or_else(|| trimmed.strip_prefix("pub(crate) struct "))
                    .or_else(|| trimmed.strip_prefix("struct "));
                let Some(decl) = decl.filter(|_| line.trim_end().ends_with('{')) else {
                    i += 1;
                    continue;
                };
                let name: String = decl
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let mut fields = Vec::new();
                let mut skip_next = false;
                let mut rename = None;
                i += 1;
                while i < lines.len() {
                    let line = lines[i];
                    let trimmed = line.trim();
                    if trimmed == "}" && line.len() - line.trim_start().len() == indent {
                        break;
                    }
                    i += 1;
                    if trimmed.starts_with("#[serde(") {
                        assert!(
                            !trimmed.contains("flatten"),
                            "{}: struct {name} flattens a field; teach deploy.rs about it",
                            file.display()
                        );
                        if trimmed.contains("skip") && !trimmed.contains("skip_serializing") {
                            skip_next = true;
                        }
                        if let Some(rest) = trimmed.split("rename = \"").nth(1) {
                            rename = rest.split('"').next().map(str::to_owned);
                        }
                        continue;
                    }
                    if trimmed.starts_with("//") || trimmed.starts_with("#[") {
                        continue;
                    }
                    let field = trimmed
                        .strip_prefix("pub ")
                        .or_else(|| {
                            trimmed
                                .strip_prefix("pub(")
                                .and_then(|rest| rest.split_once(") ").map(|(_, f)| f))
                        })
                        .unwrap_or(trimmed);
                    let Some((key, ty)) = field.split_once(':') else {
                        continue;
                    };
                    if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    if !std::mem::take(&mut skip_next) {
                        let key = rename.take().unwrap_or_else(|| key.to_owned());
                        fields.push((key, ty.trim().trim_end_matches(',').trim().to_owned()));
                    }
                    rename = None;
                }
                out.push(RustStruct {
                    name,
                    file: file.clone(),
                    fields,
                });
                i += 1;
            }
        }
    }
    out
}

/// The deserialized shape of one binary's config file.
struct Schema {
    structs: Vec<RustStruct>,
    crate_dirs: Vec<&'static str>,
    root: &'static str,
    root_file: PathBuf,
}

impl Schema {
    fn edge() -> Self {
        let crate_dirs = vec!["edge/src", "control/src", "inputs/src"];
        Self {
            structs: rust_structs(&crate_dirs),
            crate_dirs,
            root: "EdgeConfig",
            root_file: workspace().join("edge/src/config.rs"),
        }
    }

    fn orchestrator() -> Self {
        let crate_dirs = vec!["orchestrator/src", "control/src"];
        Self {
            structs: rust_structs(&crate_dirs),
            crate_dirs,
            root: "Config",
            root_file: workspace().join("orchestrator/src/config.rs"),
        }
    }

    /// The struct `name` as seen from `from`: one in the same file, else the only one in the
    /// first crate directory that has any.
    fn lookup(&self, name: &str, from: &Path) -> Option<&RustStruct> {
        let named: Vec<&RustStruct> = self.structs.iter().filter(|s| s.name == name).collect();
        if let Some(same_file) = named.iter().find(|s| s.file == from) {
            return Some(*same_file);
        }
        for dir in &self.crate_dirs {
            let prefix = workspace().join(dir);
            let here: Vec<&RustStruct> = named
                .iter()
                .copied()
                .filter(|s| s.file.starts_with(&prefix))
                .collect();
            match here.as_slice() {
                [] => continue,
                [one] => return Some(one),
                many => panic!(
                    "struct {name} is ambiguous: {:?}",
                    many.iter().map(|s| &s.file).collect::<Vec<_>>()
                ),
            }
        }
        None
    }

    fn root(&self) -> &RustStruct {
        self.lookup(self.root, &self.root_file)
            .unwrap_or_else(|| panic!("struct {} not found", self.root))
    }

    /// The config sections (the root struct's fields).
    fn sections(&self) -> Vec<String> {
        self.root().fields.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Every key of `table` that the structs do not have, as `section.key` paths.
    fn unknown_keys(&self, table: &toml::Table) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(table, self.root(), "", &mut errors);
        errors
    }

    fn check(&self, table: &toml::Table, s: &RustStruct, path: &str, errors: &mut Vec<String>) {
        for (key, value) in table {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let Some((_, ty)) = s.fields.iter().find(|(k, _)| k == key) else {
                errors.push(format!(
                    "{here}: no such key (struct {} in {})",
                    s.name,
                    s.file.display()
                ));
                continue;
            };
            let ty = unwrap_generic(ty, "Option");
            let (inner, is_list) = match ty.strip_prefix("Vec<") {
                Some(_) => (unwrap_generic(ty, "Vec"), true),
                None => (ty, false),
            };
            let type_name = inner.rsplit("::").next().unwrap_or(inner);
            let Some(nested) = self.lookup(type_name, &s.file) else {
                continue; // a leaf: number, string, address, enum, list of those
            };
            match (value, is_list) {
                (toml::Value::Table(t), false) => self.check(t, nested, &here, errors),
                (toml::Value::Array(items), true) => {
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            toml::Value::Table(t) => {
                                self.check(t, nested, &format!("{here}[{i}]"), errors)
                            }
                            _ => errors.push(format!("{here}[{i}]: expected a table")),
                        }
                    }
                }
                _ => errors.push(format!("{here}: expected a {}", type_name)),
            }
        }
    }
}

/// `Option<T>` → `T` (and the same for `Vec`); anything else unchanged.
fn unwrap_generic<'a>(ty: &'a str, wrapper: &str) -> &'a str {
    ty.strip_prefix(wrapper)
        .and_then(|rest| rest.strip_prefix('<'))
        .and_then(|rest| rest.strip_suffix('>'))
        .map(str::trim)
        .unwrap_or(ty)
}

/// The config file with environment overrides applied the way the binaries do
/// (`waveguide_control::config_file::read_with_env`): `WAVEGUIDE_<SECTION>_<KEY>`, the value read
/// as TOML when it is valid TOML, else as a string. Overrides of sections the binary does not
/// have are errors here (the binary would ignore them silently).
fn apply_env(schema: &Schema, text: &str, env: &[(String, String)], origin: &str) -> toml::Table {
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{origin}: bad TOML: {e}"));
    let sections = schema.sections();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("WAVEGUIDE_") else {
            continue;
        };
        if name == "WAVEGUIDE_CONFIG" {
            continue;
        }
        let (section, key) = rest
            .split_once('_')
            .unwrap_or_else(|| panic!("{origin}: env {name} names no key"));
        let section = section.to_ascii_lowercase();
        assert!(
            sections.contains(&section),
            "{origin}: env {name}: the binary has no section [{section}] (sections: {sections:?})"
        );
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t.remove("v").expect("parsed v"),
            Err(_) => toml::Value::String(raw.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(entry) = entry else {
            panic!("{origin}: [{section}] is not a table");
        };
        entry.insert(key.to_ascii_lowercase(), value);
    }
    let unknown = schema.unknown_keys(&table);
    assert!(
        unknown.is_empty(),
        "{origin}: keys the binary refuses: {unknown:#?}"
    );
    table
}

// ---------------------------------------------------------------------------------------------
// The config values these checks need (keys are checked against the real structs above)

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EdgeToml {
    http: Listener,
    grpc: Listener,
    webrtc: WebRtc,
    rtmp: Listener,
    ftl: Ftl,
    service: Service,
    cluster: Cluster,
    orchestrator: OrchestratorRef,
    node: Node,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OrchestratorToml {
    http: Listener,
    grpc: Listener,
    cluster: Cluster,
    service: Service,
    store: Store,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Listener {
    enabled: Option<bool>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
}

impl Listener {
    /// Deploy configs name every port they use, so it can be compared with what is published.
    fn port(&self, what: &str) -> u16 {
        self.listen
            .unwrap_or_else(|| panic!("{what}: set listen explicitly in deploy configs"))
            .port()
    }

    fn on(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WebRtc {
    udp_port: Option<u16>,
    shards: usize,
    public_ip: Option<IpAddr>,
    bind_ips: Vec<IpAddr>,
}

impl WebRtc {
    /// The UDP media ports: one per shard, and the shard count must be fixed in a deployment.
    fn ports(&self, what: &str) -> Vec<u16> {
        let first = self
            .udp_port
            .unwrap_or_else(|| panic!("{what}: set webrtc.udp_port explicitly"));
        assert!(
            self.shards > 0,
            "{what}: webrtc.shards must be set (the default follows the core count, the \
             published ports do not)"
        );
        (0..self.shards).map(|i| first + i as u16).collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ftl {
    enabled: Option<bool>,
    listen: Option<SocketAddr>,
    media_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Service {
    kind: Option<String>,
    streams: Vec<Stream>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct Stream {
    name: String,
    key: Option<String>,
    key_sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cluster {
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OrchestratorRef {
    url: Option<String>,
    grpc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Node {
    id: Option<String>,
    public_url: Option<String>,
    roles: Option<Vec<String>>,
    drain_secs: Option<f64>,
}

impl Node {
    /// The edge's drain deadline on SIGTERM: `[node] drain_secs`, 30 s by default.
    fn drain_secs(&self) -> f64 {
        self.drain_secs.unwrap_or(30.0)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Store {
    kind: Option<String>,
    url: Option<String>,
}

fn edge_config(text: &str, env: &[(String, String)], origin: &str) -> EdgeToml {
    let table = apply_env(&Schema::edge(), text, env, origin);
    EdgeToml::deserialize(toml::Value::Table(table)).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

fn orchestrator_config(text: &str, env: &[(String, String)], origin: &str) -> OrchestratorToml {
    let table = apply_env(&Schema::orchestrator(), text, env, origin);
    OrchestratorToml::deserialize(toml::Value::Table(table))
        .unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// `scheme://[user@]host[:port][/path]` → (host, port), with the scheme's default port.
fn host_port(url: &str) -> (String, u16) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
            host.to_owned(),
            port.parse()
                .unwrap_or_else(|_| panic!("{url}: bad port {port}")),
        ),
        _ => {
            let default = match scheme {
                "http" => 80,
                "https" => 443,
                "redis" => 6379,
                other => panic!("{url}: no default port for {other}"),
            };
            (authority.to_owned(), default)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Self-checks of the helpers, so a green run means what it says

#[test]
fn the_schema_reader_sees_the_real_config_structs() {
    let edge = Schema::edge();
    let sections = edge.sections();
    for section in [
        "http", "webrtc", "service", "rtmp", "ftl", "grpc", "node", "cluster",
    ] {
        assert!(
            sections.contains(&section.to_owned()),
            "edge sections {sections:?}"
        );
    }
    let ok: toml::Table = "[http]\nlisten = \"0.0.0.0:1\"\n[[service.streams]]\nname = \"a\"\n\
                           key_sha256 = \"00\"\n[webrtc]\nudp_port = 1\n"
        .parse()
        .unwrap();
    assert_eq!(edge.unknown_keys(&ok), Vec::<String>::new());
    let bad: toml::Table = "[http]\nlsiten = \"0.0.0.0:1\"\n[[service.streams]]\nname = \"a\"\n\
                            kee = \"k\"\n[nod]\nid = \"x\"\n"
        .parse()
        .unwrap();
    let errors = edge.unknown_keys(&bad);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("http.lsiten")));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("service.streams[0].kee"))
    );
    assert!(errors.iter().any(|e| e.starts_with("nod:")));

    let orchestrator = Schema::orchestrator();
    let ok: toml::Table = "[store]\nkind = \"redis\"\nurl = \"redis://r:6379\"\n\
                           [[regions]]\ncidr = \"10.0.0.0/8\"\nregion = \"eu\"\n"
        .parse()
        .unwrap();
    assert_eq!(orchestrator.unknown_keys(&ok), Vec::<String>::new());
    let bad: toml::Table = "[store]\nkind = \"redis\"\nhost = \"r\"\n[webrtc]\nudp_port = 1\n"
        .parse()
        .unwrap();
    assert_eq!(orchestrator.unknown_keys(&bad).len(), 2);

    // Environment overrides: typed when TOML, strings otherwise.
    let env = [
        ("WAVEGUIDE_WEBRTC_SHARDS", "4"),
        ("WAVEGUIDE_WEBRTC_PUBLIC_IP", "10.1.2.3"),
        ("WAVEGUIDE_NODE_PUBLIC_URL", "http://10.1.2.3:8080"),
        ("WAVEGUIDE_NODE_ID", "ip-10-1-2-3.internal"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let c = edge_config("[webrtc]\nudp_port = 9000\n", &env, "self-check");
    assert_eq!(c.webrtc.ports("self-check"), vec![9000, 9001, 9002, 9003]);
    assert_eq!(c.webrtc.public_ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(c.node.id.as_deref(), Some("ip-10-1-2-3.internal"));
    assert_eq!(
        host_port("http://10.1.2.3:8080/x"),
        ("10.1.2.3".into(), 8080)
    );
    assert_eq!(host_port("redis://redis"), ("redis".into(), 6379));
}

#[test]
#[should_panic(expected = "keys the binary refuses")]
fn an_env_override_of_an_unknown_key_is_refused() {
    let env = [("WAVEGUIDE_WEBRTC_UDP_PROT".to_owned(), "1".to_owned())];
    edge_config("", &env, "self-check");
}

#[test]
fn the_example_configs_pass_the_schema() {
    // The documented examples load in the binaries' own unit tests; passing here too shows
    // this file's reader agrees with the real structs.
    let edge = edge_config(
        &read(&deploy().join("edge.example.toml")),
        &[],
        "edge.example.toml",
    );
    assert_eq!(edge.http.port("edge.example"), 8080);
    let orchestrator = orchestrator_config(
        &read(&deploy().join("orchestrator.example.toml")),
        &[],
        "orchestrator.example.toml",
    );
    assert_eq!(orchestrator.http.port("orchestrator.example"), 8090);
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

struct Stage {
    name: String,
    from: String,
    instructions: Vec<(String, String)>,
}

/// The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined.
fn dockerfile() -> Vec<Stage> {
    let text = read(&deploy().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (instruction, args) = line.split_once(' ').unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let from = words
                .iter()
                .find(|w| !w.starts_with("--"))
                .expect("FROM image")
                .to_string();
            let name = match words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                Some(i) => words[i + 1].to_owned(),
                None => stages.len().to_string(),
            };
            stages.push(Stage {
                name,
                from,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage
                .instructions
                .push((instruction, args.trim().to_owned()));
        } else {
            assert_eq!(instruction, "ARG", "only ARG may precede the first FROM");
        }
    }
    stages
}

/// The instructions in effect for `target`: its own, after those of the stages it builds on.
fn chain<'a>(stages: &'a [Stage], target: &str) -> Vec<&'a (String, String)> {
    let stage = stages
        .iter()
        .find(|s| s.name == target)
        .unwrap_or_else(|| panic!("Dockerfile has no stage {target}"));
    let mut out = match stages.iter().any(|s| s.name == stage.from) {
        true => chain(stages, &stage.from),
        false => Vec::new(),
    };
    out.extend(stage.instructions.iter());
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_exposes_the_configured_ports() {
    let stages = dockerfile();
    assert!(stages.len() >= 2, "multi-stage: {} FROMs", stages.len());
    let builders: Vec<&Stage> = stages
        .iter()
        .filter(|s| {
            s.instructions
                .iter()
                .any(|(i, a)| i == "RUN" && a.contains("cargo build"))
        })
        .collect();
    assert_eq!(builders.len(), 1, "one stage runs cargo build");
    let build = builders[0];
    assert!(
        build.from.starts_with("rust:"),
        "builder FROM {}",
        build.from
    );
    let cargo = &build
        .instructions
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .unwrap()
        .1;
    for arg in [
        "--release",
        "--locked",
        "-p waveguide-edge",
        "-p waveguide-orchestrator",
    ] {
        assert!(cargo.contains(arg), "cargo build lacks {arg}: {cargo}");
    }

    let edge = edge_config(&read(&deploy().join("edge.example.toml")), &[], "edge");
    let orchestrator = orchestrator_config(
        &read(&deploy().join("orchestrator.example.toml")),
        &[],
        "orchestrator",
    );
    let targets = [
        (
            "edge",
            "waveguide-edge",
            vec![
                format!("{}/tcp", edge.http.port("http")),
                format!("{}/tcp", edge.grpc.port("grpc")),
                format!("{}/tcp", edge.rtmp.port("rtmp")),
                format!("{}/tcp", edge.ftl.listen.unwrap().port()),
                format!("{}/udp", edge.ftl.media_port.unwrap()),
                format!("{}/udp", edge.webrtc.udp_port.unwrap()),
            ],
        ),
        (
            "orchestrator",
            "waveguide-orchestrator",
            vec![
                format!("{}/tcp", orchestrator.http.port("http")),
                format!("{}/tcp", orchestrator.grpc.port("grpc")),
            ],
        ),
    ];
    for (target, binary, ports) in targets {
        let instructions = chain(&stages, target);
        let runtime_base = stages
            .iter()
            .find(|s| s.name == target)
            .map(|s| {
                let mut s = s;
                while let Some(parent) = stages.iter().find(|p| p.name == s.from) {
                    s = parent;
                }
                s.from.clone()
            })
            .unwrap();
        assert!(
            runtime_base.starts_with("debian:") && runtime_base.ends_with("-slim"),
            "{target} runs on {runtime_base}, not a slim Debian"
        );
        let user = instructions
            .iter()
            .rev()
            .find(|(i, _)| i == "USER")
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("{target}: no USER, so it runs as root"));
        let uid = user.split(':').next().unwrap();
        assert!(uid != "root" && uid != "0", "{target}: USER {user} is root");
        assert!(
            uid.parse::<u32>().is_ok_and(|u| u >= 1000),
            "{target}: USER {user}: use a numeric uid so runAsNonRoot can verify it"
        );
        let entrypoint = instructions
            .iter()
            .rev()
            .find(|(i, _)| i == "ENTRYPOINT")
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        assert!(
            entrypoint.contains(&format!("/usr/local/bin/{binary}\"")),
            "{target}: ENTRYPOINT {entrypoint}"
        );
        assert!(
            instructions.iter().any(|(i, a)| i == "COPY"
                && a.contains("--from=")
                && a.contains(binary)
                && a.ends_with("/usr/local/bin/")),
            "{target}: {binary} is not copied to /usr/local/bin"
        );
        let exposed: BTreeSet<String> = instructions
            .iter()
            .filter(|(i, _)| i == "EXPOSE")
            .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned))
            .flat_map(|p| {
                let (range, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
                (lo..=hi)
                    .map(|port| format!("{port}/{proto}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        for port in ports {
            assert!(
                exposed.contains(&port),
                "{target}: EXPOSE lacks {port}: {exposed:?}"
            );
        }
        // An ENV WAVEGUIDE_* in the image would silently override the same key of every
        // mounted config file (compose, ConfigMap).
        for (i, a) in &instructions {
            assert!(
                !(i == "ENV" && a.contains("WAVEGUIDE_")),
                "{target}: ENV {a} overrides mounted configs"
            );
        }
    }
    // Files the Dockerfile copies from the context exist.
    for stage in &stages {
        for (i, a) in &stage.instructions {
            if i == "COPY" && !a.contains("--from=") {
                let words: Vec<&str> = a.split_whitespace().collect();
                for src in &words[..words.len() - 1] {
                    if *src != "." {
                        assert!(workspace().join(src).exists(), "COPY {src}: no such file");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// compose

fn compose() -> Yaml {
    let mut docs = yaml_docs(&deploy().join("compose.yaml"));
    assert_eq!(docs.len(), 1, "compose.yaml is one document");
    docs.remove(0)
}

/// A service's environment, from either the mapping or the list form.
fn compose_env(service: &Yaml) -> Vec<(String, String)> {
    match at(service, &["environment"]) {
        None => Vec::new(),
        Some(Yaml::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Yaml::Sequence(items)) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Some(other) => panic!("environment: {other:?}"),
    }
}

/// The `--config FILE` argument of a command or args list.
fn config_arg(args: &[Yaml]) -> String {
    let args: Vec<String> = args.iter().map(scalar).collect();
    if let Some(i) = args.iter().position(|a| a == "--config") {
        return args.get(i + 1).cloned().expect("--config has a value");
    }
    args.iter()
        .find_map(|a| a.strip_prefix("--config=").map(str::to_owned))
        .unwrap_or_else(|| panic!("no --config in {args:?}"))
}

/// The host file a compose service mounts at `target`.
fn compose_mount(service: &Yaml, target: &str) -> PathBuf {
    for volume in list(service, &["volumes"]) {
        let (source, dest) = match volume {
            Yaml::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (
                    parts[0].to_owned(),
                    parts.get(1).copied().unwrap_or("").to_owned(),
                )
            }
            long => (
                text(long, &["source"]).to_owned(),
                text(long, &["target"]).to_owned(),
            ),
        };
        if dest == target {
            return deploy().join(source);
        }
    }
    panic!("nothing is mounted at {target}");
}

/// Published ports as (host port, container port, protocol).
fn published(service: &Yaml) -> Vec<(u16, u16, String)> {
    let mut out = Vec::new();
    for port in list(service, &["ports"]) {
        let (host, container, proto) = match port {
            Yaml::String(spec) => {
                let (addr, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
                let parts: Vec<&str> = addr.split(':').collect();
                let (host, container) = match parts.as_slice() {
                    [_, host, container] | [host, container] => (*host, *container),
                    _ => panic!("port {spec}: publish it on a fixed host port"),
                };
                (host.to_owned(), container.to_owned(), proto.to_owned())
            }
            long => (
                scalar(req(long, &["published"])),
                scalar(req(long, &["target"])),
                at(long, &["protocol"])
                    .map(scalar)
                    .unwrap_or_else(|| "tcp".into()),
            ),
        };
        let range = |r: &str| -> Vec<u16> {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert!(lo <= hi, "port range {r}");
            (lo..=hi).collect()
        };
        let (host, container) = (range(&host), range(&container));
        assert_eq!(host.len(), container.len(), "port ranges differ in length");
        for (h, c) in host.into_iter().zip(container) {
            out.push((h, c, proto.clone()));
        }
    }
    out
}

/// The compose service whose network namespace `name` runs in.
fn netns_owner<'a>(services: &'a Yaml, name: &'a str) -> &'a str {
    match at(req(services, &[name]), &["network_mode"]).and_then(Yaml::as_str) {
        Some(mode) => {
            let owner = mode
                .strip_prefix("service:")
                .unwrap_or_else(|| panic!("{name}: network_mode {mode}"));
            assert!(services.get(owner).is_some(), "{name}: no service {owner}");
            owner
        }
        None => name,
    }
}

fn seconds(duration: &str) -> f64 {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = duration.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().unwrap();
        number.clear();
        total += match c {
            'h' => value * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                value / 1000.0
            }
            'm' => value * 60.0,
            's' => value,
            other => panic!("duration {duration}: unit {other}"),
        };
    }
    assert!(number.is_empty(), "duration {duration} has no unit");
    total
}

const COMPOSE_SERVICE_KEYS: &[&str] = &[
    "build",
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "ports",
    "expose",
    "depends_on",
    "restart",
    "stop_grace_period",
    "stop_signal",
    "network_mode",
    "networks",
    "init",
    "healthcheck",
    "ulimits",
    "sysctls",
    "user",
    "read_only",
    "cap_drop",
    "security_opt",
    "profiles",
    "labels",
    "pull_policy",
    "deploy",
    "logging",
];

#[test]
fn compose_runs_an_orchestrator_on_redis_and_two_edges_with_their_ports_published() {
    let compose = compose();
    for key in compose.as_mapping().unwrap().keys() {
        let key = scalar(key);
        assert!(
            [
                "name", "services", "networks", "volumes", "configs", "secrets"
            ]
            .contains(&key.as_str())
                || key.starts_with("x-"),
            "compose: top-level key {key} is not in the compose spec"
        );
    }
    let services = req(&compose, &["services"]);
    let names: BTreeSet<String> = services.as_mapping().unwrap().keys().map(scalar).collect();
    for required in ["redis", "orchestrator", "edge-a", "edge-b"] {
        assert!(
            names.contains(required),
            "compose has no {required}: {names:?}"
        );
    }
    let stages = dockerfile();
    for name in &names {
        let service = req(services, &[name]);
        for key in service.as_mapping().unwrap().keys() {
            let key = scalar(key);
            assert!(
                COMPOSE_SERVICE_KEYS.contains(&key.as_str()),
                "{name}: {key} is not a service key this test knows"
            );
        }
        assert!(
            at(service, &["image"]).is_some() || at(service, &["build"]).is_some(),
            "{name}: no image or build"
        );
        if let Some(build) = at(service, &["build"]) {
            let context = deploy().join(text(build, &["context"]));
            assert!(
                context.join(text(build, &["dockerfile"])).is_file(),
                "{name}: no Dockerfile"
            );
            let target = text(build, &["target"]);
            assert!(
                stages.iter().any(|s| s.name == target),
                "{name}: no stage {target}"
            );
        }
        // Compose refuses published ports on a service in another's network namespace.
        if at(service, &["network_mode"]).is_some() {
            assert!(
                list(service, &["ports"]).is_empty(),
                "{name}: ports belong to the namespace's owner"
            );
        }
        let depends: Vec<String> = match at(service, &["depends_on"]) {
            Some(Yaml::Sequence(items)) => items.iter().map(scalar).collect(),
            Some(Yaml::Mapping(m)) => m.keys().map(scalar).collect(),
            _ => Vec::new(),
        };
        for d in depends {
            assert!(names.contains(&d), "{name} depends on unknown {d}");
        }
    }
    assert!(
        text(services, &["redis", "image"]).starts_with("redis:7"),
        "redis image"
    );

    // The orchestrator: Redis store at the redis service, token from the environment.
    let orchestrator_service = req(services, &["orchestrator"]);
    let orchestrator_env = compose_env(orchestrator_service);
    let token = orchestrator_env
        .iter()
        .find(|(k, _)| k == "WAVEGUIDE_CLUSTER_TOKEN")
        .map(|(_, v)| v.clone())
        .expect("orchestrator: WAVEGUIDE_CLUSTER_TOKEN");
    assert!(
        token.starts_with("${WAVEGUIDE_CLUSTER_TOKEN"),
        "the token comes from the caller's environment: {token}"
    );
    let path = compose_mount(
        orchestrator_service,
        &config_arg(list(orchestrator_service, &["command"])),
    );
    let orchestrator =
        orchestrator_config(&read(&path), &orchestrator_env, &path.display().to_string());
    assert_eq!(orchestrator.store.kind.as_deref(), Some("redis"));
    let (redis_host, redis_port) = host_port(orchestrator.store.url.as_deref().expect("store.url"));
    assert_eq!(redis_host, "redis", "store.url names the redis service");
    assert_eq!(redis_port, 6379);
    let orchestrator_http = orchestrator.http.port("orchestrator http");
    let orchestrator_grpc = orchestrator.grpc.port("orchestrator grpc");
    assert!(
        published(orchestrator_service).contains(&(
            orchestrator_http,
            orchestrator_http,
            "tcp".into()
        )),
        "orchestrator: HTTP {orchestrator_http} is not published"
    );
    assert_eq!(
        orchestrator.cluster.token.as_deref(),
        Some(token.as_str()),
        "orchestrator token"
    );

    // The edges.
    let mut namespaces: BTreeMap<String, BTreeSet<(u16, &str)>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (name, roles) in [("edge-a", vec!["ingest", "edge"]), ("edge-b", vec!["edge"])] {
        let service = req(services, &[name]);
        let env = compose_env(service);
        let path = compose_mount(service, &config_arg(list(service, &["command"])));
        let origin = path.display().to_string();
        let edge = edge_config(&read(&path), &env, &origin);
        assert_eq!(
            edge.cluster.token.as_deref(),
            Some(token.as_str()),
            "{name}: the same cluster token as the orchestrator"
        );
        assert_eq!(
            edge.node.roles.clone().unwrap_or_default(),
            roles,
            "{name} roles"
        );
        assert!(
            ids.insert(edge.node.id.clone().expect("node.id")),
            "{name}: id reused"
        );
        assert_eq!(
            edge.service, orchestrator.service,
            "{name}: same [service] as the orchestrator"
        );

        // Ports, all published on the namespace owner under the same number (127.0.0.1 below).
        let owner = netns_owner(services, name);
        let ports = published(req(services, &[owner]));
        let taken = namespaces.entry(owner.to_owned()).or_default();
        let mut need = vec![(edge.http.port(name), "tcp")];
        if edge.rtmp.on() {
            need.push((edge.rtmp.port(name), "tcp"));
        }
        if edge.ftl.enabled.unwrap_or(true) {
            need.push((edge.ftl.listen.expect("ftl.listen").port(), "tcp"));
            need.push((edge.ftl.media_port.expect("ftl.media_port"), "udp"));
        }
        for port in edge.webrtc.ports(name) {
            need.push((port, "udp"));
        }
        for (port, proto) in &need {
            assert!(
                ports.contains(&(*port, *port, (*proto).to_owned())),
                "{name}: {port}/{proto} is not published as {port}:{port} on {owner}: {ports:?}"
            );
        }
        // Everything bound in a shared namespace must differ, published or not.
        let mut bound = need.clone();
        bound.push((edge.grpc.port(name), "tcp"));
        for port in bound {
            assert!(
                taken.insert(port),
                "{name}: {port:?} is used twice in {owner}"
            );
        }

        // Single-host demo: clients and the other edge reach it at 127.0.0.1.
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(edge.webrtc.public_ip, Some(localhost), "{name}: public_ip");
        let public_url = edge.node.public_url.clone().expect("node.public_url");
        assert_eq!(
            host_port(&public_url),
            ("127.0.0.1".into(), edge.http.port(name)),
            "{name}: node.public_url {public_url}"
        );
        let grpc_url = edge.grpc.public_url.clone().expect("grpc.public_url");
        assert_eq!(
            host_port(&grpc_url),
            (owner.to_owned(), edge.grpc.port(name)),
            "{name}: the orchestrator reaches its gRPC at {grpc_url}"
        );
        let orchestrator_url = edge.orchestrator.url.clone().expect("orchestrator.url");
        assert_eq!(
            host_port(&orchestrator_url),
            ("orchestrator".into(), orchestrator_http),
            "{name}: orchestrator.url"
        );
        let orchestrator_grpc_url = edge.orchestrator.grpc.clone().expect("orchestrator.grpc");
        assert_eq!(
            host_port(&orchestrator_grpc_url),
            ("orchestrator".into(), orchestrator_grpc),
            "{name}: orchestrator.grpc"
        );

        // Drain on SIGTERM fits in the stop grace.
        let grace = seconds(
            at(service, &["stop_grace_period"])
                .and_then(Yaml::as_str)
                .unwrap_or("10s"),
        );
        assert!(
            grace > edge.node.drain_secs(),
            "{name}: stop_grace_period {grace}s <= drain_secs {}",
            edge.node.drain_secs()
        );
    }
    // Only the edges' ports are published on their namespace: nothing stray.
    for (owner, taken) in &namespaces {
        for (host, container, proto) in published(req(services, &[owner])) {
            assert_eq!(host, container);
            assert!(
                taken.contains(&(host, proto.as_str())),
                "{owner} publishes {host}/{proto}, which no edge uses"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn k8s_dir() -> PathBuf {
    deploy().join("k8s")
}

/// Every manifest under deploy/k8s, with its file name.
fn manifests() -> Vec<(String, Yaml)> {
    files_under(&k8s_dir(), &["yaml", "yml"])
        .into_iter()
        .flat_map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            yaml_docs(&path)
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

fn objects(all: &[(String, Yaml)], kind: &str) -> Vec<Yaml> {
    all.iter()
        .filter(|(_, d)| at(d, &["kind"]).and_then(Yaml::as_str) == Some(kind))
        .map(|(_, d)| d.clone())
        .collect()
}

fn object(all: &[(String, Yaml)], kind: &str, name: &str) -> Yaml {
    objects(all, kind)
        .into_iter()
        .find(|d| at(d, &["metadata", "name"]).and_then(Yaml::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// A container's port (by number or name) as (number, protocol).
fn container_port(container: &Yaml, port: &Yaml) -> (u16, String) {
    let ports = list(container, &["ports"]);
    let found = match port {
        Yaml::Number(n) => ports
            .iter()
            .find(|p| at(p, &["containerPort"]).and_then(Yaml::as_u64) == n.as_u64()),
        Yaml::String(name) => ports
            .iter()
            .find(|p| at(p, &["name"]).and_then(Yaml::as_str) == Some(name)),
        other => panic!("port {other:?}"),
    }
    .unwrap_or_else(|| {
        panic!(
            "container {} has no port {port:?}",
            text(container, &["name"])
        )
    });
    (
        uint(found, &["containerPort"]) as u16,
        at(found, &["protocol"])
            .and_then(Yaml::as_str)
            .unwrap_or("TCP")
            .to_owned(),
    )
}

/// The environment of a container as the process sees it, with the downward API and Secrets
/// replaced by sample values and `$(VAR)` references expanded, as the kubelet does.
fn k8s_env(all: &[(String, Yaml)], namespace: &str, container: &Yaml) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in list(container, &["env"]) {
        let name = text(var, &["name"]).to_owned();
        let value = if let Some(value) = at(var, &["value"]) {
            let mut value = scalar(value);
            for (k, v) in &env {
                value = value.replace(&format!("$({k})"), v);
            }
            assert!(
                !value.contains("$("),
                "{name}: unresolved reference in {value}"
            );
            value
        } else if let Some(field) = at(var, &["valueFrom", "fieldRef", "fieldPath"]) {
            match field.as_str().unwrap() {
                "spec.nodeName" => "ip-10-0-0-5.eu-west-1.compute.internal".into(),
                "status.hostIP" | "status.podIP" => "10.0.0.5".into(),
                "metadata.name" => "pod-0".into(),
                "metadata.namespace" => namespace.into(),
                other => panic!("{name}: fieldRef {other} is not sampled here"),
            }
        } else if let Some(secret) = at(var, &["valueFrom", "secretKeyRef"]) {
            let secret_name = text(secret, &["name"]);
            let key = text(secret, &["key"]);
            let object = object(all, "Secret", secret_name);
            assert_eq!(text(&object, &["metadata", "namespace"]), namespace);
            assert!(
                at(&object, &["stringData", key]).is_some()
                    || at(&object, &["data", key]).is_some(),
                "Secret {secret_name} has no key {key}"
            );
            format!("secret:{secret_name}/{key}")
        } else {
            panic!("{name}: unsupported env source")
        };
        env.push((name, value));
    }
    env
}

/// The TOML a workload's container reads through `--config`, from the ConfigMap mounted there.
fn mounted_config(all: &[(String, Yaml)], pod: &Yaml, container: &Yaml) -> String {
    let args: Vec<Yaml> = list(container, &["command"])
        .iter()
        .chain(list(container, &["args"]))
        .cloned()
        .collect();
    let path = config_arg(&args);
    for mount in list(container, &["volumeMounts"]) {
        let mount_path = text(mount, &["mountPath"]);
        let key = match at(mount, &["subPath"]).and_then(Yaml::as_str) {
            Some(sub) if mount_path == path => sub.to_owned(),
            Some(_) => continue,
            None => match path.strip_prefix(&format!("{}/", mount_path.trim_end_matches('/'))) {
                Some(rest) => rest.to_owned(),
                None => continue,
            },
        };
        let volume_name = text(mount, &["name"]);
        let volume = list(pod, &["volumes"])
            .iter()
            .find(|v| text(v, &["name"]) == volume_name)
            .unwrap_or_else(|| panic!("no volume {volume_name}"));
        let map_name = text(volume, &["configMap", "name"]);
        let key = list(volume, &["configMap", "items"])
            .iter()
            .find(|item| text(item, &["path"]) == key)
            .map(|item| text(item, &["key"]).to_owned())
            .unwrap_or(key);
        let map = object(all, "ConfigMap", map_name);
        return text(&map, &["data", &key]).to_owned();
    }
    panic!("nothing mounted at {path}");
}

/// Seconds a preStop hook holds the pod before SIGTERM.
fn pre_stop_secs(container: &Yaml) -> f64 {
    let Some(hook) = at(container, &["lifecycle", "preStop"]) else {
        return 0.0;
    };
    if let Some(secs) = at(hook, &["sleep", "seconds"]) {
        return secs.as_f64().unwrap();
    }
    let command: Vec<String> = list(hook, &["exec", "command"])
        .iter()
        .map(scalar)
        .collect();
    let joined = command.join(" ");
    let secs = joined
        .split_whitespace()
        .skip_while(|w| !w.ends_with("sleep"))
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok());
    secs.unwrap_or_else(|| panic!("preStop {joined}: only sleeps are understood here"))
}

fn probe(container: &Yaml, which: &str) -> (String, u16) {
    let get = req(container, &[which, "httpGet"]);
    (
        text(get, &["path"]).to_owned(),
        container_port(container, req(get, &["port"])).0,
    )
}

/// A Service URL's host and port resolve to `service` in `namespace` and its `port`.
fn assert_service_url(url: &str, service: &Yaml, what: &str) {
    let (host, port) = host_port(url);
    let mut labels = host.split('.');
    assert_eq!(
        labels.next(),
        Some(text(service, &["metadata", "name"])),
        "{what}: {url} does not name Service {}",
        brief(service)
    );
    if let Some(namespace) = labels.next() {
        assert_eq!(
            namespace,
            text(service, &["metadata", "namespace"]),
            "{what}: {url}"
        );
    }
    assert!(
        list(service, &["spec", "ports"])
            .iter()
            .any(|p| uint(p, &["port"]) == u64::from(port)),
        "{what}: {url}: Service {} has no port {port}",
        brief(service)
    );
}

/// The container port a Service port reaches on the workload it selects.
fn service_target(service: &Yaml, port: u16, container: &Yaml) -> u16 {
    let p = list(service, &["spec", "ports"])
        .iter()
        .find(|p| uint(p, &["port"]) == u64::from(port))
        .unwrap_or_else(|| panic!("{} has no port {port}", brief(service)));
    let target = at(p, &["targetPort"]).unwrap_or_else(|| req(p, &["port"]));
    container_port(container, target).0
}

fn pod_of(workload: &Yaml) -> &Yaml {
    req(workload, &["spec", "template", "spec"])
}

fn only_container(workload: &Yaml) -> &Yaml {
    let containers = list(pod_of(workload), &["containers"]);
    assert_eq!(containers.len(), 1, "{}: one container", brief(workload));
    &containers[0]
}

#[test]
fn k8s_manifests_are_complete_and_agree_with_their_configs() {
    let all = manifests();
    assert!(!all.is_empty());
    let namespace = text(
        &object(&all, "Namespace", "waveguide"),
        &["metadata", "name"],
    )
    .to_owned();
    let mut files = BTreeSet::new();
    for (file, doc) in &all {
        files.insert(file.clone());
        let kind = text(doc, &["kind"]);
        assert!(
            at(doc, &["apiVersion"]).and_then(Yaml::as_str).is_some(),
            "{file}: {kind} has no apiVersion"
        );
        if kind == "Kustomization" {
            continue;
        }
        let name = text(doc, &["metadata", "name"]);
        assert!(!name.is_empty(), "{file}: {kind} has no name");
        if kind != "Namespace" {
            assert_eq!(
                text(doc, &["metadata", "namespace"]),
                namespace,
                "{file}: {kind}/{name} namespace"
            );
        }
    }
    // kubectl apply -k: every manifest file is in the kustomization, and only those.
    let kustomization = objects(&all, "Kustomization");
    assert_eq!(kustomization.len(), 1, "one kustomization.yaml");
    let resources: BTreeSet<String> = list(&kustomization[0], &["resources"])
        .iter()
        .map(scalar)
        .collect();
    let manifest_files: BTreeSet<String> = files
        .into_iter()
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(resources, manifest_files, "kustomization resources");

    // Workloads: selectors match their pods, everyone runs as non-root with resources set.
    let workloads: Vec<Yaml> = ["Deployment", "DaemonSet", "StatefulSet"]
        .iter()
        .flat_map(|kind| objects(&all, kind))
        .collect();
    for workload in &workloads {
        let labels = req(workload, &["spec", "template", "metadata", "labels"]);
        let selector = req(workload, &["spec", "selector", "matchLabels"]);
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{}: selector {k:?}",
                brief(workload)
            );
        }
        let pod = pod_of(workload);
        assert_eq!(
            at(pod, &["securityContext", "runAsNonRoot"]).and_then(Yaml::as_bool),
            Some(true),
            "{}: runAsNonRoot",
            brief(workload)
        );
        for container in list(pod, &["containers"]) {
            for resource in [
                &["resources", "requests", "cpu"][..],
                &["resources", "requests", "memory"],
                &["resources", "limits", "memory"],
            ] {
                assert!(
                    at(container, resource).is_some(),
                    "{}: {}",
                    brief(workload),
                    resource.join(".")
                );
            }
        }
    }
    // Services: each selects a workload, and each target port is a port of its container.
    for service in objects(&all, "Service") {
        let selector = req(&service, &["spec", "selector"]);
        let selected: Vec<&Yaml> = workloads
            .iter()
            .filter(|w| {
                let labels = req(w, &["spec", "template", "metadata", "labels"]);
                selector
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{} selects one workload",
            brief(&service)
        );
        let container = only_container(selected[0]);
        for port in list(&service, &["spec", "ports"]) {
            let target = at(port, &["targetPort"]).unwrap_or_else(|| req(port, &["port"]));
            let (_, protocol) = container_port(container, target);
            assert_eq!(
                protocol,
                at(port, &["protocol"])
                    .and_then(Yaml::as_str)
                    .unwrap_or("TCP"),
                "{} port {target:?}",
                brief(&service)
            );
        }
    }

    // Redis.
    let redis_service = object(&all, "Service", "waveguide-redis");
    let redis = object(&all, "Deployment", "waveguide-redis");
    assert!(text(only_container(&redis), &["image"]).starts_with("redis:7"));

    // The orchestrator: 2+ replicas on the Redis store.
    let orchestrator = object(&all, "Deployment", "waveguide-orchestrator");
    let orchestrator_service = object(&all, "Service", "waveguide-orchestrator");
    assert!(
        uint(&orchestrator, &["spec", "replicas"]) >= 2,
        "orchestrator replicas"
    );
    let container = only_container(&orchestrator);
    let env = k8s_env(&all, &namespace, container);
    let config = orchestrator_config(
        &mounted_config(&all, pod_of(&orchestrator), container),
        &env,
        "orchestrator ConfigMap",
    );
    assert_eq!(
        config.cluster.token.as_deref(),
        Some("secret:waveguide-cluster/token"),
        "orchestrator: token from the Secret"
    );
    assert_eq!(config.store.kind.as_deref(), Some("redis"), "store.kind");
    let store_url = config.store.url.clone().expect("store.url");
    assert_service_url(&store_url, &redis_service, "orchestrator store.url");
    assert_eq!(
        service_target(
            &redis_service,
            host_port(&store_url).1,
            only_container(&redis)
        ),
        6379,
        "the Redis Service reaches Redis"
    );
    let orchestrator_http = config.http.port("orchestrator http");
    let orchestrator_grpc = config.grpc.port("orchestrator grpc");
    assert_eq!(
        probe(container, "readinessProbe"),
        ("/readyz".into(), orchestrator_http)
    );
    assert_eq!(
        probe(container, "livenessProbe"),
        ("/healthz".into(), orchestrator_http)
    );
    let orchestrator_ports: BTreeSet<u16> = list(container, &["ports"])
        .iter()
        .map(|p| uint(p, &["containerPort"]) as u16)
        .collect();
    assert_eq!(
        orchestrator_ports,
        BTreeSet::from([orchestrator_http, orchestrator_grpc]),
        "orchestrator container ports = its listen ports"
    );
    for (port, listen) in [(8090, orchestrator_http), (50052, orchestrator_grpc)] {
        assert_eq!(
            service_target(&orchestrator_service, port, container),
            listen,
            "orchestrator Service port {port}"
        );
    }
    let grace = uint(pod_of(&orchestrator), &["terminationGracePeriodSeconds"]) as f64;
    assert!(
        grace > pre_stop_secs(container),
        "orchestrator grace vs preStop"
    );

    // The edges: a DaemonSet on the host network.
    let edges = object(&all, "DaemonSet", "waveguide-edge");
    let pod = pod_of(&edges);
    assert_eq!(
        at(pod, &["hostNetwork"]).and_then(Yaml::as_bool),
        Some(true)
    );
    assert_eq!(
        at(pod, &["dnsPolicy"]).and_then(Yaml::as_str),
        Some("ClusterFirstWithHostNet"),
        "a hostNetwork pod resolves Service names only with ClusterFirstWithHostNet"
    );
    let container = only_container(&edges);
    let env = k8s_env(&all, &namespace, container);
    let by_name = |name: &str| {
        list(container, &["env"])
            .iter()
            .find(|v| text(v, &["name"]) == name)
            .unwrap_or_else(|| panic!("edge env has no {name}"))
            .clone()
    };
    assert_eq!(
        text(
            &by_name("WAVEGUIDE_NODE_ID"),
            &["valueFrom", "fieldRef", "fieldPath"]
        ),
        "spec.nodeName"
    );
    assert_eq!(
        text(
            &by_name("WAVEGUIDE_WEBRTC_PUBLIC_IP"),
            &["valueFrom", "fieldRef", "fieldPath"]
        ),
        "status.hostIP"
    );
    let config = edge_config(
        &mounted_config(&all, pod, container),
        &env,
        "edge ConfigMap",
    );
    assert_eq!(
        config.cluster.token.as_deref(),
        Some("secret:waveguide-cluster/token"),
        "edge: token from the Secret"
    );
    assert_eq!(
        config.node.id.as_deref(),
        Some("ip-10-0-0-5.eu-west-1.compute.internal"),
        "node.id from the node's name"
    );
    assert_eq!(config.webrtc.public_ip, Some("10.0.0.5".parse().unwrap()));
    assert!(config.webrtc.bind_ips.iter().all(|ip| !ip.is_unspecified()));
    let http = config.http.port("edge http");
    let grpc = config.grpc.port("edge grpc");
    assert_eq!(
        host_port(config.node.public_url.as_deref().expect("node.public_url")),
        ("10.0.0.5".into(), http),
        "node.public_url: the node's address and the HTTP port"
    );
    assert_eq!(
        host_port(config.grpc.public_url.as_deref().expect("grpc.public_url")),
        ("10.0.0.5".into(), grpc),
        "grpc.public_url: the node's address and the gRPC port"
    );
    assert_eq!(probe(container, "readinessProbe"), ("/readyz".into(), http));
    assert_eq!(probe(container, "livenessProbe"), ("/healthz".into(), http));
    assert_service_url(
        config
            .orchestrator
            .url
            .as_deref()
            .expect("orchestrator.url"),
        &orchestrator_service,
        "edge orchestrator.url",
    );
    assert_eq!(
        service_target(
            &orchestrator_service,
            host_port(config.orchestrator.url.as_deref().unwrap()).1,
            only_container(&orchestrator)
        ),
        orchestrator_http,
        "orchestrator.url reaches the orchestrator's HTTP"
    );
    assert_service_url(
        config
            .orchestrator
            .grpc
            .as_deref()
            .expect("orchestrator.grpc"),
        &orchestrator_service,
        "edge orchestrator.grpc",
    );
    assert_eq!(
        service_target(
            &orchestrator_service,
            host_port(config.orchestrator.grpc.as_deref().unwrap()).1,
            only_container(&orchestrator)
        ),
        orchestrator_grpc,
        "orchestrator.grpc reaches the orchestrator's gRPC"
    );
    // Ports: exactly what the config binds, each on the same host port (host networking).
    let mut expected: BTreeSet<(u16, String)> =
        BTreeSet::from([(http, "TCP".into()), (grpc, "TCP".into())]);
    if config.rtmp.on() {
        expected.insert((config.rtmp.port("edge rtmp"), "TCP".into()));
    }
    if config.ftl.enabled.unwrap_or(true) {
        expected.insert((config.ftl.listen.expect("ftl.listen").port(), "TCP".into()));
        expected.insert((config.ftl.media_port.expect("ftl.media_port"), "UDP".into()));
    }
    for port in config.webrtc.ports("edge") {
        expected.insert((port, "UDP".into()));
    }
    let mut declared = BTreeSet::new();
    for port in list(container, &["ports"]) {
        let number = uint(port, &["containerPort"]) as u16;
        if let Some(host) = at(port, &["hostPort"]) {
            assert_eq!(
                host.as_u64(),
                Some(u64::from(number)),
                "hostNetwork: hostPort = containerPort"
            );
        }
        let protocol = at(port, &["protocol"])
            .and_then(Yaml::as_str)
            .unwrap_or("TCP");
        declared.insert((number, protocol.to_owned()));
    }
    assert_eq!(
        declared, expected,
        "edge container ports = its config's ports"
    );
    // Drain: SIGTERM starts it; the kubelet's SIGKILL must come after the deadline.
    let grace = uint(pod, &["terminationGracePeriodSeconds"]) as f64;
    let drain = config.node.drain_secs();
    assert!(
        grace > drain + pre_stop_secs(container),
        "terminationGracePeriodSeconds {grace} <= drain_secs {drain} + preStop {}",
        pre_stop_secs(container)
    );
    assert_eq!(
        at(&edges, &["spec", "updateStrategy", "type"]).and_then(Yaml::as_str),
        Some("RollingUpdate")
    );
    // Edges and orchestrator accept the same stream keys.
    let orchestrator_container = only_container(&orchestrator);
    let orchestrator_config = orchestrator_config(
        &mounted_config(&all, pod_of(&orchestrator), orchestrator_container),
        &[],
        "orchestrator ConfigMap",
    );
    assert_eq!(
        config.service, orchestrator_config.service,
        "edge and orchestrator [service]"
    );

    // Prometheus annotations name the metrics port.
    for (workload, port) in [(&edges, http), (&orchestrator, orchestrator_http)] {
        let annotations = req(workload, &["spec", "template", "metadata", "annotations"]);
        assert_eq!(text(annotations, &["prometheus.io/scrape"]), "true");
        assert_eq!(text(annotations, &["prometheus.io/port"]), port.to_string());
        assert_eq!(text(annotations, &["prometheus.io/path"]), "/metrics");
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana

#[test]
fn prometheus_scrapes_the_compose_services_and_annotated_pods() {
    let docs = yaml_docs(&deploy().join("prometheus/prometheus.yml"));
    assert_eq!(docs.len(), 1);
    let jobs = list(&docs[0], &["scrape_configs"]);
    let job = |name: &str| {
        jobs.iter()
            .find(|j| text(j, &["job_name"]) == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    };

    // Static targets: every compose edge and the orchestrator, at their HTTP ports.
    let compose = compose();
    let services = req(&compose, &["services"]);
    let mut expected = BTreeSet::new();
    for name in ["edge-a", "edge-b", "orchestrator"] {
        let service = req(services, &[name]);
        let path = compose_mount(service, &config_arg(list(service, &["command"])));
        let toml: toml::Table = read(&path).parse().unwrap();
        let listen: SocketAddr = toml["http"]["listen"].as_str().unwrap().parse().unwrap();
        expected.insert(format!("{}:{}", netns_owner(services, name), listen.port()));
    }
    let targets: BTreeSet<String> = list(job("waveguide-compose"), &["static_configs"])
        .iter()
        .flat_map(|c| list(c, &["targets"]).iter().map(scalar))
        .collect();
    assert_eq!(targets, expected, "compose scrape targets");

    let k8s = job("waveguide-kubernetes");
    assert_eq!(text(k8s, &["kubernetes_sd_configs", "0", "role"]), "pod");
    let relabels = list(k8s, &["relabel_configs"]);
    assert!(
        relabels.iter().any(|r| {
            at(r, &["action"]).and_then(Yaml::as_str) == Some("keep")
                && list(r, &["source_labels"])
                    .iter()
                    .map(scalar)
                    .collect::<Vec<_>>()
                    == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
                && at(r, &["regex"]).map(scalar).as_deref() == Some("true")
        }),
        "kubernetes job keeps only pods annotated prometheus.io/scrape"
    );
    for annotation in ["port", "path"] {
        let label = format!("__meta_kubernetes_pod_annotation_prometheus_io_{annotation}");
        assert!(
            relabels.iter().any(|r| list(r, &["source_labels"])
                .iter()
                .any(|l| scalar(l) == label)),
            "kubernetes job ignores prometheus.io/{annotation}"
        );
    }
}

/// Every `"waveguide_*"` string literal in the binaries' sources, with whether the line
/// registers a histogram.
fn registered_metrics() -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for dir in [
        "control/src",
        "edge/src",
        "inputs/src",
        "outputs/src",
        "orchestrator/src",
    ] {
        for file in files_under(&workspace().join(dir), &["rs"]) {
            for line in read(&file).lines() {
                for (i, _) in line.match_indices("\"waveguide_") {
                    let name: String = line[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if line[i + 1 + name.len()..].starts_with('"') {
                        *out.entry(name).or_default() |= line.contains("histogram");
                    }
                }
            }
        }
    }
    out
}

/// Whether the exporter serves `series` for a metric the sources register: a histogram's
/// `_bucket`/`_sum`/`_count`, and a counter's `_total`, may be added by the exporter.
fn served(series: &str, registered: &BTreeMap<String, bool>) -> bool {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && registered.get(base) == Some(&true)
        {
            return true;
        }
    }
    registered.contains_key(series)
        || series
            .strip_suffix("_total")
            .is_some_and(|base| registered.contains_key(base))
}

/// Every string anywhere in a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

fn metric_names(text: &str) -> Vec<String> {
    text.match_indices("waveguide_")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_binaries_export() {
    let registered = registered_metrics();
    // The matcher itself: real names pass, made-up ones and wrong suffixes do not.
    for real in [
        "waveguide_viewers",
        "waveguide_drops_total",
        "waveguide_join_seconds_bucket",
        "waveguide_orchestrator_decisions_total",
    ] {
        assert!(served(real, &registered), "{real} should be registered");
    }
    for fake in [
        "waveguide_no_such_metric",
        "waveguide_viewers_bucket",
        "waveguide_join_seconds_total_bucket",
        "waveguide_drop_total",
    ] {
        assert!(
            !served(fake, &registered),
            "{fake} should not be registered"
        );
    }

    let path = deploy().join("grafana/waveguide.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let mut all = Vec::new();
    strings(&dashboard, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|s| metric_names(s)).collect();
    let unknown: Vec<&String> = used.iter().filter(|m| !served(m, &registered)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no source registers: {unknown:?}"
    );
    for needed in [
        "waveguide_streams",
        "waveguide_viewers",
        "waveguide_publishers",
        "waveguide_bytes_out_total",
        "waveguide_packets_out_total",
        "waveguide_drops_total",
        "waveguide_join_seconds_bucket",
        "waveguide_nacks_total",
        "waveguide_viewer_plis_total",
        "waveguide_orchestrator_decisions_total",
        "waveguide_orchestrator_nodes",
        "waveguide_orchestrator_streams",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }

    // Panels: unique ids, inside the 24-column grid, each query with a ref id and a
    // datasource variable the dashboard defines.
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().chain(
        panels
            .iter()
            .flat_map(|p| p["panels"].as_array().into_iter().flatten()),
    ) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(!metric_names(expr).is_empty(), "panel {id}: {expr}");
            assert!(
                expr.matches('(').count() == expr.matches(')').count(),
                "panel {id}: {expr}"
            );
            assert!(refs.insert(target["refId"].as_str().expect("refId")));
            queries += 1;
        }
        let uid = panel["datasource"]["uid"].as_str().expect("datasource uid");
        let variable = uid.trim_start_matches("${").trim_end_matches('}');
        assert!(variables.contains(variable), "panel {id}: datasource {uid}");
    }
    assert!(queries >= 10, "{queries} queries");
}
