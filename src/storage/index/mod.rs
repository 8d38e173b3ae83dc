//! The sled index: a checkpoint of the state, rebuildable from the log at any time. Start-up
//! loads it whole, then replays the log beyond its position; no request reads it.
//!
//! | sled key              | value                                                  |
//! |-----------------------|--------------------------------------------------------|
//! | `mseq`, `mhead`       | last applied seq, its hash (postcard)                  |
//! | `mformat`             | this layout's version (`FORMAT`)                       |
//! | `mgen`                | the base's generation (postcard u64; none: no base)    |
//! | `b` gen BE, chunk BE  | a chunk of the base: its run's length and hash         |
//! | `d` id BE             | a delta (one checkpoint's changes): its run's length and hash |
//!
//! A run (`runs.rs`) is a file beside sled, named after its key, holding a blob of entries
//! (`blob.rs`): a chunk's sorted by entry key, a delta's in the order they changed. Sled
//! costs about as much per key as a redemption does in all, so entries travel in blobs, not
//! one sled key each; and sled rewrites its values over and over, so blobs live in files.
//! The state is the base, then every delta in id order, a later value replacing an earlier
//! one, and an empty value in a delta removing it (a forgotten request). A checkpoint
//! writes its run, then one sled batch: its key and the new position.
//! Compaction folds the deltas into the next base generation's runs, then switches to it in
//! one batch that also drops the old chunks and the folded deltas, flushes sled, and only
//! then removes their files (`compact.rs`). Runs sled does not name are removed at load.
//!
//! Entry keys name one piece of state; values are postcard (`entries.rs`):
//!
//! | prefix | entry key           | value                     |
//! |--------|---------------------|---------------------------|
//! | `c`    | commanditaire id BE | Commanditaire             |
//! | `s`    | structure id BE     | Structure                 |
//! | `t`    | site id BE          | Site                      |
//! | `o`    | order id BE         | Order                     |
//! | `l`    | order id BE         | Vec<Serial> (mint order)  |
//! | `p`    | serial BE           | Pass                      |
//! | `w`    | workshop id BE      | WorkshopSession           |
//! | `r`    | request digest (16) | Remembered (empty: forgotten, deltas only) |
//! | `a`    | postcard(Account)   | i64 balance               |
//! | `k`    | token hash          | Credential (role, revoked at, expires at, requests forgotten) |
//! | `x`    | settlement id BE    | Settlement                |
//! | `v`    | position BE         | Reversal                  |
//! | `f`    | order id BE         | FeeRate                   |

mod compact;
mod entries;

pub use entries::{key_bytes, IndexBatch, IndexBatchBuilder};

use super::runs::{run_name, RunError, RunRef, Runs};
use crate::domain::*;
use entries::{dec, enc, id_key, load_blob};
use std::path::Path;

pub const INDEX_DIR: &str = "index";

#[derive(Debug)]
pub enum IndexError {
    Sled(sled::Error),
    /// Reading or writing a run file failed.
    Io(std::io::Error),
    /// A stored value does not decode: the index is damaged and must be rebuilt.
    Decode {
        key: Vec<u8>,
        what: String,
    },
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::Sled(e) => write!(f, "index store: {e}"),
            IndexError::Io(e) => write!(f, "index run file: {e}"),
            IndexError::Decode { key, what } => {
                write!(
                    f,
                    "index value at key {key:?} does not decode ({what}): rebuild the index"
                )
            }
        }
    }
}

impl From<sled::Error> for IndexError {
    fn from(e: sled::Error) -> Self {
        IndexError::Sled(e)
    }
}

impl From<std::io::Error> for IndexError {
    fn from(e: std::io::Error) -> Self {
        IndexError::Io(e)
    }
}

