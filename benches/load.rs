//! Load benchmark: the real server on loopback over a fresh store, preloaded with activated
//! passes; unary redemptions with C requests in flight over K connections for T seconds,
//! reported as redemptions/s and p50 / p99 / max latency, next to a bare health-check RPC
//! at the same concurrency in the same run, the two alternating in LOAD_ROUNDS rounds so
//! that a noisy shared machine weighs on both alike. Also: latency at 1 in flight (next to
//! the health check's), minting over gRPC, workshop redemptions. Everything is bounded in
//! count and time and stays on 127.0.0.1. The store is a temp dir: `TMPDIR=/dev/shm`
//! measures the engine without the disk's flushes.
//!
//! `cargo bench --bench load` (env: LOAD_SECONDS=10 LOAD_ROUNDS=5 LOAD_IN_FLIGHT=64
//! LOAD_CONNECTIONS=4 LOAD_ORDERS=8 LOAD_WORKERS=2 LOAD_CLIENT_WORKERS=0: the server's
//! runtime workers, and the client's on a runtime of its own, as in a separate process;
//! 0 shares the server's). Half the passes feed the 64-in-flight
//! phase: 400 000 by default, 40 000/s for 10 s; a phase that runs out says so.
//! `LOAD_TLS=1` runs it all over TLS (a certificate made for the run), baseline included.

use passnum::client::Clients;

/// The server binary's allocator (src/main.rs), so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/scenario.rs"]
mod scenario;
use passnum::config::ServerConfig;
use passnum::domain::Timestamp;
use passnum::rpc::pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU the process (server and client) used and what the machine did, read from /proc
/// (Linux only: elsewhere the bench leaves these lines out). Splits a phase's cost from its
/// idle time: a redemption can be cheap in CPU and still slow if the cores wait on the disk.
#[derive(Clone, Default)]
struct Usage {
    /// user + system time of this process, all threads, in clock ticks (USER_HZ = 100).
    process_ticks: u64,
    machine_ticks: u64,
    machine_idle_ticks: u64,
    /// The same per thread name (the runtime's workers share one), and the wall time.
    threads: std::collections::BTreeMap<String, u64>,
    wall: Duration,
}

/// Ticks used by each of this process's threads, summed by thread name.
fn thread_ticks() -> Option<std::collections::BTreeMap<String, u64>> {
    let mut threads = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        // A thread may end between the listing and the read: it is left out.
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        *threads.entry(name.trim().to_owned()).or_default() += stat_ticks(&stat)?;
    }
    Some(threads)
}

/// utime + stime of a /proc stat line: fields 14 and 15, counted from the command name,
/// which ends at the last ')', with the state as field 3.
fn stat_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ticks(11)? + ticks(12)?)
}

impl Usage {
    fn now() -> Option<Usage> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        Some(Usage {
            process_ticks: stat_ticks(&stat)?,
            machine_ticks: cpu.iter().sum(),
            // idle + iowait
            machine_idle_ticks: cpu.get(3)? + cpu.get(4)?,
            threads: thread_ticks()?,
            wall: Duration::ZERO,
        })
    }

    fn since(self, start: Usage, wall: Duration) -> Usage {
        let threads = self
            .threads
            .into_iter()
            .map(|(name, t)| {
                let before = start.threads.get(&name).copied().unwrap_or(0);
                (name, t.saturating_sub(before))
            })
            .collect();
        Usage {
            process_ticks: self.process_ticks - start.process_ticks,
            machine_ticks: self.machine_ticks - start.machine_ticks,
            machine_idle_ticks: self.machine_idle_ticks - start.machine_idle_ticks,
            threads,
            wall,
        }
    }

    fn add(&mut self, other: Usage) {
        self.process_ticks += other.process_ticks;
        self.machine_ticks += other.machine_ticks;
        self.machine_idle_ticks += other.machine_idle_ticks;
        for (name, t) in other.threads {
            *self.threads.entry(name).or_default() += t;
        }
        self.wall += other.wall;
    }

    /// Each busy thread name's share of one core over the phase, largest first.
    fn by_thread(&self) -> String {
        let mut busy: Vec<(&String, &u64)> = self.threads.iter().filter(|t| *t.1 > 0).collect();
        busy.sort_by(|a, b| b.1.cmp(a.1));
        let wall_ticks = self.wall.as_secs_f64() * 100.0;
        let shares: Vec<String> = busy
            .iter()
            .map(|(name, t)| format!("{name} {:.0} %", **t as f64 * 100.0 / wall_ticks.max(1.0)))
            .collect();
        shares.join(", ")
    }

    /// Ticks of the engine's idle pollers: idle time they spun through, not work.
    fn polled_ticks(&self) -> u64 {
        self.threads.get("idle-poll").copied().unwrap_or(0)
    }

    /// CPU per request, the idle pollers' spinning left out.
    fn micros_per(&self, requests: usize) -> f64 {
        const MICROS_PER_TICK: f64 = 1_000_000.0 / 100.0;
        let work = self.process_ticks.saturating_sub(self.polled_ticks());
        work as f64 * MICROS_PER_TICK / requests.max(1) as f64
    }

    /// The machine's idle share, the idle pollers' spinning counted as idle.
    fn idle_percent(&self) -> f64 {
        let idle = self.machine_idle_ticks + self.polled_ticks();
        100.0 * idle as f64 / self.machine_ticks.max(1) as f64
    }
}

