//! Connections are bounded, and a peer that vanished is found: past the bound a new
//! connection is closed at once while the open ones carry on, and HTTP/2 keepalive closes a
//! connection whose peer no longer answers, which frees its place.

mod common;
use common::*;
use passnum::client::Clients;
use passnum::rpc::pb;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A peer that opens an HTTP/2 connection, then answers nothing, not even pings: a device
/// that lost its network without closing anything.
async fn vanished_peer(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    tcp
}

/// Reads (and ignores) what the server sends until it closes the connection.
async fn closed_by_server(tcp: &mut tokio::net::TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout_at((start + within).into(), tcp.read(&mut buf)).await;
        match read.expect("the server did not close the connection") {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

async fn head_over_new_connection(t: &TestServer) -> Result<u64, String> {
    let c = Clients::connect(&t.url(), Some(&t.operator_token)).await?;
    let head = c.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    head.map(|h| h.into_inner().seq).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_frees_its_place_and_past_the_bound_new_ones_are_closed() {
    let t = TestServer::start_tuned(|c| {
        c.limits.connections_max = 2;
        c.limits.keepalive_interval_ms = 300;
        c.limits.keepalive_timeout_ms = 300;
    })
    .await;
    // The operator's client holds one place, the vanished peer the other.
    let mut silent = vanished_peer(t.server.as_ref().unwrap().addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = head_over_new_connection(&t).await;
    assert!(
        refused.is_err(),
        "a third connection was served: {refused:?}"
    );
    // The open connection carries on: its client answers the server's pings.
    head(&t.op).await;

    // Keepalive finds the peer gone within its interval and timeout (and some slack).
    let took = closed_by_server(&mut silent, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    let start = Instant::now();
    while let Err(e) = head_over_new_connection(&t).await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the place was not freed: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    head(&t.op).await;
    t.stop().await;
}
