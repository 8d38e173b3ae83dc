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
    visit: impl FnMut(&LedgerRecord) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    scan_from(path, Mark::START, last, None, visit)
}

/// Like `scan_upto`, from `start` (a record boundary of this log: the chain is checked
/// from its hash on), noting boundaries in `marks` on the way.
pub fn scan_from(
    path: &Path,
    start: Mark,
    last: u64,
    marks: Option<&Marks>,
    mut visit: impl FnMut(&LedgerRecord) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && start == Mark::START => {
            return Ok(Scan::empty())
        }
        Err(e) => return Err(e.into()),
    };
    let file_len = file.metadata()?.len();
    if start.offset > file_len {
        return Err(LogError::Corrupt {
            seq: start.seq,
            offset: start.offset,
            what: "a scan starts past the end of the log".into(),
        });
    }
    // Large enough that a whole-log scan makes few reads, small beside a page's worth.
    let mut reader = BufReader::with_capacity(256 << 10, file);
    reader.seek(SeekFrom::Start(start.offset))?;
    let mut at = Scan {
        records: start.seq,
        end: start.offset,
        head_hash: start.hash,
        ..Scan::empty()
    };
    let mut buf = Vec::new();
    while at.end < file_len && at.records < last {
        let corrupt = |what: String| LogError::Corrupt {
            seq: at.records + 1,
            offset: at.end,
            what,
        };
        let (record, frame_len) = match read_frame(&mut reader, &mut buf, file_len - at.end) {
            Ok(Some(whole)) => whole,
            Ok(None) => return Ok(at.ends_at(file_len, &buf)),
            Err(FrameRead::Io(e)) => return Err(e.into()),
            Err(FrameRead::Bad(what)) => return Err(corrupt(what)),
        };
        at.follows(&record).map_err(corrupt)?;
        // A visitor that finds the record wrong does not know where it lies: this does.
        visit(&record).map_err(|e| match e {
            LogError::Corrupt { seq, what, .. } => LogError::Corrupt {
                seq,
                offset: at.end,
                what,
            },
            io => io,
        })?;
        at.head_hash = record.hash;
        at.records = record.seq;
        at.end += frame_len;
        if let Some(marks) = marks {
            marks.note(at.mark());
        }
    }
    Ok(at)
}

/// Why a frame could not be read.
enum FrameRead {
    Io(io::Error),
    /// Damage in the middle of the log: a frame that does not decode with data after it.
    Bad(String),
}

impl From<io::Error> for FrameRead {
    fn from(e: io::Error) -> Self {
        FrameRead::Io(e)
    }
}

/// Reads the frame at the reader's position, `remaining` bytes before the file's end,
/// into `buf`: a whole record and its frame's length, or `None` at the log's end (a frame
/// that is not whole, its bytes left in `buf`, and only zeros after it).
fn read_frame(
    reader: &mut impl Read,
    buf: &mut Vec<u8>,
    remaining: u64,
) -> Result<Option<(LedgerRecord, u64)>, FrameRead> {
    if remaining < HEADER_BYTES as u64 {
        buf.resize(remaining as usize, 0);
        reader.read_exact(buf)?;
        return Ok(None);
    }
    buf.resize(HEADER_BYTES, 0);
    reader.read_exact(buf)?;
    let frame_len = match frame::decode_header(buf) {
        Ok((len, _)) => len as u64,
        Err(FrameError::HeaderCheck) if rest_is_zero(reader)? => return Ok(None),
        Err(e) => return Err(FrameRead::Bad(e.to_string())),
    };
    if frame_len > remaining {
        return Ok(None);
    }
    buf.resize(frame_len as usize, 0);
    reader.read_exact(&mut buf[HEADER_BYTES..])?;
    match frame::decode(buf) {
        Ok((record, _)) => Ok(Some((record, frame_len))),
        Err(FrameError::HashMismatch) if rest_is_zero(reader)? => Ok(None),
        Err(e) => Err(FrameRead::Bad(e.to_string())),
    }
}

/// A record boundary: after record `seq`, whose hash is `hash`, at byte `offset`. A scan
/// may start at one instead of at the beginning of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub offset: u64,
    pub hash: [u8; 32],
}

impl Mark {
    pub const START: Mark = Mark {
        seq: 0,
        offset: 0,
        hash: [0; 32],
    };
}

/// Bytes of log between two marks: a reader of records from `n` on reads at most about
/// this much before record `n`, however long the log.
pub const MARK_SPACING: u64 = 64 << 10;

/// Record boundaries about `MARK_SPACING` apart, in order, so that `StreamRecords` from
/// record `n` seeks near it instead of reading (and hashing) the log from its start. In
/// memory only (48 bytes per 64 KiB of log: 3 MB for 4 GB): the start-up scan notes them, the sync stage
/// adds the end of each durable batch. Only whole records the ledger holds are marked,
/// so a mark stays true while the process runs: the log only grows past them.
#[derive(Debug, Default)]
pub struct Marks(std::sync::RwLock<Vec<Mark>>);