/// The layout version in `mformat`; an index in another layout is rebuilt from the log.
const FORMAT: u32 = 9;
/// Deltas are folded into the base once they reach its size, and at least this much: a
/// compaction then writes at most twice what the deltas hold (measured: folding at half the
/// base doubled the indexer's CPU under load), and start-up reads at most two bases.
const COMPACT_MIN_BYTES: u64 = 8 << 20;
/// `PASSNUM_INDEX_COMPACT_BYTES` lowers the compaction floor: the tests set it to a few
/// bytes so that small ledgers go through compaction at every checkpoint.
fn compact_min_bytes() -> u64 {
    std::env::var("PASSNUM_INDEX_COMPACT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(COMPACT_MIN_BYTES)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub base: u64,
    pub deltas: u64,
}

/// The index, written by one thread at a time (start-up, then the indexer).
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    tree: sled::Tree,
    runs: Runs,
    sizes: std::sync::Arc<std::sync::Mutex<Sizes>>,
    compact_min_bytes: u64,
}

impl Index {
    /// Opens the index. sled's lock on its directory outlives a dropped handle for a moment
    /// (its flusher thread lets go last), so a lock conflict is retried for up to 2 s before
    /// it is reported: long enough for our own previous handle, short for another process.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Self::open_once(dir) {
                Err(IndexError::Sled(sled::Error::Io(e)))
                    if e.to_string().starts_with("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path) -> Result<Index, IndexError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .open()?;
        let tree = db.open_tree("state")?;
        let index = Index {
            db,
            tree,
            runs: Runs::open(dir)?,
            sizes: Default::default(),
            compact_min_bytes: compact_min_bytes(),
        };
        let format: Option<u32> = match index.tree.get(b"mformat")? {
            Some(v) => Some(dec(b"mformat", &v)?),
            None => None,
        };
        if format != Some(FORMAT) {
            if !index.tree.is_empty() {
                tracing::warn!(
                    ?format,
                    "the index has another layout; it is rebuilt from the log"
                );
            }
            index.clear()?;
        }
        Ok(index)
    }

    /// The last record applied to the index, and its hash.
    pub fn applied(&self) -> Result<(u64, [u8; 32]), IndexError> {
        let seq = match self.tree.get(b"mseq")? {
            Some(v) => dec(b"mseq", &v)?,
            None => 0,
        };
        let head = match self.tree.get(b"mhead")? {
            Some(v) => dec(b"mhead", &v)?,
            None => [0; 32],
        };
        Ok((seq, head))
    }

    fn generation(&self) -> Result<u64, IndexError> {
        match self.tree.get(b"mgen")? {
            Some(v) => dec(b"mgen", &v),
            None => Ok(0),
        }
    }

