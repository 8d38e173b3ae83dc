//! Fuzz target: the ledger record decoder never panics on arbitrary bytes, and a frame it
//! accepts re-encodes to exactly the same bytes (the encoding is canonical).
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::storage::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok((rec, used)) = frame::decode(data) {
        let (again, hash) = frame::encode(rec.seq, rec.at, &rec.prev_hash, &rec.body);
        assert_eq!(hash, rec.hash);
        assert_eq!(&again[..], &data[..used]);
    }
});