/// Runs a phase and adds what it cost to `usage` (left unchanged if /proc is unreadable).
async fn measured<F: std::future::Future<Output = Run>>(
    usage: &mut Option<Usage>,
    phase: F,
) -> Run {
    let (start, clock) = (Usage::now(), Instant::now());
    let run = phase.await;
    match (usage.as_mut(), start, Usage::now()) {
        (Some(u), Some(start), Some(end)) => u.add(end.since(start, clock.elapsed())),
        _ => *usage = None,
    }
    run
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Run {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    micros: Vec<u32>,
}

impl Run {
    /// Adds another stretch of the same measure.
    fn add(&mut self, other: Run) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.micros.extend(other.micros);
        self.micros.sort_unstable();
    }
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    /// Mean latency in µs: with C callers in flight, C / mean is the rate (Little's law).
    fn mean_micros(&self) -> f64 {
        let sum: u64 = self.micros.iter().map(|&m| u64::from(m)).sum();
        sum as f64 / self.micros.len().max(1) as f64
    }
    fn pct(&self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        let i = ((self.micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.micros[i]) / 1000.0
    }
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<44} {:>9.0}/s  p50 {:>6.3} ms  p99 {:>6.3} ms  max {:>7.3} ms  ({} ok, {} failed)",
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0),
            self.ok,
            self.failed
        )
    }
}

/// Scans a bus syncs in the bench: a busy fortnight for a whole département's buses.
const BUS_SCANS: usize = 4_000;

/// Syncs `codes` as offline scans made since 20 hours ago (the bench's orders are valid
/// from a day before their setup), through
/// `cli_scans::sync`, 16 in flight; every one must redeem.
async fn offline_sync(c: &Clients, codes: &[String], now: Timestamp) -> Run {
    let scans = codes
        .iter()
        .enumerate()
        .map(|(i, code)| passnum::cli_scans::Scan {
            line: i as u32 + 2,
            request_id: format!("bus-{i}"),
            scanned_at: Timestamp(now.0 - 20 * 3_600_000 + i as i64 * 1_000),
            code: code.clone(),
            site_id: 1,
            stop: None,
            insee: String::new(),
            service: "aide".into(),
            session: None,
        })
        .collect();
    let start = Instant::now();
    let rows = passnum::cli_scans::sync(c, scans, 16).await;
    let tally = passnum::cli_scans::tally(&rows);
    assert_eq!(tally.redeemed, codes.len(), "every scan redeems: {tally:?}");
    Run {
        ok: codes.len(),
        elapsed: start.elapsed(),
        ..Run::default()
    }
}

/// The client's runtime when it has its own (`LOAD_CLIENT_WORKERS`), as a separate
/// process would; None when it shares the server's.
static CLIENT_RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// Runs `task` where the client runs.
fn spawn_client<T: Send + 'static>(
    task: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    match CLIENT_RT.get() {
        Some(rt) => rt.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Runs `call` with `in_flight` tasks over `clients` until `millis` pass or `max` calls.
async fn drive<F, Fut>(
    clients: &[Clients],
    in_flight: usize,
    millis: u64,
    max: usize,
    call: F,
) -> Run
where
    F: Fn(Clients, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_millis(millis);
    let start = Instant::now();
    let mut tasks = vec![];
    for t in 0..in_flight {
        let (client, next, call) = (
            clients[t % clients.len()].clone(),
            next.clone(),
            call.clone(),
        );
        tasks.push(spawn_client(async move {
            let (mut micros, mut ok, mut failed) = (vec![], 0, 0);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max {
                    break;
                }
                let t0 = Instant::now();
                if call(client.clone(), i).await {
                    ok += 1;
                    micros.push(t0.elapsed().as_micros() as u32);
                } else {
                    failed += 1;
                }
            }
            (micros, ok, failed)
        }));
    }
    let mut run = Run {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        micros: vec![],
    };
    for t in tasks {
        let (m, ok, failed) = t.await.unwrap();
        run.micros.extend(m);
        run.ok += ok;
        run.failed += failed;
    }
    run.elapsed = start.elapsed();
    run.micros.sort_unstable();
    run
}

