//! Issue 14: the README's nginx example, as written, puts HTTPS in front of a daemon's API:
//! an object goes in and comes back whole through it, and the daemon still checks tokens.
//! Needs nginx, openssl and curl (`scripts/test` installs them); without them the test
//! says so and passes, except under CI, where it fails.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "proxy-test-token-0000000000000000000000000";
const HOST: &str = "shoal.example.org";

/// The nginx server block the README gives, with its paths and ports moved into `dir`.
fn readme_server_block(dir: &Path, port: u16, api: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("```nginx\n").expect("the README has an nginx example") + "```nginx\n".len();
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let moved = [
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        ("/etc/ssl/shoal/fullchain.pem", dir.join("cert.pem").display().to_string()),
        ("/etc/ssl/shoal/privkey.pem", dir.join("key.pem").display().to_string()),
        ("http://127.0.0.1:7000", format!("http://{api}")),
    ];
    moved.iter().fold(block.to_owned(), |block, (from, to)| {
        assert!(block.contains(from), "the README's example no longer has {from:?}");
        block.replace(from, to)
    })
}

/// nginx in the foreground as one process (`master_process off`, so killing it leaves no
/// worker behind), stopped when dropped, also when the test fails.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().unwrap().success()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// curl over HTTPS to the proxy, checking its certificate for `HOST`; answers the HTTP
/// status and the body.
fn curl(dir: &Path, port: u16, token: Option<&str>, args: &[&str]) -> (u16, Vec<u8>) {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error", "--cacert"]).arg(dir.join("cert.pem")).args([
        "--resolve",
        &format!("{HOST}:{port}:127.0.0.1"),
        "--write-out",
        "\n%{http_code}",
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.args(args).output().unwrap();
    assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
    let split = output.stdout.iter().rposition(|b| *b == b'\n').unwrap();
    let status = std::str::from_utf8(&output.stdout[split + 1..]).unwrap().parse().unwrap();
    (status, output.stdout[..split].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_nginx_example_serves_the_api_over_https() {
    let missing: Vec<&str> = ["nginx", "openssl", "curl"].into_iter().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        assert!(std::env::var_os("CI").is_none(), "CI lacks {missing:?}: scripts/test installs them");
        eprintln!("skipped: {missing:?} not installed (scripts/test installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("read-write {TOKEN}\n")).unwrap();
    let peer = start_peer_with(vec![], |config| {
        config.replication_factor = 1;
        config.api_tokens = Some(tokens.clone());
    })
    .await;
    let api = peer.daemon.api_url.trim_start_matches("http://").to_owned();

    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={HOST}"))
        .args(["-addext", &format!("subjectAltName=DNS:{HOST}"), "-keyout"])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "openssl could not make a test certificate");
    let port = free_port();
    let prefix = dir.path().display();
    std::fs::write(dir.path().join("shoal.conf"), readme_server_block(dir.path(), port, &api)).unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "master_process off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n  \
             include {prefix}/shoal.conf;\n}}\n"
        ),
    )
    .unwrap();
    let _nginx = Nginx(
        Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status_url = format!("https://{HOST}:{port}/v1/status");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not listen in 20 s: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(curl(dir.path(), port, Some(TOKEN), &[&status_url]).0, 200);

    let bytes = pseudo_random(3 << 20, "through the proxy");
    let file = dir.path().join("object");
    std::fs::write(&file, &bytes).unwrap();
    let objects = format!("https://{HOST}:{port}/v1/objects");
    let (status, receipt) =
        curl(dir.path(), port, Some(TOKEN), &["--data-binary", &format!("@{}", file.display()), &objects]);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&receipt));
    let id = blake3::hash(&bytes).to_hex().to_string();
    assert!(String::from_utf8_lossy(&receipt).contains(&id), "{}", String::from_utf8_lossy(&receipt));
    let (status, back) = curl(dir.path(), port, Some(TOKEN), &[&format!("{objects}/{id}")]);
    assert_eq!(status, 200);
    assert!(back == bytes[..], "the object came back different through the proxy");

    let (status, refusal) = curl(dir.path(), port, None, &[&format!("{objects}/{id}")]);
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&refusal).contains(r#""code":"unauthorized""#));
    stop_all(vec![peer]).await;
}
