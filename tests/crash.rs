//! Crash harness: the server binary redeems under load over gRPC and is SIGKILLed at a
//! random moment; after a restart every acknowledged redemption is there, every request
//! that was in flight, retried with its request id, is applied exactly once, the chain
//! verifies and the money invariants hold. CRASH_CYCLES (default 3) and CRASH_SEED set
//! the run; `scripts/crash-cycles.sh N` runs long ones.

use passnum::client::Clients;

#[path = "support/scenario.rs"]
mod scenario;
use passnum::rpc::pb;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Passes per order. Before each cycle the pool is topped up with new orders until it holds
/// three times what the busiest cycle so far redeemed, so a cycle is never cut short by
/// running out of passes (a cycle that did would check nothing past that point: the
/// harness fails it).
const PASSES: u32 = 20_000;
const IN_FLIGHT: usize = 16;
/// After each cycle the orders it touched are listed pass by pass, and every order's
/// dashboard is read; every this many cycles, and after the last, every order is listed.
/// Listing them all each time made a cycle cost O(ledger): 200 cycles took 25 minutes.
const FULL_CHECK_EVERY: u64 = 25;

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
        scanned_at_ms: 0,
    }
}

/// The codes of the redeemed passes, per order, as the server lists them.
#[derive(Default)]
struct Redeemed(HashMap<u64, HashSet<String>>);

impl Redeemed {
    /// Lists these orders' passes again.
    async fn refresh(&mut self, op: &Clients, orders: impl IntoIterator<Item = u64>) {
        for order in orders {
            let passes = scenario::order_passes(op, order).await;
            let codes = passes
                .into_iter()
                .filter(|p| p.status == pb::PassStatus::Redeemed as i32)
                .map(|p| p.code)
                .collect();
            self.0.insert(order, codes);
        }
    }
    fn contains(&self, order: u64, code: &str) -> bool {
        self.0.get(&order).is_some_and(|c| c.contains(code))
    }
    fn len(&self) -> usize {
        self.0.values().map(HashSet::len).sum()
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
    let op = Clients::connect(&url, Some(&op_token)).await.unwrap();
    let (site_token, codes, _) =
        scenario::redemption_scenario(&op, pb::Role::Site, 1, PASSES).await;
    // The order of each block of PASSES codes: the first order of a new ledger is 1.
    let mut orders: Vec<u64> = vec![1];
    let order_of = |orders: &[u64], i: usize| orders[i / PASSES as usize];
    let mut redeemed = Redeemed::default();
    let mut codes = Arc::new(codes);
    let mut busiest = 0usize;
    let mut next = 0usize;
    let mut acked: HashSet<usize> = HashSet::new();
    let mut url = url;
    for cycle in 0..cycles {
        let op = Clients::connect(&url, Some(&op_token)).await.unwrap();
        while codes.len() - next < 3 * busiest {
            let (order, more, _) = scenario::funded_order(&op, PASSES).await;
            // The previous cycle's tasks are done: no copy is made.
            Arc::make_mut(&mut codes).extend(more);
            orders.push(order);
        }
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
        assert!(
            next < codes.len(),
            "cycle {cycle} (seed {seed}): the pass pool ran dry before the kill"
        );
        busiest = busiest.max(sent.lock().unwrap().len());

        let port = free_port();
        child = serve(dir.path(), port);
        url = format!("http://127.0.0.1:{port}");
        let op = Clients::connect(&url, Some(&op_token)).await.unwrap();
        let full = cycle % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 || cycle + 1 == cycles;
        let touched: BTreeSet<u64> = if full {
            orders.iter().copied().collect()
        } else {
            sent.lock()
                .unwrap()
                .iter()
                .map(|i| order_of(&orders, *i))
                .collect()
        };
        redeemed.refresh(&op, touched.iter().copied()).await;
        for i in &acked {
            assert!(
                redeemed.contains(order_of(&orders, *i), &codes[*i]),
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
        redeemed.refresh(&op, touched.iter().copied()).await;
        assert_eq!(
            redeemed.len(),
            acked.len(),
            "cycle {cycle} (seed {seed}): redeemed passes are exactly the acknowledged ones"
        );
        let mut on_dashboards = 0;
        for &order_id in &orders {
            let d = op
                .issuance
                .clone()
                .get_dashboard(pb::GetDashboardRequest { order_id })
                .await
                .unwrap()
                .into_inner();
            on_dashboards += d.redeemed.unwrap().passes as usize;
        }
        assert_eq!(
            on_dashboards,
            acked.len(),
            "cycle {cycle} (seed {seed}): the dashboards agree"
        );
        let v = scenario::verified_chain(&op, &format!("cycle {cycle} (seed {seed})")).await;
        eprintln!("cycle {cycle}: {} acknowledged, {} retried after the kill, {} orders listed, chain of {} records verified", done.len(), in_flight.len(), touched.len(), v.records);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
