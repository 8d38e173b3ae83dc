//! The index's run files: a checkpoint's delta or a chunk of the base, each written once
//! and never changed, and named in sled by its key with its length and blake3 hash.
//!
//! Why not sled values: sled keeps values inside its leaf nodes (up to 16 per leaf) and
//! rewrites a leaf whole each time it consolidates it, so megabyte values were written
//! about four times over. Measured under redemption load: the indexer wrote 1 750 bytes
//! per redemption for about 410 of checkpoint data, and sled's copies were half its CPU.
//!
//! A run is made durable (file, then directory entry) before sled names it, so sled never
//! names a run a crash can lose. A run sled does not name is a leftover (a checkpoint or a
//! compaction cut short, or a run superseded) and is removed when the index loads.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const RUNS_DIR: &str = "runs";

/// What sled holds of a run: enough to know the file is whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub len: u64,
    pub hash: [u8; 32],
}

/// Why a run could not be read back.
#[derive(Debug)]
pub enum RunError {
    Io(std::io::Error),
    /// The file is missing, or its length or hash differs from what sled holds.
    Damaged(&'static str),
}

#[derive(Clone, Debug)]
pub struct Runs {
    dir: PathBuf,
}

/// The file name of the run sled names by `key`: its kind letter, then the rest in hex.
pub fn run_name(key: &[u8]) -> String {
    let mut name = String::with_capacity(key.len() * 2);
    if let Some((kind, rest)) = key.split_first() {
        name.push(char::from(*kind));
        for b in rest {
            name.push_str(&format!("{b:02x}"));
        }
    }
    name
}

impl Runs {
    pub fn open(index_dir: &Path) -> std::io::Result<Runs> {
        let dir = index_dir.join(RUNS_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Runs { dir })
    }

    /// Writes the run that `key` will name and syncs the file; `sync_dir` must follow
    /// before sled names it (one directory sync for all the runs of a compaction).
    pub fn write(&self, key: &[u8], bytes: &[u8]) -> std::io::Result<RunRef> {
        let mut file = std::fs::File::create(self.dir.join(run_name(key)))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(RunRef {
            len: bytes.len() as u64,
            hash: *blake3::hash(bytes).as_bytes(),
        })
    }

    /// Makes the names of the runs written so far durable.
    pub fn sync_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Reads the run named by `key` and checks it against what sled holds.
    pub fn read(&self, key: &[u8], expected: &RunRef) -> Result<Vec<u8>, RunError> {
        let bytes = match std::fs::read(self.dir.join(run_name(key))) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RunError::Damaged("its run file is missing"))
            }
            Err(e) => return Err(RunError::Io(e)),
        };
        if bytes.len() as u64 != expected.len {
            return Err(RunError::Damaged("its run file has another length"));
        }
        if blake3::hash(&bytes).as_bytes() != &expected.hash {
            return Err(RunError::Damaged("its run file has another hash"));
        }
        Ok(bytes)
    }

    /// Removes the runs of these keys; one already gone is not an error.
    pub fn remove<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> std::io::Result<()> {
        for key in keys {
            match std::fs::remove_file(self.dir.join(run_name(key))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes every run whose name is not in `named`; returns how many it removed.
    pub fn remove_unnamed(&self, named: &HashSet<String>) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !named.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_whole_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path()).unwrap();
        let key = [b'd', 0, 0, 0, 0, 0, 0, 0, 7];
        assert_eq!(run_name(&key), "d0000000000000007");
        let r = runs.write(&key, b"entries").unwrap();
        runs.sync_dir().unwrap();
        assert_eq!(runs.read(&key, &r).unwrap(), b"entries");
        let path = dir.path().join(RUNS_DIR).join(run_name(&key));
        std::fs::write(&path, b"entries!").unwrap();
        assert!(matches!(runs.read(&key, &r), Err(RunError::Damaged(_))));
        std::fs::write(&path, b"Entries").unwrap();
        assert!(matches!(runs.read(&key, &r), Err(RunError::Damaged(_))));
        runs.remove([key.as_slice()]).unwrap();
        assert!(matches!(runs.read(&key, &r), Err(RunError::Damaged(_))));
        runs.remove([key.as_slice()]).unwrap();
    }

    #[test]
    fn runs_nobody_names_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::open(dir.path()).unwrap();
        runs.write(b"d1", b"kept").unwrap();
        runs.write(b"d2", b"left over").unwrap();
        let named = HashSet::from([run_name(b"d1")]);
        assert_eq!(runs.remove_unnamed(&named).unwrap(), 1);
        assert_eq!(runs.remove_unnamed(&named).unwrap(), 0);
    }
}
