//! Ledger benches: the pure core, the durable group commit at batch sizes 1 to 1000, a mint
//! of 100 000 passes, and the raw fdatasync rate of this disk as the baseline, all in one run;
//! a page of the log read from its start and from a mark; the index's checkpoint and compaction.
//! Run with `cargo bench --bench ledger`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use passnum::domain::*;
use passnum::engine::Ledger;
use std::io::Write;
use std::time::{Duration, Instant};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{gironde_order, l, redeemed_pass, T0};

const ORDER_PASSES: u32 = 100_000;

fn env(command: Command) -> Envelope {
    Envelope {
        request: None,
        command,
    }
}

fn setup_commands() -> Vec<Command> {
    vec![
        Command::RegisterCommanditaire { name: l("Gironde") },
        Command::RegisterStructure {
            name: l("S"),
            payee: PayeeId::parse("21330063500017").unwrap(),
            iban: None,
        },
        Command::RegisterSite {
            structure: StructureId(1),
            name: l("site"),
            kind: SiteKind::Fixed {
                commune: InseeCode::parse("33063").unwrap(),
            },
        },
    ]
}

fn new_order() -> Command {
    gironde_order(ORDER_PASSES, 1000)
}

/// Passes to redeem, minted and funded in orders of 100 000 as the bench needs them.
struct Pool {
    next_order: u64,
    next_serial: u64,
    free: Vec<Serial>,
}

impl Pool {
    fn take(&mut self, n: usize, run: &mut dyn FnMut(&[Envelope])) -> Vec<Serial> {
        while self.free.len() < n {
            let order = OrderId(self.next_order);
            self.next_order += 1;
            let serials: Vec<Serial> = (0..ORDER_PASSES as u64)
                .map(|i| Serial::from_random(self.next_serial + i))
                .collect();
            self.next_serial += ORDER_PASSES as u64;
            run(&[env(new_order())]);
            run(&[env(Command::Mint {
                order,
                serials: serials.clone(),
            })]);
            run(&[env(Command::RecordFunding {
                order,
                amount: Cents(1000 * i64::from(ORDER_PASSES)),
                reference: l("r"),
            })]);
            self.free.extend(serials);
        }
        self.free.split_off(self.free.len() - n)
    }
}

fn redeem(serial: Serial) -> Envelope {
    env(Command::Redeem {
        serial,
        site: SiteId(1),
        place: Place::Site,
        service: ServiceCode::parse("aide").unwrap(),
        scanned_at: None,
    })
}

