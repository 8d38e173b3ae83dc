//! Client commands for the ledger itself: its head, the fsync figures, the chain check, a
//! hub's copy, its records.

use super::*;
use serde_json::json;

pub(super) async fn ledger(what: LedgerCmd, conn: Conn) -> Result<(), CliError> {
    let c = Clients::from_conn(&conn).await?;
    match what {
        LedgerCmd::Head => head(c, &conn).await,
        LedgerCmd::Syncs => syncs(c, &conn).await,
        LedgerCmd::Verify => verify(c, &conn).await,
        LedgerCmd::Mirror { file, head_key } => {
            let m = crate::cli_mirror::mirror(&c, &file, head_key.as_deref()).await?;
            out(
                &conn,
                json!({"from": m.from, "to": m.to, "head_hash": m.head_hash, "head_key": m.public_key}),
                format!(
                    "copy checked and extended from record {} to {}, head {} (signed by key {}, kept in {})",
                    m.from,
                    m.to,
                    m.head_hash,
                    m.public_key,
                    crate::cli_mirror::heads::path(&file).display()
                ),
            );
            Ok(())
        }
        LedgerCmd::Records { from, limit } => records(c, &conn, from, limit).await,
    }
}

async fn head(mut c: Clients, conn: &Conn) -> Result<(), CliError> {
    let h = c.ledger.get_head(pb::GetHeadRequest {}).await?.into_inner();
    crate::cli_mirror::heads::signed(&h, None).map_err(CliError::Failed)?;
    out(
        conn,
        json!({"seq": h.seq, "hash": h.hash, "at_ms": h.at_ms, "public_key": h.public_key, "signature": h.signature}),
        format!(
            "head: record {} hash {}, signed at {} by key {}",
            h.seq,
            h.hash,
            crate::client::instant(h.at_ms),
            h.public_key
        ),
    );
    Ok(())
}

async fn syncs(mut c: Clients, conn: &Conn) -> Result<(), CliError> {
    let g = c
        .ledger
        .get_group_commits(pb::GetGroupCommitsRequest {})
        .await?
        .into_inner();
    out(
        conn,
        json!({"syncs": g.syncs, "requests": g.requests, "sync_p50_us": g.sync_p50_us,
            "sync_p99_us": g.sync_p99_us, "sync_max_us": g.sync_max_us,
            "answered": g.answered, "engine_mean_us": g.engine_mean_us,
            "queue_mean_us": g.queue_mean_us, "staging_mean_us": g.staging_mean_us,
            "sync_wait_mean_us": g.sync_wait_mean_us, "fsync_mean_us": g.fsync_mean_us,
            "answer_mean_us": g.answer_mean_us}),
        format!(
            "{} fsyncs acknowledged {} requests; durations at most p50 {} µs, p99 {} µs, max {} µs\n\
             {} requests answered in {} µs on average: queue {}, staging {}, waiting for the running fsync {}, own fsync {}, answer {}",
            g.syncs, g.requests, g.sync_p50_us, g.sync_p99_us, g.sync_max_us,
            g.answered, g.engine_mean_us, g.queue_mean_us, g.staging_mean_us,
            g.sync_wait_mean_us, g.fsync_mean_us, g.answer_mean_us
        ),
    );
    Ok(())
}

/// Prints the chain check; a broken chain is a failure (exit 1) after its problem is told.
async fn verify(mut c: Clients, conn: &Conn) -> Result<(), CliError> {
    let v = c
        .ledger
        .verify_chain(pb::VerifyChainRequest {})
        .await?
        .into_inner();
    let text = if v.ok {
        format!(
            "chain verified: {} records, head {}",
            v.records, v.head_hash
        )
    } else {
        format!("CHAIN BROKEN: {}", v.problem)
    };
    out(
        conn,
        json!({"ok": v.ok, "records": v.records, "head_hash": v.head_hash, "problem": v.problem}),
        text,
    );
    if !v.ok {
        return Err(CliError::Failed("the ledger does not verify".into()));
    }
    Ok(())
}

/// Prints records as they stream, one line each.
async fn records(mut c: Clients, conn: &Conn, from: u64, limit: u32) -> Result<(), CliError> {
    let mut s = c
        .ledger
        .stream_records(pb::StreamRecordsRequest {
            from_seq: from,
            limit,
        })
        .await?
        .into_inner();
    while let Some(r) = s.message().await? {
        out(
            conn,
            json!({"seq": r.seq, "at_ms": r.at_ms, "hash": r.hash, "body": serde_json::from_str::<serde_json::Value>(&r.body_json).unwrap_or_default()}),
            format!("#{} {} {}", r.seq, r.hash, r.body_json),
        );
    }
    Ok(())
}
