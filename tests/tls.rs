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
