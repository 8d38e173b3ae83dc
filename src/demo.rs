//! `passnum demo`: a whole day of the scheme against a running server, told as it happens.

use crate::cli::Conn;
use crate::client::{describe, now_ms, request_id, CliError, Clients};
use crate::rpc::pb;

const DAY_MS: i64 = 86_400_000;

fn scanned(code: &str) -> Option<pb::PassCode> {
    Some(pb::PassCode {
        form: Some(pb::pass_code::Form::Scanned(code.to_owned())),
    })
}

pub async fn run(conn: &Conn) -> Result<(), CliError> {
    let mut op = Clients::from_conn(conn).await?;
    let say = |s: String| println!("{s}");
    let rid = request_id;

    let c = op
        .registry
        .register_commanditaire(pb::RegisterCommanditaireRequest {
            request_id: rid(),
            name: "Département de la Gironde".into(),
        })
        .await?
        .into_inner()
        .commanditaire_id;
    say(format!("1. The Gironde département is commanditaire {c}."));
    let s = op
        .registry
        .register_structure(pb::RegisterStructureRequest {
            request_id: rid(),
            name: "Médiathèques de Bordeaux Métropole".into(),
            siret_or_rna: demo_siret(),
            iban: "FR7630006000011234567890189".into(),
        })
        .await?
        .into_inner()
        .structure_id;
    let library = register_site(
        &mut op,
        s,
        "Médiathèque Mériadeck",
        pb::SiteKind::Fixed,
        "33063",
        vec![],
    )
    .await?;
    let bus = register_site(
        &mut op,
        s,
        "Bus France services",
        pb::SiteKind::Itinerant,
        "",
        vec![
            ("Mairie de Lormont", "33249"),
            ("Marché de Libourne", "33243"),
            ("Périgueux", "24322"),
        ],
    )
    .await?;
    say(format!("2. Structure {s} runs site {library} (a library in Bordeaux) and site {bus} (a bus with 3 stops, the last in Dordogne)."));
    let token = op
        .registry
        .issue_credential(pb::IssueCredentialRequest {
            request_id: rid(),
            role: pb::Role::Structure as i32,
            actor_id: s,
            departements: vec![],
            valid_days: 1, // the demo's day
        })
        .await?
        .into_inner()
        .token;
    let channel = tonic::transport::Channel::from_shared(conn.server.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?
        .connect()
        .await
        .map_err(|e| CliError::Unreachable(e.to_string()))?;
    let mut site = Clients::new(channel, Some(&token));
    say("3. The structure gets its own credential: it can redeem only at its own sites.".into());

    let order = op
        .issuance
        .create_order(pb::CreateOrderRequest {
            request_id: rid(),
            commanditaire_id: c,
            pass_count: 20,
            carnet_size: 10,
            face_value_cents: 1000,
            valid_from_ms: now_ms() - DAY_MS,
            valid_until_ms: now_ms() + 365 * DAY_MS,
            grace_days: 31,
            perimeter: Some(pb::Perimeter {
                departements: vec!["33".into()],
                ..Default::default()
            }),
            services: vec![],
            programme: "Pass numérique 2026".into(),
        })
        .await?
        .into_inner()
        .order_id;
    op.issuance
        .mint_order(pb::MintOrderRequest {
            request_id: rid(),
            order_id: order,
        })
        .await?;
    say(format!(
        "4. Order {order}: 20 passes of 10 € in 2 carnets, valid in Gironde (33), minted."
    ));
    let mut passes = vec![];
    let mut stream = op
        .issuance
        .list_passes(pb::ListPassesRequest {
            order_id: order,
            page_size: 100,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    while let Some(p) = stream.message().await? {
        passes.push(p);
    }
    match site
        .redemptions
        .redeem(redeem(&passes[0].code, library, None))
        .await
    {
        Err(e) => say(format!(
            "5. Before funding, a scan is refused: {}",
            describe(&e)
        )),
        Ok(_) => return Err(CliError::Failed("an unfunded pass was redeemed".into())),
    }
    op.issuance
        .record_funding(pb::RecordFundingRequest {
            request_id: rid(),
            order_id: order,
            amount_cents: 20_000,
            reference: "VIR-GIRONDE-0001".into(),
        })
        .await?;
    op.issuance
        .mark_distributed(pb::MarkDistributedRequest {
            request_id: rid(),
            order_id: order,
            carnet: 0,
        })
        .await?;
    say("6. The operator records the 200 € payment: the passes are active. Carnet 0 is handed out by a CCAS.".into());

    let r = site
        .redemptions
        .redeem(redeem(&passes[0].code, library, None))
        .await?
        .into_inner();
    say(format!(
        "7. Pass {} redeemed at the library: {} cents.",
        r.serial, r.amount_cents
    ));
    match site
        .redemptions
        .redeem(redeem(&passes[0].code, bus, Some(0)))
        .await
    {
        Err(e) => say(format!(
            "8. The same pass on the bus is refused: {}",
            describe(&e)
        )),
        Ok(_) => return Err(CliError::Failed("a pass was redeemed twice".into())),
    }
    let r = site
        .redemptions
        .redeem(redeem(&passes[1].code, bus, Some(1)))
        .await?
        .into_inner();
    say(format!(
        "9. Pass {} redeemed on the bus at its Libourne stop.",
        r.serial
    ));
    match site
        .redemptions
        .redeem(redeem(&passes[2].code, bus, Some(2)))
        .await
    {
        Err(e) => say(format!(
            "10. At the Périgueux stop (Dordogne), outside the perimeter: {}",
            describe(&e)
        )),
        Ok(_) => {
            return Err(CliError::Failed(
                "a pass was redeemed outside its perimeter".into(),
            ))
        }
    }
    let w = site
        .redemptions
        .redeem_workshop(pb::RedeemWorkshopRequest {
            request_id: rid(),
            site_id: library,
            place: None,
            date: "2026-11-23".into(),
            start: "14:00".into(),
            duration_minutes: 120,
            themes: vec!["demarches-en-ligne".into(), "messagerie".into()],
            participants: 4,
            mediator_id: "CNFS-33-0042".into(),
            passes: [3, 4, 5, 0]
                .iter()
                .map(|i| scanned(&passes[*i].code).expect("some"))
                .collect(),
            held_at_ms: 0,
        })
        .await?
        .into_inner();
    say(format!("11. A 2 h workshop at the library: {} of 4 passes redeemed ({} cents); the 4th was already used.", w.redeemed, w.amount_cents));
    site.redemptions
        .reverse(pb::ReverseRequest {
            request_id: rid(),
            pass: scanned(&passes[5].code),
            site_id: library,
        })
        .await?;
    say(format!(
        "12. The library reverses pass {} scanned by mistake.",
        passes[5].serial
    ));
    let cancelled = op
        .issuance
        .cancel_passes(pb::CancelPassesRequest {
            request_id: rid(),
            serials: vec![],
            order_id: order,
            carnet: Some(1),
        })
        .await?
        .into_inner();
    say(format!(
        "13. Carnet 1 was lost: {} passes cancelled, {} cents owed back to the Gironde.",
        cancelled.cancelled, cancelled.credited_cents
    ));
    let d = op
        .issuance
        .get_dashboard(pb::GetDashboardRequest { order_id: order })
        .await?
        .into_inner();
    say(format!(
        "14. The order's dashboard:\n{}",
        crate::client::dashboard_text(&d)
    ));
    let v = op
        .ledger
        .verify_chain(pb::VerifyChainRequest {})
        .await?
        .into_inner();
    say(format!(
        "15. The ledger verifies: {} records, head {}.",
        v.records, v.head_hash
    ));
    if !v.ok {
        return Err(CliError::Failed(v.problem));
    }
    Ok(())
}

fn redeem(code: &str, site: u64, stop: Option<u32>) -> pb::RedeemRequest {
    pb::RedeemRequest {
        request_id: request_id(),
        pass: scanned(code),
        site_id: site,
        place: stop.map(|s| pb::Place {
            stop: Some(s),
            insee_code: String::new(),
        }),
        service: "demarches-en-ligne".into(),
        scanned_at_ms: 0,
    }
}

async fn register_site(
    op: &mut Clients,
    structure: u64,
    name: &str,
    kind: pb::SiteKind,
    insee: &str,
    stops: Vec<(&str, &str)>,
) -> Result<u64, CliError> {
    let stops = stops
        .into_iter()
        .map(|(l, i)| pb::BusStop {
            label: l.into(),
            insee_code: i.into(),
        })
        .collect();
    let req = pb::RegisterSiteRequest {
        request_id: request_id(),
        structure_id: structure,
        name: name.into(),
        kind: kind as i32,
        insee_code: insee.into(),
        stops,
    };
    Ok(op.registry.register_site(req).await?.into_inner().site_id)
}

/// A valid SIRET that differs per run, so the demo can be played more than once.
fn demo_siret() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    let base = format!("{:013}", u64::from_le_bytes(b) % 10_000_000_000_000);
    (0..10)
        .map(|d| format!("{base}{d}"))
        .find(|s| crate::domain::luhn10_valid(s))
        .expect("one check digit fits")
}
