//! Referencing sites from the national open data ("standard-mediation-num"): rows already
//! validated at the edge go in; the facts that make the registry match them come out, with
//! a report of what was created, updated, left alone, gone from the file, or rejected.
//!
//! Rows sharing a `pivot` (SIRET or RNA) belong to one structure, the payee. A fixed row is
//! one site, keyed `place:<id>`. The itinerant rows of one pivot are one bus, keyed
//! `bus:<pivot>`, with one stop per row in `id` order. A site gone from the file is only
//! reported: deactivating a place is a decision for a person, not for a file.

use super::entities::*;
use super::record::Fact;
use super::state::State;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A row of the standard that passed every check of the edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRow {
    /// Line of the row in its file, for the report.
    pub line: u32,
    pub payee: PayeeId,
    pub itinerant: bool,
    pub commune: InseeCode,
    pub listing: Listing,
}

/// Who imports: the operator imports everything; a hub only its départements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportScope {
    All,
    Departements(BTreeSet<Departement>),
}

impl ImportScope {
    fn covers(&self, commune: InseeCode) -> bool {
        match self {
            ImportScope::All => true,
            ImportScope::Departements(d) => d.contains(&commune.departement()),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub structures_created: Vec<StructureId>,
    pub sites_created: Vec<SiteId>,
    pub sites_updated: Vec<SiteId>,
    pub sites_unchanged: u32,
    /// Referenced sites in scope that the file no longer lists: reported, never deactivated.
    pub sites_gone: Vec<SiteId>,
    pub rejected: Vec<RowRejection>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRejection {
    pub line: u32,
    pub id: String,
    pub reason: String,
}

/// One site as the file describes it.
struct Wanted<'r> {
    reference: String,
    payee: &'r PayeeId,
    name: &'r str,
    kind: SiteKind,
    listings: Vec<Listing>,
}

pub fn plan(state: &State, rows: &[PlaceRow], scope: &ImportScope) -> (Vec<Fact>, ImportReport) {
    let mut report = ImportReport::default();
    let rows = accepted_rows(rows, scope, &mut report);
    let wanted = group(&rows);
    let mut facts = vec![];
    let structures = structures_for(state, &rows, &mut facts, &mut report);
    let by_reference: HashMap<&str, &Site> = state
        .sites
        .values()
        .filter_map(|s| s.reference.as_deref().map(|r| (r, s)))
        .collect();
    let mut next_site = state.sites.len() as u64 + 1;
    for w in &wanted {
        let structure = structures[w.payee];
        let name = Label::parse(w.name)
            .unwrap_or_else(|_| Label::parse(&w.reference).expect("a reference is a label"));
        match by_reference.get(w.reference.as_str()) {
            Some(old)
                if old.structure == structure
                    && old.name == name
                    && old.kind == w.kind
                    && old.listings == w.listings =>
            {
                report.sites_unchanged += 1;
            }
            Some(old) => {
                let site = Site {
                    structure,
                    name,
                    kind: w.kind.clone(),
                    listings: w.listings.clone(),
                    ..(*old).clone()
                };
                report.sites_updated.push(site.id);
                facts.push(Fact::SiteUpdated(site));
            }
            None => {
                let id = SiteId(next_site);
                next_site += 1;
                let site = Site {
                    id,
                    structure,
                    name,
                    kind: w.kind.clone(),
                    active: true,
                    reference: Some(w.reference.clone()),
                    listings: w.listings.clone(),
                };
                report.sites_created.push(id);
                facts.push(Fact::SiteRegistered(site));
            }
        }
    }
    let listed: BTreeSet<&str> = wanted.iter().map(|w| w.reference.as_str()).collect();
    report.sites_gone = state
        .sites
        .values()
        .filter(|s| s.reference.as_deref().is_some_and(|r| !listed.contains(r)))
        .filter(|s| site_communes(s).into_iter().any(|c| scope.covers(c)))
        .map(|s| s.id)
        .collect();
    (facts, report)
}

/// Drops rows outside the importer's territory and second occurrences of an `id`.
fn accepted_rows<'r>(
    rows: &'r [PlaceRow],
    scope: &ImportScope,
    report: &mut ImportReport,
) -> Vec<&'r PlaceRow> {
    let mut first_line: HashMap<&str, u32> = HashMap::new();
    let mut out = vec![];
    for row in rows {
        let reject = |reason: String| RowRejection {
            line: row.line,
            id: row.listing.id.clone(),
            reason,
        };
        if !scope.covers(row.commune) {
            report.rejected.push(reject(format!(
                "commune {} is outside the importer's territory",
                row.commune
            )));
            continue;
        }
        if let Some(first) = first_line.get(row.listing.id.as_str()) {
            report
                .rejected
                .push(reject(format!("duplicate id: first given at line {first}")));
            continue;
        }
        first_line.insert(&row.listing.id, row.line);
        out.push(row);
    }
    out
}

