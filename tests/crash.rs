//! Crash harness: the server binary redeems under load over gRPC and is SIGKILLed at a
//! random moment; after a restart every acknowledged redemption is there, every request
//! that was in flight, retried with its request id, is applied exactly once, the chain
//! verifies and the money invariants hold. CRASH_CYCLES (default 3) and CRASH_SEED set
//! the run; `scripts/crash-cycles.sh N` runs long ones.

use passnum::client::Clients;
use passnum::rpc::pb;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSES: u32 = 20_000;
const IN_FLIGHT: usize = 16;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not come up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// A small deterministic generator: the run is replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn redeem_req(code: &str, i: usize) -> pb::RedeemRequest {
    pb::RedeemRequest {
        request_id: format!("crash-{i}"),
        pass: Some(pb::PassCode {
            form: Some(pb::pass_code::Form::Scanned(code.to_owned())),
        }),
        site_id: 1,
        place: None,
        service: "aide".into(),
    }
}

async fn setup(url: &str, token: &str) -> (String, Vec<String>) {
    let op = Clients::connect(url, Some(token)).await.unwrap();
    let rid = passnum::client::request_id;
    let mut reg = op.registry.clone();
    reg.register_commanditaire(pb::RegisterCommanditaireRequest {
        request_id: rid(),
        name: "Gironde".into(),
    })
    .await
    .unwrap();
    reg.register_structure(pb::RegisterStructureRequest {
        request_id: rid(),
        name: "S".into(),
        siret_or_rna: "21330063500017".into(),
        iban: String::new(),
    })
    .await
    .unwrap();
    reg.register_site(pb::RegisterSiteRequest {
        request_id: rid(),
        structure_id: 1,
        name: "site".into(),
        kind: pb::SiteKind::Fixed as i32,
        insee_code: "33063".into(),
        stops: vec![],
    })
    .await
    .unwrap();
    let site_token = reg
        .issue_credential(pb::IssueCredentialRequest {
            request_id: rid(),
            role: pb::Role::Site as i32,
            actor_id: 1,
            departements: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut iss = op.issuance.clone();
    let order = pb::CreateOrderRequest {
        request_id: rid(),
        commanditaire_id: 1,
        pass_count: PASSES,
        carnet_size: 10,
        face_value_cents: 1000,
        valid_from_ms: now - 86_400_000,
        valid_until_ms: now + 365 * 86_400_000,
        grace_days: 0,
        perimeter: Some(pb::Perimeter {
            departements: vec!["33".into()],
            ..Default::default()
        }),
        services: vec![],
        programme: "crash".into(),
    };
    iss.create_order(order).await.unwrap();
    iss.mint_order(pb::MintOrderRequest {
        request_id: rid(),
        order_id: 1,
    })
    .await
    .unwrap();
    iss.record_funding(pb::RecordFundingRequest {
        request_id: rid(),
        order_id: 1,
        amount_cents: 1000 * i64::from(PASSES),
        reference: "r".into(),
    })
    .await
    .unwrap();
    (site_token, redeemed_and_codes(&op).await.1)
}

/// The order's redeemed serials' codes, and every code in order.
async fn redeemed_and_codes(op: &Clients) -> (HashSet<String>, Vec<String>) {
    let mut redeemed = HashSet::new();
    let mut codes = vec![];
    let mut token = String::new();
    loop {
        let req = pb::ListPassesRequest {
            order_id: 1,
            page_size: 1000,
            page_token: token.clone(),
        };
        let mut s = op
            .issuance
            .clone()
            .list_passes(req)
            .await
            .unwrap()
            .into_inner();
        let mut next = String::new();
        while let Some(p) = s.message().await.unwrap() {
            next = p.next_page_token.clone();
            if p.status == pb::PassStatus::Redeemed as i32 {
                redeemed.insert(p.code.clone());
            }
            codes.push(p.code);
        }
        if next.is_empty() {
            return (redeemed, codes);
        }
        token = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_redemptions_survive_sigkill() {
    let cycles: u64 = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash harness: {cycles} cycles, CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let op_token = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let (site_token, codes) = setup(&url, &op_token).await;
    let codes = Arc::new(codes);
    let mut next = 0usize;
    let mut acked: HashSet<usize> = HashSet::new();
    let mut url = url;
    for cycle in 0..cycles {
        let site = Clients::connect(&url, Some(&site_token)).await.unwrap();
        let cursor = Arc::new(Mutex::new(next));
        let done = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = vec![];
        for _ in 0..IN_FLIGHT {
            let (site, cursor, done, sent, codes) = (
                site.clone(),
                cursor.clone(),
                done.clone(),
                sent.clone(),
                codes.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = {
                        let mut c = cursor.lock().unwrap();
                        *c += 1;
                        *c - 1
                    };
                    if i >= codes.len() {
                        return;
                    }
                    sent.lock().unwrap().push(i);
                    match site
                        .redemptions
                        .clone()
                        .redeem(redeem_req(&codes[i], i))
                        .await
                    {
                        Ok(_) => done.lock().unwrap().push(i),
                        Err(_) => return, // the server died under us
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.next(400))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        let done: HashSet<usize> = done.lock().unwrap().iter().copied().collect();
        let in_flight: Vec<usize> = sent
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|i| !done.contains(i))
            .collect();
        acked.extend(&done);
        next = *cursor.lock().unwrap();

        let port = free_port();
        child = serve(dir.path(), port);
        url = format!("http://127.0.0.1:{port}");
        let op = Clients::connect(&url, Some(&op_token)).await.unwrap();
        let (redeemed, _) = redeemed_and_codes(&op).await;
        for i in &acked {
            assert!(
                redeemed.contains(&codes[*i]),
                "cycle {cycle} (seed {seed}): acknowledged redemption {i} lost"
            );
        }
        // Requests in flight at the kill, retried with their request ids: each is applied
        // exactly once, so the retry succeeds (first answer, or first application).
        let site = Clients::connect(&url, Some(&site_token)).await.unwrap();
        for i in &in_flight {
            let r = site
                .redemptions
                .clone()
                .redeem(redeem_req(&codes[*i], *i))
                .await;
            assert!(
                r.is_ok(),
                "cycle {cycle} (seed {seed}): retry of {i} gave {:?}",
                r.err().map(|s| passnum::client::describe(&s))
            );
            acked.insert(*i);
        }
        let (redeemed, _) = redeemed_and_codes(&op).await;
        assert_eq!(
            redeemed.len(),
            acked.len(),
            "cycle {cycle} (seed {seed}): redeemed passes are exactly the acknowledged ones"
        );
        let d = op
            .issuance
            .clone()
            .get_dashboard(pb::GetDashboardRequest { order_id: 1 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.redeemed.unwrap().passes as usize, acked.len());
        let v = op
            .ledger
            .clone()
            .verify_chain(pb::VerifyChainRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(v.ok, "cycle {cycle} (seed {seed}): {}", v.problem);
        eprintln!("cycle {cycle}: {} acknowledged, {} retried after the kill, chain of {} records verified", done.len(), in_flight.len(), v.records);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
