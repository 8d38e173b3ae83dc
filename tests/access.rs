//! Every RPC called with every role's token: allowed, or denied (UNAUTHENTICATED,
//! PERMISSION_DENIED, or NOT_FOUND where existence must not leak). An allowed call may
//! still be refused by a rule; what is asserted here is only who gets past the door.

mod common;
use common::*;
use passnum::client::Clients;
use passnum::rpc::pb;
use std::future::Future;
use std::pin::Pin;
use tonic::{Code, Status};

const JAN_1: &str = "2026-01-01";

const ROLES: [&str; 10] = [
    "none", "bad", "op", "c1", "c2", "s1", "s2", "l1", "h33", "h75",
];

type Call = Box<dyn Fn(Clients) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>>;

macro_rules! call {
    ($svc:ident, $method:ident, $req:expr) => {{
        let req = $req;
        Box::new(move |c: Clients| {
            let req = req.clone();
            Box::pin(async move {
                let mut s = c.$svc.clone();
                s.$method(req).await.map(|_| ())
            }) as Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
        }) as Call
    }};
}

/// Streaming calls: the first message decides.
macro_rules! stream {
    ($svc:ident, $method:ident, $req:expr) => {{
        let req = $req;
        Box::new(move |c: Clients| {
            let req = req.clone();
            Box::pin(async move {
                let mut s = c.$svc.clone();
                let mut st = s.$method(req).await?.into_inner();
                st.message().await.map(|_| ())
            }) as Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
        }) as Call
    }};
}

/// ImportSites is client-streaming: one chunk holding a header-only file.
fn import_call() -> Call {
    Box::new(|c: Clients| {
        Box::pin(async move {
            let chunk = pb::ImportChunk {
                request_id: rid(),
                dry_run: true,
                data: passnum::opendata::header_line().into_bytes(),
            };
            c.sites
                .clone()
                .import_sites(tokio_stream::iter(vec![chunk]))
                .await
                .map(|_| ())
        }) as Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
    })
}

