//! Referencing sites from the national open data, over gRPC: the outcome of every row of a
//! fixture written for the purpose; re-import, changes, rows gone, dry run, hub scope;
//! search with pagination; export read back; a pass redeemed at an imported bus stop.

mod common;
use common::*;
use passnum::client::Clients;
use passnum::rpc::pb;
use tonic::Code;

const FIXTURE: &str = include_str!("fixtures/lieux-mediation-numerique.csv");

async fn import(c: &Clients, text: &str, dry_run: bool) -> Result<pb::ImportReport, tonic::Status> {
    let request_id = rid();
    // Small chunks, so the client stream really is a stream.
    let chunks: Vec<pb::ImportChunk> = text
        .as_bytes()
        .chunks(100)
        .map(|d| pb::ImportChunk {
            request_id: request_id.clone(),
            dry_run,
            data: d.to_vec(),
        })
        .collect();
    c.sites
        .clone()
        .import_sites(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner())
}

async fn list(c: &Clients, req: pb::ListSitesRequest) -> Vec<pb::SiteInfo> {
    let mut out = vec![];
    let mut req = req;
    loop {
        let mut s = c
            .sites
            .clone()
            .list_sites(req.clone())
            .await
            .unwrap()
            .into_inner();
        let mut next = String::new();
        while let Some(site) = s.message().await.unwrap() {
            next = site.next_page_token.clone();
            out.push(site);
        }
        if next.is_empty() {
            return out;
        }
        req.page_token = next;
    }
}

