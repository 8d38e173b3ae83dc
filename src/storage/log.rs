//! The ledger log: one append-only file of frames, the single source of truth.
//! Appends are written whole and made durable with `fdatasync` (`File::sync_data`), once
//! for however many batches were appended since the last one: the group commit.

use super::frame::{self, FrameError, LedgerRecord, HASH_BYTES, HEADER_BYTES};
use crate::domain::{RecordBody, Timestamp};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOG_FILE: &str = "ledger.log";

#[derive(Debug)]
pub enum LogError {
    Io(io::Error),
    /// A record in the middle of the log is damaged: start-up stops and names it.
    Corrupt {
        seq: u64,
        offset: u64,
        what: String,
    },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "ledger log I/O: {e}"),
            LogError::Corrupt { seq, offset, what } => {
                write!(
                    f,
                    "ledger log is damaged at record {seq} (byte offset {offset}): {what}"
                )
            }
        }
    }
}

impl From<io::Error> for LogError {
    fn from(e: io::Error) -> Self {
        LogError::Io(e)
    }
}

/// What a scan found at the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub records: u64,
    /// Offset just past the last whole record.
    pub end: u64,
    pub head_hash: [u8; 32],
    /// Bytes past `end` that are the remains of an interrupted write.
    pub torn_bytes: u64,
}

