//! Compaction: the deltas folded into the next base generation, written as sorted chunks.

use super::entries::{blob_error, enc, id_key, FORGOTTEN};
use super::{Index, IndexError, Sizes};
use crate::storage::blob::{self, BlobWriter};
use crate::storage::runs::{RunRef, Runs};

/// Size of a base chunk: large enough that sled sees few keys, small enough to stream.
const CHUNK_BYTES: usize = 1 << 20;

impl Index {
    /// Merges the base (sorted) with the deltas (later wins) into the next generation's
    /// runs, then switches to it in one batch. A crash before the switch leaves the current
    /// generation whole; the old runs are removed only once sled holds the switch durably.
    pub fn compact(&self) -> Result<(), IndexError> {
        let generation = self.generation()?;
        let folded = self.named(b"d")?;
        let mut blobs = Vec::with_capacity(folded.len());
        for (key, run) in &folded {
            blobs.push(self.read_run(key, run)?);
        }
        let names: Vec<&[u8]> = folded.iter().map(|(k, _)| k.as_ref()).collect();
        let newer = latest_entries(&names, &blobs)?;
        let next = generation + 1;
        let mut out = ChunkWriter::new(&self.runs, next);
        let mut newer = newer.into_iter().peekable();
        let old = self.named(&id_key(b'b', generation))?;
        for (k, run) in &old {
            let v = self.read_run(k, run)?;
            for entry in blob::entries(&v) {
                let (bk, bv) = entry.map_err(|what| blob_error(k, what))?;
                while let Some((nk, nv)) = newer.next_if(|(nk, _)| *nk < bk) {
                    out.push(nk, nv)?;
                }
                match newer.next_if(|(nk, _)| *nk == bk) {
                    Some((nk, nv)) => out.push(nk, nv)?,
                    None => out.push(bk, bv)?,
                }
            }
        }
        for (nk, nv) in newer {
            out.push(nk, nv)?;
        }
        let (base, chunks) = out.finish()?;
        self.runs.sync_dir()?;
        let mut b = sled::Batch::default();
        b.insert(b"mgen".as_slice(), enc(&next));
        for (k, run) in &chunks {
            b.insert(k.as_slice(), enc(run));
        }
        for (k, _) in old.iter().chain(&folded) {
            b.remove(k);
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        self.runs
            .remove(old.iter().chain(&folded).map(|(k, _)| k.as_ref()))?;
        self.set_sizes(|s| *s = Sizes { base, deltas: 0 });
        Ok(())
    }
}

/// A key and its value, as stored in a blob.
type Entry<'b> = (&'b [u8], &'b [u8]);

/// The deltas' entries sorted by key, the latest of each key only. The entries stay in the
/// blobs they were read in (no copy per entry): a stable sort keeps the deltas' order among
/// equal keys, and the last of each run wins.
fn latest_entries<'b>(names: &[&[u8]], blobs: &'b [Vec<u8>]) -> Result<Vec<Entry<'b>>, IndexError> {
    let mut entries = Vec::new();
    for (name, delta) in names.iter().zip(blobs) {
        for entry in blob::entries(delta) {
            entries.push(entry.map_err(|what| blob_error(name, what))?);
        }
    }
    // Stable: a key's values stay in delta order, and the last is kept. Deltas are written
    // sorted (older ones may not be), so this mostly merges runs.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            *kept = *later;
        }
        same
    });
    Ok(entries)
}

/// A run and the sled key that will name it.
type Named = (Vec<u8>, RunRef);

/// Writes a base generation's chunks in key order, each a run; returns the bytes written
/// and each chunk's key and run.
struct ChunkWriter<'r> {
    runs: &'r Runs,
    generation: u64,
    blob: BlobWriter,
    bytes: u64,
    written: Vec<Named>,
}

impl<'r> ChunkWriter<'r> {
    fn new(runs: &'r Runs, generation: u64) -> Self {
        ChunkWriter {
            runs,
            generation,
            blob: BlobWriter::default(),
            bytes: 0,
            written: vec![],
        }
    }

    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), IndexError> {
        if value == FORGOTTEN {
            return Ok(());
        }
        self.blob.push(key, value);
        if self.blob.bytes() >= CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), IndexError> {
        let blob = std::mem::take(&mut self.blob).finish();
        if blob.is_empty() {
            return Ok(());
        }
        let mut key = id_key(b'b', self.generation);
        key.extend_from_slice(&(self.written.len() as u64).to_be_bytes());
        self.bytes += blob.len() as u64;
        let run = self.runs.write(&key, &blob)?;
        self.written.push((key, run));
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, Vec<Named>), IndexError> {
        self.flush_chunk()?;
        Ok((self.bytes, self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_delta_wins_each_key_in_key_order() {
        let blob = |pairs: &[(&str, &str)]| {
            let mut w = BlobWriter::default();
            for (k, v) in pairs {
                w.push(k.as_bytes(), v.as_bytes());
            }
            w.finish()
        };
        let names: Vec<&[u8]> = ["d1", "d2", "d3"].map(|n| n.as_bytes()).into();
        let blobs = vec![
            blob(&[("k", "1"), ("b", "1"), ("z", "1")]),
            blob(&[("a", "2"), ("k", "2")]),
            blob(&[("k", "3"), ("b", "3")]),
        ];
        let got: Vec<(&[u8], &[u8])> = latest_entries(&names, &blobs).unwrap();
        let want: Vec<(&[u8], &[u8])> =
            vec![(b"a", b"2"), (b"b", b"3"), (b"k", b"3"), (b"z", b"1")];
        assert_eq!(got, want);
        let cut = vec![blobs[0].clone(), blobs[1][..5].to_vec()];
        match latest_entries(&names[..2], &cut) {
            Err(IndexError::Decode { key, .. }) => {
                assert_eq!(key, b"d2", "names the damaged delta")
            }
            other => panic!("a cut delta is a decode error, got {other:?}"),
        }
    }
}
