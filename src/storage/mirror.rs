//! A copy of the ledger kept by someone who does not run it (a hub, an auditor), in the
//! log's own format, so that `passnum verify-log` checks it with nothing else.
//!
//! It only ever grows by records that follow it: each frame the server sends is decoded
//! and hashed here, its sequence number and previous-hash link checked against the copy's
//! last record, and its postings summed. A server that rewrote a record the copy already
//! holds cannot extend it: its next record does not link to the copy's. The copy is read
//! whole and checked each time it is opened, so a change to it is found too.

use super::frame::{self, LedgerRecord};
use super::log::{self, LogError, Mark};
use crate::code::hex;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Bytes of records held before they are written: a page of the ledger is far larger.
const PENDING_BYTES_MAX: usize = 8 << 20;

#[derive(Debug)]
pub enum MirrorError {
    Io(io::Error),
    /// Another process holds the copy open to extend it.
    Busy,
    /// The copy itself does not verify: it is left as it is.
    Damaged(LogError),
    /// What the server sent cannot extend the copy: nothing of it is kept.
    Refused {
        seq: u64,
        what: String,
    },
}

impl std::fmt::Display for MirrorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MirrorError::Io(e) => write!(f, "the copy: {e}"),
            MirrorError::Busy => write!(f, "the copy is being extended by another process"),
            MirrorError::Damaged(e) => write!(f, "the copy does not verify: {e}"),
            MirrorError::Refused { seq, what } => {
                write!(
                    f,
                    "record {seq} from the server cannot extend the copy: {what}"
                )
            }
        }
    }
}

impl From<io::Error> for MirrorError {
    fn from(e: io::Error) -> Self {
        MirrorError::Io(e)
    }
}

pub struct Mirror {
    /// Locked for as long as the mirror lives: two writers would interleave frames.
    file: File,
    /// After the last record checked, written or not.
    head: Mark,
    /// Checked frames not yet written, in order.
    pending: Vec<u8>,
}

