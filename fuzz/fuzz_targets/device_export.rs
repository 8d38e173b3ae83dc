//! Fuzz target: a device's export (`passnum sync-scans`) is read and grouped into requests
//! without a panic, and no row is lost or doubled: each data row is sent (alone, or in its
//! session's workshop) or answered invalid, once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::cli_scans::{group, read, Sending};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok((scans, unreadable)) = read(text) else { return };
    let rows = passnum::opendata::records(text).expect("read it").len() - 1;
    assert_eq!(scans.len() + unreadable.len(), rows);
    let (sendings, disagreeing) = group(scans);
    let mut lines: Vec<u32> = unreadable.iter().chain(&disagreeing).map(|r| r.line).collect();
    for s in &sendings {
        match s {
            Sending::Scan(s) => lines.push(s.line),
            Sending::Workshop(w) => {
                assert_eq!(w.request().passes.len(), w.scans.len());
                lines.extend(w.scans.iter().map(|s| s.line));
            }
        }
    }
    let count = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!((lines.len(), count), (rows, rows), "every row once");
});
