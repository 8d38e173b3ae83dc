//! The ledger log: one append-only file of frames, the single source of truth, followed
//! by zeros written ahead of it (the reserve, see `Log`). Appends are written whole and
//! made durable with `fdatasync` (`File::sync_data`), once for however many batches were
//! appended since the last one: the group commit.

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
    /// Zero bytes past `end`: the log's reserve, written ahead (see `Log`).
    pub reserved: u64,
}

/// Reads every record from the start, checking frames and the hash chain, and hands each
/// to `visit`. A torn tail is reported in `Scan`, never silently read past.
pub fn scan(
    path: &Path,
    visit: impl FnMut(&LedgerRecord) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    scan_upto(path, u64::MAX, visit)
}

/// Like `scan`, but stops after record `last`: for readers of a log that is being
/// written, who must not look past what was acknowledged (a batch being written there is
/// neither whole nor torn yet).
pub fn scan_upto(
    path: &Path,
    last: u64,
    mut visit: impl FnMut(&LedgerRecord) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Scan::empty()),
        Err(e) => return Err(e.into()),
    };
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut at = Scan::empty();
    let mut buf = Vec::new();
    while at.end < file_len && at.records < last {
        let remaining = file_len - at.end;
        let corrupt = |what: String| LogError::Corrupt {
            seq: at.records + 1,
            offset: at.end,
            what,
        };
        if remaining < HEADER_BYTES as u64 {
            buf.resize(remaining as usize, 0);
            reader.read_exact(&mut buf)?;
            return Ok(at.ends_at(file_len, &buf));
        }
        buf.resize(HEADER_BYTES, 0);
        reader.read_exact(&mut buf)?;
        let frame_len = match frame::decode_header(&buf) {
            Ok((len, _)) => len as u64,
            Err(FrameError::HeaderCheck) if rest_is_zero(&mut reader)? => {
                return Ok(at.ends_at(file_len, &buf))
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if frame_len > remaining {
            return Ok(at.ends_at(file_len, &buf));
        }
        buf.resize(frame_len as usize, 0);
        reader.read_exact(&mut buf[HEADER_BYTES..])?;
        let record = match frame::decode(&buf) {
            Ok((r, _)) => r,
            Err(FrameError::HashMismatch) if rest_is_zero(&mut reader)? => {
                return Ok(at.ends_at(file_len, &buf))
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if record.seq != at.records + 1 {
            return Err(corrupt(format!(
                "sequence number {} where {} was expected",
                record.seq,
                at.records + 1
            )));
        }
        if record.prev_hash != at.head_hash {
            return Err(corrupt(
                "previous-hash link does not match the record before it".into(),
            ));
        }
        visit(&record)?;
        at.head_hash = record.hash;
        at.records = record.seq;
        at.end += frame_len;
    }
    Ok(at)
}

impl Scan {
    fn empty() -> Scan {
        Scan {
            records: 0,
            end: 0,
            head_hash: [0; 32],
            torn_bytes: 0,
            reserved: 0,
        }
    }

    /// The log ends at `self.end`: what follows, up to `file_len`, is a frame that is not
    /// whole (`bad`, its bytes as read) and nothing but zeros after it. A frame of zeros is
    /// the reserve; any other is the remains of a write that did not finish.
    fn ends_at(mut self, file_len: u64, bad: &[u8]) -> Scan {
        let past = file_len - self.end;
        if bad.iter().all(|b| *b == 0) {
            self.reserved = past;
        } else {
            self.torn_bytes = past;
        }
        self
    }
}

/// True when every byte from the reader's position to the end of the file is zero: what
/// follows a frame that is not whole must be, for the frame to be the end of the log
/// rather than damage in its middle. A write that did not finish leaves zeros (or
/// nothing) after it: the reserve, or a file that grew while the data never landed.
fn rest_is_zero(reader: &mut impl Read) -> io::Result<bool> {
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
///
/// The file runs ahead of the records: zeros are written past the end, `RESERVE_STEP` at a
/// time, and batches overwrite them. Then most fdatasyncs flush data only: an append that
/// grows the file must also commit its new size through the filesystem's journal, and
/// under load that commit waits on the journal's thread for a CPU (issue 5's notes). A
/// scan reads zeros after the last record as the reserve, not as damage.
pub struct Log {
    file: File,
    path: PathBuf,
    end: u64,
    /// The file's length: bytes from `end` up to it are zeros.
    reserved: u64,
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
            reserved: scan.end + scan.reserved,
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
        let end = self.end + buf.len() as u64;
        if end > self.reserved {
            self.reserve(end + RESERVE_STEP)?;
        }
        match self.faults.take() {
            None => self.file.write_all(buf)?,
            Some(fault) => self.fail(buf, fault)?,
        }
        self.end = end;
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

/// How far ahead of the records the log's zeros are written. Each step costs one
/// journal commit, at the next fdatasync; 4 MiB is about 20 000 redemptions. Measured
/// under load: a step costs the writer 2–4 ms and that fdatasync 8–13 ms, a stall of
/// every request in flight; writing the zeros from a helper thread does not remove it,
/// since any fdatasync of the file flushes all its dirty pages and its pending new length
/// (only a next file, preallocated apart, would). The scheme's real volume, about 10⁶
/// passes over its life (DOMAIN.md), makes some 50 steps in all: not worth that change.
pub const RESERVE_STEP: u64 = 4 << 20;

impl Log {
    /// Writes zeros from the file's end up to `to` (rounded to whole pages), without moving
    /// the append position; the next fdatasync makes the new length durable with them.
    fn reserve(&mut self, to: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let to = to.next_multiple_of(4096);
        while self.reserved < to {
            let n = (to - self.reserved).min(ZEROS.len() as u64);
            self.file
                .write_all_at(&ZEROS[..n as usize], self.reserved)?;
            self.reserved += n;
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::frame::tests::body;

    fn frame_bytes() -> u64 {
        frame::encode(1, Timestamp(1), &[0; 32], &body(1)).0.len() as u64
    }

    fn open(path: &Path) -> Log {
        let found = scan(path, |_| Ok(())).unwrap();
        Log::open(path, &found).unwrap()
    }

    /// Appends a batch; the file then holds it, and zeros past it to a whole page.
    fn append(log: &mut Log, records: u64) {
        let first = log.head().0 + 1;
        let bodies: Vec<RecordBody> = (first..first + records).map(body).collect();
        let refs: Vec<_> = bodies.iter().map(|b| (Timestamp(1), b)).collect();
        let (buf, appended) = log.encode_batch(&refs);
        log.append(&buf, &appended).unwrap();
        let len = std::fs::metadata(&log.path).unwrap().len();
        assert_eq!(len, log.reserved, "the file is as long as the reserve");
        assert!(
            len >= log.end && len % 4096 == 0,
            "zeros up to a whole page"
        );
    }

    /// Every record is there, whole and in order, and only zeros follow the last one.
    fn assert_whole(path: &Path, records: u64) {
        let mut seen = 0;
        let found = scan(path, |r| {
            seen += 1;
            assert_eq!(r.seq, seen);
            Ok(())
        })
        .unwrap();
        assert_eq!((found.records, found.torn_bytes), (records, 0));
        let len = std::fs::metadata(path).unwrap().len();
        assert_eq!(
            found.end + found.reserved,
            len,
            "zeros up to the file's end"
        );
    }

    #[test]
    fn the_file_grows_a_step_at_a_time_ahead_of_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut log = open(&path);
        append(&mut log, 1);
        let first = log.reserved;
        assert_eq!(first, (log.end + RESERVE_STEP).next_multiple_of(4096));
        // Batches that fit in the reserve do not grow the file.
        while log.end + 100 * frame_bytes() < first {
            append(&mut log, 100);
            assert_eq!(log.reserved, first);
        }
        // The one that passes it grows it by a step past its own end.
        while log.reserved == first {
            append(&mut log, 100);
        }
        assert_eq!(
            log.reserved,
            (log.end + RESERVE_STEP).next_multiple_of(4096)
        );
        let records = log.head().0;
        drop(log);
        assert_whole(&path, records);
    }

    #[test]
    fn batches_larger_than_a_step_and_reopens_keep_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let step_records = RESERVE_STEP / frame_bytes();
        let mut log = open(&path);
        for records in [step_records / 3, step_records + 7, 2 * step_records, 1] {
            append(&mut log, records);
        }
        let records = log.head().0;
        drop(log);
        assert_whole(&path, records);
        // A reopened log appends over the reserve it finds.
        let mut log = open(&path);
        let reserved = log.reserved;
        append(&mut log, 3);
        assert_eq!(log.reserved, reserved, "the zeros left were used first");
        let records = log.head().0;
        drop(log);
        assert_whole(&path, records);
    }
}
