//! The index's entries: each piece of state under its key (the table in `mod.rs`), encoded
//! into a checkpoint's delta, and put back into a state at load.

use super::IndexError;
use crate::domain::*;
use crate::storage::blob::{self, BlobWriter};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A delta's value for a request forgotten since the last checkpoint (no encoded value is
/// empty). Compaction drops it with what it removes: a base holds only what the state does.
pub(super) const FORGOTTEN: &[u8] = &[];

pub(super) fn id_key(prefix: u8, id: u64) -> Vec<u8> {
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
        Key::Workshop(id) => id_key(b'w', id.0),
        Key::Balance(a) => [b"a".as_slice(), &postcard::to_allocvec(a).expect("encodes")].concat(),
        Key::Credential(h) => [b"k".as_slice(), h.as_slice()].concat(),
        Key::Settlement(id) => id_key(b'x', id.0),
        Key::Reversal(i) => id_key(b'v', *i),
        Key::OrderFee(id) => id_key(b'f', id.0),
        Key::CreditReturned(id) => id_key(b'g', id.0),
    }
}

pub(super) fn pass_key(serial: Serial) -> Vec<u8> {
    id_key(b'p', serial.as_u64())
}

pub(super) fn request_key(digest: &RequestDigest) -> Vec<u8> {
    [b"r".as_slice(), &digest.0].concat()
}

pub(super) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("state values always encode")
}

pub(super) fn dec<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, IndexError> {
    postcard::from_bytes(bytes).map_err(|e| IndexError::Decode {
        key: key.to_vec(),
        what: e.to_string(),
    })
}

/// The changes of a checkpoint, encoded, written later.
pub struct IndexBatch {
    pub(super) delta: Vec<u8>,
    pub seq: u64,
    pub(super) head: [u8; 32],
}

/// A checkpoint in the making: copies of the changed keys' values, taken under the state's
/// lock and encoded off it, then the values `apply` captured.
pub struct IndexBatchBuilder {
    read: Vec<Encode>,
    seq: u64,
    head: [u8; 32],
}

/// One key's value, copied from the state, to encode into a checkpoint.
type Encode = Box<dyn FnOnce(&mut BlobWriter) + Send>;

impl IndexBatch {
    pub fn of(state: &State, changes: &Changes, seq: u64, head: [u8; 32]) -> IndexBatch {
        IndexBatch::read(state, &changes.keys, seq, head).with_values(changes)
    }

    /// Copies the changed keys' values: the part that needs the state, and its lock. The
    /// large values (settlement lines, an order's serials) are shared, so this copies
    /// pointers; encoding them under the lock held the writer up to 38 ms during clearing.
    pub fn read(state: &State, keys: &[Key], seq: u64, head: [u8; 32]) -> IndexBatchBuilder {
        let read = keys.iter().map(|key| value_of(state, key)).collect();
        IndexBatchBuilder { read, seq, head }
    }
}

impl IndexBatchBuilder {
    /// Encodes the copied values, then the captured passes (each once, its last value) and
    /// requests, into one delta in key order. Everything here is a copy: no lock needed.
    pub fn with_values(self, changes: &Changes) -> IndexBatch {
        let mut blob = BlobWriter::default();
        for encode in self.read {
            encode(&mut blob);
        }
        let mut seen = std::collections::HashSet::with_capacity(changes.passes.len());
        for pass in changes.passes.iter().rev() {
            if seen.insert(pass.serial) {
                blob.push_encoded(&pass_key(pass.serial), pass);
            }
        }
        for (key, remembered) in &changes.requests {
            match remembered {
                Some(r) => blob.push_encoded(&request_key(key), r),
                None => blob.push(&request_key(key), FORGOTTEN),
            }
        }
        IndexBatch {
            delta: blob.finish_sorted(),
            seq: self.seq,
            head: self.head,
        }
    }
}

