//! The `kube-standin` binary: --apply, --kubeconfig, the readiness line, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kube-standin-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for the child to exit (bounded), returning whether it succeeded.
fn wait_exit(child: Child) -> (bool, String) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        let _ = tx.send((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    });
    rx.recv_timeout(WAIT).expect("kube-standin exits")
}

fn http_get(url: &str, path: &str) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn serves_applies_files_and_stops_on_sigterm() {
    let dir = temp_dir("bin");
    let kubeconfig = dir.join("kubeconfig");
    let manifests = dir.join("objects.yaml");
    std::fs::write(
        &manifests,
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  region: eu-west-1
---
apiVersion: ecr.aws.edenlab.io/v1alpha1
kind: ECRTokenRefresh
metadata:
  name: refresh
  namespace: demo
spec:
  registry: "123.dkr.ecr.eu-west-1.amazonaws.com"
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Cluster
  names: {kind: Gadget, plural: gadgets}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: example.com/v1
kind: Gadget
metadata:
  name: g1
"#,
    )
    .unwrap();
    let mut child = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--apply",
        manifests.to_str().unwrap(),
    ]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).expect("readiness line");
    let url = line
        .trim()
        .strip_prefix("kube-standin listening on ")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"));

    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(kc.contains(&format!("server: {url}")));
    assert!(kc.contains("current-context: kube-standin"));

    let (code, body) = http_get(&url, "/api/v1/namespaces/default/configmaps/settings");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("eu-west-1"));
    let (code, _) = http_get(
        &url,
        "/apis/ecr.aws.edenlab.io/v1alpha1/namespaces/demo/ecrtokenrefreshes/refresh",
    );
    assert_eq!(code, 200);
    let (code, body) = http_get(&url, "/apis/example.com/v1/gadgets");
    assert_eq!(code, 200);
    assert!(body.contains("\"g1\""));
    let (code, body) = http_get(&url, "/api/v1/namespaces/default/secrets/none");
    assert_eq!(code, 404);
    assert!(body.contains("\"NotFound\""));

    // the shell's builtin `kill`: no dependency on a kill binary or libc crate
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", child.id()))
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, stderr) = wait_exit(child);
    assert!(ok, "clean exit on SIGTERM: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_manifest_fails_startup() {
    let dir = temp_dir("bad");
    let manifests = dir.join("bad.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: v9\nkind: Unknown\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let child = spawn(&["--apply", manifests.to_str().unwrap()]);
    let (ok, stderr) = wait_exit(child);
    assert!(!ok);
    assert!(stderr.contains("Unknown"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