impl Mirror {
    /// Opens the copy at `path` (created empty if missing) and checks it whole: every
    /// frame, the chain, each record's postings. The remains of a write that did not
    /// finish (a run interrupted) are cut off; anything else wrong stops here.
    pub fn open(path: &Path) -> Result<Mirror, MirrorError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => MirrorError::Busy,
            std::fs::TryLockError::Error(e) => MirrorError::Io(e),
        })?;
        let scan = log::scan(path, super::balanced).map_err(MirrorError::Damaged)?;
        if file.metadata()?.len() > scan.end {
            file.set_len(scan.end)?;
            file.sync_all()?;
        }
        Ok(Mirror {
            file,
            head: scan.mark(),
            pending: Vec::new(),
        })
    }

    /// The copy's last record (written or pending): its sequence number and hash.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head.seq, self.head.hash)
    }

    /// Checks `frame`, sent as record `seq` with hash `hash_hex`, and queues it to be
    /// written after the copy's last record.
    pub fn append(&mut self, seq: u64, frame: &[u8], hash_hex: &str) -> Result<(), MirrorError> {
        let rec = self.follows(seq, frame, hash_hex)?;
        self.pending.extend_from_slice(frame);
        self.head = Mark {
            seq: rec.seq,
            offset: self.head.offset + frame.len() as u64,
            hash: rec.hash,
        };
        if self.pending.len() >= PENDING_BYTES_MAX {
            self.write()?;
        }
        Ok(())
    }

    /// Writes what is pending and makes it durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.write()?;
        self.file.sync_data()
    }

    fn write(&mut self) -> io::Result<()> {
        // Appended at the checked end (the file is opened to append): `open` cut anything
        // after it.
        (&self.file).write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    fn follows(&self, seq: u64, frame: &[u8], hash_hex: &str) -> Result<LedgerRecord, MirrorError> {
        let expected = self.head.seq + 1;
        let refused = |what: String| MirrorError::Refused {
            seq: expected,
            what,
        };
        let (rec, used) = frame::decode(frame).map_err(|e| refused(e.to_string()))?;
        if used != frame.len() {
            return Err(refused(format!(
                "{} bytes after its frame",
                frame.len() - used
            )));
        }
        if rec.seq != expected || seq != expected {
            return Err(refused(format!(
                "record {} came next (sent as {seq}): every record is needed, so the \
                 credential must read the whole ledger (operator or hub)",
                rec.seq
            )));
        }
        if rec.prev_hash != self.head.hash {
            return Err(refused(format!(
                "it does not follow record {} of the copy: the server's ledger is not the \
                 one copied",
                self.head.seq
            )));
        }
        if hex(&rec.hash) != hash_hex {
            return Err(refused(
                "the hash it is sent with is not its frame's".into(),
            ));
        }
        if !rec.body.postings_balance() {
            return Err(refused("its postings do not balance".into()));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Account, CommanditaireId, Posting, Timestamp};
    use crate::storage::frame::tests::body;

    /// Frames 1..=n of one chain, with their hashes.
    fn chain(n: u64) -> Vec<(Vec<u8>, [u8; 32])> {
        let mut prev = [0; 32];
        (1..=n)
            .map(|seq| {
                let (f, h) = frame::encode(seq, Timestamp(seq as i64), &prev, &body(seq));
                prev = h;
                (f, h)
            })
            .collect()
    }

    fn add(m: &mut Mirror, seq: u64, f: &(Vec<u8>, [u8; 32])) -> Result<(), MirrorError> {
        m.append(seq, &f.0, &hex(&f.1))
    }

    fn refused_at(r: Result<(), MirrorError>) -> u64 {
        match r {
            Err(MirrorError::Refused { seq, .. }) => seq,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_copy_grows_only_by_the_records_that_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.log");
        let frames = chain(4);
        let mut m = Mirror::open(&path).unwrap();
        assert_eq!(m.head(), (0, [0; 32]));
        add(&mut m, 1, &frames[0]).unwrap();
        add(&mut m, 2, &frames[1]).unwrap();
        // Record 4 after 2: a gap, as a credential that reads part of the ledger sees.
        assert_eq!(refused_at(add(&mut m, 4, &frames[3])), 3);
        // Record 2 again, or sent under another number than its own.
        assert_eq!(refused_at(add(&mut m, 3, &frames[1])), 3);
        // A record 3 of another history: it does not link to the copy's record 2.
        let (other, other_hash) = frame::encode(3, Timestamp(3), &[7; 32], &body(3));
        assert_eq!(refused_at(m.append(3, &other, &hex(&other_hash))), 3);
        // The right frame with a hash that is not its own, or with bytes after it.
        assert_eq!(refused_at(m.append(3, &frames[2].0, &hex(&[1; 32]))), 3);
        let mut longer = frames[2].0.clone();
        longer.push(0);
        assert_eq!(refused_at(m.append(3, &longer, &hex(&frames[2].1))), 3);
        // A record whose postings do not sum to zero, however well it is framed.
        let mut lopsided = body(3);
        lopsided.postings = vec![Posting {
            account: Account::Funds(CommanditaireId(3)),
            amount: 500,
        }];
        let (f, h) = frame::encode(3, Timestamp(3), &frames[1].1, &lopsided);
        assert_eq!(refused_at(m.append(3, &f, &hex(&h))), 3);
        add(&mut m, 3, &frames[2]).unwrap();
        m.sync().unwrap();
        drop(m);

        // Reopened, checked whole: it holds exactly the three frames, and goes on from them.
        let mut m = Mirror::open(&path).unwrap();
        assert_eq!(m.head(), (3, frames[2].1));
        add(&mut m, 4, &frames[3]).unwrap();
        m.sync().unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(
            written,
            frames.iter().flat_map(|f| f.0.clone()).collect::<Vec<u8>>()
        );
        let scan = log::scan(&path, |_| Ok(())).unwrap();
        assert_eq!((scan.records, scan.head_hash), (4, frames[3].1));
    }

    #[test]
    fn an_interrupted_write_is_cut_and_a_damaged_copy_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.log");
        let frames = chain(3);
        let whole: Vec<u8> = frames[..2].iter().flat_map(|f| f.0.clone()).collect();
        let mut torn = whole.clone();
        torn.extend_from_slice(&frames[2].0[..frames[2].0.len() / 2]);
        std::fs::write(&path, &torn).unwrap();
        let mut m = Mirror::open(&path).unwrap();
        assert_eq!(m.head(), (2, frames[1].1));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            whole,
            "the half frame is cut"
        );
        add(&mut m, 3, &frames[2]).unwrap();
        m.sync().unwrap();
        drop(m);

        let mut damaged = std::fs::read(&path).unwrap();
        damaged[40] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        match Mirror::open(&path) {
            Err(MirrorError::Damaged(LogError::Corrupt { seq: 1, .. })) => {}
            other => panic!(
                "expected damage at record 1, got {:?}",
                other.map(|m| m.head())
            ),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "nothing is cut or added"
        );
    }

    #[test]
    fn a_copy_holding_a_record_that_does_not_balance_is_refused_where_it_lies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.log");
        let first = chain(1).remove(0);
        let mut lopsided = body(2);
        lopsided.postings = vec![Posting {
            account: Account::Funds(CommanditaireId(2)),
            amount: 1,
        }];
        let (second, _) = frame::encode(2, Timestamp(2), &first.1, &lopsided);
        std::fs::write(&path, [first.0.clone(), second].concat()).unwrap();
        let at = first.0.len() as u64;
        // Whole and hash-chained, yet money appears from nowhere: both readers stop there.
        match crate::storage::verify_log(&path) {
            Err(crate::storage::StoreError::Log(LogError::Corrupt { seq, offset, what })) => {
                assert_eq!(
                    (seq, offset, what.as_str()),
                    (2, at, "postings do not balance")
                )
            }
            other => panic!(
                "expected the record to be refused, got {:?}",
                other.map(|s| s.0)
            ),
        }
        match Mirror::open(&path) {
            Err(MirrorError::Damaged(LogError::Corrupt { seq: 2, offset, .. })) => {
                assert_eq!(offset, at)
            }
            other => panic!(
                "expected damage at record 2, got {:?}",
                other.map(|m| m.head())
            ),
        }
    }

    #[test]
    fn one_process_at_a_time_extends_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.log");
        let first = Mirror::open(&path).unwrap();
        assert!(matches!(Mirror::open(&path), Err(MirrorError::Busy)));
        drop(first);
        Mirror::open(&path).unwrap();
    }

    #[test]
    fn a_copy_in_a_directory_that_is_not_there_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none").join("copy.log");
        assert!(matches!(Mirror::open(&missing), Err(MirrorError::Io(_))));
    }
}
