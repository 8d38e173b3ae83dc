//! The heads the operator signed, as a hub keeps them: `FILE.heads` beside its copy, one
//! CSV line per mirror run, appended once the copy holds that head. It is the hub's
//! evidence: each line verifies with the operator's public key alone, and a history that
//! does not pass through it shows the operator rewrote what it had signed.

use crate::client::CliError;
use crate::code::{hex, unhex, unhex32};
use crate::rpc::pb;
use crate::signed_head::{verifies, HeadStatement};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "seq,hash,at_ms,public_key,signature";

/// The evidence file of the copy at `file`.
pub fn path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".heads");
    PathBuf::from(name)
}

/// A head whose signature verifies with the key it names, and, if a key is pinned, that
/// key: what it states.
pub fn signed(head: &pb::Head, pinned: Option<&str>) -> Result<HeadStatement, String> {
    let key = head.public_key.trim().to_ascii_lowercase();
    if let Some(pinned) = pinned.map(|k| k.trim().to_ascii_lowercase()) {
        if pinned != key {
            return Err(format!(
                "the head is signed by key {key}, not by the pinned {pinned}"
            ));
        }
    }
    let statement = HeadStatement {
        seq: head.seq,
        hash: unhex32(&head.hash).ok_or("the head's hash is not 64 hex digits")?,
        at_ms: head.at_ms,
    };
    let signature = unhex(&head.signature).ok_or("the head's signature is not hex")?;
    let public_key = unhex(&key).ok_or("the head's public key is not hex")?;
    if !verifies(&public_key, &statement, &signature) {
        return Err(format!(
            "the signature of head {} does not verify with key {key}",
            head.seq
        ));
    }
    Ok(statement)
}

/// Appends `head` to the copy's evidence, durably.
pub fn keep(file: &Path, head: &pb::Head) -> std::io::Result<()> {
    let path = path(file);
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut text = String::new();
    if new {
        text.push_str(HEADER);
        text.push('\n');
    }
    text.push_str(&format!(
        "{},{},{},{},{}\n",
        head.seq, head.hash, head.at_ms, head.public_key, head.signature
    ));
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// What `verify` found of the evidence: how many signed heads, the keys that signed them, the last.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub heads: usize,
    pub keys: Vec<String>,
    pub last_seq: u64,
}

/// Verifies the copy at `file` (`storage::verify_log`) and, in the same scan, the evidence
/// beside it: every line's signature, and that the copy holds each head (its record at
/// that seq has that hash). The evidence's check is `None` when there is no evidence file.
pub fn verify(file: &Path) -> Result<(crate::storage::Scan, Option<Checked>), CliError> {
    let copy_failed = |e: String| CliError::Failed(format!("{}: {e}", file.display()));
    // Read first, for the one scan; a broken copy is still told before broken evidence.
    let evidence = read(file);
    let wanted = match &evidence {
        Ok(Some((wanted, _))) => Some(wanted),
        _ => None,
    };
    let mut differs = None;
    let (scan, _) = crate::storage::verify_log_visiting(file, u64::MAX, |rec| {
        let signed = wanted.and_then(|w| w.get(&rec.seq));
        if differs.is_none() && signed.is_some_and(|h| *h != rec.hash) {
            differs = Some((rec.seq, rec.hash));
        }
    })
    .map_err(|e| CliError::Failed(e.to_string()))?;
    let Some((wanted, keys)) = evidence? else {
        return Ok((scan, None));
    };
    if let Some((seq, hash)) = differs {
        return Err(copy_failed(format!(
            "record {seq} has hash {}, the operator signed {}: the history was rewritten \
             after the operator signed it, or the copy is not this evidence's",
            hex(&hash),
            hex(&wanted[&seq])
        )));
    }
    let last_seq = wanted.keys().next_back().copied().unwrap_or(0);
    if scan.records < last_seq {
        return Err(copy_failed(format!(
            "the copy holds {} records, a signed head names record {last_seq}",
            scan.records
        )));
    }
    let checked = Checked {
        heads: wanted.len(),
        keys,
        last_seq,
    };
    Ok((scan, Some(checked)))
}

/// The hash each signed head names at its record, and the keys that signed them.
type Evidence = (BTreeMap<u64, [u8; 32]>, Vec<String>);

/// The signed heads of the evidence beside `file`, each signature checked: the hash each
/// names at its record, and the keys that signed them. `None` without an evidence file.
fn read(file: &Path) -> Result<Option<Evidence>, CliError> {
    let path = path(file);
    let failed = |e: String| CliError::Failed(format!("{}: {e}", path.display()));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e.to_string())),
    };
    let mut lines = text.lines().enumerate();
    if lines.next().map(|(_, h)| h) != Some(HEADER) {
        return Err(failed(format!("its first line is not {HEADER}")));
    }
    let (mut wanted, mut keys) = (BTreeMap::<u64, [u8; 32]>::new(), vec![]);
    for (i, line) in lines {
        let head = parse(line).map_err(|e| failed(format!("line {}: {e}", i + 1)))?;
        let s = signed(&head, None).map_err(|e| failed(format!("line {}: {e}", i + 1)))?;
        if wanted.insert(s.seq, s.hash).is_some_and(|h| h != s.hash) {
            return Err(failed(format!(
                "two signed heads differ at record {}",
                s.seq
            )));
        }
        if !keys.contains(&head.public_key) {
            keys.push(head.public_key);
        }
    }
    Ok(Some((wanted, keys)))
}

fn parse(line: &str) -> Result<pb::Head, String> {
    let f: Vec<&str> = line.split(',').collect();
    let [seq, hash, at_ms, public_key, signature] = f[..] else {
        return Err(format!("{} fields, not 5", f.len()));
    };
    Ok(pb::Head {
        seq: seq.parse().map_err(|_| "seq: not a number")?,
        hash: hash.into(),
        at_ms: at_ms.parse().map_err(|_| "at_ms: not a number")?,
        public_key: public_key.into(),
        signature: signature.into(),
    })
}