/// Reads every record from the start, checking frames and the hash chain, and hands each
/// to `visit`. A torn tail is reported in `Scan`, never silently read past.
pub fn scan(
    path: &Path,
    mut visit: impl FnMut(&LedgerRecord) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Scan {
                records: 0,
                end: 0,
                head_hash: [0; 32],
                torn_bytes: 0,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut head = [0u8; 32];
    let mut seq = 0u64;
    let mut buf = Vec::new();
    while offset < file_len {
        let remaining = file_len - offset;
        let corrupt = |what: String| LogError::Corrupt {
            seq: seq + 1,
            offset,
            what,
        };
        let torn = Scan {
            records: seq,
            end: offset,
            head_hash: head,
            torn_bytes: remaining,
        };
        if remaining < HEADER_BYTES as u64 {
            return Ok(torn);
        }
        buf.resize(HEADER_BYTES, 0);
        reader.read_exact(&mut buf)?;
        let frame_len = match frame::decode_header(&buf) {
            Ok((len, _)) => len as u64,
            Err(_) if rest_is_zero(&mut reader, &buf)? => return Ok(torn),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if frame_len > remaining {
            return Ok(torn);
        }
        buf.resize(frame_len as usize, 0);
        reader.read_exact(&mut buf[HEADER_BYTES..])?;
        let record = match frame::decode(&buf) {
            Ok((r, _)) => r,
            Err(FrameError::HashMismatch) if frame_len == remaining => return Ok(torn),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if record.seq != seq + 1 {
            return Err(corrupt(format!(
                "sequence number {} where {} was expected",
                record.seq,
                seq + 1
            )));
        }
        if record.prev_hash != head {
            return Err(corrupt(
                "previous-hash link does not match the record before it".into(),
            ));
        }
        visit(&record)?;
        head = record.hash;
        seq = record.seq;
        offset += frame_len;
    }
    Ok(Scan {
        records: seq,
        end: offset,
        head_hash: head,
        torn_bytes: 0,
    })
}

/// True when the header and everything after it are zero bytes: the file grew but the
/// write never landed, which is how some filesystems leave a crash.
fn rest_is_zero(reader: &mut impl Read, header: &[u8]) -> io::Result<bool> {
    if header.iter().any(|b| *b != 0) {
        return Ok(false);
    }
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// The writer's handle on the log: appends batches at the end found by `open`.
pub struct Log {
    file: File,
    path: PathBuf,
    end: u64,
    next_seq: u64,
    head: [u8; 32],
    faults: Faults,
    sync_poisoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A storage failure to inject into the next append (deterministic simulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Only the first `keep` bytes of the batch reach the file, then the write fails.
    TornWrite { keep: usize },
    /// The disk is full after `keep` bytes (ENOSPC).
    NoSpace { keep: usize },
    /// The whole batch is written but `fdatasync` reports an error (then, and ever after).
    SyncFails,
}

/// Faults armed for the log's next appends, shared with the test that arms them. Empty
/// outside simulations; one lock-free check per batch when nothing is armed.
#[derive(Clone, Debug, Default)]
pub struct Faults(std::sync::Arc<std::sync::Mutex<Vec<Fault>>>);

impl Faults {
    pub fn arm(&self, fault: Fault) {
        self.0.lock().expect("fault list").push(fault);
    }
    pub fn clear(&self) {
        self.0.lock().expect("fault list").clear();
    }
    fn take(&self) -> Option<Fault> {
        let mut list = self.0.lock().expect("fault list");
        (!list.is_empty()).then(|| list.remove(0))
    }
}

pub struct Appended {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Log {
    /// Opens the log after a scan; cuts a torn tail back to the last whole record.
    pub fn open(path: &Path, scan: &Scan) -> Result<Log, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        if scan.torn_bytes > 0 {
            tracing::warn!(
                bytes = scan.torn_bytes,
                offset = scan.end,
                "cutting a torn tail off the ledger log"
            );
            file.set_len(scan.end)?;
            file.sync_all()?;
        }
        let mut log = Log {
            file,
            path: path.to_owned(),
            end: scan.end,
            next_seq: scan.records + 1,
            head: scan.head_hash,
            faults: Faults::default(),
            sync_poisoned: Default::default(),
        };
        log.file.seek(SeekFrom::Start(log.end))?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.next_seq - 1, self.head)
    }

    /// Encodes a batch into one buffer and returns it with each record's seq and hash; the
    /// log does not move until `commit` makes the buffer durable.
    pub fn encode_batch(&self, records: &[(Timestamp, &RecordBody)]) -> (Vec<u8>, Vec<Appended>) {
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(records.len());
        let (mut seq, mut head) = (self.next_seq, self.head);
        for (at, body) in records {
            let (frame, hash) = frame::encode(seq, *at, &head, body);
            buf.extend_from_slice(&frame);
            out.push(Appended { seq, hash });
            head = hash;
            seq += 1;
        }
        (buf, out)
    }

    /// Writes the batch at the end of the log; `LogSyncer::sync` makes it durable. On error
    /// the log is in an unknown state and the caller must stop (fail-stop): a retry could
    /// duplicate or reorder records.
    pub fn append(&mut self, buf: &[u8], appended: &[Appended]) -> io::Result<()> {
        let Some(last) = appended.last() else {
            return Ok(());
        };
        match self.faults.take() {
            None => self.file.write_all(buf)?,
            Some(fault) => self.fail(buf, fault)?,
        }
        self.end += buf.len() as u64;
        self.next_seq = last.seq + 1;
        self.head = last.hash;
        Ok(())
    }

    /// A handle that makes what was appended durable, from another thread if need be: the
    /// writer appends the next batch while the last one is being synced.
    pub fn syncer(&self) -> io::Result<LogSyncer> {
        Ok(LogSyncer {
            file: self.file.try_clone()?,
            poisoned: self.sync_poisoned.clone(),
        })
    }
}

/// Makes the log's appends durable: `fdatasync` on a duplicate of the log's descriptor,
/// which covers every byte written through either before the call.
pub struct LogSyncer {
    file: File,
    /// Set by an injected `SyncFails`: every later sync fails, as after a real failed
    /// fdatasync (whose pages the kernel may have dropped).
    poisoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LogSyncer {
    pub fn sync(&self) -> io::Result<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(io::Error::other("injected: fdatasync failed"));
        }
        self.file.sync_data()
    }
}

impl Log {
    fn fail(&mut self, buf: &[u8], fault: Fault) -> io::Result<()> {
        match fault {
            Fault::TornWrite { keep } => {
                self.file.write_all(&buf[..keep.min(buf.len() - 1)])?;
                Err(io::Error::other("injected: torn write"))
            }
            Fault::NoSpace { keep } => {
                self.file.write_all(&buf[..keep.min(buf.len() - 1)])?;
                Err(io::Error::from_raw_os_error(28))
            }
            Fault::SyncFails => {
                self.file.write_all(buf)?;
                self.sync_poisoned
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
        }
    }
}

/// Frames are at least this long: a reader can bound a scan from a file's size.
pub const FRAME_BYTES_MIN: usize = HEADER_BYTES + 41 + HASH_BYTES;
