//! The real server over gRPC: a whole day of the scheme in which every refusal reason the
//! API can reach is met and asserted by status and reason; a race for one pass; restarts;
//! bad input. Rules themselves are tested in the core (core_rules.rs).

mod common;
use common::*;
use passnum::domain::Serial;
use passnum::rpc::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_day_reaches_every_refusal() {
    // The day runs past validity and grace, 411 days on: the site's token must outlive it.
    let t = TestServer::start_tuned(|c| c.engine.rules.credential_lifetime_ms = 500 * DAY).await;
    registry(&t).await;
    let mut reg = t.op.registry.clone();
    let mut iss = t.op.issuance.clone();
    let mut site = t.credential(pb::Role::Structure, 1, &[]).await.redemptions;

    // Registry refusals.
    let dup = pb::RegisterStructureRequest {
        request_id: rid(),
        name: "x".into(),
        siret_or_rna: "21330063500017".into(),
        iban: String::new(),
    };
    refused(
        reg.register_structure(dup).await,
        Code::AlreadyExists,
        "PAYEE_ALREADY_REGISTERED",
    );
    let orphan = pb::RegisterSiteRequest {
        request_id: rid(),
        structure_id: 99,
        name: "x".into(),
        kind: pb::SiteKind::Fixed as i32,
        insee_code: "33063".into(),
        stops: vec![],
    };
    refused(
        reg.register_site(orphan).await,
        Code::NotFound,
        "UNKNOWN_STRUCTURE",
    );

    // Order refusals.
    refused(
        iss.create_order(order_req(99, 10, &[])).await,
        Code::NotFound,
        "UNKNOWN_COMMANDITAIRE",
    );
    let mut empty = order_req(1, 10, &[]);
    empty.perimeter = None;
    refused(
        iss.create_order(empty).await,
        Code::InvalidArgument,
        "EMPTY_PERIMETER",
    );
    let mut inverted = order_req(1, 10, &[]);
    inverted.valid_until_ms = inverted.valid_from_ms;
    refused(
        iss.create_order(inverted).await,
        Code::InvalidArgument,
        "VALIDITY_WINDOW_INVERTED",
    );
    let mut carnet = order_req(1, 10, &[]);
    carnet.carnet_size = 30;
    refused(
        iss.create_order(carnet).await,
        Code::InvalidArgument,
        "CARNET_SIZE_INVALID",
    );
    refused(
        iss.mint_order(pb::MintOrderRequest {
            request_id: rid(),
            order_id: 99,
        })
        .await,
        Code::NotFound,
        "UNKNOWN_ORDER",
    );

    let o1 = iss
        .create_order(order_req(1, 10, &[]))
        .await
        .unwrap()
        .into_inner()
        .order_id;
    let fund = |order, cents| pb::RecordFundingRequest {
        request_id: rid(),
        order_id: order,
        amount_cents: cents,
        reference: "VIR-1".into(),
    };
    refused(
        iss.record_funding(fund(o1, 10_000)).await,
        Code::FailedPrecondition,
        "NOT_MINTED",
    );
    let mint = pb::MintOrderRequest {
        request_id: rid(),
        order_id: o1,
    };
    assert_eq!(iss.mint_order(mint).await.unwrap().into_inner().passes, 10);
    let again = iss
        .mint_order(pb::MintOrderRequest {
            request_id: rid(),
            order_id: o1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.passes, 10, "minting is idempotent by order");
    let p1 = passes(&t.op, o1).await;
    assert_eq!(p1.len(), 10);

    refused(
        site.redeem(redeem_req(&p1[0].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "NOT_ACTIVATED",
    );
    refused(
        iss.record_funding(fund(o1, 9_000)).await,
        Code::FailedPrecondition,
        "FUNDING_MISMATCH",
    );
    assert_eq!(
        iss.record_funding(fund(o1, 10_000))
            .await
            .unwrap()
            .into_inner()
            .activated,
        10
    );
    refused(
        iss.record_funding(fund(o1, 10_000)).await,
        Code::FailedPrecondition,
        "ALREADY_FUNDED",
    );

    // Distribution.
    let dist = |carnet| pb::MarkDistributedRequest {
        request_id: rid(),
        order_id: o1,
        carnet,
    };
    iss.mark_distributed(dist(0)).await.unwrap();
    refused(
        iss.mark_distributed(dist(0)).await,
        Code::FailedPrecondition,
        "ALREADY_DISTRIBUTED",
    );
    refused(
        iss.mark_distributed(dist(9)).await,
        Code::NotFound,
        "UNKNOWN_CARNET",
    );

    // Redemptions at several sites.
    let r = site
        .redeem(redeem_req(&p1[0].code, 1, None, "aide"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.amount_cents, r.site_id, r.redeemed_at_ms),
        (1000, 1, T0 + DAY)
    );
    let s = refused(
        site.redeem(redeem_req(&p1[0].code, 2, stop(0), "aide"))
            .await,
        Code::FailedPrecondition,
        "ALREADY_REDEEMED",
    );
    let info = tonic_types::StatusExt::get_error_details(&s)
        .error_info()
        .cloned()
        .unwrap();
    assert_eq!(
        info.metadata["site"], "1",
        "already redeemed names the site"
    );
    assert_eq!(
        info.metadata["redeemed_at_ms"],
        (T0 + DAY).to_string(),
        "and when"
    );
    site.redeem(redeem_req(&p1[1].code, 2, stop(0), "aide"))
        .await
        .unwrap();
    refused(
        site.redeem(redeem_req(&p1[2].code, 2, stop(1), "aide"))
            .await,
        Code::FailedPrecondition,
        "OUTSIDE_PERIMETER",
    );
    refused(
        site.redeem(redeem_req(&p1[2].code, 2, stop(5), "aide"))
            .await,
        Code::NotFound,
        "UNKNOWN_STOP",
    );
    refused(
        site.redeem(redeem_req(&p1[2].code, 2, None, "aide")).await,
        Code::InvalidArgument,
        "PLACE_DOES_NOT_FIT_SITE",
    );
    site.redeem(redeem_req(&p1[2].code, 3, commune("33281"), "aide"))
        .await
        .unwrap();
    refused(
        site.redeem(redeem_req(&p1[3].code, 99, None, "aide")).await,
        Code::NotFound,
        "UNKNOWN_SITE",
    );
    let unknown = Serial::from_random(0x0BAD_5EED);
    refused(
        site.redeem(redeem_req(&t.keys.qr_payload(unknown), 1, None, "aide"))
            .await,
        Code::NotFound,
        "UNKNOWN_PASS",
    );

    // Services restricted by the order.
    let (_, p2) = order_from(&t, order_req(1, 5, &["demarches-en-ligne"]), true).await;
    refused(
        site.redeem(redeem_req(&p2[0].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "SERVICE_NOT_ALLOWED",
    );
    site.redeem(redeem_req(&p2[0].code, 1, None, "demarches-en-ligne"))
        .await
        .unwrap();

    // An inactive site.
    reg.set_site_active(pb::SetSiteActiveRequest {
        request_id: rid(),
        site_id: 1,
        active: false,
    })
    .await
    .unwrap();
    refused(
        site.redeem(redeem_req(&p1[3].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "SITE_INACTIVE",
    );
    reg.set_site_active(pb::SetSiteActiveRequest {
        request_id: rid(),
        site_id: 1,
        active: true,
    })
    .await
    .unwrap();

    // A workshop: one outcome per pass, a bad code among them.
    let forged = forged(&p1[6].code);
    let w = site
        .redeem_workshop(pb::RedeemWorkshopRequest {
            themes: vec!["messagerie".into()],
            participants: 3,
            ..workshop_req(&[&p1[4].code, &p1[5].code, &forged, &p1[0].code])
        })
        .await
        .unwrap()
        .into_inner();
    let reasons: Vec<&str> = w
        .outcomes
        .iter()
        .map(|o| if o.redeemed { "OK" } else { o.reason.as_str() })
        .collect();
    assert_eq!(
        reasons,
        ["OK", "OK", "CODE_NOT_AUTHENTIC", "ALREADY_REDEEMED"]
    );
    assert_eq!((w.redeemed, w.amount_cents), (2, 2000));

    // Reversal.
    let rev = |code: &str, site_id| pb::ReverseRequest {
        request_id: rid(),
        pass: scanned(code),
        site_id,
    };
    refused(
        site.reverse(rev(&p1[7].code, 1)).await,
        Code::FailedPrecondition,
        "NOT_REDEEMED",
    );
    refused(
        site.reverse(rev(&p1[0].code, 2)).await,
        Code::FailedPrecondition,
        "WRONG_SITE",
    );
    assert_eq!(
        site.reverse(rev(&p1[4].code, 3))
            .await
            .unwrap()
            .into_inner()
            .amount_cents,
        1000
    );
    t.set_now(T0 + 3 * DAY);
    refused(
        site.reverse(rev(&p1[0].code, 1)).await,
        Code::FailedPrecondition,
        "REVERSAL_WINDOW_CLOSED",
    );

    // Cancellation.
    let cancel = |serials: Vec<String>| pb::CancelPassesRequest {
        request_id: rid(),
        serials,
        order_id: 0,
        carnet: None,
    };
    let c = iss
        .cancel_passes(cancel(vec![p1[8].serial.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.cancelled, c.credited_cents), (1, 1000));
    refused(
        site.redeem(redeem_req(&p1[8].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "CANCELLED",
    );
    refused(
        iss.cancel_passes(cancel(vec![p1[8].serial.clone()])).await,
        Code::FailedPrecondition,
        "NOT_CANCELLABLE",
    );

    // Validity: not yet valid, then expired, then swept.
    let mut later = order_req(1, 5, &[]);
    later.valid_from_ms = T0 + 100 * DAY;
    let (_, p3) = order_from(&t, later, true).await;
    refused(
        site.redeem(redeem_req(&p3[0].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "NOT_YET_VALID",
    );
    t.set_now(T0 + 400 * DAY);
    refused(
        site.redeem(redeem_req(&p1[9].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "EXPIRED",
    );
    // The sweep waits out the offline window (15 days past validity and grace, day 396).
    t.set_now(T0 + 411 * DAY);
    let swept = iss
        .run_expiry_sweep(pb::RunExpirySweepRequest {})
        .await
        .unwrap()
        .into_inner();
    // o1: 10 − 4 redeemed (0, 1, 2, 5) − 1 cancelled = 5 live; o2: 4 live; o3: 5 live.
    assert_eq!((swept.expired, swept.credited_cents), (14, 14_000));

    // The dashboard tells the same story.
    let d = iss
        .get_dashboard(pb::GetDashboardRequest { order_id: o1 })
        .await
        .unwrap()
        .into_inner();
    let n = |c: Option<pb::Count>| c.unwrap().passes;
    assert_eq!(
        (
            n(d.issued),
            n(d.redeemed),
            n(d.cancelled),
            n(d.expired),
            n(d.outstanding)
        ),
        (10, 4, 1, 5, 0)
    );
    assert_eq!(
        (
            d.carnets,
            d.carnets_distributed,
            d.carnets_started,
            d.carnets_finished
        ),
        (2, 1, 2, 0)
    );

    // The same request id with other content.
    let id = rid();
    let mut a = redeem_req(&p3[1].code, 1, None, "aide");
    a.request_id = id.clone();
    let mut b = redeem_req(&p3[2].code, 1, None, "aide");
    b.request_id = id;
    refused(site.redeem(a).await, Code::FailedPrecondition, "EXPIRED");
    refused(
        site.redeem(b).await,
        Code::AlreadyExists,
        "REQUEST_ID_REUSED",
    );

    assert_chain_verifies(&t).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_race_for_one_pass_and_exactly_one_wins() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (_, p) = order(&t, 1, 5, true).await;
    let s1 = t.credential(pb::Role::Structure, 1, &[]).await;
    let s2 = t.credential(pb::Role::Structure, 2, &[]).await;
    let mut tasks = vec![];
    for i in 0..32u64 {
        let (client, site) = if i % 2 == 0 {
            (s1.clone(), [1, 2, 3][(i / 2 % 3) as usize])
        } else {
            (s2.clone(), 4)
        };
        let place = match site {
            2 => stop(0),
            3 => commune("33063"),
            _ => None,
        };
        let req = redeem_req(&p[0].code, site, place, "aide");
        tasks.push(tokio::spawn(async move {
            (site, client.redemptions.clone().redeem(req).await)
        }));
    }
    let mut winners = vec![];
    let mut losers = vec![];
    for task in tasks {
        match task.await.unwrap() {
            (site, Ok(r)) => winners.push((site, r.into_inner())),
            (_, Err(s)) => losers.push(s),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption");
    let (site, _) = &winners[0];
    for s in &losers {
        assert_eq!(passnum::client::reason(s), "ALREADY_REDEEMED");
        let info = tonic_types::StatusExt::get_error_details(s)
            .error_info()
            .cloned()
            .unwrap();
        assert_eq!(
            info.metadata["site"],
            site.to_string(),
            "every loser is told the winner's site"
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_there_after_a_restart() {
    let mut t = TestServer::start().await;
    registry(&t).await;
    let (o, p) = order(&t, 1, 10, true).await;
    let mut site = t.credential(pb::Role::Site, 1, &[]).await.redemptions;
    let req = redeem_req(&p[0].code, 1, None, "aide");
    let first = site.redeem(req.clone()).await.unwrap().into_inner();
    let before = head(&t.op).await;
    let token = t.token(pb::Role::Site, 1, &[]).await;
    t.restart().await;
    assert_eq!(head(&t.op).await.seq, before.seq + 1);
    let mut site = t.client(Some(&token)).await.redemptions;
    // The first credential's retry is remembered across the restart; the new one redeems.
    let mut old = t.client(None).await;
    refused(
        old.ledger.get_head(pb::GetHeadRequest {}).await,
        Code::Unauthenticated,
        "MISSING_TOKEN",
    );
    let after = passes(&t.op, o).await;
    assert_eq!(
        after
            .iter()
            .filter(|p| p.status == pb::PassStatus::Redeemed as i32)
            .count(),
        1
    );
    assert_eq!(
        after[0].redemption.as_ref().unwrap().at_ms,
        first.redeemed_at_ms
    );
    refused(
        site.redeem(redeem_req(&p[0].code, 1, None, "aide")).await,
        Code::FailedPrecondition,
        "ALREADY_REDEEMED",
    );
    let d =
        t.op.issuance
            .clone()
            .get_dashboard(pb::GetDashboardRequest { order_id: o })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(d.redeemed.unwrap().cents, 1000);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_request_id_gets_the_first_answer() {
    let mut t = TestServer::start().await;
    registry(&t).await;
    let (_, p) = order(&t, 1, 5, true).await;
    let token = t.token(pb::Role::Site, 1, &[]).await;
    let mut site = t.client(Some(&token)).await.redemptions;
    let req = redeem_req(&p[0].code, 1, None, "aide");
    let first = site.redeem(req.clone()).await.unwrap().into_inner();
    t.set_now(T0 + 2 * DAY);
    assert_eq!(
        site.redeem(req.clone()).await.unwrap().into_inner(),
        first,
        "a retry is answered the same"
    );
    t.restart().await;
    let mut site = t.client(Some(&token)).await.redemptions;
    assert_eq!(
        site.redeem(req).await.unwrap().into_inner(),
        first,
        "also after a restart"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_refusal_and_the_server_keeps_serving() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (o, p) = order(&t, 1, 5, true).await;
    let mut site = t.credential(pb::Role::Structure, 1, &[]).await.redemptions;
    let mut iss = t.op.issuance.clone();
    let with = |pass| pb::RedeemRequest {
        request_id: rid(),
        pass,
        site_id: 1,
        place: None,
        service: "aide".into(),
        scanned_at_ms: 0,
    };
    refused(
        site.redeem(with(scanned("hello"))).await,
        Code::InvalidArgument,
        "MALFORMED_CODE",
    );
    refused(
        site.redeem(with(scanned(&p[0].code.replace("PN1", "PN7"))))
            .await,
        Code::InvalidArgument,
        "UNKNOWN_CODE_VERSION",
    );
    let serial = p[0].serial.clone();
    let mut wrong = serial.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    let s = refused(
        site.redeem(with(typed(&wrong, &p[0].verification_code)))
            .await,
        Code::InvalidArgument,
        "BAD_CHECK_CHARACTER",
    );
    assert_eq!(
        tonic_types::StatusExt::get_error_details(&s)
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "pass"
    );
    refused(
        site.redeem(with(typed(&serial, "1AAAAAAA"))).await,
        Code::InvalidArgument,
        "CODE_NOT_AUTHENTIC",
    );
    refused(
        site.redeem(with(typed(
            &serial,
            &format!("Z{}", &p[0].verification_code[1..]),
        )))
        .await,
        Code::InvalidArgument,
        "UNKNOWN_CODE_KEY",
    );
    refused(
        site.redeem(with(None)).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    // Typed entry works, with hyphens and lower case.
    site.redeem(with(typed(&serial.to_lowercase(), &p[0].verification_code)))
        .await
        .unwrap();

    // Every bad field at once.
    let mut bad = order_req(1, 0, &["Bad Service"]);
    bad.face_value_cents = -5;
    bad.programme = String::new();
    bad.perimeter = Some(pb::Perimeter {
        insee_codes: vec!["20004".into()],
        departements: vec!["99x".into()],
        site_ids: vec![],
    });
    let s = refused(
        iss.create_order(bad).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    let fields: Vec<String> = tonic_types::StatusExt::get_error_details(&s)
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "pass_count",
            "face_value_cents",
            "perimeter.insee_codes[0]",
            "perimeter.departements[0]",
            "services[0]",
            "programme"
        ]
    );

    // Limits.
    refused(
        iss.create_order(order_req(1, 100_001, &[])).await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );
    let big = pb::RedeemWorkshopRequest {
        request_id: rid(),
        site_id: 3,
        passes: vec![scanned(&p[1].code).unwrap(); 21],
        ..Default::default()
    };
    refused(
        site.redeem_workshop(big).await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );
    let page = pb::ListPassesRequest {
        order_id: o,
        page_size: 5_000,
        page_token: String::new(),
    };
    refused(
        iss.list_passes(page).await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );
    let huge = pb::CancelPassesRequest {
        request_id: rid(),
        serials: vec!["x".repeat(1000); 1100],
        order_id: 0,
        carnet: None,
    };
    refused(
        iss.cancel_passes(huge).await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );
    let oversized = pb::RegisterCommanditaireRequest {
        request_id: rid(),
        name: "x".repeat(2 << 20),
    };
    refused(
        t.op.registry
            .clone()
            .register_commanditaire(oversized)
            .await,
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
    );

    // Unknown ids, empty and bad fields, zero counts.
    refused(
        iss.get_dashboard(pb::GetDashboardRequest { order_id: 999 })
            .await,
        Code::NotFound,
        "UNKNOWN_ORDER",
    );
    refused(
        site.redeem(pb::RedeemRequest {
            request_id: String::new(),
            ..with(scanned(&p[1].code))
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    refused(
        site.redeem(pb::RedeemRequest {
            service: String::new(),
            ..with(scanned(&p[1].code))
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    let bad_iban = pb::RegisterStructureRequest {
        request_id: rid(),
        name: "x".into(),
        siret_or_rna: "12345678901234".into(),
        iban: "FR00".into(),
    };
    let s = refused(
        t.op.registry.clone().register_structure(bad_iban).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(
        tonic_types::StatusExt::get_error_details(&s)
            .bad_request()
            .unwrap()
            .field_violations
            .len(),
        2
    );

    // Still serving.
    site.redeem(with(scanned(&p[1].code))).await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_render_and_decode_back_byte_for_byte() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (o, p) = order(&t, 1, 12, false).await;
    let mut iss = t.op.issuance.clone();
    let png = iss
        .render_code(pb::RenderCodeRequest {
            serial: p[0].serial.clone(),
            format: pb::CodeFormat::Png as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(png.content_type, "image/png");
    let decoder = png::Decoder::new(std::io::Cursor::new(png.image));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    let (meta, content) = grids[0].decode().unwrap();
    assert_eq!(content, p[0].code, "the QR holds exactly the pass's code");
    assert!(
        meta.version.0 <= 5,
        "QR version {} at most 5",
        meta.version.0
    );
    let svg = iss
        .render_code(pb::RenderCodeRequest {
            serial: p[0].serial.clone(),
            format: pb::CodeFormat::Svg as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(String::from_utf8(svg.image).unwrap().starts_with("<?xml"));

    let mut pdf = vec![];
    let mut s = iss
        .render_sheet(pb::RenderSheetRequest {
            order_id: o,
            carnet: None,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(c) = s.message().await.unwrap() {
        pdf.extend(c.data);
    }
    assert!(pdf.starts_with(b"%PDF-1.4"));
    let text = String::from_utf8_lossy(&pdf);
    assert!(
        text.contains("/Count 3"),
        "12 passes in carnets of 5 make 3 pages"
    );
    for pass in &p {
        assert!(
            text.contains(&pass.serial),
            "the sheet prints {}",
            pass.serial
        );
    }
    refused(
        iss.render_sheet(pb::RenderSheetRequest {
            order_id: o,
            carnet: Some(3),
        })
        .await,
        Code::NotFound,
        "UNKNOWN_CARNET",
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_records_verify_without_the_server() {
    let t = TestServer::start().await;
    registry(&t).await;
    order(&t, 1, 5, true).await;
    let mut ledger = t.op.ledger.clone();
    let mut prev = "0".repeat(64);
    let mut n = 0;
    for r in records(&t.op, 1, 0).await {
        let (rec, used) = passnum::storage::frame::decode(&r.frame).unwrap();
        assert_eq!(used, r.frame.len());
        assert_eq!(passnum::code::hex(&rec.hash), r.hash);
        assert_eq!(
            r.prev_hash, prev,
            "record {} chains to the one before",
            r.seq
        );
        prev = r.hash;
        n += 1;
    }
    let head = ledger
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((n, prev), (head.seq, head.hash));
    t.stop().await;
}

/// A page of records starts at the log's last mark before it (64 KiB apart), not at
/// the start of the log: from every record, before and after a restart, the page is the
/// same slice of the whole ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_any_record_is_that_slice_of_the_ledger_before_and_after_a_restart() {
    let mut t = TestServer::start().await;
    registry(&t).await;
    for commanditaire in [1, 2, 1] {
        minted(&t, order_req(commanditaire, 60_000, &[])).await;
    }
    let whole = records(&t.op, 1, 0).await;
    let bytes: usize = whole.iter().map(|r| r.frame.len()).sum();
    let spacing = passnum::storage::log::MARK_SPACING as usize;
    assert!(bytes > 2 * spacing, "the log spans marks: {bytes} bytes");
    for round in ["running", "restarted"] {
        for from in 1..=whole.len() {
            let page = records(&t.op, from as u64, 2).await;
            let want = &whole[from - 1..whole.len().min(from + 1)];
            assert!(page == want, "{round}: the page from record {from}");
        }
        t.restart().await;
    }
    t.stop().await;
}

/// A reader that stops reading holds its slot only for the stall limit: then the read
/// gives up, the slot returns, and the reader, if it comes back, reads what was queued
/// and learns that its page was cut there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_loses_its_slot_and_learns_its_page_was_cut() {
    let t = a_long_log(|c| {
        c.limits.readers_max = 1;
        c.limits.stream_queue_records = 1;
        c.limits.reader_stall_ms = 500;
    })
    .await;
    let mut stalled = record_stream(&t.op, 1, 0).await;
    let started = std::time::Instant::now();
    assert!(verified_once_a_slot_frees(&t.op).await.ok);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    // What was queued, in order from the first record, then the cut.
    let mut next = 1;
    let cut = loop {
        match stalled.message().await {
            Ok(Some(r)) => {
                assert_eq!(r.seq, next);
                next += 1;
            }
            Ok(None) => panic!("the page ended as if whole, at record {next}"),
            Err(cut) => break cut,
        }
    };
    assert_eq!(cut.code(), Code::Aborted);
    assert_eq!(passnum::client::reason(&cut), "READER_STALLED");
    assert!(next > 1 && next < head(&t.op).await.seq, "cut at {next}");
    t.stop().await;
}

/// Each long read (log page, chain verification, export) holds one of `readers_max` slots
/// while it runs: past them, the next is turned away with a retry hint; a reader that
/// leaves frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_past_the_readers_limit_are_turned_away_until_one_ends() {
    let t = a_long_log(|c| {
        c.limits.readers_max = 1;
        c.limits.stream_queue_records = 1;
    })
    .await;
    // A reader that does not read: its page outgrows every buffer between the scan and
    // it, so the scan holds its slot.
    let stalled = record_stream(&t.op, 1, 0).await;
    let other = t.client(Some(&t.operator_token)).await;
    let mut ledger = other.ledger.clone();
    let busy = ledger.verify_chain(pb::VerifyChainRequest {}).await;
    let busy = refused(busy, Code::ResourceExhausted, "READERS_BUSY");
    assert!(busy.message().contains("try again"), "{}", busy.message());
    let page = pb::StreamRecordsRequest {
        from_seq: 1,
        limit: 1,
    };
    let page = ledger.stream_records(page).await;
    refused(page, Code::ResourceExhausted, "READERS_BUSY");
    drop(stalled);
    assert!(verified_once_a_slot_frees(&other).await.ok);
    t.stop().await;
}

/// A shutdown does not wait on a client that opened a page and never reads it: its
/// connection gets the grace to finish, then is closed, and the server ends (the engine
/// drained and synced). Without the grace it waited as long as the client stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_does_not_hold_a_shutdown() {
    let mut t = a_long_log(|c| {
        c.limits.stream_queue_records = 1;
        c.limits.reader_stall_ms = 200;
        c.limits.shutdown_grace_ms = 1_000;
    })
    .await;
    let mut stalled = record_stream(&t.op, 1, 0).await;
    let server = t.server.take().unwrap();
    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), server.shutdown()).await;
    let took = started.elapsed();
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "still waiting after {took:?}"
    );
    assert!(
        took >= std::time::Duration::from_millis(900),
        "the grace is given: {took:?}"
    );
    // The client learns its connection went: what was queued, then an error, never a
    // page that ends as if whole.
    let end = loop {
        match stalled.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(end.is_err(), "{end:?}");
    // The ledger opens again, its chain whole.
    t.start_again().await;
    assert!(assert_chain_verifies(&t).await > 0);
    t.stop().await;
}

/// A server tuned by `tune`, whose log holds about 4 MB of records (eight mints of
/// 60 000 passes).
async fn a_long_log(tune: fn(&mut passnum::config::ServerConfig)) -> TestServer {
    let t = TestServer::start_tuned(tune).await;
    registry(&t).await;
    for _ in 0..8 {
        minted(&t, order_req(1, 60_000, &[])).await;
    }
    t
}

/// Asks for a chain verification until a reader slot is free (turned away meanwhile with
/// READERS_BUSY, and nothing else), within 30 s.
async fn verified_once_a_slot_frees(c: &passnum::client::Clients) -> pb::VerifyChainResponse {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        match c
            .ledger
            .clone()
            .verify_chain(pb::VerifyChainRequest {})
            .await
        {
            Ok(v) => return v.into_inner(),
            Err(busy) => assert_eq!(passnum::client::reason(&busy), "READERS_BUSY"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no reader slot came back in 30 s");
}

/// A record damaged on disk under a running server: the page reaching it sends the records
/// before it, then ends with DATA_LOSS, naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_over_a_damaged_record_ends_with_data_loss() {
    let t = TestServer::start().await;
    registry(&t).await;
    let whole = records(&t.op, 1, 0).await;
    use std::os::unix::fs::FileExt;
    let log = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(passnum::storage::log_path(t.dir.path()))
        .unwrap();
    let third: u64 = whole[..2].iter().map(|r| r.frame.len() as u64).sum::<u64>() + 20;
    let flip = |log: &std::fs::File| {
        let mut byte = [0u8];
        log.read_exact_at(&mut byte, third).unwrap();
        log.write_all_at(&[byte[0] ^ 0xff], third).unwrap();
    };
    flip(&log);
    let mut s = record_stream(&t.op, 1, 5).await;
    for want in &whole[..2] {
        assert_eq!(s.message().await.unwrap().as_ref(), Some(want));
    }
    let status = refused(s.message().await, Code::DataLoss, "LOG_DAMAGED");
    assert!(
        status.message().contains("record 3"),
        "{}",
        status.message()
    );
    flip(&log);
    assert_eq!(records(&t.op, 1, 5).await, whole[..5]);
    t.stop().await;
}

/// Hubs verify the chain while sites redeem: the verification reads the log up to the
/// durable head, never the batch being written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_while_redemptions_are_written() {
    let t = TestServer::start().await;
    registry(&t).await;
    let (_, p) = order(&t, 1, 200, true).await;
    let s1 = t.credential(pb::Role::Structure, 1, &[]).await;
    let before = assert_chain_verifies(&t).await;
    let syncs_before = t.server.as_ref().unwrap().group_commits();
    let writing = tokio::spawn(async move {
        let started = std::time::Instant::now();
        for pass in &p {
            let req = redeem_req(&pass.code, 1, None, "aide");
            s1.redemptions.clone().redeem(req).await.unwrap();
        }
        started.elapsed()
    });
    let mut verified = vec![];
    while !writing.is_finished() {
        verified.push(assert_chain_verifies(&t).await);
    }
    let took = writing.await.unwrap();
    let after = assert_chain_verifies(&t).await;
    assert!(after >= before + 200, "{before} then {after} records");
    assert!(verified.len() > 1, "verified while writing");
    assert!(verified.windows(2).all(|w| w[0] <= w[1]));
    // The engine counted the fsyncs that acknowledged the 200 redemptions, one at a time,
    // and the operator reads the same figures over gRPC.
    let syncs = t.server.as_ref().unwrap().group_commits();
    let phase = syncs.since(&syncs_before);
    assert!(phase.requests >= 200, "{phase:?}");
    assert!((1..=phase.requests).contains(&phase.syncs), "{phase:?}");
    // One at a time, each redemption spent less time in the engine than in its RPC; and
    // the engine says where it went.
    assert!(phase.answered >= 200, "{phase:?}");
    assert!(phase.engine_mean() < took / 200, "{phase:?} in {took:?}");
    use passnum::engine::Stage;
    assert!(phase.stage_mean(Stage::Fsync) > std::time::Duration::ZERO);
    let parts: std::time::Duration = Stage::ALL.iter().map(|s| phase.stage_mean(*s)).sum();
    assert_eq!(parts, phase.engine_mean(), "{phase:?}");
    let read =
        t.op.ledger
            .clone()
            .get_group_commits(pb::GetGroupCommitsRequest {})
            .await
            .unwrap()
            .into_inner();
    assert!(read.syncs >= syncs.syncs && read.requests >= syncs.requests);
    assert!(0 < read.sync_p50_us && read.sync_p50_us <= read.sync_p99_us);
    assert!(read.sync_p99_us <= read.sync_max_us);
    assert!(
        read.answered >= syncs.answered && read.fsync_mean_us > 0,
        "{read:?}"
    );
    let parts = read.queue_mean_us
        + read.staging_mean_us
        + read.sync_wait_mean_us
        + read.fsync_mean_us
        + read.answer_mean_us;
    assert!(
        (read.engine_mean_us.saturating_sub(5)..=read.engine_mean_us).contains(&parts),
        "whole µs each: {read:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_both_reflection_versions_answer() {
    use tonic_reflection::pb::{v1, v1alpha};
    let t = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(t.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let req = tonic_health::pb::HealthCheckRequest {
        service: "passnum.v1.Redemptions".into(),
    };
    assert_eq!(
        health.check(req).await.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut s = alpha
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        s.message().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "passnum.v1.Registry",
        "passnum.v1.Issuance",
        "passnum.v1.Redemptions",
        "passnum.v1.Ledger",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&svc.to_string()),
            "v1alpha lists {svc}: {names:?}"
        );
    }

    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut v1c = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut s = v1c
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        s.message().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    assert!(l.service.iter().any(|s| s.name == "passnum.v1.Redemptions"));
    t.stop().await;
}

/// A hub keeps its own copy of the ledger: each run brings it to the head, checking every
/// record, and the copy is the server's log byte for byte, which `verify-log` checks alone.
/// A credential that sees part of the ledger, a damaged copy and a server with another
/// history are all refused, and leave the copy as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_ledger_follows_it_record_by_record_and_nothing_else() {
    use passnum::cli_mirror::mirror;
    // Pages of three records: a run needs many.
    let t = TestServer::start_tuned(|c| c.limits.stream_records_max = 3).await;
    registry(&t).await;
    minted(&t, order_req(1, 40, &[])).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.log");
    let token = dir.path().join("op.token");
    std::fs::write(&token, &t.operator_token).unwrap();

    // The command line, as a hub runs it (here with the operator's credential).
    let (token, path) = (token.to_str().unwrap(), copy.to_str().unwrap());
    let said = cli_ok(&[
        "ledger",
        "mirror",
        "--json",
        "--server",
        &t.url(),
        "--token-file",
        token,
        path,
    ]);
    let said: serde_json::Value = serde_json::from_str(&said).unwrap();
    let first = head(&t.op).await;
    assert!(first.seq > 6, "several pages: {}", first.seq);
    assert_eq!(said["from"], 0);
    assert_eq!(said["to"], first.seq);
    assert_eq!(said["head_hash"], first.hash);
    let same_as_the_log = |copy: &std::path::Path| {
        let kept = std::fs::read(copy).unwrap();
        let log = std::fs::read(passnum::storage::log_path(t.dir.path())).unwrap();
        kept == log[..kept.len()]
    };
    assert!(same_as_the_log(&copy));
    let (scan, _) = passnum::storage::verify_log(&copy).unwrap();
    assert_eq!(scan.records, first.seq);

    // The next run adds only what came since; a hub's credential may run it.
    minted(&t, order_req(2, 40, &[])).await;
    let hub = t.credential(pb::Role::Hub, 0, &["33"]).await;
    let m = mirror(&hub, &copy, None).await.unwrap();
    let second = head(&t.op).await;
    assert_eq!(
        (m.from, m.to, &m.head_hash),
        (first.seq, second.seq, &second.hash)
    );
    assert!(same_as_the_log(&copy));
    assert_eq!(
        mirror(&hub, &copy, None).await.unwrap().from,
        second.seq,
        "nothing new"
    );

    // The copy is also a backup: the server's log and index lost, it starts from the copy
    // (with its own pass-code keys) and goes on where the copy ends.
    let mut t = t;
    let restored = copy.clone();
    t.restart_after(move |data| {
        std::fs::remove_dir_all(data.join("index")).unwrap();
        std::fs::copy(&restored, passnum::storage::log_path(data)).unwrap();
    })
    .await;
    assert_eq!(head(&t.op).await, second);
    assert_chain_verifies(&t).await;

    let kept = std::fs::read(&copy).unwrap();
    let failure = |r: Result<passnum::cli_mirror::Mirrored, passnum::client::CliError>| {
        let e = r.expect_err("refused");
        assert_eq!(e.exit_code(), 4, "{e}");
        e.to_string()
    };
    // A commanditaire sees only its own records: its pages have gaps.
    minted(&t, order_req(2, 40, &[])).await;
    let c1 = t.credential(pb::Role::Commanditaire, 1, &[]).await;
    let why = failure(mirror(&c1, &copy, None).await);
    assert!(why.contains("whole ledger"), "{why}");
    assert_eq!(std::fs::read(&copy).unwrap(), kept);

    // Another server, whose history differs from the copy's.
    let other = TestServer::start().await;
    registry(&other).await;
    let why = failure(mirror(&other.op, &copy, None).await);
    assert!(
        why.contains("holds") && why.contains("not the one copied"),
        "{why}"
    );
    for commanditaire in [2, 1, 2, 1, 2, 1] {
        minted(&other, order_req(commanditaire, 30, &[])).await;
    }
    let why = failure(mirror(&other.op, &copy, None).await);
    assert!(why.contains("does not follow"), "{why}");
    assert_eq!(std::fs::read(&copy).unwrap(), kept, "nothing of it is kept");

    // A copy changed on disk is found before anything is asked of the server.
    let mut damaged = kept.clone();
    damaged[kept.len() / 2] ^= 1;
    std::fs::write(&copy, &damaged).unwrap();
    let why = failure(mirror(&hub, &copy, None).await);
    assert!(why.contains("does not verify"), "{why}");
    assert_eq!(std::fs::read(&copy).unwrap(), damaged);
    other.stop().await;
    t.stop().await;
}

/// The operator signs every head it states (Ed25519): a hub's copy keeps each head it
/// reached with its signature (`FILE.heads`), checks it against the key it pinned, and
/// `verify-log` checks the evidence against the copy with nothing but the public key. A
/// head signed by another key is refused before anything is copied; evidence whose
/// signature fails, or that the copy contradicts, fails the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_head_is_signed_and_a_copy_keeps_them_as_evidence() {
    use passnum::signed_head::{verifies, HeadSigner, HeadStatement};
    let mut t = TestServer::start().await;
    registry(&t).await;
    minted(&t, order_req(1, 10, &[])).await;
    let h = head(&t.op).await;
    let statement = HeadStatement {
        seq: h.seq,
        hash: passnum::code::unhex32(&h.hash).unwrap(),
        at_ms: h.at_ms,
    };
    t.set_now(T0 + 3 * DAY);
    assert_eq!(
        head(&t.op).await.at_ms,
        T0 + 3 * DAY,
        "signed at the server's time"
    );
    let key = passnum::code::unhex(&h.public_key).unwrap();
    let signature = passnum::code::unhex(&h.signature).unwrap();
    assert!(verifies(&key, &statement, &signature));
    let later = HeadStatement {
        seq: h.seq + 1,
        ..statement
    };
    assert!(!verifies(&key, &later, &signature), "for this head only");
    t.restart().await;
    assert_eq!(
        head(&t.op).await.public_key,
        h.public_key,
        "the key is kept in the data directory"
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.log");
    let heads = passnum::cli_mirror::heads::path(&copy);
    let cli = t.cli_as(&t.operator_token);
    let mirror = |pinned: &str| {
        let args = ["ledger", "mirror", "--head-key", pinned];
        cli.output(&[&args[..], &[copy.to_str().unwrap()]].concat())
    };
    let run = mirror(&h.public_key);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    minted(&t, order_req(2, 10, &[])).await;
    assert!(mirror(&h.public_key.to_uppercase()).status.success());
    let evidence = std::fs::read_to_string(&heads).unwrap();
    let lines: Vec<&str> = evidence.lines().collect();
    assert_eq!(lines[0], "seq,hash,at_ms,public_key,signature");
    let second = head(&t.op).await;
    assert_eq!(lines.len(), 3, "{evidence}");
    assert!(lines[2].starts_with(&format!("{},{},", second.seq, second.hash)));
    let verify_log = || cli_output(&["verify-log", copy.to_str().unwrap()]);
    let said = String::from_utf8(verify_log().stdout).unwrap();
    assert!(
        said.contains(&format!(
            "2 heads signed by {} (to record {})",
            h.public_key, second.seq
        )),
        "{said}"
    );

    // A head signed by a key the hub did not pin: refused, nothing copied or kept.
    minted(&t, order_req(1, 10, &[])).await;
    let kept = std::fs::read(&copy).unwrap();
    let other = HeadSigner::from_pkcs8(&passnum::signed_head::generate_pkcs8().unwrap()).unwrap();
    let run = mirror(&passnum::code::hex(&other.public_key()));
    assert_eq!(run.status.code(), Some(4));
    let why = String::from_utf8_lossy(&run.stderr);
    assert!(why.contains("not by the pinned"), "{why}");
    assert_eq!(std::fs::read(&copy).unwrap(), kept);
    assert_eq!(std::fs::read_to_string(&heads).unwrap(), evidence);

    // Evidence altered: its signature fails.
    let altered = evidence.replace(&second.hash, &h.hash);
    std::fs::write(&heads, &altered).unwrap();
    let run = verify_log();
    assert_eq!(run.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&run.stderr).contains("does not verify"));

    // A head the operator did sign, that the copy contradicts: a rewritten history.
    let document = std::fs::read_to_string(t.dir.path().join("head-key")).unwrap();
    let operator = HeadSigner::from_pkcs8(&passnum::code::unhex(document.trim()).unwrap()).unwrap();
    let forked = HeadStatement {
        seq: second.seq,
        hash: [9; 32],
        at_ms: second.at_ms + 1,
    };
    let line = format!(
        "{},{},{},{},{}\n",
        forked.seq,
        passnum::code::hex(&forked.hash),
        forked.at_ms,
        h.public_key,
        passnum::code::hex(&operator.sign(&forked))
    );
    std::fs::write(&heads, format!("{}\n{}\n{line}", lines[0], lines[1])).unwrap();
    let run = verify_log();
    assert_eq!(run.status.code(), Some(4));
    let why = String::from_utf8_lossy(&run.stderr);
    assert!(why.contains("the operator signed"), "{why}");
    t.stop().await;
}

/// README's "a day of the scheme, by hand", through the `passnum` binary: every command a
/// person types, with the answers it prints (`--json`) and a refusal's exit code; then
/// `rebuild-index` with the server stopped, after which nothing has changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_day_runs_through_the_command_line() {
    let mut t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let op = t.cli_as(&t.operator_token);

    let reg = |args: &[&str]| json(op.ok(&[&["register"], args].concat()));
    let c = reg(&["commanditaire", "--name", "Département de la Gironde"]);
    assert_eq!(c["commanditaire_id"], 1);
    let s = reg(&[
        "structure",
        "--name",
        "Médiathèques de Bordeaux",
        "--siret",
        "21330063500017",
        "--iban",
        "FR76 3000 6000 0112 3456 7890 189",
    ]);
    assert_eq!(s["structure_id"], 1);
    let library = reg(&[
        "site",
        "--structure",
        "1",
        "--name",
        "Médiathèque",
        "--kind",
        "fixed",
        "--insee",
        "33063",
    ]);
    let bus = reg(&[
        "site",
        "--structure",
        "1",
        "--name",
        "Bus",
        "--kind",
        "itinerant",
        "--stop",
        "Lormont=33249",
        "--stop",
        "Libourne=33243",
    ]);
    assert_eq!(
        (library["site_id"].as_u64(), bus["site_id"].as_u64()),
        (Some(1), Some(2))
    );
    let token_file = path("site.token");
    let issued = json(op.ok(&[
        "credential",
        "--role",
        "structure",
        "--actor",
        "1",
        "--out",
        &token_file,
    ]));
    assert_eq!(issued["token_file"], token_file.as_str());
    let site = t.cli_as(std::fs::read_to_string(&token_file).unwrap().trim());

    let order = json(op.ok(&[
        "order",
        "--commanditaire",
        "1",
        "--passes",
        "20",
        "--carnet",
        "10",
        "--face-cents",
        "1000",
        "--from",
        "2026-01-01",
        "--until",
        "2026-12-31",
        "--dept",
        "33",
        "--programme",
        "Pass numérique 2026",
    ]));
    assert_eq!(order["order_id"], 1);
    assert_eq!(json(op.ok(&["mint", "--order", "1"]))["passes"], 20);
    let pdf = path("order-1.pdf");
    op.ok(&["render", "--order", "1", "--out", &pdf]);
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    let funded = op.ok(&[
        "fund",
        "--order",
        "1",
        "--amount-cents",
        "20000",
        "--reference",
        "VIR-0001",
    ]);
    assert_eq!(json(funded)["activated"], 20);
    let passes = json_lines(op.ok(&["passes", "--order", "1", "--page-size", "6"]));
    assert_eq!(passes.len(), 6);
    let code = |i: usize| passes[i]["code"].as_str().unwrap().to_owned();

    let at_library = ["--site", "1", "--service", "demarches-en-ligne", "--code"];
    let checked = json(site.ok(&[&["check"], &at_library[..], &[&code(0)]].concat()));
    assert_eq!(checked["redeemable"], true);
    let redeemed = json(site.ok(&[&["redeem"], &at_library[..], &[&code(0)]].concat()));
    assert_eq!(redeemed["amount_cents"], 1000);
    let again = site.output(&[&["redeem"], &at_library[..], &[&code(0)]].concat());
    assert_eq!(again.status.code(), Some(1), "a refusal exits 1");
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("FailedPrecondition ALREADY_REDEEMED"), "{why}");
    let typed = json(site.ok(&[
        "redeem",
        "--site",
        "2",
        "--stop",
        "1",
        "--service",
        "messagerie",
        "--serial",
        passes[1]["serial"].as_str().unwrap(),
        "--verification",
        passes[1]["verification_code"].as_str().unwrap(),
    ]));
    assert_eq!(typed["serial"], passes[1]["serial"]);
    let workshop = json(site.ok(&[
        "workshop",
        "--site",
        "1",
        "--date",
        "2026-01-02",
        "--start",
        "14:00",
        "--duration",
        "120",
        "--theme",
        "demarches-en-ligne",
        "--participants",
        "3",
        "--mediator",
        "CNFS-33-0042",
        "--code",
        &code(2),
        "--code",
        &code(3),
        "--code",
        &code(0),
    ]));
    assert_eq!(
        (
            workshop["redeemed"].as_u64(),
            workshop["amount_cents"].as_i64()
        ),
        (Some(2), Some(2000))
    );
    let reversed = json(site.ok(&["reverse", "--site", "1", "--code", &code(3)]));
    assert_eq!(reversed["amount_cents"], 1000);
    op.ok(&["distribute", "--order", "1", "--carnet", "0"]);
    let cancelled = json(op.ok(&["cancel", "--order", "1", "--carnet", "1"]));
    assert_eq!(
        (
            cancelled["cancelled"].as_u64(),
            cancelled["credited_cents"].as_i64()
        ),
        (Some(10), Some(10_000))
    );
    let dashboard = json(op.ok(&["dashboard", "--order", "1"]));
    assert_eq!(
        dashboard["redeemed"],
        serde_json::json!({"passes": 3, "cents": 3000})
    );
    assert_eq!(dashboard["outstanding"]["passes"], 7);
    assert_eq!(dashboard["carnets_distributed"], 1);

    // Past validity, grace and the offline window, the sweep expires the 7 left.
    t.set_now(T0 + 420 * DAY);
    let swept = json(op.ok(&["sweep"]));
    assert_eq!(
        (swept["expired"].as_u64(), swept["credited_cents"].as_i64()),
        (Some(7), Some(7_000))
    );
    // The 170 € credited back (the lost carnet, the expired passes) go back to the département.
    let returned = json(op.ok(&[
        "clearing",
        "return-credit",
        "--commanditaire",
        "1",
        "--amount-cents",
        "17000",
        "--reference",
        "VIR-2027-02 avoir",
    ]));
    assert_eq!(returned["credit_due_cents"], 0, "{returned}");
    let verified = json(op.ok(&["ledger", "verify"]));
    assert_eq!(verified["ok"], true, "{verified}");
    let head = op.ok(&["ledger", "head"]);

    let data = t.dir.path().to_str().unwrap().to_owned();
    t.restart_after(|_| {
        let said = cli_ok(&["rebuild-index", "--data", &data]);
        assert!(!said.is_empty());
    })
    .await;
    let op = t.cli_as(&t.operator_token);
    assert_eq!(op.ok(&["ledger", "head"]), head, "the same head");
    assert_eq!(
        json(op.ok(&["dashboard", "--order", "1"]))["expired"]["passes"],
        7
    );
    t.stop().await;
}
