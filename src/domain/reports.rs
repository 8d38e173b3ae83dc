//! What the ledger tells its readers, computed from the state alone: a clearing run's
//! breakdown, the commanditaires' balances, an order's joint statement, a hub's
//! reconciliation of its territory and the anonymous usage report. Pure functions: every
//! figure is a sum of counted lines, and totals are checked against their parts.

use super::clearing::{Settlement, SettlementStatus};
use super::entities::*;
use super::serial::Serial;
use super::state::State;
use super::types::*;
use std::collections::{BTreeMap, HashMap};

/// A count of passes and their value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub cents: i64,
}

impl Tally {
    pub fn add(&mut self, cents: Cents) {
        self.count += 1;
        self.cents += cents.0;
    }
    pub fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.cents += other.cents;
    }
}

/// A clearing run: every settlement created with this cut-off, whatever became of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub cut_off: Timestamp,
    pub settlements: u32,
    pub lines: Tally,
    pub paid: Tally,
    pub rejected: Tally,
    /// Open settlements of structures without a verified IBAN: not in the payment file.
    pub held: Tally,
    /// What each commanditaire's money pays for in this run (rejected settlements aside).
    pub by_commanditaire: BTreeMap<CommanditaireId, Tally>,
    pub by_structure: BTreeMap<StructureId, Tally>,
}

pub fn run_settlements(state: &State, cut_off: Timestamp) -> impl Iterator<Item = &Settlement> {
    state
        .settlements
        .values()
        .filter(move |s| s.cut_off == cut_off)
}

pub fn run_summary(state: &State, cut_off: Timestamp) -> RunSummary {
    let mut sum = RunSummary {
        cut_off,
        ..RunSummary::default()
    };
    for s in run_settlements(state, cut_off) {
        sum.settlements += 1;
        let whole = Tally {
            count: s.lines.len() as u64,
            cents: s.total.0,
        };
        match s.status {
            SettlementStatus::Rejected { .. } => {
                sum.rejected.merge(whole);
                continue;
            }
            SettlementStatus::Paid { .. } => sum.paid.merge(whole),
            SettlementStatus::Created if !payable(state, s) => sum.held.merge(whole),
            SettlementStatus::Created => {}
        }
        sum.lines.merge(whole);
        sum.by_structure
            .entry(s.structure)
            .or_default()
            .merge(whole);
        for l in s.lines.iter() {
            sum.by_commanditaire
                .entry(l.commanditaire)
                .or_default()
                .add(l.amount);
        }
    }
    let parts: i64 = sum.by_commanditaire.values().map(|t| t.cents).sum();
    assert_eq!(parts, sum.lines.cents, "the breakdown sums to the run");
    sum
}

/// An open settlement goes into the payment file only to a verified IBAN.
pub fn payable(state: &State, s: &Settlement) -> bool {
    s.status == SettlementStatus::Created
        && state
            .structures
            .get(&s.structure)
            .is_some_and(|st| st.iban.is_some() && st.iban_verified)
}

/// A commanditaire's money: `remaining = funded − redeemed − credited`, which is the value
/// of its passes still usable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub commanditaire: CommanditaireId,
    pub funded: Cents,
    pub redeemed: Tally,
    pub settled: Tally,
    pub paid: Tally,
    pub credited: Tally,
    pub remaining: Cents,
    /// The ledger's own account of the funds still held for it (funded − paid − returned).
    pub funds_held: Cents,
    /// Of `credited`, what went back to it, and what is still due: the ledger's account.
    pub credit_returned: Cents,
    pub credit_due: Cents,
}

pub fn balances(state: &State) -> BTreeMap<CommanditaireId, Balance> {
    let mut out: BTreeMap<CommanditaireId, Balance> = state
        .commanditaires
        .keys()
        .map(|c| {
            let b = Balance {
                commanditaire: *c,
                funds_held: Cents(state.balance(Account::Funds(*c))),
                credit_returned: state.credit_returned.get(c).copied().unwrap_or_default(),
                credit_due: Cents(-state.balance(Account::CreditDue(*c))),
                ..Balance::default()
            };
            (*c, b)
        })
        .collect();
    for order in state.orders.values() {
        let s = pass_counts(state, order);
        let b = out.entry(order.commanditaire).or_default();
        b.funded.0 += s.funded.0;
        b.redeemed.merge(s.redeemed);
        b.settled.merge(s.settled);
        b.paid.merge(s.paid);
        b.credited.merge(s.credit_due);
    }
    for b in out.values_mut() {
        b.remaining = Cents(b.funded.0 - b.redeemed.cents - b.credited.cents);
    }
    out
}

