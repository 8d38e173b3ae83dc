//! Recovery on real files: torn tails are cut back to whole records, damage in the middle
//! stops start-up naming the record, and a lost or damaged index is rebuilt identically
//! from the log.

use passnum::domain::*;
use passnum::engine::Ledger;
use passnum::storage::{log_path, LogError, StoreError};
use std::path::Path;

fn label(s: &str) -> Label {
    Label::parse(s).unwrap()
}

/// Writes `n` records, one batch each; returns the byte offset where each record starts,
/// and where the last one ends (the log's zeros, its reserve, follow).
fn write_records(dir: &Path, n: usize) -> (Vec<u64>, usize) {
    write_named(dir, n, "commune");
    let bytes = std::fs::read(log_path(dir)).unwrap();
    let mut starts = vec![];
    let mut at = 0;
    while let Ok((len, _)) = passnum::storage::frame::decode_header(&bytes[at..]) {
        starts.push(at as u64);
        at += len;
    }
    assert_eq!(starts.len(), n);
    (starts, at)
}

fn write_named(dir: &Path, n: usize, prefix: &str) {
    let mut ledger = Ledger::open(dir, Rules::default()).unwrap();
    for i in 0..n {
        let env = Envelope {
            request: None,
            command: Command::RegisterCommanditaire {
                name: label(&format!("{prefix} {i}")),
            },
        };
        ledger
            .execute_batch(Timestamp(1_000 + i as i64), &[&env])
            .unwrap()
            .remove(0)
            .unwrap();
    }
}

fn copy_log_only(from: &Path, to: &Path) {
    std::fs::copy(log_path(from), log_path(to)).unwrap();
}

/// A crash mid-write leaves the last batch cut short: at the end of the file (a log that
/// grew), or followed by the zeros of the reserve (a log written ahead).
#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let src = tempfile::tempdir().unwrap();
    let (starts, last_end) = write_records(src.path(), 4);
    let full = std::fs::read(log_path(src.path())).unwrap();
    assert!(
        full.len() > last_end,
        "the log is written ahead of its records"
    );
    let last_start = *starts.last().unwrap() as usize;
    let expected_head = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), &full[..last_start]).unwrap();
        Ledger::open(dir.path(), Rules::default()).unwrap().head()
    };
    assert_eq!(expected_head.seq, 3);
    for cut in last_start + 1..last_end {
        let zeros_after = full[cut..last_end].iter().all(|b| *b == 0);
        for reserve in [0, 4096] {
            if zeros_after && reserve > 0 {
                continue; // the zeros complete the record: it is whole, not torn
            }
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = full[..cut].to_vec();
            bytes.resize(cut + reserve, 0);
            std::fs::write(log_path(dir.path()), &bytes).unwrap();
            let ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
            let at = format!("cut at byte {cut}, {reserve} zeros after");
            assert_eq!(ledger.head(), expected_head, "{at}");
            assert_eq!(ledger.state().commanditaires.len(), 3, "{at}");
            drop(ledger);
            assert_eq!(
                std::fs::metadata(log_path(dir.path())).unwrap().len() as usize,
                last_start,
                "the torn tail is cut off: {at}"
            );
        }
    }
}

#[test]
fn zeros_after_the_last_record_are_the_reserve_kept_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (_, last_end) = write_records(dir.path(), 2);
    let len = std::fs::metadata(log_path(dir.path())).unwrap().len();
    let (_, _, recovery) = passnum::storage::Store::open(dir.path()).unwrap();
    assert_eq!((recovery.records, recovery.torn_bytes), (2, 0));
    assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), len);
    let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
    assert_eq!(ledger.head().seq, 2);
    let env = Envelope {
        request: None,
        command: Command::RegisterCommanditaire {
            name: label("commune 2"),
        },
    };
    ledger.execute_batch(Timestamp(5_000), &[&env]).unwrap();
    drop(ledger);
    let bytes = std::fs::read(log_path(dir.path())).unwrap();
    let (third, _) = passnum::storage::frame::decode_header(&bytes[last_end..]).unwrap();
    assert_eq!(
        std::fs::metadata(log_path(dir.path())).unwrap().len(),
        len,
        "the third record overwrote the reserve: the file did not grow"
    );
    assert!(bytes[last_end + third..].iter().all(|b| *b == 0));
    assert_eq!(
        Ledger::open(dir.path(), Rules::default())
            .unwrap()
            .head()
            .seq,
        3
    );
}