fn group<'r>(rows: &[&'r PlaceRow]) -> Vec<Wanted<'r>> {
    let mut wanted = vec![];
    let mut buses: BTreeMap<&PayeeId, Vec<&PlaceRow>> = BTreeMap::new();
    for row in rows {
        if row.itinerant {
            buses.entry(&row.payee).or_default().push(row);
            continue;
        }
        wanted.push(Wanted {
            reference: format!("place:{}", row.listing.id),
            payee: &row.payee,
            name: &row.listing.nom,
            kind: SiteKind::Fixed {
                commune: row.commune,
            },
            listings: vec![row.listing.clone()],
        });
    }
    for (payee, mut stops) in buses {
        stops.sort_by(|a, b| a.listing.id.cmp(&b.listing.id));
        let kind = SiteKind::Itinerant {
            stops: stops
                .iter()
                .map(|r| Stop {
                    label: stop_label(&r.listing),
                    commune: r.commune,
                })
                .collect(),
        };
        wanted.push(Wanted {
            reference: format!("bus:{}", payee.as_str()),
            payee,
            name: &stops[0].listing.nom,
            kind,
            listings: stops.iter().map(|r| r.listing.clone()).collect(),
        });
    }
    wanted
}

fn stop_label(l: &Listing) -> Label {
    let text = if l.commune.is_empty() {
        &l.nom
    } else {
        &l.commune
    };
    Label::parse(text)
        .or_else(|_| Label::parse(&l.id))
        .expect("an id is a label")
}

/// The structure of every pivot, registering the ones not known yet.
fn structures_for<'r>(
    state: &State,
    rows: &[&'r PlaceRow],
    facts: &mut Vec<Fact>,
    report: &mut ImportReport,
) -> HashMap<&'r PayeeId, StructureId> {
    let known: HashMap<&PayeeId, StructureId> = state
        .structures
        .values()
        .map(|s| (&s.payee, s.id))
        .collect();
    let mut out = HashMap::new();
    let mut next = state.structures.len() as u64 + 1;
    for row in rows {
        if out.contains_key(&row.payee) {
            continue;
        }
        let id = match known.get(&row.payee) {
            Some(id) => *id,
            None => {
                let id = StructureId(next);
                next += 1;
                let name = Label::parse(&row.listing.nom)
                    .unwrap_or_else(|_| Label::parse(row.payee.as_str()).expect("label"));
                facts.push(Fact::StructureRegistered(Structure {
                    id,
                    name,
                    payee: row.payee.clone(),
                    iban: None,
                    iban_verified: false,
                }));
                report.structures_created.push(id);
                id
            }
        };
        out.insert(&row.payee, id);
    }
    out
}

/// Every commune a site serves.
pub fn site_communes(site: &Site) -> Vec<InseeCode> {
    match &site.kind {
        SiteKind::Fixed { commune } => vec![*commune],
        SiteKind::Workshop { home } => vec![*home],
        SiteKind::Itinerant { stops } => stops.iter().map(|s| s.commune).collect(),
    }
}