/// The joint statement of an order (état conjoint): what became of every pass it issued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderStatement {
    pub order: OrderId,
    pub issued: u64,
    pub funded: Cents,
    pub activated: u64,
    pub active: Tally,
    pub redeemed: Tally,
    pub settled: Tally,
    pub paid: Tally,
    pub reversed: u64,
    pub cancelled: Tally,
    pub expired: Tally,
    /// Cancelled or expired after activation: the value owed back to the commanditaire.
    pub credit_due: Tally,
    pub expires_at: Timestamp,
    pub closed: bool,
    /// The fee rate recorded with the order (none for orders created before fees were
    /// recorded), and the fee on its face value before VAT: billed to the commanditaire on
    /// top of `funded`, never taken from what sites are paid.
    pub fee_rate: Option<FeeRate>,
    pub fees: Cents,
}

pub fn order_statement(state: &State, order: &Order) -> OrderStatement {
    let mut st = pass_counts(state, order);
    st.fee_rate = state.order_fees.get(&order.id).copied();
    st.fees = st.fee_rate.map_or(Cents(0), |rate| rate.on(order.total()));
    st.reversed = state
        .reversals
        .iter()
        .filter(|r| r.order == order.id)
        .count() as u64;
    st
}

/// The statement's counts over the order's passes (reversals aside: they take a scan of
/// their own, which balances over every order must not repeat).
fn pass_counts(state: &State, order: &Order) -> OrderStatement {
    let face = order.face_value;
    let funded = order.funding.is_some();
    let mut st = OrderStatement {
        order: order.id,
        funded: order.funding.as_ref().map_or(Cents(0), |f| f.amount),
        expires_at: order.expires_at(),
        closed: order.swept,
        ..OrderStatement::default()
    };
    for serial in state
        .order_serials
        .get(&order.id)
        .into_iter()
        .flat_map(|s| s.iter())
    {
        let pass = &state.passes[serial];
        st.issued += 1;
        st.activated += u64::from(funded);
        match pass.status {
            PassStatus::Minted => {}
            PassStatus::Active => st.active.add(face),
            PassStatus::Redeemed => {
                st.redeemed.add(face);
                let settlement = pass.redemption().and_then(|r| r.settlement);
                if let Some(s) = settlement.and_then(|id| state.settlements.get(&id)) {
                    st.settled.add(face);
                    if matches!(s.status, SettlementStatus::Paid { .. }) {
                        st.paid.add(face);
                    }
                }
            }
            PassStatus::Cancelled => st.cancelled.add(face),
            PassStatus::Expired => st.expired.add(face),
        }
        if funded && matches!(pass.status, PassStatus::Cancelled | PassStatus::Expired) {
            st.credit_due.add(face);
        }
    }
    let accounted = st.active.count + st.redeemed.count + st.cancelled.count + st.expired.count;
    debug_assert!(
        accounted == st.issued || !funded,
        "every funded pass is accounted for"
    );
    st
}

/// One line of a hub's reconciliation: a structure's site, for one commanditaire's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReconKey {
    pub structure: StructureId,
    pub site: SiteId,
    pub commanditaire: CommanditaireId,
    pub order: OrderId,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconRow {
    /// Redemptions made in the period, including those reversed since.
    pub redeemed: Tally,
    pub reversed: Tally,
    /// Of the redemptions that stand: in an open or paid settlement, paid, not yet paid.
    pub settled: Tally,
    pub paid: Tally,
    pub outstanding: Tally,
}

impl ReconRow {
    fn merge(&mut self, o: &ReconRow) {
        self.redeemed.merge(o.redeemed);
        self.reversed.merge(o.reversed);
        self.settled.merge(o.settled);
        self.paid.merge(o.paid);
        self.outstanding.merge(o.outstanding);
    }
}

/// Something the figures do not agree on; any of these is a matter for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discrepancy {
    SettlementTotal {
        settlement: SettlementId,
        total: Cents,
        lines: Cents,
    },
    PaidAmount {
        settlement: SettlementId,
        settled: Cents,
        paid: Cents,
    },
    SettledTwice {
        serial: Serial,
        settlements: Vec<SettlementId>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub rows: BTreeMap<ReconKey, ReconRow>,
    pub totals: ReconRow,
    pub discrepancies: Vec<Discrepancy>,
}

