//! `passnum clearing …`: the operator's monthly round (run, payment file, payments and
//! returns), the statements structures and accountants need, the hubs' reconciliation and
//! proofs, and `passnum verify-proof`, which needs no server.

use crate::cli::Conn;
use crate::client::{failed, out, request_id, save, CliError, Clients};
use crate::rpc::pb;
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ClearingCmd {
    /// Settles what was redeemed before the cut-off (operator). Safe to run again.
    Run {
        #[arg(long)]
        cut_off: String,
    },
    /// The summary of a run (operator).
    Summary {
        #[arg(long)]
        cut_off: String,
    },
    /// Lists settlements, one page (operator; a structure sees its own).
    Settlements {
        #[arg(long, default_value = "")]
        cut_off: String,
        #[arg(long, default_value_t = 0)]
        structure: u64,
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Records the bank's execution of a settlement's transfer (operator).
    Pay {
        #[arg(long)]
        settlement: u64,
        #[arg(long)]
        bank_reference: String,
        #[arg(long)]
        executed_on: String,
        #[arg(long)]
        amount_cents: i64,
    },
    /// Records the bank's return of a transfer: its lines go to the next run (operator).
    Reject {
        #[arg(long)]
        settlement: u64,
        #[arg(long)]
        reason: String,
    },
    /// Records credit given back to a commanditaire (operator): a refund transfer, or value
    /// carried over to a new order, named by --reference. Never more than is due.
    ReturnCredit {
        #[arg(long)]
        commanditaire: u64,
        #[arg(long)]
        amount_cents: i64,
        #[arg(long)]
        reference: String,
    },
    /// Commanditaires' balances: funded, redeemed, credited, remaining.
    Balances {
        #[arg(long, default_value_t = 0)]
        commanditaire: u64,
    },
    /// An order's joint statement: what became of every pass.
    Statement {
        #[arg(long)]
        order: u64,
    },
    /// Writes the run's SEPA credit transfer file, pain.001.001.03 (operator).
    PaymentFile {
        #[arg(long)]
        cut_off: String,
        #[arg(long, env = "PASSNUM_DEBTOR_NAME")]
        debtor_name: String,
        #[arg(long, env = "PASSNUM_DEBTOR_IBAN")]
        debtor_iban: String,
        #[arg(long, env = "PASSNUM_DEBTOR_BIC", default_value = "")]
        debtor_bic: String,
        #[arg(long)]
        execution_date: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a run's statement as CSV: per settlement, or per pass with --lines.
    Export {
        #[arg(long)]
        cut_off: String,
        #[arg(long, default_value_t = 0)]
        structure: u64,
        #[arg(long, value_enum, default_value = "spreadsheet")]
        dialect: DialectArg,
        #[arg(long)]
        lines: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a structure's PDF attestation of payments received in [from, to).
    Attestation {
        #[arg(long)]
        structure: u64,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Reconciles a period for a hub's départements (or the operator's choice). With
    /// --copy, the hub's own copy of the ledger is first brought up to date, then the
    /// figures are recomputed from it and must be the server's (exit 4 where they differ).
    Reconcile {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long = "dept")]
        departements: Vec<String>,
        #[arg(long)]
        copy: Option<PathBuf>,
        /// The operator's published head key (hex), for --copy.
        #[arg(long, env = "PASSNUM_HEAD_KEY", requires = "copy")]
        head_key: Option<String>,
    },
    /// Fetches a pass's settlement proof; --out saves it for `passnum verify-proof`.
    Proof {
        #[arg(long)]
        serial: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Writes the anonymous usage report (open-data CSV).
    Usage {
        #[arg(long, default_value_t = 0)]
        order: u64,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DialectArg {
    Spreadsheet,
    Machine,
}

fn euros(cents: i64) -> String {
    crate::export::euros_comma(crate::domain::Cents(cents)) + " €"
}

fn count(c: &Option<pb::Count>) -> (u32, i64) {
    c.as_ref().map_or((0, 0), |c| (c.passes, c.cents))
}

fn summary_text(s: &pb::RunSummary) -> String {
    let (held, held_cents) = count(&s.held);
    let mut t = format!(
        "run {}: {} settlements, {} passes, {} ({} records appended now); held without verified IBAN: {held} passes, {}",
        s.cut_off, s.settlements, s.lines, euros(s.total_cents), s.records, euros(held_cents)
    );
    for c in &s.by_commanditaire {
        t.push_str(&format!(
            "\n  commanditaire {}: {} passes, {}",
            c.id,
            c.lines,
            euros(c.cents)
        ));
    }
    t
}

pub async fn run(cmd: ClearingCmd, conn: &Conn) -> Result<(), CliError> {
    let mut c = Clients::from_conn(conn).await?;
    let call = Call {
        cl: &mut c.clearing,
        conn,
    };
    match cmd {
        ClearingCmd::Run { cut_off } => run_clearing(call, cut_off).await,
        ClearingCmd::Summary { cut_off } => summary(call, cut_off).await,
        ClearingCmd::Settlements {
            cut_off,
            structure,
            page_size,
            page_token,
        } => settlements(call, cut_off, structure, page_size, page_token).await,
        ClearingCmd::Pay {
            settlement,
            bank_reference,
            executed_on,
            amount_cents,
        } => pay(call, settlement, bank_reference, executed_on, amount_cents).await,
        ClearingCmd::Reject { settlement, reason } => reject(call, settlement, reason).await,
        ClearingCmd::ReturnCredit {
            commanditaire,
            amount_cents,
            reference,
        } => return_credit(call, commanditaire, amount_cents, reference).await,
        ClearingCmd::Balances { commanditaire } => balances(call, commanditaire).await,
        ClearingCmd::Statement { order } => statement(call, order).await,
        ClearingCmd::PaymentFile {
            cut_off,
            debtor_name,
            debtor_iban,
            debtor_bic,
            execution_date,
            out: path,
        } => {
            payment_file(
                call,
                cut_off,
                debtor_name,
                debtor_iban,
                debtor_bic,
                execution_date,
                path,
            )
            .await
        }
        ClearingCmd::Export {
            cut_off,
            structure,
            dialect,
            lines,
            out: path,
        } => export(call, cut_off, structure, dialect, lines, path).await,
        ClearingCmd::Attestation {
            structure,
            from,
            to,
            out: path,
        } => attestation(call, structure, from, to, path).await,
        ClearingCmd::Reconcile {
            from,
            to,
            departements,
            copy,
            head_key,
        } => {
            let checked = copy.map(|file| (file, head_key));
            reconcile(call, (from, to), departements, checked).await
        }
        ClearingCmd::Proof { serial, out: path } => proof(call, serial, path).await,
        ClearingCmd::Usage {
            order,
            from,
            to,
            out: path,
        } => usage(call, order, from, to, path).await,
    }
}

/// What every clearing subcommand needs: the service, and how to print its answer.
struct Call<'a> {
    cl: &'a mut pb::clearing_client::ClearingClient<crate::client::Svc>,
    conn: &'a Conn,
}

async fn run_clearing(call: Call<'_>, cut_off: String) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let s = cl
        .run_clearing(pb::RunClearingRequest { cut_off })
        .await?
        .into_inner();
    out(conn, summary_json(&s), summary_text(&s));
    Ok(())
}

async fn summary(call: Call<'_>, cut_off: String) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let s = cl
        .get_run(pb::GetRunRequest { cut_off })
        .await?
        .into_inner();
    out(conn, summary_json(&s), summary_text(&s));
    Ok(())
}

async fn settlements(
    call: Call<'_>,
    cut_off: String,
    structure: u64,
    page_size: u32,
    page_token: String,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::ListSettlementsRequest {
        cut_off,
        structure_id: structure,
        page_size,
        page_token,
    };
    let mut s = cl.list_settlements(req).await?.into_inner();
    while let Some(i) = s.message().await? {
        out(
            conn,
            json!({"settlement_id": i.settlement_id, "reference": i.reference,
                "structure_id": i.structure_id, "lines": i.lines, "total_cents": i.total_cents,
                "status": i.status, "merkle_root": i.merkle_root, "next_page_token": i.next_page_token}),
            format!(
                "{} {} structure {} {} passes {} {}",
                i.settlement_id,
                i.reference,
                i.structure_id,
                i.lines,
                euros(i.total_cents),
                i.status
            ),
        );
    }
    Ok(())
}

async fn pay(
    call: Call<'_>,
    settlement: u64,
    bank_reference: String,
    executed_on: String,
    amount_cents: i64,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::RecordPaymentRequest {
        request_id: request_id(),
        settlement_id: settlement,
        bank_reference,
        executed_on,
        amount_cents,
    };
    cl.record_payment(req).await?;
    out(
        conn,
        json!({"paid": settlement}),
        format!("settlement {settlement} paid"),
    );
    Ok(())
}

async fn reject(call: Call<'_>, settlement: u64, reason: String) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::RecordRejectionRequest {
        request_id: request_id(),
        settlement_id: settlement,
        reason,
    };
    cl.record_rejection(req).await?;
    out(
        conn,
        json!({"rejected": settlement}),
        format!("settlement {settlement} returned: its passes go to the next run"),
    );
    Ok(())
}

async fn return_credit(
    call: Call<'_>,
    commanditaire: u64,
    amount_cents: i64,
    reference: String,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::ReturnCreditRequest {
        request_id: request_id(),
        commanditaire_id: commanditaire,
        amount_cents,
        reference,
    };
    let due = cl.return_credit(req).await?.into_inner().credit_due_cents;
    out(
        conn,
        json!({"commanditaire_id": commanditaire, "returned_cents": amount_cents, "credit_due_cents": due}),
        format!(
            "{} of credit given back to commanditaire {commanditaire}; still due {}",
            euros(amount_cents),
            euros(due)
        ),
    );
    Ok(())
}

async fn balances(call: Call<'_>, commanditaire: u64) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let r = cl
        .get_balances(pb::GetBalancesRequest {
            commanditaire_id: commanditaire,
        })
        .await?
        .into_inner();
    for b in r.balances {
        out(
            conn,
            json!({"commanditaire_id": b.commanditaire_id, "funded_cents": b.funded_cents,
                "redeemed_cents": count(&b.redeemed).1, "credited_cents": count(&b.credited).1,
                "paid_cents": count(&b.paid).1, "remaining_cents": b.remaining_cents,
                "funds_held_cents": b.funds_held_cents, "credit_returned_cents": b.credit_returned_cents,
                "credit_due_cents": b.credit_due_cents}),
            format!("{} {}: funded {}, redeemed {}, credited back {} (returned {}, due {}), remaining {} (paid out {}, held {})",
                b.commanditaire_id, b.name, euros(b.funded_cents), euros(count(&b.redeemed).1),
                euros(count(&b.credited).1), euros(b.credit_returned_cents), euros(b.credit_due_cents),
                euros(b.remaining_cents), euros(count(&b.paid).1), euros(b.funds_held_cents)),
        );
    }
    Ok(())
}

async fn statement(call: Call<'_>, order: u64) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let s = cl
        .get_order_statement(pb::GetOrderStatementRequest { order_id: order })
        .await?
        .into_inner();
    let (r, rc) = count(&s.redeemed);
    let (x, _) = count(&s.expired);
    let (k, _) = count(&s.cancelled);
    let (_, due) = count(&s.credit_due);
    out(
        conn,
        json!({"order_id": s.order_id, "issued": s.issued, "activated": s.activated,
            "redeemed": r, "redeemed_cents": rc, "cancelled": k, "expired": x,
            "credit_due_cents": due, "reversed": s.reversed, "closed": s.closed,
            "fee_recorded": s.fee_recorded, "fee_basis_points": s.fee_basis_points, "fee_cents": s.fee_cents}),
        format!("order {}: issued {}, activated {}, redeemed {r} ({}), cancelled {k}, expired {x}, credit due {}{}{}",
            s.order_id, s.issued, s.activated, euros(rc), euros(due),
            if s.fee_recorded {
                format!(", fee {} HT ({})", euros(s.fee_cents), fee_rate(s.fee_basis_points))
            } else {
                String::new()
            },
            if s.closed { " (closed)" } else { "" }),
    );
    Ok(())
}

async fn payment_file(
    call: Call<'_>,
    cut_off: String,
    debtor_name: String,
    debtor_iban: String,
    debtor_bic: String,
    execution_date: String,
    path: PathBuf,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::ExportPaymentFileRequest {
        cut_off,
        debtor_name,
        debtor_iban,
        debtor_bic,
        execution_date,
    };
    save(conn, cl.export_payment_file(req).await?, &path).await?;
    Ok(())
}

async fn export(
    call: Call<'_>,
    cut_off: String,
    structure: u64,
    dialect: DialectArg,
    lines: bool,
    path: PathBuf,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let dialect = match dialect {
        DialectArg::Spreadsheet => pb::CsvDialect::Spreadsheet,
        DialectArg::Machine => pb::CsvDialect::Machine,
    } as i32;
    let req = pb::ExportStatementRequest {
        cut_off,
        structure_id: structure,
        dialect,
        lines,
    };
    save(conn, cl.export_statement(req).await?, &path).await?;
    Ok(())
}

async fn attestation(
    call: Call<'_>,
    structure: u64,
    from: String,
    to: String,
    path: PathBuf,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::GetAttestationRequest {
        structure_id: structure,
        from,
        to,
    };
    save(conn, cl.get_attestation(req).await?, &path).await?;
    Ok(())
}

async fn reconcile(
    call: Call<'_>,
    (from, to): (String, String),
    departements: Vec<String>,
    copy: Option<(PathBuf, Option<String>)>,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let r = cl
        .reconcile(pb::ReconcileRequest {
            from,
            to,
            departements,
        })
        .await?
        .into_inner();
    let mut checked = None;
    if let Some((file, head_key)) = copy {
        let c = Clients::from_conn(conn).await?;
        crate::cli_mirror::mirror(&c, &file, head_key.as_deref()).await?;
        let seq = crate::cli_mirror::figures::check(&r, &file, head_key.as_deref())?;
        checked = Some(format!(
            "\nrecomputed from {} at record {seq}: the same figures",
            file.display()
        ));
    }
    let head = r.head.clone().unwrap_or_default();
    let t = r.totals.unwrap_or_default();
    let mut text = format!(
        "{} to {} ({}), ledger head {} {}: {} rows; redeemed {}, reversed {}, paid {}, outstanding {}",
        r.from, r.to, r.departements.join(","), head.seq, head.hash, r.rows.len(),
        euros(count(&t.redeemed).1), euros(count(&t.reversed).1), euros(count(&t.paid).1),
        euros(count(&t.outstanding).1),
    );
    text.push_str(checked.as_deref().unwrap_or(""));
    for d in &r.discrepancies {
        text.push_str(&format!(
            "\n  DISCREPANCY {} settlements {:?} {} expected {} found {}",
            d.kind, d.settlement_ids, d.serial, d.expected_cents, d.found_cents
        ));
    }
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|row| {
            json!({
        "structure_id": row.structure_id, "site_id": row.site_id,
        "commanditaire_id": row.commanditaire_id, "order_id": row.order_id,
        "redeemed_cents": count(&row.redeemed).1, "reversed_cents": count(&row.reversed).1,
        "settled_cents": count(&row.settled).1, "paid_cents": count(&row.paid).1,
        "outstanding_cents": count(&row.outstanding).1})
        })
        .collect();
    let discrepancies: Vec<_> = r
        .discrepancies
        .iter()
        .map(|d| {
            json!({"kind": d.kind,
        "settlement_ids": d.settlement_ids, "serial": d.serial})
        })
        .collect();
    out(
        conn,
        json!({"head_seq": head.seq, "head_hash": head.hash, "rows": rows,
        "discrepancies": discrepancies, "checked_against_copy": checked.is_some()}),
        text,
    );
    Ok(())
}

async fn proof(call: Call<'_>, serial: String, path: Option<PathBuf>) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let p = cl
        .get_proof(pb::GetProofRequest { serial })
        .await?
        .into_inner();
    let doc = proof_json(&p);
    if let Some(path) = &path {
        std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("JSON encodes"))
            .map_err(|e| failed(path, e))?;
    }
    let line = p.line.clone().unwrap_or_default();
    out(
        conn,
        doc,
        format!(
            "pass {} is line {} of {} in settlement {} ({}, {}), root {}",
            line.serial,
            p.index + 1,
            p.line_count,
            p.settlement_id,
            p.reference,
            p.status,
            p.merkle_root
        ),
    );
    Ok(())
}

