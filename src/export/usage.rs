//! The usage report, fit to publish as open data: counts of passes used per order, site,
//! commune, month and service. Aggregated, with no serial, no time finer than the month
//! and nothing about a person.

use super::statement::Dialect;
use super::Export;
use crate::domain::reports::{month_label, usage, UsageKey};
use crate::domain::*;

pub const COLUMNS: [&str; 11] = [
    "order_id",
    "programme",
    "commanditaire",
    "site_id",
    "site_name",
    "commune_insee",
    "month",
    "service",
    "passes",
    "amount_cents",
    "structure_id",
];

pub struct UsageReport {
    rows: std::vec::IntoIter<((UsageKey, ServiceCode), reports::Tally)>,
    started: bool,
}

impl UsageReport {
    /// Computes the counts now (they are small: one per order, site, month and service).
    pub fn new(
        state: &State,
        include: impl Fn(&Order) -> bool,
        from: Timestamp,
        to: Timestamp,
    ) -> UsageReport {
        let rows: Vec<_> = usage(state, include, from, to).into_iter().collect();
        UsageReport {
            rows: rows.into_iter(),
            started: false,
        }
    }
}

use crate::domain::reports;

impl Export for UsageReport {
    fn next(&mut self, state: &State, out: &mut Vec<u8>) -> bool {
        let d = Dialect::Machine;
        if !self.started {
            d.row(out, &COLUMNS);
            self.started = true;
        }
        for ((k, service), t) in self.rows.by_ref().take(super::LINES_PER_PART) {
            let order = &state.orders[&k.order];
            let site = &state.sites[&k.site];
            let c = state
                .commanditaires
                .get(&order.commanditaire)
                .map_or("", |c| c.name.as_str());
            d.row(
                out,
                &[
                    &k.order.0.to_string(),
                    order.programme.as_str(),
                    c,
                    &k.site.0.to_string(),
                    site.name.as_str(),
                    k.commune.as_str(),
                    &month_label(k.month),
                    service.as_str(),
                    &t.count.to_string(),
                    &t.cents.to_string(),
                    &site.structure.0.to_string(),
                ],
            );
        }
        self.rows.len() > 0
    }
}