/// Damage to a record that is followed by more records, or by anything but zeros, is not
/// a torn tail: start-up stops rather than cut acknowledged records.
#[test]
fn a_bad_record_with_data_after_it_in_the_reserve_stops_start_up() {
    let src = tempfile::tempdir().unwrap();
    let (starts, last_end) = write_records(src.path(), 3);
    let mut bytes = std::fs::read(log_path(src.path())).unwrap();
    bytes[starts[2] as usize + 20] ^= 0x01;
    bytes[last_end + 100] = 0x5a;
    std::fs::write(log_path(src.path()), &bytes).unwrap();
    match Ledger::open(src.path(), Rules::default()) {
        Err(StoreError::Log(LogError::Corrupt { seq, offset, .. })) => {
            assert_eq!((seq, offset), (3, starts[2]));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("damage followed by data was taken for a torn tail"),
    }
}

/// A reader of the live log stops at the record it was told is durable and never reads
/// the batch being written after it, which may look like damage until its write ends.
#[test]
fn a_scan_up_to_a_record_never_reads_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, last_end) = write_records(dir.path(), 3);
    let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
    bytes[last_end + 3] = 0x5a;
    bytes[last_end + 300] = 0x5a;
    std::fs::write(log_path(dir.path()), &bytes).unwrap();
    let path = log_path(dir.path());
    let mut seen = vec![];
    let scan = passnum::storage::log::scan_upto(&path, 3, |r| {
        seen.push(r.seq);
        Ok(())
    })
    .unwrap();
    assert_eq!((seen, scan.records), (vec![1, 2, 3], 3));
    assert!(passnum::storage::verify_log_upto(&path, 2).is_ok());
    assert!(
        matches!(
            passnum::storage::verify_log(&path),
            Err(StoreError::Log(LogError::Corrupt { seq: 4, .. }))
        ),
        "a whole scan reads the bytes past record 3 and stops there"
    );
}

#[test]
fn a_flipped_byte_in_the_middle_stops_start_up_naming_the_record() {
    let src = tempfile::tempdir().unwrap();
    let (starts, _) = write_records(src.path(), 4);
    let full = std::fs::read(log_path(src.path())).unwrap();
    let (from, to) = (starts[1] as usize, starts[2] as usize);
    for at in from..to {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = full.clone();
        bytes[at] ^= 0x01;
        std::fs::write(log_path(dir.path()), &bytes).unwrap();
        match Ledger::open(dir.path(), Rules::default()) {
            Err(StoreError::Log(LogError::Corrupt { seq, offset, .. })) => {
                assert_eq!((seq, offset), (2, starts[1]), "flip at byte {at}");
            }
            Err(e) => panic!("flip at byte {at}: unexpected error {e}"),
            Ok(_) => panic!("flip at byte {at} went unnoticed"),
        }
    }
}

/// Writes five records; returns the state and head a ledger opened on them has.
fn five_records_and_their_state(dir: &Path) -> (State, passnum::engine::Head) {
    write_records(dir, 5);
    let l = Ledger::open(dir, Rules::default()).unwrap();
    let snapshot = (l.state().clone(), l.head());
    snapshot
}

#[test]
fn a_lost_index_is_rebuilt_with_the_same_state_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let (state, head) = five_records_and_their_state(dir.path());
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let rebuilt = Ledger::open(dir.path(), Rules::default()).unwrap();
    assert_eq!(*rebuilt.state(), state);
    assert_eq!(rebuilt.head(), head);
}

#[test]
fn a_damaged_index_run_stops_start_up_and_a_rebuild_restores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (state, head) = five_records_and_their_state(dir.path());
    let runs = dir
        .path()
        .join("index")
        .join(passnum::storage::runs::RUNS_DIR);
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&run).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&run, bytes).unwrap();
    match Ledger::open(dir.path(), Rules::default()) {
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("another hash") && e.contains("rebuild"), "{e}");
        }
        Ok(_) => panic!("a damaged run was loaded"),
    }
    passnum::storage::Store::rebuild_index(dir.path()).unwrap();
    let rebuilt = Ledger::open(dir.path(), Rules::default()).unwrap();
    assert_eq!(*rebuilt.state(), state);
    assert_eq!(rebuilt.head(), head);
}

#[test]
fn an_index_from_another_log_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_records(a.path(), 3);
    write_named(b.path(), 1, "other");
    // b's index says record 1 is b's record 1; a's log has another record 1.
    std::fs::remove_file(log_path(b.path())).unwrap();
    copy_log_only(a.path(), b.path());
    match Ledger::open(b.path(), Rules::default()) {
        Err(StoreError::IndexMismatch { seq: 1 }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a foreign index was accepted"),
    }
}