fn denied(s: &Status) -> bool {
    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied)
        || (s.code() == Code::NotFound
            && ["UNKNOWN_ORDER", "UNKNOWN_SITE", "UNKNOWN_PASS"]
                .contains(&passnum::client::reason(s).as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_every_role() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (o1, p) = order(&t, 1, 10, true).await;
    let mut clients = vec![
        t.client(None).await,
        t.client(Some("pn_0000")).await,
        t.op.clone(),
    ];
    for (role, actor, depts) in [
        (pb::Role::Commanditaire, 1, vec![]),
        (pb::Role::Commanditaire, 2, vec![]),
        (pb::Role::Structure, 1, vec![]),
        (pb::Role::Structure, 2, vec![]),
        (pb::Role::Site, 1, vec![]),
        (pb::Role::Hub, 0, vec!["33", "24"]),
        (pb::Role::Hub, 0, vec!["75"]),
    ] {
        clients.push(t.credential(role, actor, &depts).await);
    }
    let code = |i: usize| scanned(&p[i].code);
    let ws = pb::RedeemWorkshopRequest {
        request_id: rid(),
        site_id: 3,
        place: commune("33063"),
        date: "2026-01-02".into(),
        start: "10:00".into(),
        duration_minutes: 60,
        themes: vec!["aide".into()],
        participants: 1,
        mediator_id: "m".into(),
        passes: vec![code(2).unwrap()],
        held_at_ms: 0,
    };
    let table: Vec<(&str, Call, &[&str])> = vec![
        (
            "RegisterCommanditaire",
            call!(
                registry,
                register_commanditaire,
                pb::RegisterCommanditaireRequest {
                    request_id: rid(),
                    name: "x".into()
                }
            ),
            &["op"],
        ),
        (
            "RegisterStructure",
            call!(
                registry,
                register_structure,
                pb::RegisterStructureRequest {
                    request_id: rid(),
                    name: "x".into(),
                    siret_or_rna: "W123456789".into(),
                    iban: String::new()
                }
            ),
            &["op"],
        ),
        (
            "SetStructureIban",
            call!(
                registry,
                set_structure_iban,
                pb::SetStructureIbanRequest {
                    request_id: rid(),
                    structure_id: 1,
                    iban: "FR7630006000011234567890189".into()
                }
            ),
            &["op", "s1"],
        ),
        (
            "RegisterSite",
            call!(
                registry,
                register_site,
                pb::RegisterSiteRequest {
                    request_id: rid(),
                    structure_id: 1,
                    name: "x".into(),
                    kind: pb::SiteKind::Fixed as i32,
                    insee_code: "33063".into(),
                    stops: vec![]
                }
            ),
            &["op"],
        ),
        (
            "SetSiteActive",
            call!(
                registry,
                set_site_active,
                pb::SetSiteActiveRequest {
                    request_id: rid(),
                    site_id: 4,
                    active: true
                }
            ),
            &["op"],
        ),
        (
            "IssueCredential",
            call!(
                registry,
                issue_credential,
                pb::IssueCredentialRequest {
                    request_id: rid(),
                    role: pb::Role::Site as i32,
                    actor_id: 4,
                    departements: vec![],
                    valid_days: 0,
                }
            ),
            &["op"],
        ),
        (
            "RevokeCredential",
            call!(
                registry,
                revoke_credential,
                pb::RevokeCredentialRequest {
                    request_id: rid(),
                    credential_id: "0123456789abcdef".into()
                }
            ),
            &["op"],
        ),
        (
            "ListCredentials",
            call!(
                registry,
                list_credentials,
                pb::ListCredentialsRequest::default()
            ),
            &["op"],
        ),
        (
            "GetOwnCredential",
            call!(registry, get_own_credential, pb::GetOwnCredentialRequest {}),
            &["op", "c1", "c2", "s1", "s2", "l1", "h33", "h75"],
        ),
        (
            "GetSite",
            call!(registry, get_site, pb::GetSiteRequest { site_id: 1 }),
            &["op", "s1", "l1", "h33"],
        ),
        (
            "CreateOrder",
            call!(issuance, create_order, order_req(1, 5, &[])),
            &["op", "c1"],
        ),
        (
            "MintOrder",
            call!(
                issuance,
                mint_order,
                pb::MintOrderRequest {
                    request_id: rid(),
                    order_id: o1
                }
            ),
            &["op", "c1"],
        ),
        (
            "RecordFunding",
            call!(
                issuance,
                record_funding,
                pb::RecordFundingRequest {
                    request_id: rid(),
                    order_id: o1,
                    amount_cents: 10_000,
                    reference: "r".into()
                }
            ),
            &["op"],
        ),
        (
            "ListPasses",
            stream!(
                issuance,
                list_passes,
                pb::ListPassesRequest {
                    order_id: o1,
                    page_size: 1,
                    page_token: String::new()
                }
            ),
            &["op", "c1", "h33"],
        ),
        (
            "RenderCode",
            call!(
                issuance,
                render_code,
                pb::RenderCodeRequest {
                    serial: p[0].serial.clone(),
                    format: pb::CodeFormat::Svg as i32
                }
            ),
            &["op", "c1", "h33"],
        ),
        (
            "RenderSheet",
            stream!(
                issuance,
                render_sheet,
                pb::RenderSheetRequest {
                    order_id: o1,
                    carnet: Some(0)
                }
            ),
            &["op", "c1", "h33"],
        ),
        (
            "MarkDistributed",
            call!(
                issuance,
                mark_distributed,
                pb::MarkDistributedRequest {
                    request_id: rid(),
                    order_id: o1,
                    carnet: 1
                }
            ),
            &["op", "c1"],
        ),
        (
            "CancelPasses",
            call!(
                issuance,
                cancel_passes,
                pb::CancelPassesRequest {
                    request_id: rid(),
                    serials: vec![p[9].serial.clone()],
                    order_id: 0,
                    carnet: None
                }
            ),
            &["op", "c1"],
        ),
        (
            "GetDashboard",
            call!(
                issuance,
                get_dashboard,
                pb::GetDashboardRequest { order_id: o1 }
            ),
            &["op", "c1", "h33"],
        ),
        (
            "RunExpirySweep",
            call!(issuance, run_expiry_sweep, pb::RunExpirySweepRequest {}),
            &["op"],
        ),
        (
            "CheckPass",
            call!(
                redemptions,
                check_pass,
                pb::CheckPassRequest {
                    pass: code(0),
                    site_id: 1,
                    place: None,
                    service: "aide".into()
                }
            ),
            &["op", "s1", "l1"],
        ),
        (
            "Redeem",
            call!(redemptions, redeem, redeem_req(&p[0].code, 1, None, "aide")),
            &["s1", "l1"],
        ),
        (
            "RedeemWorkshop",
            call!(redemptions, redeem_workshop, ws),
            &["s1"],
        ),
        (
            "Reverse",
            call!(
                redemptions,
                reverse,
                pb::ReverseRequest {
                    request_id: rid(),
                    pass: code(0),
                    site_id: 1
                }
            ),
            &["s1", "l1"],
        ),
        (
            "GetHead",
            call!(ledger, get_head, pb::GetHeadRequest {}),
            &["op", "c1", "c2", "s1", "s2", "l1", "h33", "h75"],
        ),
        (
            "StreamRecords",
            stream!(
                ledger,
                stream_records,
                pb::StreamRecordsRequest {
                    from_seq: 1,
                    limit: 0
                }
            ),
            &["op", "c1", "c2", "s1", "s2", "l1", "h33", "h75"],
        ),
        (
            "VerifyChain",
            call!(ledger, verify_chain, pb::VerifyChainRequest {}),
            &["op", "h33", "h75"],
        ),
        (
            "GetGroupCommits",
            call!(ledger, get_group_commits, pb::GetGroupCommitsRequest {}),
            &["op"],
        ),
        ("ImportSites", import_call(), &["op", "h33", "h75"]),
        (
            "ListSites",
            stream!(sites, list_sites, pb::ListSitesRequest::default()),
            &["op", "c1", "c2", "s1", "s2", "l1", "h33", "h75"],
        ),
        (
            "ExportSites",
            stream!(sites, export_sites, pb::ExportSitesRequest::default()),
            &["op", "c1", "c2", "s1", "s2", "l1", "h33", "h75"],
        ),
        (
            "RunClearing",
            call!(
                clearing,
                run_clearing,
                pb::RunClearingRequest {
                    cut_off: JAN_1.into()
                }
            ),
            &["op"],
        ),
        (
            "GetRun",
            call!(
                clearing,
                get_run,
                pb::GetRunRequest {
                    cut_off: JAN_1.into()
                }
            ),
            &["op"],
        ),
        (
            "ListSettlements",
            stream!(
                clearing,
                list_settlements,
                pb::ListSettlementsRequest::default()
            ),
            &["op", "s1", "s2"],
        ),
        (
            "RecordPayment",
            call!(
                clearing,
                record_payment,
                pb::RecordPaymentRequest {
                    request_id: rid(),
                    settlement_id: 99,
                    bank_reference: "B".into(),
                    executed_on: JAN_1.into(),
                    amount_cents: 1
                }
            ),
            &["op"],
        ),
        (
            "RecordRejection",
            call!(
                clearing,
                record_rejection,
                pb::RecordRejectionRequest {
                    request_id: rid(),
                    settlement_id: 99,
                    reason: "R".into()
                }
            ),
            &["op"],
        ),
        (
            "ReturnCredit",
            call!(
                clearing,
                return_credit,
                pb::ReturnCreditRequest {
                    request_id: rid(),
                    commanditaire_id: 99,
                    amount_cents: 1,
                    reference: "R".into()
                }
            ),
            &["op"],
        ),
        (
            "GetBalances",
            call!(clearing, get_balances, pb::GetBalancesRequest::default()),
            &["op", "c1", "c2"],
        ),
        (
            "GetOrderStatement",
            call!(
                clearing,
                get_order_statement,
                pb::GetOrderStatementRequest { order_id: o1 }
            ),
            &["op", "c1", "h33"],
        ),
        (
            "ExportPaymentFile",
            stream!(
                clearing,
                export_payment_file,
                pb::ExportPaymentFileRequest {
                    cut_off: JAN_1.into(),
                    debtor_name: "Op".into(),
                    debtor_iban: "FR7630006000011234567890189".into(),
                    debtor_bic: String::new(),
                    execution_date: JAN_1.into()
                }
            ),
            &["op"],
        ),
        (
            "ExportStatement",
            stream!(
                clearing,
                export_statement,
                pb::ExportStatementRequest {
                    cut_off: JAN_1.into(),
                    ..Default::default()
                }
            ),
            &["op", "s1", "s2"],
        ),
        (
            "GetAttestation",
            stream!(
                clearing,
                get_attestation,
                pb::GetAttestationRequest {
                    structure_id: 1,
                    from: JAN_1.into(),
                    to: "2026-02-01".into()
                }
            ),
            &["op", "s1"],
        ),
        (
            "Reconcile",
            call!(
                clearing,
                reconcile,
                pb::ReconcileRequest {
                    from: JAN_1.into(),
                    to: "2026-02-01".into(),
                    departements: vec![]
                }
            ),
            &["op", "h33", "h75"],
        ),
        (
            // The workshop above redeemed pass 2 at site 3 (structure 1, Bordeaux).
            "GetProof",
            call!(
                clearing,
                get_proof,
                pb::GetProofRequest {
                    serial: p[2].serial.clone()
                }
            ),
            &["op", "c1", "s1", "h33"],
        ),
        (
            "ExportUsage",
            stream!(
                clearing,
                export_usage,
                pb::ExportUsageRequest {
                    order_id: 0,
                    from: JAN_1.into(),
                    to: "2026-02-01".into()
                }
            ),
            &["op", "c1", "c2", "h33", "h75"],
        ),
    ];
    let mut wrong = vec![];
    for (rpc, call, allowed) in &table {
        for (role, client) in ROLES.iter().zip(&clients) {
            let result = call(client.clone()).await;
            let was_denied = result.as_ref().err().is_some_and(denied);
            if was_denied == allowed.contains(role) {
                wrong.push(format!(
                    "{rpc} as {role}: {}",
                    result
                        .err()
                        .map_or("allowed".into(), |s| passnum::client::describe(&s))
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong decisions:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_ledger_streams_show_only_what_concerns_the_caller() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (_, p1) = order(&t, 1, 5, true).await;
    let (_, _p2) = order(&t, 2, 5, true).await;
    let s2 = t.credential(pb::Role::Structure, 2, &[]).await;
    s2.redemptions
        .clone()
        .redeem(redeem_req(&p1[0].code, 4, None, "aide"))
        .await
        .unwrap();
    let c2 = t.credential(pb::Role::Commanditaire, 2, &[]).await;
    let bodies = |c: Clients| async move {
        let all = records(&c, 1, 0).await;
        all.into_iter().map(|r| r.body_json).collect::<Vec<_>>()
    };
    let all = bodies(t.op.clone()).await;
    let of_c2 = bodies(c2).await;
    let of_s2 = bodies(s2).await;
    assert!(of_c2.len() < all.len() && !of_c2.is_empty());
    assert!(
        of_c2.iter().all(|b| !b.contains("\"Payable\"")),
        "commanditaire 2 paid for no redemption"
    );
    assert!(
        of_s2.iter().any(|b| b.contains("PassRedeemed")),
        "structure 2 sees its redemption"
    );
    assert!(
        of_s2.iter().all(|b| !b.contains("OrderCreated")),
        "and no orders"
    );
    t.stop().await;
}

/// Three refusals at once, then one a second: guesses and refused commands spend the same
/// budget; past it, a request is turned away before its code is checked or anything is
/// written, and only that credential waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_past_its_refusal_budget_waits_and_nothing_else_does() {
    let t = TestServer::start_tuned(|c| {
        c.limits.refusal_burst = 3;
        c.limits.refusals_per_hour = 3_600;
    })
    .await;
    registry(&t).await;
    let (_, p) = order(&t, 1, 10, true).await;
    let s1 = t.credential(pb::Role::Structure, 1, &[]).await;
    let mut r = s1.redemptions.clone();
    let now = T0 + DAY;

    // A mistyped serial fails its check character and spends nothing: the three guesses
    // below all reach the check.
    let (head, tag) = p[0].code.rsplit_once(':').unwrap();
    refused(
        r.redeem(redeem_req(
            &format!("{}:{tag}", forged(head)),
            1,
            None,
            "aide",
        ))
        .await,
        Code::InvalidArgument,
        "BAD_CHECK_CHARACTER",
    );

    // Three guesses, by each way a code is checked.
    let guess = forged(&p[0].code);
    refused(
        r.redeem(redeem_req(&guess, 1, None, "aide")).await,
        Code::InvalidArgument,
        "CODE_NOT_AUTHENTIC",
    );
    let check = |code: &str| pb::CheckPassRequest {
        pass: scanned(code),
        site_id: 1,
        place: None,
        service: "aide".into(),
    };
    refused(
        r.check_pass(check(&guess)).await,
        Code::InvalidArgument,
        "CODE_NOT_AUTHENTIC",
    );
    refused(
        r.redeem(pb::RedeemRequest {
            pass: typed(&p[0].serial, &forged(&p[0].verification_code)),
            ..redeem_req(&p[0].code, 1, None, "aide")
        })
        .await,
        Code::InvalidArgument,
        "CODE_NOT_AUTHENTIC",
    );
    // The fourth request, even with the right code, waits a second and changes nothing.
    let records = assert_chain_verifies(&t).await;
    let spent = refused(
        r.redeem(redeem_req(&p[0].code, 1, None, "aide")).await,
        Code::ResourceExhausted,
        "REFUSAL_BUDGET_SPENT",
    );
    let details = tonic_types::StatusExt::get_error_details(&spent);
    assert_eq!(
        details.error_info().unwrap().metadata["retry_after_ms"],
        "1000"
    );
    assert_eq!(
        details.retry_info().unwrap().retry_delay,
        Some(std::time::Duration::from_secs(1))
    );
    assert!(
        spent.message().ends_with("try again in 1 s"),
        "{}",
        spent.message()
    );
    refused(
        r.check_pass(check(&p[0].code)).await,
        Code::ResourceExhausted,
        "REFUSAL_BUDGET_SPENT",
    );
    assert_eq!(
        assert_chain_verifies(&t).await,
        records,
        "nothing was written"
    );

    // Another credential and the operator are not held back.
    let mut l1 = t.credential(pb::Role::Site, 1, &[]).await.redemptions;
    l1.redeem(redeem_req(&p[1].code, 1, None, "aide"))
        .await
        .unwrap();
    let mut op = t.op.redemptions.clone();
    for _ in 0..5 {
        refused(
            op.check_pass(check(&guess)).await,
            Code::InvalidArgument,
            "CODE_NOT_AUTHENTIC",
        );
    }
    let pass = op.check_pass(check(&p[0].code)).await.unwrap().into_inner();
    assert!(pass.redeemable, "the turned-away redemption did not happen");

    // A second later, one more refusal is allowed: a refused command spends it.
    t.set_now(now + 1_000);
    r.redeem(redeem_req(&p[0].code, 1, None, "aide"))
        .await
        .unwrap();
    refused(
        r.redeem(redeem_req(&p[1].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "ALREADY_REDEEMED",
    );
    refused(
        r.redeem(redeem_req(&p[2].code, 1, None, "aide")).await,
        Code::ResourceExhausted,
        "REFUSAL_BUDGET_SPENT",
    );

    // Once paid off, each pass a workshop could not redeem spends one.
    t.set_now(now + 60_000);
    let w = r
        .redeem_workshop(workshop_req(&[
            &p[0].code,
            &p[1].code,
            &p[2].code,
            &forged(&p[4].code),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.redeemed, 1, "{w:?}");
    refused(
        r.redeem(redeem_req(&p[3].code, 1, None, "aide")).await,
        Code::ResourceExhausted,
        "REFUSAL_BUDGET_SPENT",
    );
    // A budget that runs out within a request turns the whole request away.
    t.set_now(now + 61_000);
    refused(
        r.redeem_workshop(workshop_req(&[&p[3].code, &forged(&p[4].code)]))
            .await,
        Code::ResourceExhausted,
        "REFUSAL_BUDGET_SPENT",
    );
    let pass = op.check_pass(check(&p[3].code)).await.unwrap().into_inner();
    assert!(
        pass.redeemable,
        "no pass of a turned-away workshop is redeemed"
    );
    t.stop().await;
}

/// Across a network, tokens and pass codes travel only inside TLS. A server on any address
/// but loopback will not start without it, unless told that a proxy terminates TLS in
/// front of it. With TLS, a client that trusts the certificate's CA is served; one that
/// does not, or that speaks plaintext, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_cross_a_network_only_inside_tls() {
    use passnum::config::Transport;
    use passnum::domain::Timestamp;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (made_cert, made_key) = self_signed();
    let cert = file("cert.pem", made_cert);
    let key = file("key.pem", made_key);
    let other_key = file(
        "other.pem",
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );
    let data = dir.path().join("data");
    let clock: passnum::engine::Clock = std::sync::Arc::new(|| Timestamp(T0 + DAY));
    let start = |transport: Transport, listen: &str| {
        let mut c = config(&data);
        c.listen = listen.parse().unwrap();
        c.transport = transport;
        passnum::server::start(c, clock.clone())
    };

    // Plaintext on every address: refused before the ledger is opened.
    let open = Transport::Plaintext { asked: false };
    let why = start(open, "0.0.0.0:0").await.err().expect("refused");
    assert!(why.contains("without TLS"), "{why}");
    assert!(!passnum::storage::log_path(&data).exists());
    // Behind a proxy that terminates TLS, as its operator says.
    let proxied = Transport::Plaintext { asked: true };
    start(proxied, "0.0.0.0:0")
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    // A key that is not the certificate's.
    let mismatched = Transport::Tls {
        cert: cert.clone(),
        key: other_key,
    };
    let why = start(mismatched, "127.0.0.1:0")
        .await
        .err()
        .expect("refused");
    assert!(why.contains("TLS certificate or key"), "{why}");

    let s = start(
        Transport::Tls {
            cert: cert.clone(),
            key,
        },
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let token_file = data.join("operator.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let url = format!("https://localhost:{}", s.addr.port());
    let c = Clients::connect_trusting(&url, Some(token.trim()), Some(&cert))
        .await
        .unwrap();
    let head = c.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    assert!(head.unwrap().into_inner().seq > 0);
    // The system's CAs do not know this certificate.
    let why = Clients::connect_trusting(&url, Some(token.trim()), None)
        .await
        .err()
        .expect("not trusted");
    assert!(why.contains("certificate"), "{why}");
    // Plaintext to the TLS port: no answer.
    let plain = format!("http://127.0.0.1:{}", s.addr.port());
    if let Ok(p) = Clients::connect(&plain, Some(token.trim())).await {
        assert!(p
            .ledger
            .clone()
            .get_head(pb::GetHeadRequest {})
            .await
            .is_err());
    }
    // The command line, as a site runs it.
    let (cert, token_file) = (cert.to_str().unwrap(), token_file.to_str().unwrap());
    let said = cli_ok(&[
        "ledger",
        "head",
        "--server",
        &url,
        "--ca-file",
        cert,
        "--token-file",
        token_file,
    ]);
    assert!(said.starts_with("head: record"), "{said}");
    s.shutdown().await.unwrap();
}

/// A lost tablet, a leaked token: the operator revokes the credential by the id it was
/// issued with, and its token is refused from its next request on, after restarts too
/// (from the index, and replayed from the log). The id is the scope the credential's
/// requests carry in the ledger. The operator lists credentials page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_is_refused_from_its_next_request_on() {
    let mut t = TestServer::start().await;
    registry(&t).await;
    let (_, p) = order(&t, 1, 10, true).await;
    let issue = pb::IssueCredentialRequest {
        request_id: rid(),
        role: pb::Role::Site as i32,
        actor_id: 1,
        departements: vec![],
        valid_days: 0,
    };
    let mut reg = t.op.registry.clone();
    let issued = reg.issue_credential(issue).await.unwrap().into_inner();
    let id = issued.credential_id.clone();
    let site = t.client(Some(&issued.token)).await;
    let mut redeem = site.redemptions.clone();
    redeem
        .redeem(redeem_req(&p[0].code, 1, None, "aide"))
        .await
        .unwrap();
    let last = records(&t.op, head(&t.op).await.seq, 1).await;
    assert!(last[0].body_json.contains(&format!("\"scope\":\"{id}\"")));

    let revoke = |id: &str| pb::RevokeCredentialRequest {
        request_id: rid(),
        credential_id: id.into(),
    };
    let first = revoke(&id);
    let done = reg.revoke_credential(first.clone()).await.unwrap();
    assert_eq!(done.get_ref().revoked_at_ms, T0 + DAY);
    let again = reg.revoke_credential(first).await.unwrap();
    assert_eq!(
        again.into_inner(),
        done.into_inner(),
        "a retry gets the same answer"
    );
    let next = redeem.redeem(redeem_req(&p[1].code, 1, None, "aide")).await;
    refused(next, Code::Unauthenticated, "TOKEN_REVOKED");
    let read = site.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_REVOKED");
    assert_eq!(
        passes(&t.op, 1).await[1].status,
        pb::PassStatus::Active as i32
    );

    let twice = reg.revoke_credential(revoke(&id)).await;
    refused(
        twice,
        Code::FailedPrecondition,
        "CREDENTIAL_ALREADY_REVOKED",
    );
    let unknown = reg.revoke_credential(revoke("0123456789abcdef")).await;
    refused(unknown, Code::NotFound, "UNKNOWN_CREDENTIAL");
    let malformed = reg.revoke_credential(revoke("site-1")).await;
    refused(malformed, Code::InvalidArgument, "INVALID_FIELDS");
    let own = passnum::rpc::auth::hash_token(&t.operator_token);
    let own = reg
        .revoke_credential(revoke(&passnum::rpc::auth::credential_id(&own)))
        .await;
    refused(
        own,
        Code::FailedPrecondition,
        "CANNOT_REVOKE_OWN_CREDENTIAL",
    );

    // Every credential, two by two, in id order; then only site 1's.
    let list = |role: pb::Role, actor_id: u64, after: &str| pb::ListCredentialsRequest {
        role: role as i32,
        actor_id,
        after: after.into(),
        page_size: 2,
        expiring_before_ms: 0,
    };
    let (mut all, mut after) = (vec![], String::new());
    loop {
        let page = reg
            .list_credentials(list(pb::Role::Unspecified, 0, &after))
            .await;
        let page = page.unwrap().into_inner();
        assert!(page.credentials.len() <= 2);
        all.extend(page.credentials);
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    let ids: Vec<&str> = all.iter().map(|c| c.credential_id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(all.iter().any(|c| c.role == pb::Role::Operator as i32));
    let of_site = reg.list_credentials(list(pb::Role::Site, 1, "")).await;
    let of_site = of_site.unwrap().into_inner().credentials;
    let revoked: Vec<_> = of_site.iter().filter(|c| c.revoked_at_ms > 0).collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (revoked[0].credential_id.as_str(), revoked[0].revoked_at_ms),
        (id.as_str(), T0 + DAY)
    );
    let too_big = pb::ListCredentialsRequest {
        page_size: 1_001,
        ..Default::default()
    };
    refused(
        reg.list_credentials(too_big).await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );

    // The same from the command line.
    let op = t.cli_as(&t.operator_token);
    let cli = |args: &[&str]| op.ok(args);
    let issued2: serde_json::Value =
        serde_json::from_str(&cli(&["credential", "--role", "site", "--actor", "1"])).unwrap();
    let id2 = issued2["credential_id"].as_str().unwrap();
    let said: serde_json::Value = serde_json::from_str(&cli(&["revoke-credential", id2])).unwrap();
    assert_eq!(said["revoked_at_ms"], T0 + DAY);
    let listed = cli(&["credentials", "--role", "site", "--actor", "1"]);
    let revoked = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|c| c["revoked_at_ms"] != 0)
        .count();
    assert_eq!(revoked, 2, "{listed}");

    // Still revoked after a restart from the index, and after one replayed from the log.
    t.restart().await;
    let site = t.client(Some(&issued.token)).await;
    let read = site.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_REVOKED");
    t.restart_after(|dir| std::fs::remove_dir_all(dir.join("index")).unwrap())
        .await;
    let site = t.client(Some(&issued.token)).await;
    let read = site.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    refused(read, Code::Unauthenticated, "TOKEN_REVOKED");
    t.stop().await;
}
