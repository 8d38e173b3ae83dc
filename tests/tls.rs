//! A TLS certificate is renewed while the server runs (ACME renews every 60 to 90 days): new
//! connections get the new one, open ones carry on, a broken renewal changes nothing, and a
//! client that never finishes its handshake holds up nobody. In-process here; by SIGHUP
//! to the real binary in `tests/signals.rs`.

mod common;
use common::*;
use passnum::client::Clients;
use passnum::config::Transport;
use passnum::domain::Timestamp;
use passnum::rpc::pb;
use std::path::{Path, PathBuf};

/// Replaces a file the way renewal tools do: written aside, then renamed over it.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The ledger's head over a new connection that trusts only `ca`.
async fn head_trusting(url: &str, token: &str, ca: &Path) -> Result<u64, String> {
    let c = Clients::connect_trusting(url, Some(token), Some(ca)).await?;
    let head = c.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    head.map(|h| h.into_inner().seq).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (old_cert, old_key) = self_signed();
    let (new_cert, new_key) = self_signed();
    let (cert, key) = (file("cert.pem", &old_cert), file("key.pem", &old_key));
    let (old_ca, new_ca) = (file("old-ca.pem", &old_cert), file("new-ca.pem", &new_cert));
    let data = dir.path().join("data");
    let mut c = config(&data);
    c.transport = Transport::Tls {
        cert: cert.clone(),
        key: key.clone(),
    };
    let clock: passnum::engine::Clock = std::sync::Arc::new(|| Timestamp(T0 + DAY));
    let s = passnum::server::start(c, clock).await.unwrap();
    let token = std::fs::read_to_string(data.join("operator.token")).unwrap();
    let token = token.trim();
    let url = format!("https://localhost:{}", s.addr.port());

    let open = Clients::connect_trusting(&url, Some(token), Some(&old_ca))
        .await
        .unwrap();
    assert!(head_trusting(&url, token, &new_ca).await.is_err());

    replace(&cert, &new_cert);
    replace(&key, &new_key);
    s.reload_tls().unwrap();
    assert!(head_trusting(&url, token, &new_ca).await.unwrap() > 0);
    let why = head_trusting(&url, token, &old_ca).await.unwrap_err();
    assert!(why.contains("certificate"), "{why}");
    // A connection opened before keeps its session.
    let mut ledger = open.ledger.clone();
    ledger.get_head(pb::GetHeadRequest {}).await.unwrap();

    // A broken renewal is refused and the certificate in use stays: a key that is not the
    // certificate's, then a certificate file that holds none.
    replace(&key, &self_signed().1);
    let why = s.reload_tls().unwrap_err();
    assert!(why.contains("TLS certificate or key"), "{why}");
    assert!(head_trusting(&url, token, &new_ca).await.is_ok());
    replace(&key, &new_key);
    replace(&cert, "not a certificate\n");
    let why = s.reload_tls().unwrap_err();
    assert!(why.contains("no certificate"), "{why}");
    assert!(head_trusting(&url, token, &new_ca).await.is_ok());

    // Clients that connect and never start their handshake hold up nobody else.
    let mut silent = vec![];
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    assert!(head_trusting(&url, token, &new_ca).await.is_ok());
    drop(silent);
    s.shutdown().await.unwrap();

    // Without TLS there is nothing to reload.
    let plain = TestServer::start().await;
    let why = plain.server.as_ref().unwrap().reload_tls().unwrap_err();
    assert!(why.contains("does not serve TLS"), "{why}");
    plain.stop().await;
}

/// `passnum demo` plays its day against a TLS server, trusting the CA it is given for the
/// structure's connection as for the operator's, and tells each step as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_its_day_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let data = dir.path().join("data");
    let mut c = config(&data);
    c.transport = Transport::Tls {
        cert: cert_file.clone(),
        key: key_file,
    };
    // The demo dates its order from the machine's clock: the server keeps the same.
    let clock: passnum::engine::Clock =
        std::sync::Arc::new(|| Timestamp(passnum::client::now_ms()));
    let s = passnum::server::start(c, clock).await.unwrap();
    let url = format!("https://localhost:{}", s.addr.port());
    let args = [
        "demo",
        "--server",
        &url,
        "--token-file",
        data.join("operator.token").to_str().unwrap(),
        "--ca-file",
        cert_file.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let run = tokio::task::spawn_blocking(move || cli_output(&args))
        .await
        .unwrap();
    let told = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{told}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let steps: Vec<u32> = told
        .lines()
        .filter_map(|l| l.split_once(". ")?.0.parse().ok())
        .collect();
    assert_eq!(steps, (1..=15).collect::<Vec<_>>(), "{told}");
    for expected in [
        "5. Before funding, a scan is refused: FailedPrecondition NOT_ACTIVATED",
        "8. The same pass on the bus is refused: FailedPrecondition ALREADY_REDEEMED",
        "outside the perimeter: FailedPrecondition OUTSIDE_PERIMETER",
        "3 of 4 passes redeemed (3000 cents); the 4th was already used",
        "10 passes cancelled, 10000 cents owed back",
    ] {
        assert!(told.contains(expected), "{expected:?} not in:\n{told}");
    }
    // What it told is what the ledger holds: 4 redemptions standing (5 made, 1 reversed),
    // the 10 passes of carnet 1 cancelled, and a chain that verifies.
    let token = std::fs::read_to_string(data.join("operator.token")).unwrap();
    let op = Clients::connect_trusting(&url, Some(token.trim()), Some(&cert_file))
        .await
        .unwrap();
    let order = told
        .split("4. Order ")
        .nth(1)
        .and_then(|r| r.split(':').next());
    let order_id = order.unwrap().parse().unwrap();
    let (mut issuance, mut ledger) = (op.issuance.clone(), op.ledger.clone());
    let d = issuance.get_dashboard(pb::GetDashboardRequest { order_id });
    let d = d.await.unwrap().into_inner();
    let count = |c: Option<pb::Count>| c.map(|c| c.passes);
    assert_eq!(count(d.redeemed), Some(4));
    assert_eq!(count(d.cancelled), Some(10));
    let v = ledger.verify_chain(pb::VerifyChainRequest {});
    let v = v.await.unwrap().into_inner();
    assert!(v.ok, "{}", v.problem);
    assert!(told.contains(&format!("15. The ledger verifies: {} records", v.records)));
    s.shutdown().await.unwrap();
}
