//! `passnum ledger mirror FILE`: a hub's (or an auditor's) own copy of the ledger, brought
//! up to the server's head. Each record is checked here before it is kept (see
//! `storage::mirror`), so the copy verifies with `passnum verify-log` and nothing else,
//! and a server whose ledger is not the one copied is caught at the first record that
//! differs. The head the run reached is kept with the operator's signature over it
//! (`heads.rs`): evidence a hub can show.

pub mod figures;
pub mod heads;

use crate::client::{CliError, Clients};
use crate::code::hex;
use crate::rpc::pb;
use crate::storage::mirror::{Mirror, MirrorError};
use std::path::Path;

/// What a run did: the copy's head before and after it, and who signed that head.
#[derive(Debug, PartialEq, Eq)]
pub struct Mirrored {
    pub from: u64,
    pub to: u64,
    pub head_hash: String,
    pub public_key: String,
}

/// Extends the copy at `file` to the server's head, page by page; each page is made
/// durable before the next is asked for, so a run cut short keeps what it checked. The
/// head must be signed (by `pinned`, if given) before any record is asked for; once the
/// copy holds it, it is added to the copy's evidence (`heads::keep`).
pub async fn mirror(c: &Clients, file: &Path, pinned: Option<&str>) -> Result<Mirrored, CliError> {
    let mut copy = Mirror::open(file).map_err(failed)?;
    let from = copy.head().0;
    let head = c
        .ledger
        .clone()
        .get_head(pb::GetHeadRequest {})
        .await?
        .into_inner();
    heads::signed(&head, pinned).map_err(CliError::Failed)?;
    if from > head.seq {
        return Err(CliError::Failed(format!(
            "the copy holds {from} records and the server's ledger {}: the server's ledger is not the one copied",
            head.seq
        )));
    }
    let extended = extend(c, &mut copy, head.seq).await;
    // What was checked is kept, whatever stopped the run.
    copy.sync().map_err(|e| failed(MirrorError::Io(e)))?;
    extended?;
    let (to, hash) = copy.head();
    if hex(&hash) != head.hash {
        return Err(CliError::Failed(format!(
            "record {to} of the copy has hash {}, the server's head {}",
            hex(&hash),
            head.hash
        )));
    }
    heads::keep(file, &head)
        .map_err(|e| CliError::Failed(format!("{}: {e}", heads::path(file).display())))?;
    Ok(Mirrored {
        from,
        to,
        head_hash: head.hash,
        public_key: head.public_key,
    })
}

async fn extend(c: &Clients, copy: &mut Mirror, until: u64) -> Result<(), CliError> {
    while copy.head().0 < until {
        let from_seq = copy.head().0 + 1;
        // Limit 0: the server's largest page.
        let req = pb::StreamRecordsRequest { from_seq, limit: 0 };
        let mut page = c.ledger.clone().stream_records(req).await?.into_inner();
        while let Some(r) = page.message().await? {
            copy.append(r.seq, &r.frame, &r.hash).map_err(failed)?;
            if r.seq == until {
                break;
            }
        }
        if copy.head().0 < from_seq {
            return Err(CliError::Failed(format!(
                "the server sent no record from {from_seq} on: the credential must read \
                 the whole ledger (operator or hub)"
            )));
        }
        copy.sync().map_err(|e| failed(MirrorError::Io(e)))?;
    }
    Ok(())
}

/// The copy at `file` verified and replayed to record `seq`, which it must hold.
pub fn replayed_to(
    file: &Path,
    seq: u64,
) -> Result<(crate::storage::Scan, crate::domain::State), CliError> {
    let failed = |e: String| CliError::Failed(format!("{}: {e}", file.display()));
    let (scan, state) =
        crate::storage::verify_log_upto(file, seq).map_err(|e| failed(e.to_string()))?;
    if scan.records < seq {
        return Err(failed(format!(
            "the copy holds {} records, not {seq}: bring it up to date first \
             (passnum ledger mirror)",
            scan.records
        )));
    }
    Ok((scan, state))
}

fn failed(e: MirrorError) -> CliError {
    CliError::Failed(e.to_string())
}

/// The hash of record `seq` of the copy at `file`, once records 1 to `seq` verify; with
/// `expect`, also that it is the hash another copy holds there. A server that showed two
/// hubs different histories cannot pass this for any record after they part, so hubs
/// that compare their copies at a common record (the older head of the two) catch it.
pub fn hash_at(file: &Path, seq: u64, expect: Option<&str>) -> Result<String, CliError> {
    let failed = |e: String| CliError::Failed(format!("{}: {e}", file.display()));
    if seq == 0 {
        return Err(CliError::Usage("--at: records are numbered from 1".into()));
    }
    let (scan, _) = replayed_to(file, seq)?;
    let hash = hex(&scan.head_hash);
    match expect {
        Some(other) if !other.trim().eq_ignore_ascii_case(&hash) => Err(failed(format!(
            "record {seq} has hash {hash} here and {} in the other copy: the two histories differ",
            other.trim()
        ))),
        _ => Ok(hash),
    }
}
