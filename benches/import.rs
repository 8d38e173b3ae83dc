//! Import of 20 000 rows of the national standard: CSV reading and validation, planning
//! against the registry, and the durable ledger record; the bare CSV split of the same file
//! is the baseline measured in the same run. Run with `cargo bench --bench import`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use passnum::domain::import::ImportScope;
use passnum::domain::*;
use passnum::engine::Ledger;
use passnum::opendata;
use std::time::{Duration, Instant};

const ROWS: usize = 20_000;

/// 20 000 places: one in ten a bus stop (buses of five stops), the rest fixed places, spread
/// over the communes of Gironde.
fn file() -> String {
    let mut s = opendata::header_line();
    for i in 0..ROWS {
        let (pivot, itinerance) = if i % 10 == 0 {
            (siret(900_000 + i / 50), "Itinérant")
        } else {
            (siret(i), "Fixe")
        };
        let mut cols = vec![String::new(); opendata::COLUMNS.len()];
        let set = |cols: &mut Vec<String>, name: &str, v: String| {
            let at = opendata::COLUMNS.iter().position(|c| *c == name).unwrap();
            cols[at] = v;
        };
        set(&mut cols, "id", format!("lieu-{i}"));
        set(&mut cols, "pivot", pivot);
        set(
            &mut cols,
            "nom",
            format!("\"Lieu {i}, médiation numérique\""),
        );
        set(&mut cols, "commune", "Bordeaux".into());
        set(&mut cols, "code_postal", "33000".into());
        set(&mut cols, "code_insee", format!("33{:03}", 1 + i % 550));
        set(
            &mut cols,
            "adresse",
            format!("{} rue de la République", i % 200),
        );
        set(&mut cols, "latitude", "44.837789".into());
        set(&mut cols, "longitude", "-0.5792".into());
        set(
            &mut cols,
            "horaires",
            "\"Mo-Fr 09:00-12:00,14:00-18:00\"".into(),
        );
        set(&mut cols, "itinerance", itinerance.into());
        set(&mut cols, "date_maj", "2026-09-01".into());
        set(
            &mut cols,
            "services",
            "Aide aux démarches administratives|Maîtrise des outils numériques du quotidien".into(),
        );
        set(
            &mut cols,
            "modalites_accompagnement",
            "Seul|Avec de l'aide".into(),
        );
        s.push_str(&cols.join(","));
        s.push_str("\r\n");
    }
    s
}

/// A SIRET that passes Luhn, made from a number.
fn siret(n: usize) -> String {
    let base = format!("{:013}", 1_000_000_000_000u64 + n as u64);
    (0..10)
        .map(|d| format!("{base}{d}"))
        .find(|s| luhn10_valid(s))
        .unwrap()
}

fn import(c: &mut Criterion) {
    let text = file();
    let mut g = c.benchmark_group("import 20000 rows");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("baseline: CSV split only", |b| {
        b.iter(|| opendata::records(&text).unwrap().len())
    });
    g.bench_function("read + validate", |b| {
        b.iter(|| opendata::read(&text).unwrap().0.len())
    });
    g.bench_function(
        "read + plan + durable record, into an empty registry",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
                    let t = Instant::now();
                    let (rows, rejected) = opendata::read(&text).unwrap();
                    assert!(rejected.is_empty(), "{:?}", rejected.first());
                    let env = Envelope {
                        request: None,
                        command: Command::ImportSites {
                            rows,
                            scope: ImportScope::All,
                        },
                    };
                    let answer = ledger
                        .execute_batch(Timestamp(0), &[&env])
                        .unwrap()
                        .remove(0);
                    total += t.elapsed();
                    assert!(
                        matches!(answer, Ok(Outcome::SitesImported(_))),
                        "{answer:?}"
                    );
                    ledger.close();
                }
                total
            })
        },
    );
    g.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
