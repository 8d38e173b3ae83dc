//! Fuzz target: the pass-code and serial parsers never panic, and whatever they accept
//! round-trips to the same serial.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::code::Keyring;
use passnum::domain::Serial;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let keys = Keyring::new(1, [(1, [7u8; 32])].into()).unwrap();
    if let Ok(serial) = keys.parse_scanned(text) {
        assert_eq!(keys.parse_scanned(&keys.qr_payload(serial)), Ok(serial));
    }
    if let Ok(serial) = Serial::parse(text) {
        assert_eq!(Serial::parse(&serial.to_string()), Ok(serial));
    }
    let mid = text.len() / 2;
    if text.is_char_boundary(mid) {
        let (a, b) = text.split_at(mid);
        let _ = keys.parse_typed(a, b);
    }
});