async fn usage(
    call: Call<'_>,
    order: u64,
    from: String,
    to: String,
    path: PathBuf,
) -> Result<(), CliError> {
    let Call { cl, conn } = call;
    let req = pb::ExportUsageRequest {
        order_id: order,
        from,
        to,
    };
    save(conn, cl.export_usage(req).await?, &path).await?;
    Ok(())
}

fn summary_json(s: &pb::RunSummary) -> serde_json::Value {
    let shares = |v: &[pb::Share]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|x| json!({"id": x.id, "lines": x.lines, "cents": x.cents}))
            .collect()
    };
    json!({"cut_off": s.cut_off, "settlements": s.settlements, "lines": s.lines,
        "total_cents": s.total_cents, "held_cents": count(&s.held).1, "records": s.records,
        "by_commanditaire": shares(&s.by_commanditaire), "by_structure": shares(&s.by_structure)})
}

/// The proof as a JSON document: everything `verify-proof` needs, nothing it must trust.
pub fn proof_json(p: &pb::PassProof) -> serde_json::Value {
    let l = p.line.clone().unwrap_or_default();
    json!({
        "settlement_id": p.settlement_id, "reference": p.reference, "structure_id": p.structure_id,
        "total_cents": p.total_cents, "line_count": p.line_count, "index": p.index,
        "merkle_root": p.merkle_root, "status": p.status,
        "line": {"serial": l.serial, "site_id": l.site_id, "commune": l.commune, "service": l.service,
            "redeemed_at_ms": l.redeemed_at_ms, "commanditaire_id": l.commanditaire_id,
            "order_id": l.order_id, "amount_cents": l.amount_cents},
        "path": p.path.iter().map(|s| json!({"sibling": s.sibling, "sibling_is_left": s.sibling_is_left})).collect::<Vec<_>>(),
    })
}