#[test]
fn an_index_ahead_of_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (starts, _) = write_records(dir.path(), 3);
    let bytes = std::fs::read(log_path(dir.path())).unwrap();
    std::fs::write(log_path(dir.path()), &bytes[..starts[2] as usize]).unwrap();
    match Ledger::open(dir.path(), Rules::default()) {
        Err(StoreError::IndexAhead {
            index_seq: 3,
            log_seq: 2,
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an index ahead of its log was accepted"),
    }
}

mod any_tail {
    use super::*;
    use proptest::prelude::*;

    /// Four records' starts, where the last ends, and the log's bytes: written once.
    fn four_records() -> &'static (Vec<u64>, usize, Vec<u8>) {
        static LOG: std::sync::OnceLock<(Vec<u64>, usize, Vec<u8>)> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let src = tempfile::tempdir().unwrap();
            let (starts, last_end) = write_records(src.path(), 4);
            (
                starts,
                last_end,
                std::fs::read(log_path(src.path())).unwrap(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        /// Whatever follows the fourth record's first `cut` bytes (the rest of a torn
        /// write: any bytes, then zeros), start-up either opens on the first three records
        /// or the four, or stops on damage there; it never panics, never invents a record,
        /// and a tail of zeros alone is always the reserve.
        #[test]
        fn any_tail_opens_on_a_prefix_or_stops(
            cut in 0usize..200,
            junk in proptest::collection::vec(any::<u8>(), 0..64),
            zeros in 0usize..8192,
        ) {
            let (starts, last_end, full) = four_records();
            let at = starts[3] as usize + cut.min(last_end - starts[3] as usize);
            let mut bytes = full[..at].to_vec();
            bytes.extend_from_slice(&junk);
            bytes.resize(bytes.len() + zeros, 0);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(log_path(dir.path()), &bytes).unwrap();
            let opened = passnum::storage::Store::open(dir.path());
            if junk.iter().all(|b| *b == 0) && at == starts[3] as usize {
                let (_, _, recovery) = opened.unwrap();
                prop_assert_eq!((recovery.records, recovery.torn_bytes), (3, 0));
                return Ok(());
            }
            match opened {
                Ok((store, _, recovery)) => {
                    prop_assert!(recovery.records == 3 || recovery.records == 4);
                    let head = store.log.mark().seq;
                    prop_assert_eq!(head, recovery.records);
                }
                // Damage is named at the first record that is not whole: the fourth, or
                // a fifth made of the junk.
                Err(StoreError::Log(LogError::Corrupt { seq, .. })) => {
                    prop_assert!(seq == 4 || seq == 5, "damage named at {}", seq)
                }
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }
    }
}

/// Ledgers written by the version of December 2026 still read: every record decodes and
/// encodes back to its exact bytes, the chain and the money invariants hold, and a store
/// opens on them. A change to a record's types that would break the logs already written
/// (a variant inserted before others, a field moved) fails here. Between them they hold
/// all 22 kinds of fact, and refusals remembered for their request ids:
/// - `ledger-2026-12.log`: the demo's day (`passnum demo`), a site import, a credential
///   issued then revoked;
/// - `ledger-2026-12-clearing.log`: written by a test's server on its own clock: IBANs
///   set, a site closed, three redemptions for two structures, a clearing run on February
///   1st, one settlement paid and one returned, then the expiry sweep a year on;
/// - `ledger-2026-12-offline.log`: the same way: the open-data file imported, then again
///   with a site's opening hours changed; a bus's credential valid 30 days and one asked
///   for 401 days; a bus's offline scans: one two days old, one past the window, one
///   ahead of the clock;
/// - `ledger-2026-12-fees.log`: the same way, with a 4 % fee: an order and its fee; a bus
///   syncs two scans ten days old, reverses one an hour later, and is refused the other's
///   reversal a day after the sync.
#[test]
fn ledgers_written_by_an_earlier_version_still_read_byte_for_byte() {
    let demo = golden(
        "ledger-2026-12.log",
        21,
        "3877ea7fe65fd19eb26296eda485a9bda61835137ea9ec6c1628ddfc431c0f0a",
    );
    assert_eq!(
        demo,
        [
            "CarnetDistributed",
            "CommanditaireRegistered",
            "CredentialIssued",
            "CredentialRevoked",
            "OrderCreated",
            "OrderFunded",
            "PassCancelled",
            "PassRedeemed",
            "PassesMinted",
            "RedemptionReversed",
            "SiteRegistered",
            "StructureRegistered",
            "WorkshopHeld",
            "refused ALREADY_REDEEMED",
            "refused NOT_ACTIVATED",
            "refused OUTSIDE_PERIMETER",
        ]
    );
    let clearing = golden(
        "ledger-2026-12-clearing.log",
        24,
        "eedbdc87e14eb393109a790f17ce86ecec36f022501e6bc7bc940ddea761ad72",
    );
    assert_eq!(
        clearing,
        [
            "CommanditaireRegistered",
            "CredentialIssued",
            "OrderCreated",
            "OrderFunded",
            "OrderSwept",
            "PassExpired",
            "PassRedeemed",
            "PassesMinted",
            "SettlementCreated",
            "SettlementStatusSet",
            "SiteActivitySet",
            "SiteRegistered",
            "StructureIbanSet",
            "StructureRegistered",
        ]
    );
    let offline = golden(
        "ledger-2026-12-offline.log",
        19,
        "7e448b4abe459dfc409760d7dbfe19ddebea43c2e1d8c2ab2bb3657129df62ae",
    );
    assert_eq!(
        offline,
        [
            "CommanditaireRegistered",
            "CredentialExpires",
            "CredentialIssued",
            "OrderCreated",
            "OrderFunded",
            "PassRedeemed",
            "PassesMinted",
            "SiteRegistered",
            "SiteUpdated",
            "StructureRegistered",
            "refused CREDENTIAL_LIFETIME_OUT_OF_RANGE",
            "refused SCAN_IN_FUTURE",
            "refused SCAN_TOO_OLD",
        ]
    );
    let fees = golden(
        "ledger-2026-12-fees.log",
        17,
        "77c5a9f54186ceda65c99bf32b8ed1a9459b8be77f5be21218ae4e98e18f0682",
    );
    assert_eq!(
        fees,
        [
            "CommanditaireRegistered",
            "CredentialExpires",
            "CredentialIssued",
            "OrderCreated",
            "OrderFee",
            "OrderFunded",
            "PassRedeemed",
            "PassesMinted",
            "RedemptionReversed",
            "SiteRegistered",
            "StructureRegistered",
            "refused REVERSAL_WINDOW_CLOSED",
        ]
    );
}

/// Reads the golden ledger `name` (see above) every way there is; returns the kinds of
/// fact it holds, in order.
/// A frozen ledger in `tests/fixtures`.
fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden(name: &str, records: u64, head: &str) -> Vec<String> {
    use passnum::storage::frame;
    let fixture = fixture(name);
    let (scan, _) = passnum::storage::verify_log(&fixture).unwrap();
    assert_eq!(scan.records, records, "{name}");
    assert_eq!(passnum::code::hex(&scan.head_hash), head, "{name}");
    let bytes = std::fs::read(&fixture).unwrap();
    let mut at = 0;
    let mut kinds = std::collections::BTreeSet::new();
    while at < bytes.len() {
        let (rec, used) = frame::decode(&bytes[at..]).unwrap();
        let (again, hash) = frame::encode(rec.seq, rec.at, &rec.prev_hash, &rec.body);
        assert_eq!(again, &bytes[at..at + used], "{name}: record {}", rec.seq);
        assert_eq!(hash, rec.hash);
        for fact in &rec.body.facts {
            kinds.insert(match serde_json::to_value(fact).unwrap() {
                serde_json::Value::Object(m) => m.keys().next().unwrap().clone(),
                other => other.to_string(),
            });
        }
        if let Err(refusal) = &rec.body.result {
            kinds.insert(format!("refused {}", refusal.reason()));
        }
        at += used;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, log_path(dir.path())).unwrap();
    let ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
    assert_eq!(ledger.head().seq, records, "{name}");
    kinds.into_iter().collect()
}

/// Two hubs compare their copies at a common record: the same history gives the same hash
/// there; two histories that parted give different ones, and `verify-log --at --expect`
/// says so with exit code 4. (The two golden logs stand for two histories a server could
/// have shown two hubs.)
#[test]
fn two_copies_are_compared_at_a_common_record() {
    use passnum::cli_mirror::hash_at;
    let (one, other) = (
        fixture("ledger-2026-12.log"),
        fixture("ledger-2026-12-clearing.log"),
    );
    let bytes = std::fs::read(&one).unwrap();
    let (mut at, mut tenth) = (0, None);
    while at < bytes.len() {
        let (rec, used) = passnum::storage::frame::decode(&bytes[at..]).unwrap();
        if rec.seq == 10 {
            tenth = Some(passnum::code::hex(&rec.hash));
        }
        at += used;
    }
    let tenth = tenth.unwrap();
    assert_eq!(hash_at(&one, 10, None).unwrap(), tenth);
    assert_eq!(
        hash_at(&one, 10, Some(&tenth.to_uppercase())).unwrap(),
        tenth
    );
    let theirs = hash_at(&other, 10, None).unwrap();
    let differ = hash_at(&one, 10, Some(&theirs)).unwrap_err().to_string();
    assert!(differ.contains("the two histories differ"), "{differ}");
    let short = hash_at(&one, 22, None).unwrap_err().to_string();
    assert!(short.contains("holds 21 records"), "{short}");

    let compare = |expect: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_passnum"))
            .arg("verify-log")
            .arg(&one)
            .args(["--at", "10", "--expect", expect])
            .output()
            .unwrap()
    };
    assert_eq!(compare(&theirs).status.code(), Some(4));
    let run = compare(&tenth);
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stdout).contains(&tenth));
}
