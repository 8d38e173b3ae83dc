//! Clearing over gRPC against the real server: a month of redemptions across structures and
//! commanditaires is cleared, paid and returned, exported (pain.001 validated by xmllint
//! against the official XSD, CSV parsed back), reconciled by a hub and proved pass by pass.

mod common;
use common::*;
use passnum::domain::{proof, FeeRate};
use passnum::engine::Ledger;
use passnum::rpc::pb;
use passnum::rpc::reports::proof_from_pb;
use std::collections::{BTreeMap, HashSet};
use tonic::Code;

const FEB_1: &str = "2026-02-01";
const MAR_1: &str = "2026-03-01";
const IBAN_1: &str = "FR7630006000011234567890189";
const IBAN_2: &str = "FR1420041010050500013M02606";

async fn set_iban(t: &TestServer, structure: u64, iban: &str) {
    t.op.registry
        .clone()
        .set_structure_iban(pb::SetStructureIbanRequest {
            request_id: rid(),
            structure_id: structure,
            iban: iban.into(),
        })
        .await
        .unwrap();
}

/// What the test itself redeemed: serial → (structure, commanditaire, cents, day).
type Book = BTreeMap<String, (u64, u64, i64, i64)>;

/// January: each day, a few passes of both commanditaires at structure 1's counter and bus
/// and at structure 2's counter; one redemption reversed. Returns what stands.
async fn a_month_of_redemptions(t: &TestServer) -> Book {
    registry(t).await;
    set_iban(t, 1, IBAN_1).await;
    let (_, gironde) = order(t, 1, 40, true).await;
    let (_, dordogne) = order(t, 2, 30, true).await;
    let s1 = t.credential(pb::Role::Structure, 1, &[]).await;
    let s2 = t.credential(pb::Role::Structure, 2, &[]).await;
    let mut book = Book::new();
    let (mut g, mut d) = (gironde.iter(), dordogne.iter());
    for day in 1..31 {
        t.set_now(T0 + day * DAY + 10 * 3_600_000);
        let todays = [(g.next(), 1, 1), (d.next(), 2, 2)];
        for (k, (pass, commanditaire, structure)) in todays.into_iter().enumerate() {
            let Some(pass) = pass else { continue };
            let (client, site, place) = match (structure, (day + k as i64) % 2) {
                (1, 0) => (&s1, 1, None),
                (1, _) => (&s1, 2, stop(0)),
                _ => (&s2, 4, None),
            };
            let req = redeem_req(&pass.code, site, place, "aide");
            client.redemptions.clone().redeem(req).await.unwrap();
            book.insert(pass.serial.clone(), (structure, commanditaire, 1000, day));
        }
    }
    // Day 30: the last Gironde pass was a mistake, given back at once.
    let (serial, _) = book
        .iter()
        .filter(|(_, v)| v.1 == 1)
        .max_by_key(|(_, v)| v.3)
        .unwrap();
    let serial = serial.clone();
    let pass = gironde.iter().find(|p| p.serial == serial).unwrap();
    let site = 1; // day 30 is even: Gironde's pass went to the counter
    s1.redemptions
        .clone()
        .reverse(pb::ReverseRequest {
            request_id: rid(),
            pass: scanned(&pass.code),
            site_id: site,
        })
        .await
        .unwrap();
    book.remove(&serial);
    book
}

fn sum_by(book: &Book, key: impl Fn(&(u64, u64, i64, i64)) -> u64) -> BTreeMap<u64, (u64, i64)> {
    let mut m = BTreeMap::new();
    for v in book.values() {
        let e = m.entry(key(v)).or_insert((0, 0));
        e.0 += 1;
        e.1 += v.2;
    }
    m
}

fn shares(v: &[pb::Share]) -> BTreeMap<u64, (u64, i64)> {
    v.iter().map(|s| (s.id, (s.lines, s.cents))).collect()
}

async fn settlements(c: &passnum::client::Clients, cut_off: &str) -> Vec<pb::SettlementInfo> {
    let mut out = vec![];
    let mut token = String::new();
    loop {
        let req = pb::ListSettlementsRequest {
            cut_off: cut_off.into(),
            structure_id: 0,
            page_size: 1,
            page_token: token.clone(),
        };
        let mut s = c
            .clearing
            .clone()
            .list_settlements(req)
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(i) = s.message().await.unwrap() {
            last = Some(i.next_page_token.clone());
            out.push(i);
        }
        match last {
            Some(t) if !t.is_empty() => token = t,
            _ => return out,
        }
    }
}

async fn collect(stream: tonic::Response<tonic::Streaming<pb::Chunk>>) -> Vec<u8> {
    let mut s = stream.into_inner();
    let mut out = vec![];
    while let Some(c) = s.message().await.unwrap() {
        out.extend(c.data);
    }
    out
}

