//! deploy/kubernetes: the manifests parse, and their ports, paths and probes match the server:
//! a real `glint serve` started with the ConfigMap's manifest and the container's arguments
//! answers the probes' paths on the declared port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[allow(dead_code, reason = "each test binary uses a subset of the helpers")]
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy_file(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn yaml(name: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(&deploy_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.into_iter().next().unwrap()
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

struct Container {
    yaml: Yaml,
}

impl Container {
    fn of_deployment() -> (Yaml, Container) {
        let d = yaml("deployment.yaml");
        assert_eq!(s(&d["kind"]), "Deployment");
        let containers = d["spec"]["template"]["spec"]["containers"].as_vec().unwrap().clone();
        assert_eq!(containers.len(), 1);
        (d, Container { yaml: containers[0].clone() })
    }

    /// The port of `--listen ADDR` in the container's arguments.
    fn listen_port(&self) -> u16 {
        let args: Vec<&str> = self.yaml["args"].as_vec().unwrap().iter().map(s).collect();
        let at = args.iter().position(|a| *a == "--listen").expect("--listen in args");
        let addr: std::net::SocketAddr = args[at + 1].parse().unwrap();
        assert!(addr.ip().is_unspecified(), "listen on all interfaces in a pod: {addr}");
        addr.port()
    }

    fn port_named(&self, name: &str) -> i64 {
        let ports = self.yaml["ports"].as_vec().unwrap();
        let p = ports.iter().find(|p| s(&p["name"]) == name).unwrap_or_else(|| panic!("no port {name}"));
        p["containerPort"].as_i64().unwrap()
    }

    /// (path, port name) of a probe.
    fn probe(&self, which: &str) -> (String, String) {
        let get = &self.yaml[which]["httpGet"];
        (s(&get["path"]).to_owned(), s(&get["port"]).to_owned())
    }
}

#[test]
fn the_deployment_is_locked_down_and_asks_for_kvm() {
    let (d, c) = Container::of_deployment();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0);
    let sc = &c.yaml["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    let drop: Vec<&str> = sc["capabilities"]["drop"].as_vec().unwrap().iter().map(s).collect();
    assert_eq!(drop, ["ALL"]);
    assert!(sc["capabilities"]["add"].is_badvalue(), "no capability is added back");
    for section in ["requests", "limits"] {
        assert_eq!(s(&c.yaml["resources"][section]["devices.kubevirt.io/kvm"]), "1", "{section}");
    }
    // The data directory of the manifest is a volume (the root filesystem is read-only).
    let mounts = c.yaml["volumeMounts"].as_vec().unwrap();
    assert!(mounts.iter().any(|m| s(&m["mountPath"]) == "/var/lib/glint"));
    assert!(deploy_file("glint.toml").contains("data_dir = \"/var/lib/glint\""));
    // SIGKILL comes after the server's own grace period.
    let grace_ms: i64 = deploy_file("glint.toml")
        .lines()
        .find_map(|l| l.strip_prefix("grace_period_ms = "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() * 1000 > grace_ms);
}

#[test]
fn ports_and_the_service_agree_with_the_container_and_the_image() {
    let (_, c) = Container::of_deployment();
    let port = c.listen_port();
    assert_eq!(c.port_named("http"), i64::from(port));
    let svc = yaml("service.yaml");
    assert_eq!(s(&svc["kind"]), "Service");
    let ports = svc["spec"]["ports"].as_vec().unwrap();
    assert_eq!(s(&ports[0]["targetPort"]), "http");
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/name"],
        yaml("deployment.yaml")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    let containerfile = deploy_file("Containerfile");
    assert!(containerfile.contains(&format!("EXPOSE {port}")), "{containerfile}");
    assert!(containerfile.contains(&format!("\"--listen\", \"0.0.0.0:{port}\"")), "{containerfile}");
    assert!(containerfile.contains("USER 65532"), "non-root image");
    // The ConfigMap holds the very manifest the image ships.
    let cm = yaml("configmap.yaml");
    assert_eq!(s(&cm["data"]["glint.toml"]), deploy_file("glint.toml"));
    let mounts = c.yaml["volumeMounts"].as_vec().unwrap();
    let args: Vec<&str> = c.yaml["args"].as_vec().unwrap().iter().map(s).collect();
    let dir = std::path::Path::new(args[0]).parent().unwrap().to_str().unwrap().to_owned();
    assert!(mounts.iter().any(|m| s(&m["mountPath"]) == dir), "the manifest's directory is mounted");
}

#[test]
fn the_probes_answer_on_a_real_server_started_like_the_container() {
    require_kvm!();
    let (_, c) = Container::of_deployment();
    let data = support::TempDir::new("deploy");
    // The ConfigMap's manifest, with the image and data paths of this checkout.
    let manifest = s(&yaml("configmap.yaml")["data"]["glint.toml"])
        .replace("/opt/glint/guests/http", glint_guest_artifacts::HTTP)
        .replace("/var/lib/glint", data.0.to_str().unwrap());
    let server = support::Server::start(&manifest);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let (path, port) = c.probe(probe);
        assert_eq!(port, "http", "{probe} targets the http port");
        let end = std::time::Instant::now() + support::PATIENCE;
        loop {
            let r = server.get(&path);
            if r.status == 200 {
                break;
            }
            assert!(std::time::Instant::now() < end, "{probe} {path}: {}", r.status);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_eq!(server.get("/echo/pod").text(), "GET /echo/pod\n");
    assert_eq!(server.get("/metrics").status, 200);
}