    pub fn sizes(&self) -> Sizes {
        *self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_sizes(&self, f: impl FnOnce(&mut Sizes)) {
        f(&mut self.sizes.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Writes the changes and the new applied position in one atomic batch.
    pub fn write(
        &self,
        state: &State,
        changes: &Changes,
        seq: u64,
        head: [u8; 32],
    ) -> Result<(), IndexError> {
        self.apply(IndexBatch::of(state, changes, seq, head))
    }

    /// Writes a checkpoint: its delta's run (if anything changed), then the run's name and
    /// the position in one sled batch.
    pub fn apply(&self, batch: IndexBatch) -> Result<(), IndexError> {
        let mut b = sled::Batch::default();
        let bytes = batch.delta.len() as u64;
        if bytes > 0 {
            let key = id_key(b'd', self.db.generate_id()?);
            let run = self.runs.write(&key, &batch.delta)?;
            self.runs.sync_dir()?;
            b.insert(key, enc(&run));
        }
        b.insert(b"mseq".as_slice(), enc(&batch.seq));
        b.insert(b"mhead".as_slice(), enc(&batch.head));
        self.tree.apply_batch(b)?;
        self.set_sizes(|s| s.deltas += bytes);
        Ok(())
    }

    /// Folds the deltas into a new base once they are large enough; returns whether it did.
    pub fn compact_if_due(&self) -> Result<bool, IndexError> {
        let s = self.sizes();
        if s.deltas < self.compact_min_bytes.max(s.base) {
            return Ok(false);
        }
        self.compact()?;
        Ok(true)
    }

    /// The runs sled names under a key prefix, in key order.
    fn named(&self, prefix: &[u8]) -> Result<Vec<(sled::IVec, RunRef)>, IndexError> {
        let mut runs = vec![];
        for item in self.tree.scan_prefix(prefix) {
            let (k, v) = item?;
            let run = dec(&k, &v)?;
            runs.push((k, run));
        }
        Ok(runs)
    }

    fn read_run(&self, key: &[u8], run: &RunRef) -> Result<Vec<u8>, IndexError> {
        self.runs.read(key, run).map_err(|e| match e {
            RunError::Io(e) => IndexError::Io(e),
            RunError::Damaged(what) => IndexError::Decode {
                key: key.to_vec(),
                what: format!("{what}: runs/{}", run_name(key)),
            },
        })
    }

    /// Asks sled to write its buffers out; the log, not this, is what makes data durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn clear(&self) -> Result<(), IndexError> {
        self.tree.clear()?;
        self.tree.insert(b"mformat", enc(&FORMAT))?;
        self.db.flush()?;
        self.runs.remove_unnamed(&Default::default())?;
        self.set_sizes(|s| *s = Sizes::default());
        Ok(())
    }

    /// Loads the whole state (start-up): the base, then the deltas, and removes the runs
    /// sled does not name. The state's `seq` is the applied position.
    pub fn load_state(&self) -> Result<State, IndexError> {
        let base = self.named(&id_key(b'b', self.generation()?))?;
        let deltas = self.named(b"d")?;
        let mut state = State::default();
        let mut sizes = Sizes::default();
        for (k, run) in &base {
            sizes.base += run.len;
            load_blob(&mut state, k, &self.read_run(k, run)?)?;
        }
        for (k, run) in &deltas {
            sizes.deltas += run.len;
            load_blob(&mut state, k, &self.read_run(k, run)?)?;
        }
        let named = base.iter().chain(&deltas).map(|(k, _)| run_name(k));
        self.runs.remove_unnamed(&named.collect())?;
        self.set_sizes(|s| *s = sizes);
        (state.seq, state.head_hash) = self.applied()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::entries::request_key;
    use super::*;
    use crate::storage::blob::{self, BlobWriter};

    fn balances(pairs: &[(u64, i64)]) -> (State, Changes) {
        let mut state = State::default();
        let mut changes = Changes::default();
        for &(id, cents) in pairs {
            let account = Account::Funds(CommanditaireId(id));
            state.balances.insert(account, cents);
            changes.keys.push(Key::Balance(account));
        }
        (state, changes)
    }

    fn write(index: &Index, seq: u64, pairs: &[(u64, i64)]) {
        let (state, changes) = balances(pairs);
        index.write(&state, &changes, seq, [seq as u8; 32]).unwrap();
    }

    fn loaded(index: &Index) -> Vec<(Account, i64)> {
        let state = index.load_state().unwrap();
        state.balances.into_iter().collect()
    }

    /// Names `bytes` as delta `id`, with a run that matches: what a checkpoint would write.
    fn put_delta(index: &Index, id: u64, bytes: &[u8]) {
        let key = id_key(b'd', id);
        let run = index.runs.write(&key, bytes).unwrap();
        index.tree.insert(key, enc(&run)).unwrap();
    }

    fn run_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(super::super::runs::RUNS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn deltas_and_bases_load_to_the_latest_values() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        write(&index, 1, &[(1, 10), (2, 20)]);
        write(&index, 2, &[(2, 25), (3, 30)]);
        let expected = vec![
            (Account::Funds(CommanditaireId(1)), 10),
            (Account::Funds(CommanditaireId(2)), 25),
            (Account::Funds(CommanditaireId(3)), 30),
        ];
        assert_eq!(loaded(&index), expected);
        index.compact().unwrap();
        assert_eq!(index.sizes().deltas, 0);
        assert!(index.sizes().base > 0);
        assert_eq!(loaded(&index), expected);
        // A delta over a base, then a second generation merging both.
        write(&index, 3, &[(0, 5), (2, 26), (4, 40)]);
        index.compact().unwrap();
        let state = index.load_state().unwrap();
        assert_eq!(state.seq, 3);
        assert_eq!(state.balances.len(), 5);
        assert_eq!(state.balances[&Account::Funds(CommanditaireId(2))], 26);
        assert_eq!(
            index.tree.scan_prefix(b"b").count(),
            1,
            "old chunks dropped"
        );
        assert_eq!(
            index.tree.scan_prefix(b"d").count(),
            0,
            "folded deltas dropped"
        );
        let (k, _) = index.tree.scan_prefix(b"b").next().unwrap().unwrap();
        assert_eq!(
            run_files(dir.path()),
            vec![run_name(&k)],
            "the old runs are removed"
        );
    }

    fn remembered(seq: u64) -> Remembered {
        Remembered {
            fingerprint: [7; 16],
            seq,
            credential: None,
            result: Err(Refusal::RequestIdReused),
        }
    }

    fn requests(index: &Index, seq: u64, requests: Vec<(RequestDigest, Option<Remembered>)>) {
        let changes = Changes {
            requests,
            ..Changes::default()
        };
        let batch = IndexBatch::of(&State::default(), &changes, seq, [seq as u8; 32]);
        index.apply(batch).unwrap();
    }

    #[test]
    fn a_forgotten_request_leaves_the_loaded_state_and_the_next_base() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let (a, b, c) = (
            RequestDigest([1; 16]),
            RequestDigest([2; 16]),
            RequestDigest([3; 16]),
        );
        requests(
            &index,
            1,
            vec![(a, Some(remembered(1))), (b, Some(remembered(1)))],
        );
        index.compact().unwrap();
        // a: in the base, forgotten in a delta; c: remembered and forgotten in one delta;
        // b: forgotten, then remembered again in the same delta (the later wins).
        requests(
            &index,
            2,
            vec![(a, None), (c, Some(remembered(2))), (c, None)],
        );
        requests(&index, 3, vec![(b, None), (b, Some(remembered(3)))]);
        let loaded = index.load_state().unwrap();
        assert_eq!(loaded.requests.len(), 1);
        assert_eq!(loaded.requests[&b], remembered(3));
        index.compact().unwrap();
        let base = index
            .named(&id_key(b'b', index.generation().unwrap()))
            .unwrap();
        let mut entries = vec![];
        for (k, run) in &base {
            let blob = index.read_run(k, run).unwrap();
            entries.extend(blob::entries(&blob).map(|e| e.unwrap().0.to_vec()));
        }
        assert_eq!(entries, vec![request_key(&b)], "no tombstone in a base");
        assert_eq!(index.load_state().unwrap().requests, loaded.requests);
    }

    #[test]
    fn an_index_in_another_layout_is_cleared_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let changes = Changes {
            requests: vec![(RequestDigest([9; 16]), Some(remembered(2)))],
            ..Changes::default()
        };
        index
            .apply(IndexBatch::of(&State::default(), &changes, 2, [2; 32]))
            .unwrap();
        assert_eq!(index.applied().unwrap(), (2, [2; 32]));
        index.tree.insert(b"mformat", enc(&(FORMAT - 1))).unwrap();
        drop(index);
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(
            index.applied().unwrap(),
            (0, [0; 32]),
            "replayed from the start"
        );
        assert!(index.load_state().unwrap().requests.is_empty());
    }

    #[test]
    fn captured_values_load_back_each_pass_at_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let serial = Serial::from_random(0x0123_4567_89AB_CDEF);
        let pass = |status| Pass {
            serial,
            order: OrderId(1),
            index: 0,
            status,
            redeemed: None,
            closed_at: None,
        };
        let changes = Changes {
            keys: vec![],
            passes: vec![pass(PassStatus::Minted), pass(PassStatus::Active)],
            requests: vec![(RequestDigest([9; 16]), Some(remembered(2)))],
        };
        let batch = IndexBatch::of(&State::default(), &changes, 2, [2; 32]);
        let entries = blob::entries(&batch.delta).count();
        assert_eq!(entries, 2, "the pass once, then the request");
        index.apply(batch).unwrap();
        let state = index.load_state().unwrap();
        assert_eq!(state.passes[&serial].status, PassStatus::Active);
        assert_eq!(state.requests[&RequestDigest([9; 16])], remembered(2));
        assert_eq!((state.seq, state.head_hash), (2, [2; 32]));
    }

