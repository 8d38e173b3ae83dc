//! Fuzz target: the ledger record decoder never panics on arbitrary bytes, and a frame it
//! accepts re-encodes to exactly the same bytes (the encoding is canonical). Random bytes
//! rarely pass the header check and the hash, so the input is also wrapped as the payload
//! of a well-formed frame: that reaches the body decoder, whose every accepted record must
//! survive a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::domain::Timestamp;
use passnum::storage::frame;

fn wrapped(payload: &[u8]) -> Vec<u8> {
    let body_len = (1 + 8 + 32 + payload.len()) as u32;
    let mut f = Vec::new();
    f.extend_from_slice(&body_len.to_le_bytes());
    f.extend_from_slice(&7u64.to_le_bytes());
    f.extend_from_slice(&frame::header_check(body_len, 7).to_le_bytes());
    f.push(frame::VERSION);
    f.extend_from_slice(&1_767_225_600_000i64.to_le_bytes());
    f.extend_from_slice(&[9; 32]);
    f.extend_from_slice(payload);
    let hash = *blake3::hash(&f).as_bytes();
    f.extend_from_slice(&hash);
    f
}

fuzz_target!(|data: &[u8]| {
    if let Ok((rec, used)) = frame::decode(data) {
        let (again, hash) = frame::encode(rec.seq, rec.at, &rec.prev_hash, &rec.body);
        assert_eq!(hash, rec.hash);
        assert_eq!(&again[..], &data[..used]);
    }
    if data.len() <= frame::BODY_BYTES_MAX - 41 {
        if let Ok((rec, _)) = frame::decode(&wrapped(data)) {
            assert_eq!(rec.at, Timestamp(1_767_225_600_000));
            let (again, _) = frame::encode(rec.seq, rec.at, &rec.prev_hash, &rec.body);
            let (back, _) = frame::decode(&again).expect("what we encode decodes");
            assert_eq!(back.body, rec.body, "a decoded body survives a round trip");
        }
    }
});
