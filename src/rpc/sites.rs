//! Sites (operator, hubs): referencing places from the national open data, searching them,
//! exporting them back in the standard.

use super::auth::{site_communes, Principal};
use super::context::Ctx;
use super::convert;
use super::errors::{self, Violations};
use super::pb::{self, sites_server::Sites};
use crate::domain::import::{ImportReport, ImportScope, RowRejection};
use crate::domain::*;
use crate::opendata;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub struct SitesService(pub Arc<Ctx>);

type ResultStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Export chunks are about this size.
const EXPORT_CHUNK_BYTES: usize = 64 << 10;

fn scope(who: &Principal) -> Result<ImportScope, Status> {
    match &who.role {
        Role::Operator => Ok(ImportScope::All),
        Role::Hub(d) => Ok(ImportScope::Departements(d.clone())),
        _ => Err(errors::denied("only the operator and hubs reference sites")),
    }
}

/// What a caller may see of the registry: hubs their territory, everyone else everything
/// (the places are public open data).
fn visible(who: &Principal, site: &Site) -> bool {
    match &who.role {
        Role::Hub(d) => site_communes(site)
            .iter()
            .any(|c| d.contains(&c.departement())),
        _ => true,
    }
}

fn to_pb(
    report: ImportReport,
    dry_run: bool,
    rows: u32,
    mut edge: Vec<RowRejection>,
) -> pb::ImportReport {
    edge.extend(report.rejected);
    edge.sort_by_key(|r| r.line);
    pb::ImportReport {
        dry_run,
        rows,
        structures_created: report.structures_created.iter().map(|s| s.0).collect(),
        sites_created: report.sites_created.iter().map(|s| s.0).collect(),
        sites_updated: report.sites_updated.iter().map(|s| s.0).collect(),
        sites_unchanged: report.sites_unchanged,
        sites_gone: report.sites_gone.iter().map(|s| s.0).collect(),
        rejected: edge
            .into_iter()
            .map(|r| pb::RowRejection {
                line: r.line,
                id: r.id,
                reason: r.reason,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Sites for SitesService {
    async fn import_sites(
        &self,
        req: Request<Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportReport>, Status> {
        let who = super::auth::authenticate(&self.0.engine.directory(), &req, (self.0.clock)())?;
        let scope = scope(&who)?;
        let limits = &self.0.limits;
        let mut stream = req.into_inner();
        let mut file = pb::ImportChunk::default();
        let mut first = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if first {
                (file.request_id, file.dry_run, first) = (chunk.request_id, chunk.dry_run, false);
            }
            if file.data.len() + chunk.data.len() > limits.import_bytes_max {
                return Err(errors::limit(
                    "import_bytes",
                    limits.import_bytes_max,
                    file.data.len() + chunk.data.len(),
                ));
            }
            file.data.extend_from_slice(&chunk.data);
        }
        let text = std::str::from_utf8(&file.data)
            .map_err(|_| file_error(&opendata::FileError::Encoding))?;
        let (rows, edge_rejected) = opendata::read(text).map_err(|e| file_error(&e))?;
        let total = (rows.len() + edge_rejected.len()) as u32;
        if total as usize > limits.import_rows_max {
            return Err(errors::limit(
                "import_rows",
                limits.import_rows_max,
                total as usize,
            ));
        }
        if file.dry_run {
            let (_, report) = crate::domain::import::plan(&*self.0.read()?, &rows, &scope);
            return Ok(Response::new(to_pb(report, true, total, edge_rejected)));
        }
        let cmd = Command::ImportSites { rows, scope };
        match self
            .0
            .submit(&who, "ImportSites", &file.request_id.clone(), &file, cmd)
            .await?
        {
            Outcome::SitesImported(report) => {
                Ok(Response::new(to_pb(*report, false, total, edge_rejected)))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    type ListSitesStream = ResultStream<pb::SiteInfo>;

    async fn list_sites(
        &self,
        req: Request<pb::ListSitesRequest>,
    ) -> Result<Response<Self::ListSitesStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let size = convert::page_size(r.page_size, 100, self.0.limits.page_sites_max)?;
        let mut v = Violations::default();
        let insee = (!r.insee_code.is_empty())
            .then(|| v.check("insee_code", InseeCode::parse(&r.insee_code)))
            .flatten();
        let dept = (!r.departement.is_empty())
            .then(|| v.check("departement", Departement::parse(&r.departement)))
            .flatten();
        let after: u64 = if r.page_token.is_empty() {
            0
        } else {
            v.check("page_token", r.page_token.parse::<u64>())
                .unwrap_or(0)
        };
        v.into_result()?;
        let kind = pb::SiteKind::try_from(r.kind).unwrap_or(pb::SiteKind::Unspecified);
        let page = {
            let state = self.0.read()?;
            let matches = |s: &&Site| {
                let communes = site_communes(s);
                visible(&who, s)
                    && insee.is_none_or(|c| communes.contains(&c))
                    && dept.is_none_or(|d| communes.iter().any(|c| c.departement() == d))
                    && (r.structure_id == 0 || s.structure.0 == r.structure_id)
                    && (kind == pb::SiteKind::Unspecified
                        || convert::site_info(s).kind == kind as i32)
                    && (r.service.is_empty()
                        || s.listings.iter().any(|l| l.services.contains(&r.service)))
            };
            let mut page: Vec<pb::SiteInfo> = state
                .sites
                .range(SiteId(after + 1)..)
                .map(|(_, s)| s)
                .filter(matches)
                .take(size + 1)
                .map(convert::site_info)
                .collect();
            if page.len() > size {
                page.truncate(size);
                let last = page.last_mut().expect("a full page");
                last.next_page_token = last.site_id.to_string();
            }
            page
        };
        self.0.settle().await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            page.into_iter().map(Ok),
        ))))
    }

    type ExportSitesStream = ResultStream<pb::Chunk>;

    async fn export_sites(
        &self,
        req: Request<pb::ExportSitesRequest>,
    ) -> Result<Response<Self::ExportSitesStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let dept = (!r.departement.is_empty())
            .then(|| v.check("departement", Departement::parse(&r.departement)))
            .flatten();
        v.into_result()?;
        let chunks = {
            let state = self.0.read()?;
            let mut chunks = vec![];
            let mut buf = opendata::header_line();
            for site in state
                .sites
                .values()
                .filter(|s| s.active && !s.listings.is_empty() && visible(&who, s))
            {
                if dept.is_some_and(|d| !site_communes(site).iter().any(|c| c.departement() == d)) {
                    continue;
                }
                buf.push_str(&opendata::site_lines(
                    site,
                    &state.structures[&site.structure],
                ));
                if buf.len() >= EXPORT_CHUNK_BYTES {
                    chunks.push(Ok(pb::Chunk {
                        data: std::mem::take(&mut buf).into_bytes(),
                    }));
                }
            }
            chunks.push(Ok(pb::Chunk {
                data: buf.into_bytes(),
            }));
            chunks
        };
        self.0.settle().await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

fn file_error(e: &opendata::FileError) -> Status {
    let mut v = Violations::default();
    v.add("data", e.to_string());
    v.into_result().expect_err("one violation")
}