    #[test]
    fn a_compaction_cut_short_leaves_the_current_base_whole() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        write(&index, 1, &[(1, 10)]);
        index.compact().unwrap();
        write(&index, 2, &[(1, 11)]);
        let before = run_files(dir.path());
        // The next generation's first chunk was written, the switch never happened.
        let mut key = id_key(b'b', 2);
        key.extend_from_slice(&0u64.to_be_bytes());
        index.runs.write(&key, b"not even a blob").unwrap();
        assert_eq!(
            loaded(&index),
            vec![(Account::Funds(CommanditaireId(1)), 11)]
        );
        assert_eq!(run_files(dir.path()), before, "the leftover is removed");
        index.compact().unwrap();
        assert_eq!(
            loaded(&index),
            vec![(Account::Funds(CommanditaireId(1)), 11)]
        );
    }

    #[test]
    fn a_damaged_blob_is_named_and_an_index_of_another_layout_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Index::open(dir.path()).unwrap();
            write(&index, 1, &[(1, 10)]);
            let (k, _) = index.tree.scan_prefix(b"d").next().unwrap().unwrap();
            let path = dir.path().join("runs").join(run_name(&k));
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
            let err = index.load_state().unwrap_err().to_string();
            assert!(
                err.contains("another length") && err.contains("rebuild"),
                "{err}"
            );
            std::fs::remove_file(&path).unwrap();
            let err = index.load_state().unwrap_err().to_string();
            assert!(err.contains("missing") && err.contains("rebuild"), "{err}");
            // A run that is whole but whose entries are not: a bug, named all the same.
            index.tree.clear().unwrap();
            put_delta(&index, 1, &bytes[..bytes.len() - 1]);
            let err = index.load_state().unwrap_err().to_string();
            assert!(
                err.contains("cut short") && err.contains("rebuild"),
                "{err}"
            );
            // An index written in the first layout: one sled key per entity, no version.
            index.tree.clear().unwrap();
            index.tree.insert(b"mseq", enc(&7u64)).unwrap();
            index.flush().unwrap();
        }
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.applied().unwrap().0, 0, "rebuilt from the log");
        assert!(loaded(&index).is_empty());
    }

    #[test]
    fn damaged_deltas_are_errors_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut byte = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        };
        for round in 0..2_000u64 {
            // Entries with plausible lengths and kinds, and random bodies.
            let mut blob = BlobWriter::default();
            for _ in 0..(byte() % 4) {
                let key: Vec<u8> = std::iter::once(b"cstolpwxvrak"[byte() as usize % 12])
                    .chain((0..byte() % 40).map(|_| byte()))
                    .collect();
                let value: Vec<u8> = (0..byte() % 64).map(|_| byte()).collect();
                blob.push(&key, &value);
            }
            let mut bytes = blob.finish();
            if round % 3 == 0 {
                bytes.truncate(byte() as usize % (bytes.len() + 1));
            }
            index.tree.clear().unwrap();
            put_delta(&index, round, &bytes);
            let _ = index.load_state();
        }
    }
}
