//! The on-disk frame of one ledger record. Pure: bytes in, record out, no I/O.
//!
//! ```text
//! header  16 B  body_len u32 LE | seq u64 LE | header_check u32 LE (blake3(body_len‖seq)[..4])
//! body     N B  version u8 (=1) | at_ms i64 LE | prev_hash [32] | payload (postcard RecordBody)
//! hash    32 B  blake3(header ‖ body): the record's hash, which the next record's prev_hash repeats
//! ```
//! The header check lets a reader tell a damaged length from a torn tail; the hash chain
//! makes any change to any earlier record visible at the head.

use crate::domain::{RecordBody, Timestamp};

pub const HEADER_BYTES: usize = 16;
pub const HASH_BYTES: usize = 32;
pub const VERSION: u8 = 1;
/// A record body is at most 16 MiB: a mint of the largest order is under 1 MiB.
pub const BODY_BYTES_MAX: usize = 16 << 20;
const BODY_FIXED_BYTES: usize = 1 + 8 + HASH_BYTES;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRecord {
    pub seq: u64,
    pub at: Timestamp,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub body: RecordBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends before the frame does; `have` bytes are there.
    Incomplete {
        have: usize,
    },
    /// The header's own check fails: the length or sequence number is damaged.
    HeaderCheck,
    BodyTooLarge(usize),
    /// The record's hash does not match its bytes.
    HashMismatch,
    UnknownVersion(u8),
    Payload(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete { have } => write!(f, "incomplete frame ({have} bytes)"),
            FrameError::HeaderCheck => write!(f, "header check failed"),
            FrameError::BodyTooLarge(n) => write!(f, "body of {n} bytes exceeds the limit"),
            FrameError::HashMismatch => write!(f, "record hash does not match its bytes"),
            FrameError::UnknownVersion(v) => write!(f, "unknown record version {v}"),
            FrameError::Payload(e) => write!(f, "payload does not decode: {e}"),
        }
    }
}

/// The header's own check: a torn or foreign header is told from a real one before the
/// body is read.
pub fn header_check(body_len: u32, seq: u64) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"))
}

/// The size a body would have in a frame, if it is within the limit.
pub fn check_size(body: &RecordBody) -> Result<(), usize> {
    let len = BODY_FIXED_BYTES
        + postcard::experimental::serialized_size(body).expect("record bodies always encode");
    if len > BODY_BYTES_MAX {
        return Err(len);
    }
    Ok(())
}

/// Encodes one record; returns the frame and the record's hash.
pub fn encode(
    seq: u64,
    at: Timestamp,
    prev_hash: &[u8; 32],
    body: &RecordBody,
) -> (Vec<u8>, [u8; 32]) {
    let payload = postcard::to_allocvec(body).expect("record bodies always encode");
    let body_len = BODY_FIXED_BYTES + payload.len();
    assert!(
        body_len <= BODY_BYTES_MAX,
        "record body of {body_len} bytes: a limit upstream is missing"
    );
    let mut frame = Vec::with_capacity(HEADER_BYTES + body_len + HASH_BYTES);
    frame.extend_from_slice(&(body_len as u32).to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&header_check(body_len as u32, seq).to_le_bytes());
    frame.push(VERSION);
    frame.extend_from_slice(&at.0.to_le_bytes());
    frame.extend_from_slice(prev_hash);
    frame.extend_from_slice(&payload);
    let hash = *blake3::hash(&frame).as_bytes();
    frame.extend_from_slice(&hash);
    (frame, hash)
}

/// Reads the header: the frame's total length and its sequence number.
pub fn decode_header(buf: &[u8]) -> Result<(usize, u64), FrameError> {
    if buf.len() < HEADER_BYTES {
        return Err(FrameError::Incomplete { have: buf.len() });
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4"));
    let seq = u64::from_le_bytes(buf[4..12].try_into().expect("8"));
    let check = u32::from_le_bytes(buf[12..16].try_into().expect("4"));
    if check != header_check(body_len, seq) {
        return Err(FrameError::HeaderCheck);
    }
    let body_len = body_len as usize;
    if !(BODY_FIXED_BYTES..=BODY_BYTES_MAX).contains(&body_len) {
        return Err(FrameError::BodyTooLarge(body_len));
    }
    Ok((HEADER_BYTES + body_len + HASH_BYTES, seq))
}

/// Decodes the frame at the start of `buf`; returns the record and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<(LedgerRecord, usize), FrameError> {
    let (frame_len, seq) = decode_header(buf)?;
    if buf.len() < frame_len {
        return Err(FrameError::Incomplete { have: buf.len() });
    }
    let hashed = &buf[..frame_len - HASH_BYTES];
    let hash: [u8; 32] = buf[frame_len - HASH_BYTES..frame_len]
        .try_into()
        .expect("32");
    if blake3::hash(hashed) != blake3::Hash::from(hash) {
        return Err(FrameError::HashMismatch);
    }
    let body = &hashed[HEADER_BYTES..];
    if body[0] != VERSION {
        return Err(FrameError::UnknownVersion(body[0]));
    }
    let at = Timestamp(i64::from_le_bytes(body[1..9].try_into().expect("8")));
    let prev_hash: [u8; 32] = body[9..41].try_into().expect("32");
    // Every byte of the payload belongs to the body: trailing bytes would let two byte
    // strings stand for one record.
    let (body, rest): (RecordBody, &[u8]) =
        postcard::take_from_bytes(&body[41..]).map_err(|e| FrameError::Payload(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Payload(format!(
            "{} bytes after the record body",
            rest.len()
        )));
    }
    Ok((
        LedgerRecord {
            seq,
            at,
            prev_hash,
            hash,
            body,
        },
        frame_len,
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::{Label, Outcome, RecordBody};

    /// A small record body, the `n`th of its kind: for tests of frames and of the log.
    pub(in crate::storage) fn body(n: u64) -> RecordBody {
        let id = crate::domain::CommanditaireId(n);
        RecordBody {
            request: None,
            facts: vec![crate::domain::Fact::CommanditaireRegistered(
                crate::domain::Commanditaire {
                    id,
                    name: Label::parse("Gironde").unwrap(),
                },
            )],
            postings: vec![],
            result: Ok(Outcome::CommanditaireRegistered(id)),
        }
    }

    #[test]
    fn round_trip() {
        let (frame, hash) = encode(7, Timestamp(42), &[9; 32], &body(1));
        let (rec, used) = decode(&frame).unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(
            (rec.seq, rec.at, rec.prev_hash, rec.hash),
            (7, Timestamp(42), [9; 32], hash)
        );
        assert_eq!(rec.body, body(1));
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (frame, _) = encode(1, Timestamp(1), &[0; 32], &body(1));
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }
}
