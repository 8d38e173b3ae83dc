//! A run of (key, value) entries stored as one sled value: a checkpoint's delta, or a chunk
//! of the base. One sled insert per blob instead of one per key is what keeps the index
//! off the request path's CPU: sled costs about as much per key as a whole redemption.
//!
//! Each entry: key length (u32 LE), key, value length (u32 LE), value.

use serde::Serialize;

#[derive(Default)]
pub struct BlobWriter {
    buf: Vec<u8>,
}

impl BlobWriter {
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.push_key(key);
        self.buf.extend_from_slice(&len32(value.len()));
        self.buf.extend_from_slice(value);
    }

    /// Appends an entry whose value is serialized (postcard) straight into the blob.
    pub fn push_encoded<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.push_key(key);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        postcard::to_io(value, &mut self.buf).expect("state values always encode");
        let len = len32(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len);
    }

    fn push_key(&mut self, key: &[u8]) {
        self.buf.extend_from_slice(&len32(key.len()));
        self.buf.extend_from_slice(key);
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The entries in key order, equal keys keeping theirs. A checkpoint writes its delta
    /// so: a compaction's sort then merges sorted runs, each read in order, instead of
    /// ordering millions of entries scattered over every delta (most of its CPU).
    pub fn finish_sorted(self) -> Vec<u8> {
        let mut sorted: Vec<(&[u8], &[u8])> = entries(&self.buf)
            .map(|e| e.expect("a blob just written reads back"))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = BlobWriter {
            buf: Vec::with_capacity(self.buf.len()),
        };
        for (key, value) in sorted {
            out.push(key, value);
        }
        out.buf
    }
}

fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n)
        .expect("an index entry is far below 4 GiB")
        .to_le_bytes()
}

/// The entries of a blob, in order; a malformed blob yields one error and stops.
pub fn entries(blob: &[u8]) -> Entries<'_> {
    Entries { rest: blob }
}

pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    fn field(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        self.rest = rest;
        Some(field)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.field().and_then(|k| Some((k, self.field()?)));
        if entry.is_none() {
            self.rest = &[];
        }
        Some(entry.ok_or("an index blob entry is cut short"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_blob_holds_the_same_entries_in_key_order_equal_keys_in_theirs() {
        let mut w = BlobWriter::default();
        for (k, v) in [
            ("p2", "a"),
            ("r1", "b"),
            ("p1", "c"),
            ("p2", "d"),
            ("", "e"),
        ] {
            w.push(k.as_bytes(), v.as_bytes());
        }
        let sorted = w.finish_sorted();
        let got: Vec<(&[u8], &[u8])> = entries(&sorted).map(Result::unwrap).collect();
        let want: Vec<(&[u8], &[u8])> = [
            ("", "e"),
            ("p1", "c"),
            ("p2", "a"),
            ("p2", "d"),
            ("r1", "b"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn entries_come_back_in_order_and_a_cut_blob_is_an_error() {
        let mut w = BlobWriter::default();
        w.push(b"a", b"");
        w.push_encoded(b"bb", &(7u64, "x"));
        let blob = w.finish();
        let got: Vec<_> = entries(&blob).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (&b"a"[..], &b""[..]));
        assert_eq!(got[1].0, b"bb");
        let back: (u64, String) = postcard::from_bytes(got[1].1).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        for cut in 1..blob.len() {
            let last = entries(&blob[..cut]).last().unwrap();
            if cut != 9 {
                assert!(last.is_err(), "a blob cut at {cut} is malformed");
            }
        }
    }
}
