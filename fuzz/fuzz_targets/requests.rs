//! Fuzz target: arbitrary bytes decoded as request messages, then validated by the edge's
//! parsers: nothing panics, whatever the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passnum::config::Limits;
use passnum::rpc::{convert, errors::Violations, pb};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(r) = pb::CreateOrderRequest::decode(data) {
        let mut v = Violations::default();
        let _ = convert::perimeter(&mut v, &limits, r.perimeter.as_ref());
        let _ = convert::services(&mut v, &limits, "services", &r.services);
        let _ = convert::label(&mut v, "programme", &r.programme);
    }
    if let Ok(r) = pb::RegisterSiteRequest::decode(data) {
        let _ = convert::site_kind(&mut Violations::default(), &limits, &r);
    }
    if let Ok(r) = pb::IssueCredentialRequest::decode(data) {
        let _ = convert::role(&mut Violations::default(), &r);
    }
    if let Ok(r) = pb::RevokeCredentialRequest::decode(data) {
        let _ = passnum::rpc::auth::is_credential_id(&r.credential_id);
    }
    if let Ok(r) = pb::ListCredentialsRequest::decode(data) {
        let _ = passnum::rpc::auth::is_credential_id(&r.after);
    }
    // What a hub's client reads from the server: a signed head (hex fields, a key, a
    // signature of any length) is checked without a panic.
    if let Ok(h) = pb::Head::decode(data) {
        let _ = passnum::cli_mirror::heads::signed(&h, Some(&h.public_key));
    }
    if let Ok(r) = pb::RedeemRequest::decode(data) {
        let keys = passnum::code::Keyring::new(1, [(1, [7u8; 32])].into()).unwrap();
        let _ = convert::checked_code(&keys, "pass", r.pass.as_ref());
        let _ = convert::place(&mut Violations::default(), r.place.as_ref());
    }
});
