//! A hub checks the server's reconciliation against its own copy of the ledger: the
//! figures are recomputed from the copy's records, up to the record the server signed
//! them at, by the same function the server uses (`rpc::reports::reconciliation`), and
//! must be the server's to the cent. The hub then trusts its copy, not the server.

use super::heads;
use crate::client::CliError;
use crate::code::hex;
use crate::domain::{parse_date, Departement};
use crate::rpc::pb;
use std::collections::BTreeSet;
use std::path::Path;

/// Checks `server`'s figures against the copy at `file`, which must hold the record they
/// were signed at (`heads::signed`, by `pinned` if given) with the same hash. The first
/// figure that differs is named.
pub fn check(
    server: &pb::Reconciliation,
    file: &Path,
    pinned: Option<&str>,
) -> Result<u64, CliError> {
    let failed = |e: String| CliError::Failed(format!("{}: {e}", file.display()));
    let head = server
        .head
        .as_ref()
        .ok_or_else(|| failed("the server's figures name no head".into()))?;
    let signed = heads::signed(head, pinned).map_err(&failed)?;
    let (scan, state) = super::replayed_to(file, signed.seq)?;
    if scan.head_hash != signed.hash {
        return Err(failed(format!(
            "record {} has hash {} here, the server signed {}: the histories differ",
            signed.seq,
            hex(&scan.head_hash),
            head.hash
        )));
    }
    let depts = server
        .departements
        .iter()
        .map(|d| Departement::parse(d))
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| failed(format!("the server's départements: {e}")))?;
    let day = |d: &str| parse_date(d).map_err(|e| failed(format!("the server's period: {e}")));
    let ours =
        crate::rpc::reports::reconciliation(&state, &depts, (day(&server.from)?, day(&server.to)?));
    match first_difference(server, &ours) {
        None => Ok(signed.seq),
        Some(what) => Err(failed(format!(
            "at record {}, the server's figures are not the copy's: {what}",
            signed.seq
        ))),
    }
}

/// Where two reconciliations differ first: a row, the totals, the discrepancies.
fn first_difference(server: &pb::Reconciliation, ours: &pb::Reconciliation) -> Option<String> {
    let rows = server.rows.len().max(ours.rows.len());
    for i in 0..rows {
        let (theirs, mine) = (server.rows.get(i), ours.rows.get(i));
        if theirs != mine {
            return Some(format!(
                "row {}: the server says {}, the copy {}",
                i + 1,
                row(theirs),
                row(mine)
            ));
        }
    }
    if server.totals != ours.totals {
        return Some(format!(
            "totals: the server says {}, the copy {}",
            row(server.totals.as_ref()),
            row(ours.totals.as_ref())
        ));
    }
    (server.discrepancies != ours.discrepancies).then(|| {
        format!(
            "the server found {} discrepancies, the copy {}",
            server.discrepancies.len(),
            ours.discrepancies.len()
        )
    })
}

fn row(r: Option<&pb::ReconRow>) -> String {
    let Some(r) = r else {
        return "no row".into();
    };
    let cents = |c: &Option<pb::Count>| c.as_ref().map_or(0, |c| c.cents);
    format!(
        "structure {} site {} commanditaire {} order {}: redeemed {}, reversed {}, settled {}, paid {}, outstanding {} (cents)",
        r.structure_id,
        r.site_id,
        r.commanditaire_id,
        r.order_id,
        cents(&r.redeemed),
        cents(&r.reversed),
        cents(&r.settled),
        cents(&r.paid),
        cents(&r.outstanding)
    )
}