fn core_apply(c: &mut Criterion) {
    let mut state = State::default();
    let rules = Rules::default();
    let mut seq = 0;
    let mut run = |envs: &[Envelope]| {
        for e in envs {
            if let Decision::Record(body) = decide(&state, &rules, Timestamp(T0 + 1), e) {
                seq += 1;
                state.apply(seq, Timestamp(T0 + 1), &body);
            }
        }
        state.take_changes();
    };
    for cmd in setup_commands() {
        run(&[env(cmd)]);
    }
    let mut pool = Pool {
        next_order: 1,
        next_serial: 1,
        free: vec![],
    };
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decide+apply 1000 redemptions", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let envs: Vec<Envelope> =
                    pool.take(1000, &mut run).into_iter().map(redeem).collect();
                let t = Instant::now();
                run(&envs);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Runs a batch on the ledger, durably, at the bench's fixed time.
fn execute(ledger: &mut Ledger, envs: &[Envelope]) {
    let refs: Vec<&Envelope> = envs.iter().collect();
    ledger.execute_batch(Timestamp(T0 + 1), &refs).unwrap();
}

/// A ledger in `dir` with the setup's actors registered, and a pool of passes still empty.
fn set_up(dir: &std::path::Path) -> (Ledger, Pool) {
    let mut ledger = Ledger::open(dir, Rules::default()).unwrap();
    for cmd in setup_commands() {
        execute(&mut ledger, &[env(cmd)]);
    }
    let pool = Pool {
        next_order: 1,
        next_serial: 1 << 40,
        free: vec![],
    };
    (ledger, pool)
}

fn durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, mut pool) = set_up(dir.path());
    let mut run = |envs: &[Envelope]| execute(&mut ledger, envs);

    let mut g = c.benchmark_group("durable");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    // The baseline: what this disk gives a bare 4 KiB write + fdatasync.
    let mut raw = std::fs::File::create(dir.path().join("raw")).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline: raw write+fdatasync", |b| {
        b.iter(|| {
            raw.write_all(&[7u8; 4096]).unwrap();
            raw.sync_data().unwrap();
        })
    });
    for batch in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(
            BenchmarkId::new("group commit of redemptions", batch),
            &batch,
            |b, &batch| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let envs: Vec<Envelope> =
                            pool.take(batch, &mut run).into_iter().map(redeem).collect();
                        let t = Instant::now();
                        run(&envs);
                        total += t.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.throughput(Throughput::Elements(u64::from(ORDER_PASSES)));
    let mut next = 1u64 << 50;
    let mut order = 0u64;
    g.bench_function("mint 100000 passes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run(&[env(new_order())]);
                order = pool.next_order.max(order + 1);
                pool.next_order = order + 1;
                let serials: Vec<Serial> = (0..u64::from(ORDER_PASSES))
                    .map(|i| Serial::from_random(next + i))
                    .collect();
                next += u64::from(ORDER_PASSES);
                let mint = env(Command::Mint {
                    order: OrderId(order),
                    serials,
                });
                let t = Instant::now();
                run(&[mint]);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// A hub reading the ledger page by page (`StreamRecords`): a page of 100 records at the end
/// of a log of about 10 MB (a mint of 100 000 passes, 60 000 redemptions), read from
/// the start of the log (the baseline: how every page was read before marks) and from the
/// last mark before it.
fn log_pages(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut ledger, mut pool) = set_up(dir.path());
    let mut run = |envs: &[Envelope]| execute(&mut ledger, envs);
    for _ in 0..60 {
        let envs: Vec<Envelope> = pool.take(1000, &mut run).into_iter().map(redeem).collect();
        run(&envs);
    }
    let (head, marks) = (ledger.head().seq, ledger.marks());
    let path = passnum::storage::log_path(dir.path());
    let end = marks.before(u64::MAX).offset;
    println!("log pages: {head} records, {:.1} MB", end as f64 / 1e6);
    let from = head - 99;
    let page = |start| {
        let mut n = 0;
        passnum::storage::log::scan_from(&path, start, head, None, |r| {
            n += u64::from(r.seq >= from);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 100);
    };
    let mut g = c.benchmark_group("log pages");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let start = passnum::storage::Mark::START;
    g.bench_function("baseline: last 100 records, read from the start", |b| {
        b.iter(|| page(start))
    });
    g.bench_function("last 100 records, read from the last mark", |b| {
        b.iter(|| page(marks.before(from)))
    });
    g.finish();
}

/// Passes in the index bench: deltas holding each once are folded onto a base of them all.
const INDEX_PASSES: u64 = 200_000;

/// The indexer's compaction (off the request path, but on the same two cores): ten deltas
/// that change every pass, folded into the next base.
fn index_compaction(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = passnum::storage::Index::open(dir.path()).unwrap();
    let mut state = State::default();
    for i in 0..INDEX_PASSES {
        state.load_pass(redeemed_pass(i));
    }
    let passes: Vec<Pass> = state.passes.values().cloned().collect();
    let of = |passes: &[Pass]| Changes {
        passes: passes.to_vec(),
        ..Changes::default()
    };
    index.write(&state, &of(&passes), 1, [0; 32]).unwrap();
    index.compact().unwrap();
    let mut seq = 1;
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    g.throughput(Throughput::Elements(INDEX_PASSES));
    g.bench_function("checkpoint 200000 passes in ten deltas", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for chunk in passes.chunks(passes.len() / 10) {
                    seq += 1;
                    index.write(&state, &of(chunk), seq, [0; 32]).unwrap();
                }
            }
            let took = t.elapsed();
            index.compact().unwrap();
            took
        })
    });
    g.bench_function("compact deltas of 200000 passes onto their base", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for chunk in passes.chunks(passes.len() / 10) {
                    seq += 1;
                    index.write(&state, &of(chunk), seq, [0; 32]).unwrap();
                }
                let t = Instant::now();
                index.compact().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, core_apply, durable, log_pages, index_compaction);
criterion_main!(benches);