/// Splits CSV text with our dialects' quoting into rows of fields.
fn parse_csv(text: &str, sep: char) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let (mut row, mut field, mut quoted) = (vec![], String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (c, false) if c == sep => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

/// The run of February 1st as CSV, every structure.
async fn statement(t: &TestServer, dialect: pb::CsvDialect, lines: bool) -> Vec<u8> {
    let req = pb::ExportStatementRequest {
        cut_off: FEB_1.into(),
        structure_id: 0,
        dialect: dialect as i32,
        lines,
    };
    collect(t.op.clearing.clone().export_statement(req).await.unwrap()).await
}

/// The hub recomputes the server's figures `r` from its own copy of the ledger, at the
/// record the server signed them at: the same, to the cent. Figures changed after the
/// server signed them, or a copy short of that record, are refused, naming why.
async fn a_hub_recomputes_the_figures_from_its_copy(t: &TestServer, r: &pb::Reconciliation) {
    use passnum::cli_mirror::figures::check;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hub-copy.log");
    let key = head(&t.op).await.public_key;
    let failure = |r: Result<u64, passnum::client::CliError>| r.unwrap_err().to_string();
    let why = failure(check(r, &copy, Some(&key)));
    assert!(why.contains("bring it up to date"), "{why}");

    let hub = t.credential(pb::Role::Hub, 0, &["33"]).await;
    passnum::cli_mirror::mirror(&hub, &copy, Some(&key))
        .await
        .unwrap();
    let at = r.head.as_ref().unwrap().seq;
    assert_eq!(check(r, &copy, Some(&key)).unwrap(), at);

    let mut changed = r.clone();
    changed.rows[0].redeemed.as_mut().unwrap().cents += 1000;
    let why = failure(check(&changed, &copy, Some(&key)));
    assert!(why.contains("row 1: the server says"), "{why}");
    let mut changed = r.clone();
    changed
        .totals
        .as_mut()
        .unwrap()
        .paid
        .as_mut()
        .unwrap()
        .cents -= 1;
    let why = failure(check(&changed, &copy, Some(&key)));
    assert!(why.contains("totals: the server says"), "{why}");
    let mut moved = r.clone();
    moved.head.as_mut().unwrap().seq -= 1;
    let why = failure(check(&moved, &copy, Some(&key)));
    assert!(why.contains("does not verify"), "{why}");
}

/// A hub's reconciliation of January, over its own départements.
async fn january(hub: &passnum::client::Clients) -> pb::Reconciliation {
    let req = pb::ReconcileRequest {
        from: "2026-01-01".into(),
        to: FEB_1.into(),
        departements: vec![],
    };
    hub.clearing
        .clone()
        .reconcile(req)
        .await
        .unwrap()
        .into_inner()
}

fn xsd_path() -> std::path::PathBuf {
    let p = std::env::var_os("PASSNUM_PAIN001_XSD")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-deps/pain.001.001.03.xsd")
        });
    assert!(
        p.exists(),
        "{} is missing: run scripts/test-deps.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

fn validate_pain001(xml: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pain.xml");
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd_path())
        .arg(&file)
        .output()
        .expect("xmllint runs (scripts/test-deps.sh installs libxml2-utils)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    s.split(open)
        .skip(1)
        .map(|p| p.split(close).next().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_cleared_paid_returned_exported_reconciled_and_proved() {
    let t = TestServer::start().await;
    let book = a_month_of_redemptions(&t).await;
    let mut cl = t.op.clearing.clone();
    t.set_now(T0 + 35 * DAY);

    // The cut-off is checked: not a date, or in the future.
    refused(
        cl.run_clearing(pb::RunClearingRequest {
            cut_off: "2026-13-01".into(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    refused(
        cl.run_clearing(pb::RunClearingRequest {
            cut_off: "2026-03-01".into(),
        })
        .await,
        Code::InvalidArgument,
        "CUT_OFF_IN_FUTURE",
    );

    // February 1st: the January 31 redemptions (day 30 here is Jan 31) are still inside
    // their 24 h reversal window at the cut-off only if made after Jan 31 00:00 − 24 h;
    // the test's last day is Jan 31 10:00, so it waits for the next run.
    let run = cl
        .run_clearing(pb::RunClearingRequest {
            cut_off: FEB_1.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let waiting: Book = book
        .iter()
        .filter(|(_, v)| v.3 == 30)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let cleared: Book = book
        .iter()
        .filter(|(_, v)| v.3 < 30)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(!waiting.is_empty());
    assert_eq!(run.lines as usize, cleared.len());
    assert_eq!(run.total_cents, cleared.values().map(|v| v.2).sum::<i64>());
    assert_eq!(shares(&run.by_commanditaire), sum_by(&cleared, |v| v.1));
    assert_eq!(shares(&run.by_structure), sum_by(&cleared, |v| v.0));
    assert_eq!(run.settlements, 2, "one settlement per structure");
    let held = run.held.unwrap();
    let s2 = sum_by(&cleared, |v| v.0)[&2];
    assert_eq!(
        (u64::from(held.passes), held.cents),
        s2,
        "structure 2 has no verified IBAN"
    );

    // The same cut-off again settles nothing and states the same run.
    let again = cl
        .run_clearing(pb::RunClearingRequest {
            cut_off: FEB_1.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.records, 0);
    assert_eq!(
        pb::RunSummary {
            records: run.records,
            ..again.clone()
        },
        run
    );
    let got = cl
        .get_run(pb::GetRunRequest {
            cut_off: FEB_1.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, again);

    // Every settlement's total is the sum of its lines, seen three ways.
    let list = settlements(&t.op, FEB_1).await;
    assert_eq!(list.len(), 2);
    for s in &list {
        let by_c: i64 = s.by_commanditaire.iter().map(|c| c.cents).sum();
        assert_eq!(by_c, s.total_cents);
        assert_eq!(
            s.total_cents,
            cleared
                .values()
                .filter(|v| v.0 == s.structure_id)
                .map(|v| v.2)
                .sum::<i64>()
        );
    }
    let s1 = list.iter().find(|s| s.structure_id == 1).unwrap().clone();
    let s2 = list.iter().find(|s| s.structure_id == 2).unwrap().clone();

    // pain.001: structure 1 only (verified IBAN), valid against the official XSD.
    let req = pb::ExportPaymentFileRequest {
        cut_off: FEB_1.into(),
        debtor_name: "Opérateur Pass numérique".into(),
        debtor_iban: "FR76 3000 4000 0312 3456 7890 143".into(),
        debtor_bic: "BNPAFRPP".into(),
        execution_date: "2026-02-06".into(),
    };
    let xml = collect(cl.export_payment_file(req.clone()).await.unwrap()).await;
    validate_pain001(&xml).unwrap();
    let text = String::from_utf8(xml.clone()).unwrap();
    assert_eq!(
        between(&text, "<EndToEndId>", "<"),
        vec![s1.reference.as_str()]
    );
    assert_eq!(between(&text, "<NbOfTxs>", "<"), vec!["1", "1"]);
    let euros = format!("{}.{:02}", s1.total_cents / 100, s1.total_cents % 100);
    assert_eq!(
        between(&text, "<CtrlSum>", "<"),
        vec![euros.as_str(), euros.as_str()]
    );
    assert!(
        text.contains(&s1.merkle_root),
        "the remittance carries the root"
    );
    // A broken file is caught by the validator: the check can fail.
    let broken = text.replacen(
        "<PmtMtd>TRF</PmtMtd>",
        "<PmtMtd>CHK</PmtMtd><PmtMtd>TRF</PmtMtd>",
        1,
    );
    assert!(validate_pain001(broken.as_bytes()).is_err());
    refused(
        cl.export_payment_file(pb::ExportPaymentFileRequest {
            debtor_iban: "FR76 0000".into(),
            ..req.clone()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );

    // CSV, machine dialect, per pass: parsed back, every line and cent.
    let machine = statement(&t, pb::CsvDialect::Machine, true).await;
    let rows = parse_csv(std::str::from_utf8(&machine).unwrap(), ',');
    assert_eq!(rows[0][0], "reference");
    let serials: HashSet<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(serials, cleared.keys().map(String::as_str).collect());
    let cents: i64 = rows[1..].iter().map(|r| r[9].parse::<i64>().unwrap()).sum();
    assert_eq!(cents, run.total_cents);

    // CSV, spreadsheet dialect, per settlement: BOM, ';', CRLF, decimal comma.
    let sheet = statement(&t, pb::CsvDialect::Spreadsheet, false).await;
    let sheet = String::from_utf8(sheet).unwrap();
    assert!(sheet.starts_with('\u{feff}') && sheet.contains("\r\n"));
    let rows = parse_csv(sheet.trim_start_matches('\u{feff}'), ';');
    assert_eq!(rows[0][0], "Référence");
    let total: i64 = rows[1..]
        .iter()
        .map(|r| r[5].replace(',', "").parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, run.total_cents);

    // A structure reads only its own statement.
    let s2c = t.credential(pb::Role::Structure, 2, &[]).await;
    refused(
        s2c.clearing
            .clone()
            .export_statement(pb::ExportStatementRequest {
                cut_off: FEB_1.into(),
                structure_id: 1,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "OUT_OF_SCOPE",
    );

    // The bank pays structure 1 (the amount must be the settlement's) and returns 2's.
    let pay = |amount| pb::RecordPaymentRequest {
        request_id: rid(),
        settlement_id: s1.settlement_id,
        bank_reference: "BNP-2026-02-06-0001".into(),
        executed_on: "2026-02-06".into(),
        amount_cents: amount,
    };
    refused(
        cl.record_payment(pay(s1.total_cents - 1)).await,
        Code::InvalidArgument,
        "PAYMENT_AMOUNT_MISMATCH",
    );
    cl.record_payment(pay(s1.total_cents)).await.unwrap();
    refused(
        cl.record_payment(pay(s1.total_cents)).await,
        Code::FailedPrecondition,
        "SETTLEMENT_NOT_OPEN",
    );
    cl.record_rejection(pb::RecordRejectionRequest {
        request_id: rid(),
        settlement_id: s2.settlement_id,
        reason: "Compte clôturé".into(),
    })
    .await
    .unwrap();

    // Balances: funded − redeemed − credited; what was paid left the commanditaire's funds.
    let balances = cl
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .balances;
    for b in &balances {
        let redeemed: i64 = book
            .values()
            .filter(|v| v.1 == b.commanditaire_id)
            .map(|v| v.2)
            .sum();
        assert_eq!(b.redeemed.unwrap().cents, redeemed);
        assert_eq!(
            b.remaining_cents,
            b.funded_cents - redeemed - b.credited.unwrap().cents
        );
        assert_eq!(b.funds_held_cents, b.funded_cents - b.paid.unwrap().cents);
    }
    let paid: i64 = balances.iter().map(|b| b.paid.unwrap().cents).sum();
    assert_eq!(paid, s1.total_cents);

    // March: the returned lines and the redemptions that waited go into the next run.
    set_iban(&t, 2, IBAN_2).await;
    t.set_now(T0 + 62 * DAY);
    let march = cl
        .run_clearing(pb::RunClearingRequest {
            cut_off: MAR_1.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let returned = cleared.values().filter(|v| v.0 == 2).count();
    assert_eq!(march.lines as usize, returned + waiting.len());
    assert_eq!(
        march.held.unwrap().passes,
        0,
        "structure 2's IBAN is verified now"
    );

    // Each standing redemption is in exactly one standing settlement, and proves it.
    let hub = t.credential(pb::Role::Hub, 0, &["33"]).await;
    let mut roots = BTreeMap::new();
    for s in settlements(&t.op, "").await {
        roots.insert(s.settlement_id, s.merkle_root.clone());
    }
    for serial in book.keys() {
        let p = hub
            .clearing
            .clone()
            .get_proof(pb::GetProofRequest {
                serial: serial.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(p.status, "rejected");
        let domain = proof_from_pb(&p).unwrap();
        let root = passnum::code::unhex32(&roots[&p.settlement_id]).unwrap();
        proof::verify(&domain, Some(&root)).unwrap();
        // A tampered line (one cent more) no longer proves.
        let mut forged = domain.clone();
        forged.line.amount.0 += 1;
        assert_eq!(
            proof::verify(&forged, Some(&root)),
            Err(proof::ProofError::RootMismatch)
        );
    }
    // The CLI's verifier, with no server: a saved proof holds, a tampered file does not.
    let any = book.keys().next().unwrap().clone();
    let p = hub
        .clearing
        .clone()
        .get_proof(pb::GetProofRequest { serial: any })
        .await
        .unwrap()
        .into_inner();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proof.json");
    let doc = passnum::cli_clearing::proof_json(&p);
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let verify = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_passnum"))
            .arg("verify-proof")
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = verify(&["--root", &p.merkle_root]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("proof holds"));
    let mut forged = doc.clone();
    forged["line"]["amount_cents"] = serde_json::json!(p.line.as_ref().unwrap().amount_cents + 100);
    std::fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let refused_out = verify(&[]);
    assert_eq!(refused_out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused_out.stderr).contains("proof refused"));
    let unknown = passnum::domain::Serial::from_random(12345).to_string();
    refused(
        hub.clearing
            .clone()
            .get_proof(pb::GetProofRequest { serial: unknown })
            .await,
        Code::NotFound,
        "UNKNOWN_PASS",
    );

    // The hub reconciles January: no discrepancy, every figure the sum of its rows.
    let r = january(&hub).await;
    assert!(r.discrepancies.is_empty(), "{:?}", r.discrepancies);
    a_hub_recomputes_the_figures_from_its_copy(&t, &r).await;
    let head_key = head(&t.op).await.public_key;
    let signed = passnum::cli_mirror::heads::signed(r.head.as_ref().unwrap(), Some(&head_key));
    assert!(signed.unwrap().seq > 0, "the figures' head, signed");
    let tot = r.totals.unwrap();
    assert_eq!(
        tot.redeemed.unwrap().passes as usize,
        book.len() + 1,
        "the reversed one counts as redeemed"
    );
    assert_eq!(tot.reversed.unwrap().passes, 1);
    assert_eq!(tot.paid.unwrap().cents, s1.total_cents);
    assert_eq!(
        tot.paid.unwrap().cents + tot.outstanding.unwrap().cents,
        book.values().map(|v| v.2).sum::<i64>()
    );
    let rows_sum: i64 = r.rows.iter().map(|x| x.redeemed.unwrap().cents).sum();
    assert_eq!(rows_sum, tot.redeemed.unwrap().cents);
    refused(
        hub.clearing
            .clone()
            .reconcile(pb::ReconcileRequest {
                from: "2026-01-01".into(),
                to: FEB_1.into(),
                departements: vec!["24".into()],
            })
            .await,
        Code::PermissionDenied,
        "OUT_OF_SCOPE",
    );

    // Structure 1's attestation for February lists its payment.
    let pdf = collect(
        cl.get_attestation(pb::GetAttestationRequest {
            structure_id: 1,
            from: FEB_1.into(),
            to: MAR_1.into(),
        })
        .await
        .unwrap(),
    )
    .await;
    assert!(pdf.starts_with(b"%PDF-1.4"));
    let pdf_text = String::from_utf8_lossy(&pdf);
    assert!(pdf_text.contains(&s1.reference));
    assert!(pdf_text.contains(&format!(
        "{},{:02}",
        s1.total_cents / 100,
        s1.total_cents % 100
    )));

    // The usage report counts every standing redemption, and nothing personal.
    let usage = collect(
        cl.export_usage(pb::ExportUsageRequest {
            order_id: 0,
            from: "2026-01-01".into(),
            to: MAR_1.into(),
        })
        .await
        .unwrap(),
    )
    .await;
    let rows = parse_csv(std::str::from_utf8(&usage).unwrap(), ',');
    assert_eq!(rows[0], passnum::export::usage::COLUMNS.to_vec());
    let passes: usize = rows[1..]
        .iter()
        .map(|r| r[8].parse::<usize>().unwrap())
        .sum();
    assert_eq!(passes, book.len());
    assert!(book
        .keys()
        .all(|s| !std::str::from_utf8(&usage).unwrap().contains(s.as_str())));
    t.stop().await;
}

/// A run cut short (the server dies after some of its records, the last one torn) and run
/// again settles each redemption exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_half_way_and_run_again_settles_each_redemption_once() {
    let mut t = TestServer::start_tuned(|c| c.engine.rules.clearing_lines_max = 3).await;
    let book = a_month_of_redemptions(&t).await;
    t.set_now(T0 + 35 * DAY);
    let now = passnum::domain::Timestamp(T0 + 35 * DAY);
    let cut_off = passnum::domain::Timestamp(T0 + 31 * DAY);
    t.restart_after(|dir| {
        // What a server dying mid-run leaves: two steps of the run durable, a third torn.
        let rules = passnum::domain::Rules {
            clearing_lines_max: 3,
            ..Default::default()
        };
        let step = passnum::domain::Envelope {
            request: None,
            command: passnum::domain::Command::RunClearing { cut_off },
        };
        let steps = |dir: &std::path::Path, n: usize| {
            let mut ledger = Ledger::open(dir, rules.clone()).unwrap();
            for _ in 0..n {
                ledger
                    .execute_batch(now, &[&step])
                    .unwrap()
                    .remove(0)
                    .unwrap();
            }
        };
        steps(dir, 2);
        // The third step's record, written half: made on a copy of the log, then half of
        // its bytes appended to the real one.
        let log = passnum::storage::log_path(dir);
        let copy = tempfile::tempdir().unwrap();
        let copy_log = passnum::storage::log_path(copy.path());
        std::fs::copy(&log, &copy_log).unwrap();
        steps(copy.path(), 1);
        let whole = std::fs::read(&log).unwrap().len();
        let third = std::fs::read(&copy_log).unwrap()[whole..].to_vec();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&third[..third.len() / 2]).unwrap();
    })
    .await;
    let partial = settlements(&t.op, FEB_1).await;
    assert_eq!(
        partial.len(),
        2,
        "two whole steps survived, the torn one did not"
    );
    let run =
        t.op.clearing
            .clone()
            .run_clearing(pb::RunClearingRequest {
                cut_off: FEB_1.into(),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(run.records > 0, "the second attempt finished the run");
    let cleared: Vec<&String> = book
        .iter()
        .filter(|(_, v)| v.3 < 30)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(run.lines as usize, cleared.len());
    let all = settlements(&t.op, FEB_1).await;
    assert!(
        all.iter().all(|s| s.lines <= 3),
        "a settlement holds at most the line budget"
    );
    let lines: u32 = all.iter().map(|s| s.lines).sum();
    assert_eq!(lines as usize, cleared.len());
    let hub = t.credential(pb::Role::Hub, 0, &["33"]).await;
    let r = january(&hub).await;
    assert!(
        r.discrepancies.is_empty(),
        "no redemption settled twice: {:?}",
        r.discrepancies
    );
    assert_eq!(
        r.totals.unwrap().settled.unwrap().passes as usize,
        cleared.len()
    );
    t.stop().await;
}

/// The 70 € credited back to commanditaire 1 (of 100 € funded, 30 € redeemed, nothing paid
/// out yet) go back to it in two parts, never more than is due, each once; the balances
/// say so before and after restarts (from the log alone, and from the index).
async fn give_credit_back(t: &mut TestServer) {
    let give_back = |request_id: &str, cents: i64| pb::ReturnCreditRequest {
        request_id: request_id.into(),
        commanditaire_id: 1,
        amount_cents: cents,
        reference: "VIR-2026-03 avoir AAP".into(),
    };
    let mut cl = t.op.clearing.clone();
    let s = refused(
        cl.return_credit(give_back(&rid(), 7001)).await,
        Code::FailedPrecondition,
        "CREDIT_EXCEEDED",
    );
    assert!(
        passnum::client::describe(&s).contains("due_cents=7000"),
        "{s:?}"
    );
    refused(
        cl.return_credit(give_back(&rid(), 0)).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    let first = cl.return_credit(give_back("avoir-1", 5000)).await.unwrap();
    assert_eq!(first.get_ref().credit_due_cents, 2000);
    let before = head(&t.op).await.seq;
    let again = cl.return_credit(give_back("avoir-1", 5000)).await.unwrap();
    assert_eq!(again.get_ref(), first.get_ref(), "retried: the same answer");
    assert_eq!(head(&t.op).await.seq, before, "and nothing recorded");

    let balance = |t: &TestServer| {
        let mut cl = t.op.clearing.clone();
        async move {
            let r = cl.get_balances(pb::GetBalancesRequest {
                commanditaire_id: 1,
            });
            let b = r.await.unwrap().into_inner().balances.remove(0);
            (
                b.credit_returned_cents,
                b.credit_due_cents,
                b.funds_held_cents,
            )
        }
    };
    assert_eq!(balance(t).await, (5000, 2000, 5000));
    t.restart_after(|data| std::fs::remove_dir_all(data.join("index")).unwrap())
        .await;
    assert_eq!(
        balance(t).await,
        (5000, 2000, 5000),
        "replayed from the log"
    );
    t.restart().await;
    assert_eq!(
        balance(t).await,
        (5000, 2000, 5000),
        "loaded from the index"
    );

    let said = t.cli_as(&t.operator_token).ok(&[
        "clearing",
        "return-credit",
        "--commanditaire",
        "1",
        "--amount-cents",
        "2000",
        "--reference",
        "VIR-2026-04 solde",
    ]);
    assert_eq!(json(said)["credit_due_cents"], 0);
    assert_eq!(balance(t).await, (7000, 0, 3000));
    assert_chain_verifies(t).await;
}

/// At the end of validity plus grace, unused passes expire and exactly their value is
/// credited back; the order's joint statement accounts for every pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_credits_exactly_the_unused_value() {
    let t = TestServer::start().await;
    registry(&t).await;
    let mut req = order_req(1, 10, &[]);
    req.valid_until_ms = T0 + 20 * DAY;
    req.grace_days = 5;
    let (order_id, passes) = order_from(&t, req, true).await;
    let s1 = t.credential(pb::Role::Structure, 1, &[]).await;
    for p in &passes[..3] {
        s1.redemptions
            .clone()
            .redeem(redeem_req(&p.code, 1, None, "aide"))
            .await
            .unwrap();
    }
    t.op.issuance
        .clone()
        .cancel_passes(pb::CancelPassesRequest {
            request_id: rid(),
            order_id,
            serials: vec![passes[9].serial.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Validity and grace end on day 25; the sweep waits out the 15 days an offline scan
    // may take to arrive.
    t.set_now(T0 + 40 * DAY);
    let sweep =
        t.op.issuance
            .clone()
            .run_expiry_sweep(pb::RunExpirySweepRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!((sweep.expired, sweep.credited_cents), (6, 6000));
    let st =
        t.op.clearing
            .clone()
            .get_order_statement(pb::GetOrderStatementRequest { order_id })
            .await
            .unwrap()
            .into_inner();
    assert_eq!((st.issued, st.activated), (10, 10));
    assert_eq!(st.redeemed.unwrap().passes, 3);
    assert_eq!(st.cancelled.unwrap().passes, 1);
    assert_eq!(st.expired.unwrap().passes, 6);
    assert_eq!(st.active.unwrap().passes, 0);
    assert_eq!(
        st.credit_due.unwrap().cents,
        7000,
        "cancelled and expired, at face value"
    );
    assert!(st.closed);
    let b = &t
        .op
        .clearing
        .clone()
        .get_balances(pb::GetBalancesRequest {
            commanditaire_id: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .balances[0];
    assert_eq!(
        (
            b.funded_cents,
            b.redeemed.unwrap().cents,
            b.credited.unwrap().cents
        ),
        (10_000, 3000, 7000)
    );
    assert_eq!(
        b.remaining_cents, 0,
        "nothing left usable: all of it redeemed or credited"
    );
    let mut t = t;
    give_credit_back(&mut t).await;
    // Another commanditaire does not see this order's statement.
    let c2 = t.credential(pb::Role::Commanditaire, 2, &[]).await;
    refused(
        c2.clearing
            .clone()
            .get_order_statement(pb::GetOrderStatementRequest { order_id })
            .await,
        Code::NotFound,
        "UNKNOWN_ORDER",
    );
    t.stop().await;
}

/// The operator's fee, as the real server bills it: the rule in force when each order was
/// created, kept across restarts and a rebuild from the log, and never taken from sites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_joint_statement_bills_each_orders_fee_at_its_own_rate() {
    let mut t = TestServer::start_tuned(|c| c.engine.rules.order_fee = FeeRate(400)).await;
    registry(&t).await;
    let (four, _) = order(&t, 1, 10, true).await;
    t.tune = |c| c.engine.rules.order_fee = FeeRate(250);
    t.restart().await;
    let (two_and_a_half, _) = order(&t, 1, 3, true).await;
    let fee = |s: pb::OrderStatement| (s.fee_recorded, s.fee_basis_points, s.fee_cents);
    let statement = |t: &TestServer, order_id| {
        let mut cl = t.op.clearing.clone();
        async move {
            cl.get_order_statement(pb::GetOrderStatementRequest { order_id })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let st = statement(&t, four).await;
    assert_eq!(fee(st), (true, 400, 400), "4 % of 10 passes of 10 EUR");
    assert_eq!(
        st.funded_cents, 10_000,
        "funded at face value: the fee is billed apart"
    );
    assert_eq!(
        fee(statement(&t, two_and_a_half).await),
        (true, 250, 75),
        "2.5 % of 30 EUR, under the rule in force at its creation"
    );
    t.restart_after(|dir| std::fs::remove_dir_all(dir.join("index")).unwrap())
        .await;
    assert_eq!(
        fee(statement(&t, four).await),
        (true, 400, 400),
        "rebuilt from the log"
    );
    let text =
        t.cli_as(&t.operator_token)
            .text(&["clearing", "statement", "--order", &four.to_string()]);
    assert!(text.contains(", fee 4,00 € HT (4,00 %)"), "{text}");
    t.stop().await;

    serve_refuses("--order-fee-basis-points", "2001", "0..=2000");
}

/// README's clearing section through the `passnum` binary, as an operator and a hub type
/// it: run, summary, settlements, the payment file (valid against the XSD), pay (a wrong
/// amount refused, exit 1), reject, both CSV dialects, balances, the joint statement, a
/// hub's reconciliation, a proof checked offline, the usage report, the attestation; then
/// the next run takes the returned transfer's passes and the ones that were waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clearing_commands_run_through_the_binary() {
    let t = TestServer::start().await;
    let book = a_month_of_redemptions(&t).await;
    set_iban(&t, 2, IBAN_2).await;
    t.set_now(T0 + 35 * DAY);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let op = t.cli_as(&t.operator_token);
    let cleared = book.values().filter(|v| v.3 < 30).count();
    let waiting = book.len() - cleared;
    let total: i64 = book.values().filter(|v| v.3 < 30).map(|v| v.2).sum();

    let run = json(op.ok(&["clearing", "run", "--cut-off", FEB_1]));
    assert_eq!(run["lines"], cleared);
    assert_eq!(run["total_cents"], total);
    assert_eq!(
        (run["settlements"].as_u64(), run["held_cents"].as_i64()),
        (Some(2), Some(0))
    );
    let summary = json(op.ok(&["clearing", "summary", "--cut-off", FEB_1]));
    assert_eq!(
        (&summary["lines"], &summary["total_cents"]),
        (&run["lines"], &run["total_cents"])
    );
    let settlements = json_lines(op.ok(&["clearing", "settlements", "--cut-off", FEB_1]));
    assert_eq!(settlements.len(), 2);
    let cents = |s: &serde_json::Value| s["total_cents"].as_i64().unwrap();
    assert_eq!(settlements.iter().map(cents).sum::<i64>(), total);

    let xml = path("feb.xml");
    op.ok(&[
        "clearing",
        "payment-file",
        "--cut-off",
        FEB_1,
        "--execution-date",
        "2026-02-06",
        "--debtor-name",
        "Opérateur",
        "--debtor-iban",
        IBAN_1,
        "--out",
        &xml,
    ]);
    let xml = std::fs::read(&xml).unwrap();
    validate_pain001(&xml).unwrap();
    let xml = String::from_utf8(xml).unwrap();
    let euros = format!("{}.{:02}", total / 100, total % 100);
    assert_eq!(between(&xml, "<CtrlSum>", "</CtrlSum>")[0], euros);

    let (paid, returned) = (&settlements[0], &settlements[1]);
    let id = |s: &serde_json::Value| s["settlement_id"].to_string();
    let pay = |amount: i64| {
        let amount = amount.to_string();
        let args = [
            "clearing",
            "pay",
            "--settlement",
            &id(paid),
            "--bank-reference",
            "BNP-0001",
            "--executed-on",
            "2026-02-06",
            "--amount-cents",
            &amount,
        ];
        op.output(&args)
    };
    let wrong = pay(cents(paid) + 1);
    assert_eq!(wrong.status.code(), Some(1));
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("PAYMENT_AMOUNT_MISMATCH"), "{why}");
    assert!(pay(cents(paid)).status.success());
    let rejected = op.ok(&[
        "clearing",
        "reject",
        "--settlement",
        &id(returned),
        "--reason",
        "compte clôturé",
    ]);
    assert_eq!(json(rejected)["rejected"], returned["settlement_id"]);

    let by_pass = path("feb.csv");
    op.ok(&[
        "clearing",
        "export",
        "--cut-off",
        FEB_1,
        "--lines",
        "--out",
        &by_pass,
    ]);
    let by_pass = std::fs::read_to_string(&by_pass).unwrap();
    let paid_lines = paid["lines"].as_u64().unwrap() as usize;
    assert_eq!(
        by_pass.lines().count(),
        1 + paid_lines,
        "a header, then a row per pass, but the returned transfer's: a later run has them"
    );
    assert!(
        by_pass.lines().nth(1).unwrap().contains(";10,00"),
        "{by_pass}"
    );
    let machine = path("feb-machine.csv");
    op.ok(&[
        "clearing",
        "export",
        "--cut-off",
        FEB_1,
        "--dialect",
        "machine",
        "--out",
        &machine,
    ]);
    let machine = std::fs::read_to_string(&machine).unwrap();
    assert_eq!(
        machine.lines().count(),
        1 + 2,
        "a header, then a row per settlement, the returned one too:\n{machine}"
    );

    let balances = json_lines(op.ok(&["clearing", "balances"]));
    assert_eq!(balances.len(), 2);
    let paid_out: i64 = balances
        .iter()
        .map(|b| b["paid_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(paid_out, cents(paid));
    let statement = json(op.ok(&["clearing", "statement", "--order", "1"]));
    let gironde = book.values().filter(|v| v.1 == 1).count();
    assert_eq!(
        (statement["issued"].as_u64(), statement["redeemed"].as_u64()),
        (Some(40), Some(gironde as u64))
    );

    let hub = t.cli_as(&t.token(pb::Role::Hub, 0, &["33"]).await);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hub-copy.log");
    let reconciled = json(hub.ok(&[
        "clearing",
        "reconcile",
        "--from",
        "2026-01-01",
        "--to",
        FEB_1,
        "--copy",
        copy.to_str().unwrap(),
        "--head-key",
        &head(&t.op).await.public_key,
    ]));
    assert_eq!(reconciled["checked_against_copy"], true, "{reconciled}");
    assert_eq!(
        reconciled["discrepancies"],
        serde_json::json!([]),
        "{reconciled}"
    );
    assert!(!reconciled["rows"].as_array().unwrap().is_empty());

    let serial = book
        .iter()
        .find(|(_, v)| v.0 == paid["structure_id"] && v.3 < 30)
        .unwrap()
        .0;
    let proof = path("proof.json");
    op.ok(&["clearing", "proof", "--serial", serial, "--out", &proof]);
    let root = paid["merkle_root"].as_str().unwrap();
    let held = cli_ok(&["verify-proof", &proof, "--root", root]);
    assert!(
        held.starts_with(&format!("proof holds: pass {serial}")),
        "{held}"
    );

    let usage = path("usage.csv");
    op.ok(&[
        "clearing",
        "usage",
        "--from",
        "2026-01-01",
        "--to",
        "2027-01-01",
        "--out",
        &usage,
    ]);
    assert!(std::fs::read_to_string(&usage).unwrap().lines().count() > 1);
    let pdf = path("attestation.pdf");
    let structure = paid["structure_id"].to_string();
    op.ok(&[
        "clearing",
        "attestation",
        "--structure",
        &structure,
        "--from",
        "2026-01-01",
        "--to",
        "2027-01-01",
        "--out",
        &pdf,
    ]);
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));

    // March: the returned transfer's passes and those that were waiting.
    t.set_now(T0 + 62 * DAY);
    let march = json(op.ok(&["clearing", "run", "--cut-off", MAR_1]));
    let returned_lines = returned["lines"].as_u64().unwrap() as usize;
    assert_eq!(march["lines"], waiting + returned_lines);
    t.stop().await;
}
