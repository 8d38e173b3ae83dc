//! The sled index: derived state, rebuildable from the log at any time. One tree, keys
//! prefixed by kind, so that a batch (one record batch's changes plus the last applied
//! sequence number) lands atomically.
//!
//! | prefix | key                 | value (postcard)          |
//! |--------|---------------------|---------------------------|
//! | `m`    | `seq`, `head`       | last applied seq, its hash|
//! | `c`    | commanditaire id BE | Commanditaire             |
//! | `s`    | structure id BE     | Structure                 |
//! | `t`    | site id BE          | Site                      |
//! | `o`    | order id BE         | Order                     |
//! | `l`    | order id BE         | Vec<Serial> (mint order)  |
//! | `p`    | serial BE           | Pass                      |
//! | `w`    | workshop id BE      | WorkshopSession           |
//! | `r`    | scope/request id    | Remembered                |
//! | `a`    | postcard(Account)   | i64 balance               |
//! | `k`    | token hash          | Role                      |
//! | `x`    | settlement id BE    | Settlement                |

use crate::domain::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

pub const INDEX_DIR: &str = "index";

#[derive(Debug)]
pub enum IndexError {
    Sled(sled::Error),
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

fn id_key(prefix: u8, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn key_bytes(key: &Key) -> Vec<u8> {
    match key {
        Key::Commanditaire(id) => id_key(b'c', id.0),
        Key::Structure(id) => id_key(b's', id.0),
        Key::Site(id) => id_key(b't', id.0),
        Key::Order(id) => id_key(b'o', id.0),
        Key::OrderSerials(id) => id_key(b'l', id.0),
        Key::Pass(s) => id_key(b'p', s.as_u64()),
        Key::Workshop(id) => id_key(b'w', id.0),
        Key::Request(r) => [b"r".as_slice(), r.as_bytes()].concat(),
        Key::Balance(a) => [b"a".as_slice(), &postcard::to_allocvec(a).expect("encodes")].concat(),
        Key::Credential(h) => [b"k".as_slice(), h.as_slice()].concat(),
        Key::Settlement(id) => id_key(b'x', id.0),
        Key::Reversal(i) => id_key(b'v', *i),
    }
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state values always encode")
}

fn dec<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, IndexError> {
    postcard::from_bytes(bytes).map_err(|e| IndexError::Decode {
        key: key.to_vec(),
        what: e.to_string(),
    })
}

/// The current value of a dirty key, as the index stores it.
fn value_bytes(state: &State, key: &Key) -> Vec<u8> {
    match key {
        Key::Commanditaire(id) => enc(&state.commanditaires[id]),
        Key::Structure(id) => enc(&state.structures[id]),
        Key::Site(id) => enc(&state.sites[id]),
        Key::Order(id) => enc(&state.orders[id]),
        Key::OrderSerials(id) => enc(&state.order_serials[id]),
        Key::Pass(s) => enc(&state.passes[s]),
        Key::Workshop(id) => enc(&state.workshops[id]),
        Key::Request(r) => enc(&state.requests[r]),
        Key::Balance(a) => enc(&state.balance(*a)),
        Key::Credential(h) => enc(&state.credentials[h]),
        Key::Settlement(id) => enc(&state.settlements[id]),
        Key::Reversal(i) => enc(&state.reversals[*i as usize]),
    }
}

/// The changes of one record batch, encoded for the index: taken under the writer's lock,
/// applied later by the indexer thread.
pub struct IndexBatch {
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    pub seq: u64,
    head: [u8; 32],
}

impl IndexBatch {
    pub fn of(state: &State, keys: &[Key], seq: u64, head: [u8; 32]) -> IndexBatch {
        let writes = keys
            .iter()
            .map(|k| (key_bytes(k), value_bytes(state, k)))
            .collect();
        IndexBatch { writes, seq, head }
    }
}

/// The index, and the read side that RPC handlers use concurrently with the writer.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    tree: sled::Tree,
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
        Ok(Index { db, tree })
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

    /// Writes the dirty keys and the new applied position in one atomic batch.
    pub fn write(
        &self,
        state: &State,
        keys: &[Key],
        seq: u64,
        head: [u8; 32],
    ) -> Result<(), IndexError> {
        self.apply(vec![IndexBatch::of(state, keys, seq, head)])
    }

    /// Applies batches in order as one atomic sled batch: a key written twice keeps its
    /// last value, and the applied position is the last batch's.
    pub fn apply(&self, batches: Vec<IndexBatch>) -> Result<(), IndexError> {
        let Some(last) = batches.last() else {
            return Ok(());
        };
        let (seq, head) = (last.seq, last.head);
        let mut batch = sled::Batch::default();
        for b in batches {
            for (k, v) in b.writes {
                batch.insert(k, v);
            }
        }
        batch.insert(b"mseq".as_slice(), enc(&seq));
        batch.insert(b"mhead".as_slice(), enc(&head));
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Asks sled to write its buffers out; the log, not this, is what makes data durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn clear(&self) -> Result<(), IndexError> {
        self.tree.clear()?;
        self.db.flush()?;
        Ok(())
    }

    /// Loads the whole state (start-up). The state's `seq` is the applied position.
    pub fn load_state(&self) -> Result<State, IndexError> {
        let mut state = State::default();
        for item in self.tree.iter() {
            let (k, v) = item?;
            let id = || u64::from_be_bytes(k[1..9].try_into().unwrap_or([0; 8]));
            match k[0] {
                b'c' => drop(
                    state
                        .commanditaires
                        .insert(CommanditaireId(id()), dec(&k, &v)?),
                ),
                b's' => drop(state.structures.insert(StructureId(id()), dec(&k, &v)?)),
                b't' => drop(state.sites.insert(SiteId(id()), dec(&k, &v)?)),
                b'o' => drop(state.orders.insert(OrderId(id()), dec(&k, &v)?)),
                b'l' => drop(state.order_serials.insert(OrderId(id()), dec(&k, &v)?)),
                b'p' => {
                    state.load_pass(dec(&k, &v)?);
                }
                b'w' => drop(state.workshops.insert(WorkshopId(id()), dec(&k, &v)?)),
                b'x' => drop(state.settlements.insert(SettlementId(id()), dec(&k, &v)?)),
                // Keys are big-endian positions, so sled yields them in order.
                b'v' => state.reversals.push(dec(&k, &v)?),
                b'r' => {
                    let key = String::from_utf8_lossy(&k[1..]).into_owned();
                    state.requests.insert(key, dec(&k, &v)?);
                }
                b'a' => drop(state.balances.insert(dec(&k, &k[1..])?, dec(&k, &v)?)),
                b'k' => drop(
                    state
                        .credentials
                        .insert(k[1..].try_into().unwrap_or([0; 32]), dec(&k, &v)?),
                ),
                _ => {}
            }
        }
        (state.seq, state.head_hash) = self.applied()?;
        state.durable_seq = state.seq;
        Ok(state)
    }
}
