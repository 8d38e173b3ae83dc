//! Growth pauses: how long the single slowest insert takes while the state's two big maps
//! (`passes`, `requests`) grow to `GROWTH_ENTRIES` (default 4 000 000; the scheme reaches
//! about 13 million). The writer inserts under the state's lock, so that insert's time is
//! a pause for every redemption in flight. The baseline, in the same run, is the standard
//! `HashMap`, which doubles in one step; `ShardedMap` is what the state uses.
//!
//! `cargo bench --bench growth`

use passnum::domain::*;

// The server's allocator: growth costs depend on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::collections::HashMap;

// Only the passes are shared with the other benches; the rest of the fixture is theirs.
#[allow(dead_code)]
#[path = "support/fixture.rs"]
mod fixture;
use fixture::{redeemed_pass, spread_serial};
use std::time::{Duration, Instant};

/// What a map must do here; implemented for both so one loop measures both.
trait Map<K, V> {
    fn put(&mut self, k: K, v: V);
}
impl<K: std::hash::Hash + Eq, V> Map<K, V> for HashMap<K, V> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
}
impl<K: std::hash::Hash + Eq, V> Map<K, V> for ShardedMap<K, V> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
}

struct Growth {
    total: Duration,
    slowest: Duration,
    /// Time spent in inserts slower than 1 ms: the pauses callers would feel.
    paused: Duration,
    /// How many inserts took over 1 ms.
    pauses: usize,
}

fn grow<K, V>(map: &mut impl Map<K, V>, n: u64, entry: impl Fn(u64) -> (K, V)) -> Growth {
    let mut g = Growth {
        total: Duration::ZERO,
        slowest: Duration::ZERO,
        paused: Duration::ZERO,
        pauses: 0,
    };
    for i in 0..n {
        let (k, v) = entry(i);
        let t = Instant::now();
        map.put(k, v);
        let took = t.elapsed();
        g.total += took;
        g.slowest = g.slowest.max(took);
        if took > Duration::from_millis(1) {
            g.paused += took;
            g.pauses += 1;
        }
    }
    g
}

fn pass(i: u64) -> (Serial, Pass) {
    let pass = redeemed_pass(i);
    (pass.serial, pass)
}

fn request(i: u64) -> (String, Remembered) {
    let r = Remembered {
        fingerprint: [i as u8; 32],
        seq: i,
        result: Ok(Outcome::Redeemed(Redeemed {
            serial: spread_serial(i),
            order: OrderId(1),
            amount: Cents(1000),
            at: Timestamp(i as i64),
            site: SiteId(1),
        })),
    };
    (format!("s:structure-{}/{:032x}", i % 100, i), r)
}

fn report(what: &str, n: u64, base: &Growth, sharded: &Growth) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, g) in [("HashMap (baseline)", base), ("ShardedMap", sharded)] {
        println!(
            "{what:<9} {name:<19} {n} inserts in {:>7.0} ms  slowest {:>8.3} ms  {:>4} inserts over 1 ms, {:>7.1} ms in all",
            ms(g.total),
            ms(g.slowest),
            g.pauses,
            ms(g.paused)
        );
    }
    println!(
        "{what:<9} ratio sharded / baseline: slowest insert {:.3}, total time {:.2}",
        ms(sharded.slowest) / ms(base.slowest),
        ms(sharded.total) / ms(base.total)
    );
}

fn main() {
    let n: u64 = std::env::var("GROWTH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    let base = grow(&mut HashMap::new(), n, pass);
    let sharded = grow(&mut ShardedMap::new(), n, pass);
    report("passes", n, &base, &sharded);
    let base = grow(&mut HashMap::new(), n, request);
    let sharded = grow(&mut ShardedMap::new(), n, request);
    report("requests", n, &base, &sharded);
}
