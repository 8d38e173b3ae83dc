//! The real binary: `serve` stops gracefully on SIGTERM (exit 0, index checkpointed) and
//! starts again on the same data directory without creating a second operator credential;
//! it reads its TLS certificate again on SIGHUP.

mod common;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve(dir: &std::path::Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, which: &str) {
    let ok = Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    signal(child, "-TERM");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port);
    let first_line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let token_file = dir.path().join("operator.token");
    assert_eq!(
        first_line,
        format!("operator credential created: {}", token_file.display())
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        !first_line.contains(token.trim()),
        "the token itself is never printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    wait_listening(port);
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_passnum"))
            .args(args)
            .args([
                "--server",
                &format!("http://127.0.0.1:{port}"),
                "--token-file",
            ])
            .arg(&token_file)
            .output()
            .unwrap()
    };
    let out = cli(&["register", "commanditaire", "--name", "Gironde", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"commanditaire_id":1}"#
    );
    let syncs = cli(&["ledger", "syncs", "--json"]);
    let syncs: serde_json::Value = serde_json::from_slice(&syncs.stdout).unwrap();
    assert!(
        syncs["syncs"].as_u64() >= Some(1) && syncs["requests"].as_u64() >= Some(2),
        "the operator's credential and the commanditaire were synced: {syncs}"
    );
    let parts: u64 = ["queue", "staging", "sync_wait", "fsync", "answer"]
        .iter()
        .map(|stage| syncs[format!("{stage}_mean_us")].as_u64().unwrap())
        .sum();
    assert!(
        syncs["answered"].as_u64() >= Some(2)
            && syncs["engine_mean_us"].as_u64() >= Some(parts)
            && syncs["fsync_mean_us"].as_u64() > Some(0),
        "the requests' time in the engine, by stage: {syncs}"
    );
    let refused = cli(&["mint", "--order", "9"]);
    assert_eq!(refused.status.code(), Some(1), "a refusal exits 1");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("UNKNOWN_ORDER"));
    assert!(
        sigterm_and_wait(&mut child).success(),
        "SIGTERM is a clean exit"
    );

    let port = free_port();
    let mut child = serve(dir.path(), port);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    wait_listening(port);
    let head = Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args([
            "ledger",
            "head",
            "--json",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(&token_file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head.stdout).contains(r#""seq":2"#),
        "the credential and the commanditaire are there"
    );
    assert!(sigterm_and_wait(&mut child).success());
    assert!(
        lines.next().is_none(),
        "no new operator credential on restart"
    );
}

/// A renewal tool replaces the certificate files and sends SIGHUP: new connections get the
/// new certificate, with no restart.
#[test]
fn sighup_serves_a_renewed_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let pair = common::self_signed;
    let ((old_cert, old_key), (new_cert, new_key)) = (pair(), pair());
    let (cert, key) = (file("cert.pem", &old_cert), file("key.pem", &old_key));
    let (old_ca, new_ca) = (file("old-ca.pem", &old_cert), file("new-ca.pem", &new_cert));
    let data = dir.path().join("data");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let head_trusting = |ca: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_passnum"))
            .args([
                "ledger",
                "head",
                "--server",
                &format!("https://localhost:{port}"),
            ])
            .arg("--ca-file")
            .arg(ca)
            .arg("--token-file")
            .arg(data.join("operator.token"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(head_trusting(&old_ca));
    assert!(!head_trusting(&new_ca));

    std::fs::write(&cert, &new_cert).unwrap();
    std::fs::write(&key, &new_key).unwrap();
    signal(&child, "-HUP");
    let start = Instant::now();
    while !head_trusting(&new_ca) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!head_trusting(&old_ca));
    assert!(sigterm_and_wait(&mut child).success());
}