/// A dirty key's current value, copied, with what encodes it.
fn value_of(state: &State, key: &Key) -> Encode {
    fn later<T: Serialize + Send + 'static>(k: Vec<u8>, value: T) -> Encode {
        Box::new(move |blob: &mut BlobWriter| blob.push_encoded(&k, &value))
    }
    let k = key_bytes(key);
    match key {
        Key::Commanditaire(id) => later(k, state.commanditaires[id].clone()),
        Key::Structure(id) => later(k, state.structures[id].clone()),
        Key::Site(id) => later(k, state.sites[id].clone()),
        Key::Order(id) => later(k, state.orders[id].clone()),
        Key::OrderSerials(id) => later(k, state.order_serials[id].clone()),
        Key::Workshop(id) => later(k, state.workshops[id].clone()),
        Key::Balance(a) => later(k, state.balance(*a)),
        Key::Credential(h) => later(k, state.credentials[h].clone()),
        Key::Settlement(id) => later(k, state.settlements[id].clone()),
        Key::Reversal(i) => later(k, state.reversals[*i as usize].clone()),
        Key::OrderFee(id) => later(k, state.order_fees[id]),
        Key::CreditReturned(id) => later(k, state.credit_returned[id]),
    }
}

pub(super) fn blob_error(key: &[u8], what: &str) -> IndexError {
    IndexError::Decode {
        key: key.to_vec(),
        what: what.into(),
    }
}

pub(super) fn load_blob(state: &mut State, key: &[u8], blob: &[u8]) -> Result<(), IndexError> {
    for entry in blob::entries(blob) {
        let (k, v) = entry.map_err(|what| blob_error(key, what))?;
        put(state, k, v)?;
    }
    Ok(())
}

/// Puts one entry into the state, replacing what an earlier blob said of the same key.
fn put(state: &mut State, k: &[u8], v: &[u8]) -> Result<(), IndexError> {
    let id = || -> Result<u64, IndexError> {
        k.get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| blob_error(k, "an entity key is 9 bytes"))
    };
    match k.first() {
        Some(b'c') => drop(
            state
                .commanditaires
                .insert(CommanditaireId(id()?), dec(k, v)?),
        ),
        Some(b's') => drop(state.structures.insert(StructureId(id()?), dec(k, v)?)),
        Some(b't') => drop(state.sites.insert(SiteId(id()?), dec(k, v)?)),
        Some(b'o') => drop(state.orders.insert(OrderId(id()?), dec(k, v)?)),
        Some(b'l') => drop(state.order_serials.insert(OrderId(id()?), dec(k, v)?)),
        Some(b'p') => state.load_pass(dec(k, v)?),
        Some(b'w') => drop(state.workshops.insert(WorkshopId(id()?), dec(k, v)?)),
        Some(b'x') => drop(state.settlements.insert(SettlementId(id()?), dec(k, v)?)),
        Some(b'f') => drop(state.order_fees.insert(OrderId(id()?), dec(k, v)?)),
        Some(b'g') => drop(
            state
                .credit_returned
                .insert(CommanditaireId(id()?), dec(k, v)?),
        ),
        Some(b'v') => {
            let at = id()? as usize;
            let reversal = dec(k, v)?;
            match at.cmp(&state.reversals.len()) {
                std::cmp::Ordering::Less => state.reversals[at] = reversal,
                std::cmp::Ordering::Equal => state.reversals.push(reversal),
                std::cmp::Ordering::Greater => {
                    return Err(blob_error(k, "a reversal comes before the one it follows"))
                }
            }
        }
        Some(b'r') => {
            let digest = k[1..]
                .try_into()
                .map_err(|_| blob_error(k, "a request's key is 17 bytes"))?;
            match v {
                FORGOTTEN => drop(state.requests.remove(&RequestDigest(digest))),
                v => drop(state.requests.insert(RequestDigest(digest), dec(k, v)?)),
            }
        }
        Some(b'a') => drop(state.balances.insert(dec(k, &k[1..])?, dec(k, v)?)),
        Some(b'k') => drop(
            state.credentials.insert(
                k[1..]
                    .try_into()
                    .map_err(|_| blob_error(k, "a credential key is 33 bytes"))?,
                dec(k, v)?,
            ),
        ),
        _ => return Err(blob_error(k, "unknown entry kind")),
    }
    Ok(())
}