/// Reads a proof document back (the inverse of `proof_json`).
pub fn proof_from_json(v: &serde_json::Value) -> Result<pb::PassProof, String> {
    let u = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .ok_or(format!("`{k}` is missing or not a number"))
    };
    let i = |v: &serde_json::Value, k: &str| {
        v[k].as_i64()
            .ok_or(format!("`{k}` is missing or not a number"))
    };
    let s = |v: &serde_json::Value, k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or(format!("`{k}` is missing or not text"))
    };
    let l = &v["line"];
    let path = v["path"]
        .as_array()
        .ok_or("`path` is missing")?
        .iter()
        .map(|st| {
            Ok(pb::PathStep {
                sibling: s(st, "sibling")?,
                sibling_is_left: st["sibling_is_left"]
                    .as_bool()
                    .ok_or("`sibling_is_left` is missing")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(pb::PassProof {
        settlement_id: u(v, "settlement_id")?,
        reference: s(v, "reference")?,
        structure_id: u(v, "structure_id")?,
        total_cents: i(v, "total_cents")?,
        line_count: u(v, "line_count")?,
        index: u(v, "index")?,
        merkle_root: s(v, "merkle_root")?,
        status: s(v, "status").unwrap_or_default(),
        path,
        line: Some(pb::SettlementLine {
            serial: s(l, "serial")?,
            site_id: u(l, "site_id")?,
            commune: s(l, "commune")?,
            service: s(l, "service")?,
            redeemed_at_ms: i(l, "redeemed_at_ms")?,
            commanditaire_id: u(l, "commanditaire_id")?,
            order_id: u(l, "order_id")?,
            amount_cents: i(l, "amount_cents")?,
        }),
    })
}

/// `passnum verify-proof`: checks a saved proof with no server.
pub fn verify_proof_file(path: &Path, root: Option<&str>) -> Result<(), CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| failed(path, e))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| failed(path, e))?;
    let p = proof_from_json(&doc).map_err(|e| failed(path, e))?;
    let proof = crate::rpc::reports::proof_from_pb(&p).map_err(|e| failed(path, e))?;
    let trusted = match root {
        Some(r) => Some(
            crate::code::unhex32(r)
                .ok_or_else(|| CliError::Usage("--root is 64 hex digits".into()))?,
        ),
        None => None,
    };
    crate::domain::proof::verify(&proof, trusted.as_ref())
        .map_err(|e| CliError::Failed(format!("proof refused: {e}")))?;
    println!(
        "proof holds: pass {} is line {} of {} in settlement {} ({}), root {}",
        proof.line.serial,
        proof.index + 1,
        proof.line_count,
        proof.settlement.0,
        proof.reference,
        p.merkle_root
    );
    Ok(())
}

/// A rate in basis points as people read it, like `euros`: 400 is "4,00 %".
fn fee_rate(basis_points: u32) -> String {
    format!("{},{:02} %", basis_points / 100, basis_points % 100)
}
