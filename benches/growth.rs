//! Growth pauses: how long the single slowest insert takes while the state's two big maps
//! (`passes`, `requests`) grow to `GROWTH_ENTRIES` (default 4 000 000; the scheme reaches
//! about 13 million). The writer inserts under the state's lock, so that insert's time is
//! a pause for every redemption in flight. The baseline, in the same run, is the standard
//! `HashMap`, which doubles in one step; `ShardedMap` is what the state uses.
//!
//! Then memory: the heap bytes one entry costs (a redeemed pass, an active pass, a
//! remembered request), against the same entry's encoded size. Last, the pause of
//! forgetting a credential's requests, which reads them all.
//!
//! `cargo bench --bench growth`

use passnum::domain::*;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's allocator (growth costs depend on it), counting the bytes it has lent out,
/// so the bench can say what one entry of each map costs in memory.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to mimalloc; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

/// The hashes of the credentials the requests come from: one per site, 100 sites.
fn credential(i: u64) -> [u8; 32] {
    [(i % 100) as u8 + 1; 32]
}

fn request(i: u64) -> (RequestDigest, Remembered) {
    let key = RequestKey {
        scope: credential(i)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        id: format!("{i:032x}"),
        fingerprint: [i as u8; 32],
    };
    let answer = Ok(Outcome::Redeemed(Redeemed {
        serial: spread_serial(i),
        order: OrderId(1),
        amount: Cents(1000),
        at: Timestamp(i as i64),
        site: SiteId(1),
    }));
    (key.digest(), Remembered::of(i, &key, answer))
}

/// The pause of forgetting one credential's requests (1 % of them, `Fact::RequestsForgotten`)
/// under the writer's lock, against the baseline of reading every remembered request once.
fn forgetting(n: u64) {
    let mut state = State::default();
    for i in 0..100 {
        let site = Role::Site(SiteId(i + 1));
        state.credentials.insert(
            credential(i),
            Credential {
                role: site,
                revoked_at: Some(Timestamp(0)),
                expires_at: None,
                requests_forgotten: false,
            },
        );
    }
    state.requests = (0..n).map(request).collect();
    let t = Instant::now();
    let seqs: u64 = state.requests.values().map(|r| r.seq).sum();
    let read = t.elapsed();
    let body = RecordBody {
        request: None,
        facts: vec![Fact::RequestsForgotten {
            token_hashes: vec![credential(7)],
        }],
        postings: vec![],
        result: Ok(Outcome::RequestsForgotten { credentials: 1 }),
    };
    let t = Instant::now();
    state.apply(1, Timestamp(1), &body);
    let forget = t.elapsed();
    assert_eq!(
        state.requests.len() as u64,
        n - n / 100,
        "1 % forgotten ({seqs})"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "forget    1 credential of 100 over {n} requests: {:>7.1} ms; reading every one {:>7.1} ms; ratio {:.2}",
        ms(forget),
        ms(read),
        ms(forget) / ms(read)
    );
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
    let encoded = |(_, p): &(Serial, Pass)| postcard::to_allocvec(p).unwrap().len();
    memory("passes", n, pass, encoded);
    // Most of the scheme's passes are live and unredeemed at any time.
    let active = |i| {
        let (serial, mut pass) = pass(i);
        (pass.status, pass.redeemed) = (PassStatus::Active, None);
        (serial, pass)
    };
    memory("active", n, active, encoded);
    memory("requests", n, request, |(k, r)| {
        k.0.len() + postcard::to_allocvec(r).unwrap().len()
    });
    forgetting(n);
}

/// Heap bytes per entry of a `ShardedMap` grown to `n` entries, against the baseline of the
/// same entry's bytes in the index (its postcard encoding, and the key for a request).
fn memory<K: std::hash::Hash + Eq, V>(
    what: &str,
    n: u64,
    entry: impl Fn(u64) -> (K, V),
    encoded: impl Fn(&(K, V)) -> usize,
) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut map = ShardedMap::new();
    for i in 0..n {
        let (k, v) = entry(i);
        map.insert(k, v);
    }
    let per_entry = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
    let on_disk = encoded(&entry(n / 2)) as f64;
    println!(
        "{what:<9} memory: {per_entry:.0} B per entry (entry itself {} B), {on_disk:.0} B encoded; ratio {:.1}",
        std::mem::size_of::<(K, V)>(),
        per_entry / on_disk
    );
    drop(map);
}