/// The engine's fsyncs in a phase: how many redemptions each acknowledged, how long they
/// took (bounds within a quarter, from the engine's own histogram). The max is the longest
/// stall every request in flight waited out: the host's (up to hundreds of ms here), or a
/// log reserve step (`log::RESERVE_STEP`, 8–13 ms).
fn sync_line(syncs: &passnum::engine::GroupCommits, phase: &str) -> String {
    let ms = |q| syncs.quantile(q).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    format!(
        "{:<44} {:>9} syncs  {:.1} redemptions each  p50 <= {:.3} ms  p99 <= {:.3} ms  max <= {:.1} ms",
        format!("fdatasync, {phase}"),
        syncs.syncs,
        syncs.requests_per_sync(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    )
}

/// Where an answered redemption's time in the engine went in a phase (means add up), and
/// the client's mean latency around it.
fn stages_line(syncs: &passnum::engine::GroupCommits, run: &Run, phase: &str) -> String {
    use passnum::engine::Stage;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let parts: Vec<String> = Stage::ALL
        .iter()
        .map(|s| format!("{} {:.0}", s.name(), us(syncs.stage_mean(*s))))
        .collect();
    format!(
        "{:<44} {:>6.0} us of the client's {:.0} us mean: {}",
        format!("in the engine, {phase}"),
        us(syncs.engine_mean()),
        run.mean_micros(),
        parts.join(", ")
    )
}

fn main() {
    let seconds = env("LOAD_SECONDS", 10);
    let in_flight = env("LOAD_IN_FLIGHT", 64) as usize;
    let connections = env("LOAD_CONNECTIONS", 4) as usize;
    // The server's own runtime, which the bench's client shares unless given its own.
    let rt = passnum::server::runtime(Some(env("LOAD_WORKERS", 2) as usize)).unwrap();
    let client_workers = env("LOAD_CLIENT_WORKERS", 0) as usize;
    if client_workers > 0 {
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(client_workers)
            .thread_name("load-client")
            .enable_all()
            .build()
            .unwrap();
        let _ = CLIENT_RT.set(client);
    }
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        config.engine.idle_poll_us = env("LOAD_IDLE_POLL_US", passnum::engine::IDLE_POLL_US);
        println!("idle polling: {} us past the last answer", config.engine.idle_poll_us);
        let ca = (env("LOAD_TLS", 0) == 1).then(|| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            config.transport = passnum::config::Transport::Tls {
                cert: cert.clone(),
                key,
            };
            cert
        });
        // The system clock, moved on by the bench to clear what it redeemed.
        let ahead = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let system = passnum::engine::system_clock();
        let shift = ahead.clone();
        let clock: passnum::engine::Clock = Arc::new(move || {
            let now = system();
            passnum::domain::Timestamp(now.0 + shift.load(std::sync::atomic::Ordering::SeqCst))
        });
        let server = passnum::server::start(config, clock.clone()).await.unwrap();
        let url = match ca {
            Some(_) => format!("https://localhost:{}", server.addr.port()),
            None => format!("http://{}", server.addr),
        };
        println!("transport: {url}");
        match client_workers {
            0 => println!("client: on the server's runtime"),
            n => println!("client: its own runtime, {n} workers"),
        }
        let connect = |token: String| {
            let (url, ca) = (url.clone(), ca.clone());
            // Its connections' tasks run where it was made.
            let made = spawn_client(async move {
                let trusted = Clients::connect_trusting(&url, Some(&token), ca.as_deref());
                trusted.await.unwrap()
            });
            async move { made.await.unwrap() }
        };
        let token = std::fs::read_to_string(server.operator_token_file.as_ref().unwrap()).unwrap();
        let op = connect(token.trim().to_owned()).await;
        let orders = env("LOAD_ORDERS", 8) as u32;
        let (site_token, codes, mint_time) =
            scenario::redemption_scenario(&op, pb::Role::Structure, orders, 100_000).await;
        println!(
            "setup: {} activated passes in {} orders",
            codes.len(),
            orders
        );
        println!(
            "{:<44} {:>9.0}/s  (100 000-pass orders over gRPC, durable)",
            "mint",
            codes.len() as f64 / mint_time.as_secs_f64()
        );
        let codes = Arc::new(codes);
        let mut clients = vec![];
        for _ in 0..connections {
            clients.push(connect(site_token.clone()).await);
        }
        // The baseline and the redemptions alternate in short rounds, so that a shared,
        // noisy machine slows both alike and their ratio holds.
        let redeem = |codes: Arc<Vec<String>>, offset: usize| {
            move |c: Clients, i: usize| {
                let code = codes[offset + i].clone();
                async move {
                    let req = pb::RedeemRequest {
                        request_id: format!("load-{}", offset + i),
                        pass: Some(pb::PassCode {
                            form: Some(pb::pass_code::Form::Scanned(code)),
                        }),
                        site_id: 1,
                        place: None,
                        service: "aide".into(),
                        scanned_at_ms: 0,
                    };
                    c.redemptions.clone().redeem(req).await.is_ok()
                }
            }
        };
        // A site checking a pass before it redeems: a pure read, answered once durable.
        let check = |codes: Arc<Vec<String>>| {
            move |c: Clients, i: usize| {
                let code = codes[i % codes.len()].clone();
                async move {
                    let req = pb::CheckPassRequest {
                        pass: Some(pb::PassCode {
                            form: Some(pb::pass_code::Form::Scanned(code)),
                        }),
                        site_id: 1,
                        place: None,
                        service: "aide".into(),
                    };
                    c.redemptions.clone().check_pass(req).await.is_ok()
                }
            }
        };
        let rounds = env("LOAD_ROUNDS", 5).max(1);
        let slice = Duration::from_secs(seconds).as_millis() as u64 / rounds;
        let n = codes.len();
        let (mut baseline, mut loaded, mut checked) =
            (Run::default(), Run::default(), Run::default());
        let health = |c: Clients, _| async move {
            let mut h = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok()
        };
        let mut baseline_usage = Some(Usage::default());
        let mut loaded_usage = Some(Usage::default());
        let syncs_before = server.group_commits();
        for _ in 0..rounds {
            let phase = drive(&clients, in_flight, slice, usize::MAX, health);
            baseline.add(measured(&mut baseline_usage, phase).await);
            let done = loaded.ok + loaded.failed;
            let phase = drive(
                &clients,
                in_flight,
                slice,
                (n / 2).saturating_sub(done),
                redeem(codes.clone(), done),
            );
            loaded.add(measured(&mut loaded_usage, phase).await);
            let phase = drive(&clients, in_flight, slice, usize::MAX, check(codes.clone()));
            checked.add(phase.await);
        }
        // Health checks sync nothing: these are the redemptions' syncs.
        let loaded_syncs = server.group_commits().since(&syncs_before);
        // The bare RPC at 1 in flight too: what of a redemption's latency is the network
        // and the framework, and what is the engine and the disk.
        let single_baseline = drive(&clients[..1], 1, 1_000, usize::MAX, health).await;
        let syncs_before = server.group_commits();
        let single = drive(&clients[..1], 1, 3_000, n / 4, redeem(codes.clone(), n / 2)).await;
        let single_syncs = server.group_commits().since(&syncs_before);
        let first_free = n / 2 + single.ok + single.failed;
        let ws_codes = codes.clone();
        let workshops = drive(
            &clients,
            16,
            seconds.min(5) * 1000,
            (n - first_free - BUS_SCANS * 2) / 20,
            move |c: Clients, i: usize| {
                let passes = (0..20)
                    .map(|k| pb::PassCode {
                        form: Some(pb::pass_code::Form::Scanned(
                            ws_codes[first_free + i * 20 + k].clone(),
                        )),
                    })
                    .collect();
                async move {
                    let req = pb::RedeemWorkshopRequest {
                        request_id: format!("ws-{i}"),
                        site_id: 1,
                        place: None,
                        date: "2026-11-23".into(),
                        start: "14:00".into(),
                        duration_minutes: 120,
                        themes: vec!["aide".into()],
                        participants: 20,
                        mediator_id: "m".into(),
                        passes,
                        held_at_ms: 0,
                    };
                    c.redemptions
                        .clone()
                        .redeem_workshop(req)
                        .await
                        .is_ok_and(|r| r.into_inner().redeemed == 20)
                }
            },
        )
        .await;
        println!(
            "{}",
            baseline.line(&format!("baseline: health check, {in_flight} in flight"))
        );
        println!(
            "{}",
            loaded.line(&format!(
                "redeem, {in_flight} in flight, {connections} conns"
            ))
        );
        println!(
            "{}",
            checked.line(&format!("check, {in_flight} in flight, {connections} conns"))
        );
        if loaded.ok + loaded.failed >= n / 2 {
            println!("(the redemptions ran out of passes before their time: raise LOAD_ORDERS)");
        }
        println!("{}", single_baseline.line("baseline: health check, 1 in flight"));
        println!("{}", single.line("redeem, 1 in flight"));
        println!("{}", sync_line(&loaded_syncs, &format!("{in_flight} in flight")));
        println!("{}", sync_line(&single_syncs, "1 in flight"));
        let phase = format!("{in_flight} in flight");
        println!("{}", stages_line(&loaded_syncs, &loaded, &phase));
        println!("{}", stages_line(&single_syncs, &single, "1 in flight"));
        println!(
            "{:<44} {:>9.0}/s  ({} workshops of 20, 16 in flight)",
            "workshop passes",
            workshops.rate() * 20.0,
            workshops.ok
        );
        println!("{}", workshops.line("workshops of 20, 16 in flight"));
        // A bus back in range sends its scans (`passnum sync-scans`'s code): against as
        // many redemptions sent as they happen, both 16 in flight on one connection.
        let bus = n - BUS_SCANS * 2;
        let synced = offline_sync(&clients[0], &codes[bus..bus + BUS_SCANS], clock()).await;
        let live = redeem(codes.clone(), bus + BUS_SCANS);
        let live = drive(&clients[..1], 16, 60_000, BUS_SCANS, live).await;
        println!(
            "{:<44} {:>9.0}/s  ({} scans in {:.2} s)",
            "offline scans synced, 16 in flight, 1 conn",
            synced.rate(),
            synced.ok,
            synced.elapsed.as_secs_f64()
        );
        println!("{}", live.line("redeem, 16 in flight, 1 conn"));
        println!(
            "ratio offline sync / redeem at 16 in flight: {:.2}",
            synced.rate() / live.rate()
        );
        println!(
            "ratio redeem / baseline at {in_flight} in flight: {:.2}",
            loaded.rate() / baseline.rate()
        );
        println!(
            "ratio check / baseline at {in_flight} in flight: {:.2}",
            checked.rate() / baseline.rate()
        );
        if let (Some(b), Some(r)) = (baseline_usage, loaded_usage) {
            let (b_us, r_us) = (b.micros_per(baseline.ok), r.micros_per(loaded.ok));
            println!(
                "cpu per request, server and client: baseline {b_us:.1} us, redeem {r_us:.1} us ({:.2})",
                b_us / r_us
            );
            println!(
                "machine idle (incl. iowait and idle polling): baseline {:.0} %, redeem {:.0} %",
                b.idle_percent(),
                r.idle_percent()
            );
            println!("cpu by thread, baseline (% of a core): {}", b.by_thread());
            println!("cpu by thread, redeem: {}", r.by_thread());
        }
        // Three days later, everything redeemed is past its reversal window: clear it.
        let day = passnum::domain::Timestamp::MS_PER_DAY;
        ahead.store(3 * day, std::sync::atomic::Ordering::SeqCst);
        let cut_off = passnum::export::iso_date((clock().0 / day - 1) as i32);
        let start = std::time::Instant::now();
        let run = op
            .clearing
            .clone()
            .run_clearing(pb::RunClearingRequest { cut_off })
            .await
            .unwrap()
            .into_inner();
        let took = start.elapsed();
        println!(
            "{:<44} {:>9.0}/s  ({} redemptions in {:.2} s, {} records, over gRPC)",
            "clearing",
            run.lines as f64 / took.as_secs_f64(),
            run.lines,
            took.as_secs_f64(),
            run.records
        );
        scenario::verified_chain(&op, "after the load").await;
        server.shutdown().await.unwrap();
    });
}