/// Reconciles the redemptions made in `[from, to)` in the communes `in_scope` accepts.
pub fn reconcile(
    state: &State,
    in_scope: impl Fn(InseeCode) -> bool,
    from: Timestamp,
    to: Timestamp,
) -> Reconciliation {
    let in_period = |at: Timestamp| from <= at && at < to;
    let key = |order: OrderId, r: &Redemption| ReconKey {
        structure: r.structure,
        site: r.site,
        commanditaire: state.orders[&order].commanditaire,
        order,
    };
    let mut rows: BTreeMap<ReconKey, ReconRow> = BTreeMap::new();
    for pass in state.passes.values() {
        let Some(r) = pass.redemption() else {
            continue;
        };
        if !in_scope(r.commune) || !in_period(r.at) {
            continue;
        }
        let face = state.orders[&pass.order].face_value;
        let row = rows.entry(key(pass.order, r)).or_default();
        row.redeemed.add(face);
        let status = r
            .settlement
            .and_then(|id| state.settlements.get(&id))
            .map(|s| &s.status);
        match status {
            Some(SettlementStatus::Paid { .. }) => {
                row.settled.add(face);
                row.paid.add(face);
            }
            Some(_) => {
                row.settled.add(face);
                row.outstanding.add(face);
            }
            None => row.outstanding.add(face),
        }
    }
    for rev in &state.reversals {
        let r = &rev.redemption;
        if in_scope(r.commune) && in_period(r.at) {
            let face = state.orders[&rev.order].face_value;
            let row = rows.entry(key(rev.order, r)).or_default();
            row.redeemed.add(face);
            row.reversed.add(face);
        }
    }
    let mut totals = ReconRow::default();
    for row in rows.values() {
        totals.merge(row);
    }
    let discrepancies = discrepancies(state, |s| {
        s.lines
            .iter()
            .any(|l| in_scope(l.commune) && in_period(l.redeemed_at))
    });
    Reconciliation {
        rows,
        totals,
        discrepancies,
    }
}

/// Checks the settlements `touches` selects against their own lines and payments, and
/// against each other: no redemption may stand in two settlements that were not returned.
pub fn discrepancies(state: &State, touches: impl Fn(&Settlement) -> bool) -> Vec<Discrepancy> {
    let mut found = vec![];
    let mut holders: HashMap<Serial, Vec<SettlementId>> = HashMap::new();
    for s in state.settlements.values().filter(|s| touches(s)) {
        let lines = s.lines_total();
        if lines != s.total {
            found.push(Discrepancy::SettlementTotal {
                settlement: s.id,
                total: s.total,
                lines,
            });
        }
        if let SettlementStatus::Paid { amount, .. } = &s.status {
            if *amount != s.total {
                found.push(Discrepancy::PaidAmount {
                    settlement: s.id,
                    settled: s.total,
                    paid: *amount,
                });
            }
        }
        if !matches!(s.status, SettlementStatus::Rejected { .. }) {
            for l in s.lines.iter() {
                holders.entry(l.serial).or_default().push(s.id);
            }
        }
    }
    let mut twice: Vec<Discrepancy> = holders
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(serial, settlements)| Discrepancy::SettledTwice {
            serial,
            settlements,
        })
        .collect();
    twice.sort_by_key(|d| match d {
        Discrepancy::SettledTwice { serial, .. } => *serial,
        _ => unreachable!("only settled-twice findings here"),
    });
    found.extend(twice);
    found
}

/// One line of the usage report: how many passes an order paid for, at a site, for a
/// service, in a commune, in a month. No serial, no time finer than the month, no person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageKey {
    pub order: OrderId,
    pub site: SiteId,
    pub commune: InseeCode,
    /// Months since 1970-01 (UTC).
    pub month: i32,
}

/// Counts the standing redemptions made in `[from, to)` of the orders `include` accepts,
/// per order, site, commune, month and service.
pub fn usage(
    state: &State,
    include: impl Fn(&Order) -> bool,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<(UsageKey, ServiceCode), Tally> {
    let mut out: BTreeMap<(UsageKey, ServiceCode), Tally> = BTreeMap::new();
    for pass in state.passes.values() {
        let Some(r) = pass.redemption() else {
            continue;
        };
        let order = &state.orders[&pass.order];
        if r.at < from || r.at >= to || !include(order) {
            continue;
        }
        let (y, m, _) = civil_from_days(r.at.0.div_euclid(Timestamp::MS_PER_DAY) as i32);
        let key = UsageKey {
            order: order.id,
            site: r.site,
            commune: r.commune,
            month: (y - 1970) * 12 + m as i32 - 1,
        };
        out.entry((key, r.service.clone()))
            .or_default()
            .add(order.face_value);
    }
    out
}

/// "YYYY-MM" of a month counted as in `UsageKey::month`.
pub fn month_label(month: i32) -> String {
    format!(
        "{:04}-{:02}",
        1970 + month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}