fn reasons(report: &pb::ImportReport) -> Vec<(u32, String)> {
    report
        .rejected
        .iter()
        .map(|r| (r.line, r.reason.split(':').next().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_fixture_has_its_outcome() {
    let t = TestServer::start().await;
    let dry = import(&t.op, FIXTURE, true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(
        dry.sites_created.len(),
        6,
        "a dry run says what would change"
    );
    assert!(
        list(&t.op, pb::ListSitesRequest::default())
            .await
            .is_empty(),
        "and changes nothing"
    );

    let r = import(&t.op, FIXTURE, false).await.unwrap();
    assert_eq!(r.rows, 13, "13 records on 14 lines: one has a line break");
    assert_eq!(
        reasons(&r),
        [
            (7, "duplicate id".to_owned()),
            (8, "pivot".to_owned()),
            (9, "code_insee".to_owned()),
            (14, "latitude".to_owned()),
            (15, "nom".to_owned()),
        ]
    );
    assert_eq!(r.rejected[0].id, "med-meriadeck");
    // Five payees: the library, the bus, the association (RNA), Ajaccio, Basse-Terre, and
    // Lormont's cyber-base: six structures.
    assert_eq!(r.structures_created.len(), 6);
    assert_eq!(r.sites_created, [1, 2, 3, 4, 5, 6]);

    let sites = list(
        &t.op,
        pb::ListSitesRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(sites.len(), 6, "paginated by 2");
    let by_ref = |r: &str| {
        sites
            .iter()
            .find(|s| s.reference == r)
            .unwrap_or_else(|| panic!("{r}"))
            .clone()
    };
    let bus = by_ref("bus:11000201100044");
    assert_eq!(bus.kind, pb::SiteKind::Itinerant as i32);
    let stops: Vec<&str> = bus.stops.iter().map(|s| s.insee_code.as_str()).collect();
    assert_eq!(
        stops,
        ["24322", "24037", "33243"],
        "one bus, its stops in id order"
    );
    assert_eq!(by_ref("place:ajaccio").insee_code, "2A004");
    assert_eq!(by_ref("place:basse-terre").insee_code, "97105");
    assert_eq!(
        by_ref("place:cyber-mairie").name,
        "Cyber-base, mairie de Lormont"
    );
    assert_eq!(
        by_ref("place:med-meriadeck").services,
        [
            "Aide aux démarches administratives",
            "Maîtrise des outils numériques du quotidien"
        ]
    );

    // Search.
    let in_24 = list(
        &t.op,
        pb::ListSitesRequest {
            departement: "24".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        in_24
            .iter()
            .map(|s| s.reference.as_str())
            .collect::<Vec<_>>(),
        ["bus:11000201100044"]
    );
    let buses = list(
        &t.op,
        pb::ListSitesRequest {
            kind: pb::SiteKind::Itinerant as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(buses.len(), 1);
    let merignac = list(
        &t.op,
        pb::ListSitesRequest {
            insee_code: "33281".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(merignac[0].reference, "place:asso-merignac");
    let service = list(
        &t.op,
        pb::ListSitesRequest {
            service: "Maîtrise des outils numériques du quotidien".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(service.len(), 5);

    // Re-importing the same file changes nothing.
    let again = import(&t.op, FIXTURE, false).await.unwrap();
    assert!(
        again.structures_created.is_empty()
            && again.sites_created.is_empty()
            && again.sites_updated.is_empty()
    );
    assert_eq!((again.sites_unchanged, again.sites_gone.len()), (6, 0));

    // A changed row is an update; a row gone is reported and the site stays active.
    let changed = FIXTURE.replace("Tu-Sa 10:00-18:00", "Tu-Sa 09:00-19:00");
    let changed: String = changed
        .lines()
        .filter(|l| !l.starts_with("asso-merignac"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let r = import(&t.op, &changed, false).await.unwrap();
    let meriadeck = by_ref("place:med-meriadeck").site_id;
    let asso = by_ref("place:asso-merignac").site_id;
    assert_eq!(
        (
            r.sites_updated.clone(),
            r.sites_gone.clone(),
            r.sites_unchanged
        ),
        (vec![meriadeck], vec![asso], 4)
    );
    let still =
        t.op.registry
            .clone()
            .get_site(pb::GetSiteRequest { site_id: asso })
            .await
            .unwrap()
            .into_inner();
    assert!(
        still.active,
        "a place gone from the file is never deactivated by it"
    );

    // The export, read back with the same reader, lists every place, marked for the pass.
    let mut csv = vec![];
    let mut s =
        t.op.sites
            .clone()
            .export_sites(pb::ExportSitesRequest::default())
            .await
            .unwrap()
            .into_inner();
    while let Some(c) = s.message().await.unwrap() {
        csv.extend(c.data);
    }
    let text = String::from_utf8(csv).unwrap();
    assert!(
        text.starts_with(&passnum::opendata::COLUMNS.join(",")),
        "the standard's header order"
    );
    let (rows, rejected) = passnum::opendata::read(&text).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(
        rows.len(),
        8,
        "six places, the bus counting its three stops"
    );
    assert!(text.contains("Pass numérique"));
    assert!(text.contains("Tu-Sa 09:00-19:00"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_import_their_territory_and_sites_redeem() {
    let t = TestServer::start().await;
    let hub = t.credential(pb::Role::Hub, 0, &["33"]).await;
    let r = import(&hub, FIXTURE, false).await.unwrap();
    let outside: Vec<u32> = r
        .rejected
        .iter()
        .filter(|x| x.reason.contains("outside"))
        .map(|x| x.line)
        .collect();
    // The bus has stops in 24: those rows are outside; Ajaccio and Basse-Terre too.
    assert_eq!(outside, [3, 4, 10, 11]);
    assert_eq!(
        r.sites_created.len(),
        4,
        "Mériadeck, the bus (its Libourne stop), Mérignac, Lormont"
    );
    let seen = list(&hub, pb::ListSitesRequest::default()).await;
    assert_eq!(seen.len(), 4);

    let c1 = t.client(None).await;
    refused(
        import(&c1, FIXTURE, false).await,
        Code::Unauthenticated,
        "MISSING_TOKEN",
    );
    let structure = t.credential(pb::Role::Structure, 1, &[]).await;
    refused(
        import(&structure, FIXTURE, false).await,
        Code::PermissionDenied,
        "OUT_OF_SCOPE",
    );
    refused(
        import(&t.op, "nom,commune\nx,y\n", false).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );

    // A pass redeemed at the imported bus's stop in Libourne (the only stop imported).
    t.op.registry
        .clone()
        .register_commanditaire(pb::RegisterCommanditaireRequest {
            request_id: rid(),
            name: "Gironde".into(),
        })
        .await
        .unwrap();
    let (_, p) = order(&t, 1, 5, true).await;
    let bus = seen
        .iter()
        .find(|s| s.kind == pb::SiteKind::Itinerant as i32)
        .unwrap();
    let site = t
        .credential(pb::Role::Structure, bus.structure_id, &[])
        .await;
    site.redemptions
        .clone()
        .redeem(redeem_req(&p[0].code, bus.site_id, stop(0), "aide"))
        .await
        .unwrap();
    t.stop().await;
}

/// `passnum sites`: a dry run, the import, a filtered list, and an export that, imported
/// again, changes nothing; the file is written whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_imports_lists_and_exports() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("lieux.csv");
    std::fs::write(&csv, FIXTURE).unwrap();
    let csv = csv.to_str().unwrap().to_owned();
    let op = t.cli_as(&t.operator_token);

    let dry = op.text(&["sites", "import", &csv, "--dry-run"]);
    assert!(
        dry.starts_with("dry run, nothing changed. 13 rows: 6 structures and 6 sites created"),
        "{dry}"
    );
    assert!(
        dry.contains("\n  line 7 (med-meriadeck): duplicate id"),
        "{dry}"
    );
    assert!(
        json_lines(op.ok(&["sites", "list"])).is_empty(),
        "a dry run changes nothing"
    );

    let done = &json_lines(op.ok(&["sites", "import", &csv]))[0];
    assert_eq!(done["sites_created"], serde_json::json!([1, 2, 3, 4, 5, 6]));
    assert_eq!(done["rejected"].as_array().unwrap().len(), 5);
    let all = json_lines(op.ok(&["sites", "list"]));
    assert_eq!(all.len(), 6);
    let buses = json_lines(op.ok(&["sites", "list", "--kind", "itinerant"]));
    assert!(!buses.is_empty() && buses.len() < all.len(), "{buses:?}");
    assert!(
        buses.iter().all(|s| s["kind"] == "SITE_KIND_ITINERANT"),
        "{buses:?}"
    );

    let exported = dir.path().join("export.csv");
    let out = exported.to_str().unwrap();
    let said = op.text(&["sites", "export", "--out", out]);
    let bytes = std::fs::metadata(&exported).unwrap().len();
    assert_eq!(said.trim(), format!("wrote {out} ({bytes} bytes)"));
    assert!(!dir.path().join("export.csv.part").exists());
    let again = &json_lines(op.ok(&["sites", "import", out]))[0];
    assert_eq!(again["sites_unchanged"], 6, "{again}");
    assert_eq!(again["sites_created"], serde_json::json!([]), "{again}");
    t.stop().await;
}
