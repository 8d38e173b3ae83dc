//! Client commands for sites: the national open data imported, listed and exported.

use super::*;

/// Bytes of one import chunk: well under the transport's message limit.
const IMPORT_CHUNK_BYTES: usize = 256 << 10;

pub(super) async fn sites(what: SitesCmd, conn: &Conn) -> Result<(), CliError> {
    let c = Clients::from_conn(conn).await?;
    match what {
        SitesCmd::Import { file, dry_run } => import(&c, conn, &file, dry_run).await,
        SitesCmd::List {
            insee,
            dept,
            structure,
            kind,
            service,
        } => {
            let kind = kind.map_or(pb::SiteKind::Unspecified, |k| match k {
                KindArg::Fixed => pb::SiteKind::Fixed,
                KindArg::Itinerant => pb::SiteKind::Itinerant,
                KindArg::Workshop => pb::SiteKind::Workshop,
            }) as i32;
            let req = pb::ListSitesRequest {
                insee_code: insee,
                departement: dept,
                structure_id: structure,
                kind,
                service,
                page_size: 500,
                page_token: String::new(),
            };
            list(&c, conn, req).await
        }
        SitesCmd::Export { out: path, dept } => {
            let req = pb::ExportSitesRequest { departement: dept };
            save(conn, c.sites.clone().export_sites(req).await?, &path).await
        }
    }
}

/// Sends the file in chunks under one request id; prints what the import did or would do.
async fn import(
    c: &Clients,
    conn: &Conn,
    file: &std::path::Path,
    dry_run: bool,
) -> Result<(), CliError> {
    use serde_json::json;
    let data =
        std::fs::read(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let id = request_id();
    let chunks: Vec<pb::ImportChunk> = data
        .chunks(IMPORT_CHUNK_BYTES)
        .map(|d| pb::ImportChunk {
            request_id: id.clone(),
            dry_run,
            data: d.to_vec(),
        })
        .collect();
    let r = c
        .sites
        .clone()
        .import_sites(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    let rejected: Vec<_> = r
        .rejected
        .iter()
        .map(|x| json!({"line": x.line, "id": x.id, "reason": x.reason}))
        .collect();
    let summary = json!({
        "dry_run": r.dry_run, "rows": r.rows, "structures_created": r.structures_created,
        "sites_created": r.sites_created, "sites_updated": r.sites_updated,
        "sites_unchanged": r.sites_unchanged, "sites_gone": r.sites_gone, "rejected": rejected,
    });
    out(conn, summary, import_text(&r));
    Ok(())
}

fn import_text(r: &pb::ImportReport) -> String {
    let mut text = format!(
        "{}{} rows: {} structures and {} sites created, {} sites updated, {} unchanged, {} gone from the file, {} rows rejected",
        if r.dry_run { "dry run, nothing changed. " } else { "" },
        r.rows,
        r.structures_created.len(),
        r.sites_created.len(),
        r.sites_updated.len(),
        r.sites_unchanged,
        r.sites_gone.len(),
        r.rejected.len()
    );
    for x in &r.rejected {
        text.push_str(&format!("\n  line {} ({}): {}", x.line, x.id, x.reason));
    }
    if !r.sites_gone.is_empty() {
        text.push_str(&format!(
            "\n  gone from the file (still active, review them): sites {:?}",
            r.sites_gone
        ));
    }
    text
}

/// Prints every site the filter selects, page after page.
async fn list(c: &Clients, conn: &Conn, mut req: pb::ListSitesRequest) -> Result<(), CliError> {
    use serde_json::json;
    loop {
        let mut s = c.sites.clone().list_sites(req.clone()).await?.into_inner();
        let mut next = String::new();
        while let Some(site) = s.message().await? {
            next = site.next_page_token.clone();
            let kind = pb::SiteKind::try_from(site.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("?");
            out(
                conn,
                json!({"site_id": site.site_id, "structure_id": site.structure_id, "name": site.name, "kind": kind, "insee_code": site.insee_code, "stops": site.stops.iter().map(|s| &s.insee_code).collect::<Vec<_>>(), "active": site.active, "reference": site.reference}),
                format!(
                    "site {} (structure {}) {} {} {} {}",
                    site.site_id,
                    site.structure_id,
                    kind,
                    site.insee_code,
                    site.name,
                    if site.active { "" } else { "[inactive]" }
                ),
            );
        }
        if next.is_empty() {
            return Ok(());
        }
        req.page_token = next;
    }
}
