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
    let cast = cast(&mut op).await?;
    let mut site = structure_clients(conn, &mut op, cast.structure).await?;
    let (order, passes) = order(&mut op, cast.commanditaire).await?;
    scans(&mut op, &mut site, &cast, order, &passes).await?;
    workshop(&mut site, cast.library, &passes).await?;
    evening(&mut op, order).await
}

/// Who plays the day: a département, the structure running a library and a bus.
struct Cast {
    commanditaire: u64,
    structure: u64,
    library: u64,
    bus: u64,
}

/// 1-2: the département, the structure and its two sites registered.
async fn cast(op: &mut Clients) -> Result<Cast, CliError> {
    let commanditaire = op
        .registry
        .register_commanditaire(pb::RegisterCommanditaireRequest {
            request_id: request_id(),
            name: "Département de la Gironde".into(),
        })
        .await?
        .into_inner()
        .commanditaire_id;
    println!("1. The Gironde département is commanditaire {commanditaire}.");
    let structure = op
        .registry
        .register_structure(pb::RegisterStructureRequest {
            request_id: request_id(),
            name: "Médiathèques de Bordeaux Métropole".into(),
            siret_or_rna: demo_siret(),
            iban: "FR7630006000011234567890189".into(),
        })
        .await?
        .into_inner()
        .structure_id;
    let library = register_site(
        op,
        structure,
        "Médiathèque Mériadeck",
        pb::SiteKind::Fixed,
        "33063",
        vec![],
    )
    .await?;
    let stops = vec![
        ("Mairie de Lormont", "33249"),
        ("Marché de Libourne", "33243"),
        ("Périgueux", "24322"),
    ];
    let bus = register_site(
        op,
        structure,
        "Bus France services",
        pb::SiteKind::Itinerant,
        "",
        stops,
    )
    .await?;
    println!("2. Structure {structure} runs site {library} (a library in Bordeaux) and site {bus} (a bus with 3 stops, the last in Dordogne).");
    Ok(Cast {
        commanditaire,
        structure,
        library,
        bus,
    })
}

/// 3: the structure's own credential, and clients holding it (over the same transport).
async fn structure_clients(
    conn: &Conn,
    op: &mut Clients,
    structure: u64,
) -> Result<Clients, CliError> {
    let token = op
        .registry
        .issue_credential(pb::IssueCredentialRequest {
            request_id: request_id(),
            role: pb::Role::Structure as i32,
            actor_id: structure,
            departements: vec![],
            valid_days: 1, // the demo's day
        })
        .await?
        .into_inner()
        .token;
    let site = Clients::connect_trusting(&conn.server, Some(&token), conn.ca_file.as_deref())
        .await
        .map_err(CliError::Unreachable)?;
    println!("3. The structure gets its own credential: it can redeem only at its own sites.");
    Ok(site)
}

/// 4: an order of 20 passes in 2 carnets, minted; its passes as listed.
async fn order(op: &mut Clients, commanditaire: u64) -> Result<(u64, Vec<pb::PassInfo>), CliError> {
    let order = op
        .issuance
        .create_order(pb::CreateOrderRequest {
            request_id: request_id(),
            commanditaire_id: commanditaire,
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
            request_id: request_id(),
            order_id: order,
        })
        .await?;
    println!("4. Order {order}: 20 passes of 10 € in 2 carnets, valid in Gironde (33), minted.");
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
    Ok((order, passes))
}

