//! A redemption scenario shared by the load bench and the crash harness: one commanditaire,
//! one structure with a fixed site in Bordeaux, its credential, and funded orders valid in
//! Gironde. Included with `#[path]` by both, so neither keeps its own copy.

use passnum::client::{request_id, Clients};
use passnum::rpc::pb;
use std::time::{Duration, Instant};

/// Registers the actors and `orders` funded orders of `passes` passes; returns the site's
/// credential (`role` is STRUCTURE or SITE, for actor 1), every pass's code in order, and
/// the time the mints took.
pub async fn redemption_scenario(
    op: &Clients,
    role: pb::Role,
    orders: u32,
    passes: u32,
) -> (String, Vec<String>, Duration) {
    let mut reg = op.registry.clone();
    reg.register_commanditaire(pb::RegisterCommanditaireRequest {
        request_id: request_id(),
        name: "Gironde".into(),
    })
    .await
    .unwrap();
    let structure = pb::RegisterStructureRequest {
        request_id: request_id(),
        name: "S".into(),
        siret_or_rna: "21330063500017".into(),
        iban: String::new(),
    };
    reg.register_structure(structure).await.unwrap();
    let site = pb::RegisterSiteRequest {
        request_id: request_id(),
        structure_id: 1,
        name: "site".into(),
        kind: pb::SiteKind::Fixed as i32,
        insee_code: "33063".into(),
        stops: vec![],
    };
    reg.register_site(site).await.unwrap();
    let credential = pb::IssueCredentialRequest {
        request_id: request_id(),
        role: role as i32,
        actor_id: 1,
        departements: vec![],
        valid_days: 0,
    };
    let token = reg
        .issue_credential(credential)
        .await
        .unwrap()
        .into_inner()
        .token;
    let (mut codes, mut minting) = (vec![], Duration::ZERO);
    for _ in 0..orders {
        let (_, order_codes, took) = funded_order(op, passes).await;
        codes.extend(order_codes);
        minting += took;
    }
    (token, codes, minting)
}

/// Creates, mints and funds one order of `passes` passes of commanditaire 1, valid in
/// Gironde for a year; returns its id, its passes' codes and the time the mint took.
pub async fn funded_order(op: &Clients, passes: u32) -> (u64, Vec<String>, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut iss = op.issuance.clone();
    let order = pb::CreateOrderRequest {
        request_id: request_id(),
        commanditaire_id: 1,
        pass_count: passes,
        carnet_size: 10,
        face_value_cents: 1000,
        valid_from_ms: now - 86_400_000,
        valid_until_ms: now + 365 * 86_400_000,
        grace_days: 31,
        perimeter: Some(pb::Perimeter {
            departements: vec!["33".into()],
            ..Default::default()
        }),
        services: vec![],
        programme: "scenario".into(),
    };
    let id = iss.create_order(order).await.unwrap().into_inner().order_id;
    let t = Instant::now();
    iss.mint_order(pb::MintOrderRequest {
        request_id: request_id(),
        order_id: id,
    })
    .await
    .unwrap();
    let minting = t.elapsed();
    let funding = pb::RecordFundingRequest {
        request_id: request_id(),
        order_id: id,
        amount_cents: 1000 * i64::from(passes),
        reference: "r".into(),
    };
    iss.record_funding(funding).await.unwrap();
    let codes = order_passes(op, id)
        .await
        .into_iter()
        .map(|p| p.code)
        .collect();
    (id, codes, minting)
}

/// Every pass of an order, a page of 1 000 at a time.
/// Asserts that the ledger's chain and money invariants verify, as the operator sees them
/// (`context` names the moment in the failure message); returns the verification.
pub async fn verified_chain(op: &Clients, context: &str) -> pb::VerifyChainResponse {
    let v = op
        .ledger
        .clone()
        .verify_chain(pb::VerifyChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{context}: {}", v.problem);
    v
}

pub async fn order_passes(op: &Clients, order: u64) -> Vec<pb::PassInfo> {
    order_passes_by(op, order, 1000).await
}

/// Every pass of an order, following page tokens `page_size` passes at a time.
pub async fn order_passes_by(op: &Clients, order: u64, page_size: u32) -> Vec<pb::PassInfo> {
    let mut out = vec![];
    let mut token = String::new();
    loop {
        let req = pb::ListPassesRequest {
            order_id: order,
            page_size,
            page_token: token.clone(),
        };
        let mut s = op
            .issuance
            .clone()
            .list_passes(req)
            .await
            .unwrap()
            .into_inner();
        let mut next = String::new();
        while let Some(p) = s.message().await.unwrap() {
            next = p.next_page_token.clone();
            out.push(p);
        }
        if next.is_empty() {
            return out;
        }
        token = next;
    }
}
