//! The ledger's head, signed by the operator (Ed25519). The chain lets anyone holding a copy
//! check it is whole; a signature over its head lets a hub prove to a third party (an
//! auditor, a court) what the operator showed it: "at this time, the ledger had this many
//! records, the last with this hash". A later history that does not extend a signed head
//! is then evidence of a rewrite, held by one hub alone. A MAC could not do this: whoever
//! checks it could also have made it. The public key is published by the operator and
//! pinned by the hubs (`passnum ledger mirror --head-key`).

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// The signing key's file in the data directory: its PKCS#8 document, in hex.
pub const KEY_FILE: &str = "head-key";

/// What is signed. The message names its purpose and version first, so a signature made
/// for it can never be taken for one over anything else this key might sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadStatement {
    pub seq: u64,
    pub hash: [u8; 32],
    /// When the operator stated it (ms since 1970, UTC).
    pub at_ms: i64,
}

const PURPOSE: &[u8] = b"passnum signed head v1\0";

impl HeadStatement {
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(PURPOSE.len() + 8 + 32 + 8);
        m.extend_from_slice(PURPOSE);
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.hash);
        m.extend_from_slice(&self.at_ms.to_be_bytes());
        m
    }
}

pub struct HeadSigner(Ed25519KeyPair);

impl HeadSigner {
    pub fn from_pkcs8(document: &[u8]) -> Result<HeadSigner, String> {
        Ed25519KeyPair::from_pkcs8(document)
            .map(HeadSigner)
            .map_err(|e| format!("not an Ed25519 key: {e}"))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes")
    }

    pub fn sign(&self, s: &HeadStatement) -> [u8; 64] {
        self.0
            .sign(&s.message())
            .as_ref()
            .try_into()
            .expect("an Ed25519 signature is 64 bytes")
    }
}

/// A new signing key's PKCS#8 document, from the system's randomness.
pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "no randomness to make the head key".into())
}

/// Whether `signature` is `public_key`'s over `s`.
pub fn verifies(public_key: &[u8], s: &HeadStatement, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&s.message(), signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> HeadSigner {
        HeadSigner::from_pkcs8(&generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn a_signed_head_verifies_and_any_change_to_it_does_not() {
        let key = signer();
        let s = HeadStatement {
            seq: 41,
            hash: [7; 32],
            at_ms: 1_767_225_600_000,
        };
        let sig = key.sign(&s);
        assert!(verifies(&key.public_key(), &s, &sig));
        let changed = [
            HeadStatement { seq: 42, ..s },
            HeadStatement { hash: [8; 32], ..s },
            HeadStatement {
                at_ms: s.at_ms + 1,
                ..s
            },
        ];
        for other in changed {
            assert!(!verifies(&key.public_key(), &other, &sig), "{other:?}");
        }
        let mut forged = sig;
        forged[0] ^= 1;
        assert!(!verifies(&key.public_key(), &s, &forged));
        assert!(!verifies(&signer().public_key(), &s, &sig), "another key");
        assert!(!verifies(&key.public_key()[..31], &s, &sig), "a cut key");
    }

    #[test]
    fn the_message_is_its_purpose_then_seq_hash_and_time_big_endian() {
        let s = HeadStatement {
            seq: 0x0102,
            hash: [0xAB; 32],
            at_ms: -1,
        };
        let m = s.message();
        assert_eq!(&m[..23], b"passnum signed head v1\0");
        assert_eq!(&m[23..31], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&m[31..63], &[0xAB; 32]);
        assert_eq!(&m[63..], &[0xFF; 8]);
    }

    #[test]
    fn a_key_file_that_is_not_an_ed25519_key_is_refused() {
        assert!(HeadSigner::from_pkcs8(b"not a key").is_err());
        let document = generate_pkcs8().unwrap();
        let (a, b) = (
            HeadSigner::from_pkcs8(&document).unwrap(),
            HeadSigner::from_pkcs8(&document).unwrap(),
        );
        assert_eq!(
            a.public_key(),
            b.public_key(),
            "the same document, the same key"
        );
    }
}