/// 5-10: a scan before funding, the funding, then scans at the library and on the bus.
async fn scans(
    op: &mut Clients,
    site: &mut Clients,
    cast: &Cast,
    order: u64,
    passes: &[pb::PassInfo],
) -> Result<(), CliError> {
    let answer = site
        .redemptions
        .redeem(redeem(&passes[0].code, cast.library, None))
        .await;
    println!(
        "5. Before funding, a scan is refused: {}",
        refused(answer, "an unfunded pass was redeemed")?
    );
    fund(op, order).await?;
    let r = site
        .redemptions
        .redeem(redeem(&passes[0].code, cast.library, None))
        .await?
        .into_inner();
    println!(
        "7. Pass {} redeemed at the library: {} cents.",
        r.serial, r.amount_cents
    );
    let answer = site
        .redemptions
        .redeem(redeem(&passes[0].code, cast.bus, Some(0)))
        .await;
    println!(
        "8. The same pass on the bus is refused: {}",
        refused(answer, "a pass was redeemed twice")?
    );
    let r = site
        .redemptions
        .redeem(redeem(&passes[1].code, cast.bus, Some(1)))
        .await?
        .into_inner();
    println!(
        "9. Pass {} redeemed on the bus at its Libourne stop.",
        r.serial
    );
    let answer = site
        .redemptions
        .redeem(redeem(&passes[2].code, cast.bus, Some(2)))
        .await;
    let outside = "a pass was redeemed outside its perimeter";
    println!(
        "10. At the Périgueux stop (Dordogne), outside the perimeter: {}",
        refused(answer, outside)?
    );
    Ok(())
}

/// How a step meant to be refused was refused; a failure if it was not.
fn refused<T>(answer: Result<T, tonic::Status>, if_not: &str) -> Result<String, CliError> {
    match answer {
        Err(status) => Ok(describe(&status)),
        Ok(_) => Err(CliError::Failed(if_not.into())),
    }
}

/// 6: the commanditaire's payment recorded, and carnet 0 handed out.
async fn fund(op: &mut Clients, order: u64) -> Result<(), CliError> {
    op.issuance
        .record_funding(pb::RecordFundingRequest {
            request_id: request_id(),
            order_id: order,
            amount_cents: 20_000,
            reference: "VIR-GIRONDE-0001".into(),
        })
        .await?;
    op.issuance
        .mark_distributed(pb::MarkDistributedRequest {
            request_id: request_id(),
            order_id: order,
            carnet: 0,
        })
        .await?;
    println!("6. The operator records the 200 € payment: the passes are active. Carnet 0 is handed out by a CCAS.");
    Ok(())
}

/// 11-12: a workshop of 4 at the library (one pass already used), then a reversal.
async fn workshop(
    site: &mut Clients,
    library: u64,
    passes: &[pb::PassInfo],
) -> Result<(), CliError> {
    let w = site
        .redemptions
        .redeem_workshop(pb::RedeemWorkshopRequest {
            request_id: request_id(),
            site_id: library,
            place: None,
            date: crate::export::iso_date(now_ms().div_euclid(DAY_MS) as i32),
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
    println!("11. A 2 h workshop at the library: {} of 4 passes redeemed ({} cents); the 4th was already used.", w.redeemed, w.amount_cents);
    site.redemptions
        .reverse(pb::ReverseRequest {
            request_id: request_id(),
            pass: scanned(&passes[5].code),
            site_id: library,
        })
        .await?;
    println!(
        "12. The library reverses pass {} scanned by mistake.",
        passes[5].serial
    );
    Ok(())
}

/// 13-15: a lost carnet cancelled, the order's dashboard, the ledger verified.
async fn evening(op: &mut Clients, order: u64) -> Result<(), CliError> {
    let cancelled = op
        .issuance
        .cancel_passes(pb::CancelPassesRequest {
            request_id: request_id(),
            serials: vec![],
            order_id: order,
            carnet: Some(1),
        })
        .await?
        .into_inner();
    println!(
        "13. Carnet 1 was lost: {} passes cancelled, {} cents owed back to the Gironde.",
        cancelled.cancelled, cancelled.credited_cents
    );
    let d = op
        .issuance
        .get_dashboard(pb::GetDashboardRequest { order_id: order })
        .await?
        .into_inner();
    println!(
        "14. The order's dashboard:\n{}",
        crate::client::dashboard_text(&d)
    );
    let v = op
        .ledger
        .verify_chain(pb::VerifyChainRequest {})
        .await?
        .into_inner();
    println!(
        "15. The ledger verifies: {} records, head {}.",
        v.records, v.head_hash
    );
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