impl Marks {
    /// Keeps `m` if it is a spacing past the last mark.
    pub fn note(&self, m: Mark) {
        let due = |marks: &Vec<Mark>| {
            let last = marks.last().map_or(0, |l| l.offset);
            m.offset >= last + MARK_SPACING
        };
        if due(&self.read()) {
            let mut marks = self.0.write().unwrap_or_else(|p| p.into_inner());
            if due(&marks) {
                marks.push(m);
            }
        }
    }

    /// The last mark before record `seq` (a scan from it reaches `seq` next or later),
    /// or the start of the log.
    pub fn before(&self, seq: u64) -> Mark {
        let marks = self.read();
        match marks.partition_point(|m| m.seq < seq) {
            0 => Mark::START,
            i => marks[i - 1],
        }
    }

    /// Takes the marks of a log just reopened, in place of these.
    pub fn replace_with(&self, other: Marks) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) =
            other.0.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Mark>> {
        // A mark is pushed whole: a panic elsewhere cannot leave the list half changed.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Scan {
    /// Where the scan ended: after its last whole record.
    pub fn mark(&self) -> Mark {
        Mark {
            seq: self.records,
            offset: self.end,
            hash: self.head_hash,
        }
    }

    /// Checks that `record` is the next link of the chain scanned so far.
    fn follows(&self, record: &LedgerRecord) -> Result<(), String> {
        if record.seq != self.records + 1 {
            return Err(format!(
                "sequence number {} where {} was expected",
                record.seq,
                self.records + 1
            ));
        }
        if record.prev_hash != self.head_hash {
            return Err("previous-hash link does not match the record before it".into());
        }
        Ok(())
    }

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
    /// Where the log ends: after the last record appended.
    pub fn mark(&self) -> Mark {
        Mark {
            seq: self.next_seq - 1,
            offset: self.end,
            hash: self.head,
        }
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
        let first = log.mark().seq + 1;
        let bodies: Vec<RecordBody> = (first..first + records).map(body).collect();
        let refs: Vec<_> = bodies.iter().map(|b| (Timestamp(1), b)).collect();
        let (buf, appended) = log.encode_batch(&refs);
        log.append(&buf, &appended).unwrap();
        let len = std::fs::metadata(&log.path).unwrap().len();
        assert_eq!(len, log.reserved, "the file is as long as the reserve");
        assert!(
            len >= log.end && len.is_multiple_of(4096),
            "zeros up to a whole page"
        );
    }

    /// Every record is there, whole and in order, and only zeros follow the last one.
    #[test]
    fn a_scan_from_a_mark_reads_on_from_there_checking_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut log = open(&path);
        while log.mark().offset < 3 * MARK_SPACING + 1000 {
            append(&mut log, 1000);
        }
        let total = log.mark().seq;
        let marks = Marks::default();
        let whole = scan_from(&path, Mark::START, u64::MAX, Some(&marks), |_| Ok(())).unwrap();
        assert_eq!(whole.mark(), log.mark());
        let all = marks.read().clone();
        assert_eq!(all.len(), 3, "one a spacing");
        for pair in all.windows(2) {
            assert!(pair[1].offset >= pair[0].offset + MARK_SPACING);
        }
        for from in [1, all[0].seq, all[0].seq + 1, all[2].seq + 7, total] {
            let start = marks.before(from);
            assert!(start.seq < from && (start == Mark::START || all.contains(&start)));
            let mut seen = vec![];
            let end = scan_from(&path, start, from + 9, None, |r| {
                seen.push(r.seq);
                Ok(())
            })
            .unwrap();
            let want: Vec<u64> = (start.seq + 1..=(from + 9).min(total)).collect();
            assert_eq!(seen, want, "from {from}");
            let read = end.end - start.offset;
            assert!(
                read <= MARK_SPACING + 20 * frame_bytes(),
                "from {from}: {read} bytes"
            );
        }
        let mut forged = all[1];
        forged.hash[0] ^= 1;
        let err = scan_from(&path, forged, total, None, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("previous-hash"), "{err}");
        let past = Mark {
            offset: log.reserved + 1,
            ..all[2]
        };
        assert!(scan_from(&path, past, total, None, |_| Ok(())).is_err());
        let reopened = Marks::default();
        reopened.note(all[0]);
        marks.replace_with(reopened);
        assert_eq!(marks.before(total), all[0], "the reopened log's marks only");
    }

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
        let records = log.mark().seq;
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
        let records = log.mark().seq;
        drop(log);
        assert_whole(&path, records);
        // A reopened log appends over the reserve it finds.
        let mut log = open(&path);
        let reserved = log.reserved;
        append(&mut log, 3);
        assert_eq!(log.reserved, reserved, "the zeros left were used first");
        let records = log.mark().seq;
        drop(log);
        assert_whole(&path, records);
    }
}
