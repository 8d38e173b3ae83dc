//! The state the core decides against, and the one function that changes it:
//! `apply`, which replays a record body. Deciding and replaying share it, so a state
//! rebuilt from the log is the state that was acknowledged.

use super::clearing::{Settlement, SettlementStatus};
use super::command::{CredentialTag, RequestDigest, RequestKey};
use super::entities::*;
use super::record::{Fact, Outcome, RecordBody};
use super::refusal::Refusal;
use super::serial::Serial;
use super::sharded::ShardedMap;
use super::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the core remembers of a request id: the content it came with, who sent it, and
/// the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The first half of the request's fingerprint: 128 bits tell a retry from another
    /// request under the same id as surely as 256, in 16 bytes less per entry.
    pub fingerprint: [u8; 16],
    pub seq: u64,
    /// Its credential, so that its answer is forgotten once the credential is refused for
    /// good (`Fact::RequestsForgotten`).
    pub credential: Option<CredentialTag>,
    pub result: Result<Outcome, Refusal>,
}

impl Remembered {
    pub fn of(seq: u64, req: &RequestKey, result: Result<Outcome, Refusal>) -> Remembered {
        Remembered {
            fingerprint: Self::half(&req.fingerprint),
            seq,
            credential: req.credential(),
            result,
        }
    }

    /// Whether `req` comes with the content this request came with (a retry).
    pub fn is_retry_of(&self, req: &RequestKey) -> bool {
        self.fingerprint == Self::half(&req.fingerprint)
    }

    fn half(fingerprint: &[u8; 32]) -> [u8; 16] {
        fingerprint[..16].try_into().expect("16 of 32 bytes")
    }
}

/// A piece of state that a record changed, other than a pass or a remembered request (whose
/// new values `Changes` carries): the storage layer rewrites exactly these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Commanditaire(CommanditaireId),
    Structure(StructureId),
    Site(SiteId),
    Order(OrderId),
    OrderSerials(OrderId),
    Workshop(WorkshopId),
    Balance(Account),
    Credential([u8; 32]),
    Settlement(SettlementId),
    /// The reversal at this position in `State::reversals`.
    Reversal(u64),
    OrderFee(OrderId),
    CreditReturned(CommanditaireId),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub commanditaires: BTreeMap<CommanditaireId, Commanditaire>,
    pub structures: BTreeMap<StructureId, Structure>,
    pub sites: BTreeMap<SiteId, Site>,
    pub orders: BTreeMap<OrderId, Order>,
    /// Shared: set once at mint; a checkpoint copies a pointer under the state's lock.
    pub order_serials: HashMap<OrderId, std::sync::Arc<[Serial]>>,
    pub passes: ShardedMap<Serial, Pass>,
    pub workshops: BTreeMap<WorkshopId, WorkshopSession>,
    /// The fee billed on each order, as recorded when it was created (`Fact::OrderFee`).
    /// Orders created before fees were recorded have none.
    pub order_fees: BTreeMap<OrderId, FeeRate>,
    /// The credit given back to each commanditaire so far (`Fact::CreditReturned`).
    pub credit_returned: BTreeMap<CommanditaireId, Cents>,
    pub requests: ShardedMap<RequestDigest, Remembered>,
    pub balances: BTreeMap<Account, i64>,
    pub credentials: HashMap<[u8; 32], Credential>,
    pub settlements: BTreeMap<SettlementId, Settlement>,
    /// Every reversal, in ledger order (the pass itself forgets the redemption).
    pub reversals: Vec<Reversal>,
    /// Redemptions not (or no longer) in a settlement, per structure, in the order they
    /// reached the ledger (`LiveRedemption::unsettled_key`): clearing reads only these, so a
    /// run costs what it settles, not what the ledger holds. Derived from `passes` (never
    /// stored), kept by `apply` and by `load_pass`.
    pub unsettled: BTreeMap<StructureId, BTreeSet<(Timestamp, Serial)>>,
    /// The sequence number of the last record applied, and that record's hash (set by
    /// storage, which computes hashes: the core never hashes).
    pub seq: u64,
    pub head_hash: [u8; 32],
    dirty: Dirty,
}

/// What changed since storage last took it: bookkeeping for storage, not state, so two
/// states that differ only here are equal.
#[derive(Clone, Debug, Default)]
struct Dirty {
    changes: Changes,
    /// The keys in `changes`: each is kept once as it is marked, so taking them is a swap
    /// (a redemption marks two balances; deduplicating a checkpoint's worth under the
    /// indexer's lock took about 0.25 ms).
    marked: std::collections::HashSet<Key>,
}

impl PartialEq for Dirty {
    fn eq(&self, _: &Dirty) -> bool {
        true
    }
}

/// The changes since storage last took them. Passes and remembered requests, the two that
/// every redemption changes, come as their new values, captured by `apply` while they are
/// in cache: storage then holds the state's lock only to take them, not to look up
/// thousands of cold entries (measured: 3 to 4 ms per checkpoint under load, during which
/// no batch could be applied). The rest, few and small, come as keys to read.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Each once.
    pub keys: Vec<Key>,
    /// In the order applied: a later value of a pass replaces an earlier one.
    pub passes: Vec<Pass>,
    /// In the order applied, under their `RequestKey::digest`; None: forgotten.
    pub requests: Vec<(RequestDigest, Option<Remembered>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.passes.is_empty() && self.requests.is_empty()
    }
}

impl State {
    /// Applies one record. Called after `decide` on the live path and for every record on
    /// replay; it trusts the record, which `decide` (or the hash chain) vouched for.
    pub fn apply(&mut self, seq: u64, at: Timestamp, body: &RecordBody) {
        debug_assert!(seq > self.seq, "records apply in sequence order");
        for fact in &body.facts {
            self.apply_fact(at, fact);
        }
        for p in &body.postings {
            *self.balances.entry(p.account).or_insert(0) += p.amount;
            self.mark(Key::Balance(p.account));
        }
        if let Some(req) = &body.request {
            self.remember(seq, req, body.result.clone());
        }
        self.seq = seq;
    }

    fn mark(&mut self, key: Key) {
        if self.dirty.marked.insert(key.clone()) {
            self.dirty.changes.keys.push(key);
        }
    }

    fn remember(&mut self, seq: u64, req: &RequestKey, result: Result<Outcome, Refusal>) {
        let remembered = Remembered::of(seq, req, result);
        let key = req.digest();
        self.dirty
            .changes
            .requests
            .push((key, Some(remembered.clone())));
        self.requests.insert(key, remembered);
    }

    /// Forgets every remembered request of these credentials, and marks them so. Reads the
    /// whole map: `decide` asks for it at most once a day.
    fn forget_requests(&mut self, token_hashes: &[[u8; 32]]) {
        let mut tags = Vec::with_capacity(token_hashes.len());
        for hash in token_hashes {
            self.credentials
                .get_mut(hash)
                .expect("fact names a known credential")
                .requests_forgotten = true;
            self.mark(Key::Credential(*hash));
            tags.extend(CredentialTag::of(hash));
        }
        // Searched once per remembered request, under the writer's lock: a sorted list of
        // a few tags is a few compares, where a hash set cost a SipHash each (measured in
        // the growth bench: 4.3 times a read of every entry, now 1.5 to 1.8).
        tags.sort_unstable();
        let forgotten = &mut self.dirty.changes.requests;
        self.requests.retain(|digest, remembered| {
            let keep = remembered
                .credential
                .is_none_or(|t| tags.binary_search(&t).is_err());
            if !keep {
                forgotten.push((*digest, None));
            }
            keep
        });
    }

    fn apply_fact(&mut self, at: Timestamp, fact: &Fact) {
        match fact {
            Fact::CommanditaireRegistered(c) => {
                self.commanditaires.insert(c.id, c.clone());
                self.mark(Key::Commanditaire(c.id));
            }
            Fact::StructureRegistered(s) => {
                self.structures.insert(s.id, s.clone());
                self.mark(Key::Structure(s.id));
            }
            Fact::StructureIbanSet {
                structure,
                iban,
                verified,
            } => {
                let s = self.structure_mut(*structure);
                s.iban = Some(iban.clone());
                s.iban_verified = *verified;
                self.mark(Key::Structure(*structure));
            }
            Fact::SiteRegistered(s) => {
                self.sites.insert(s.id, s.clone());
                self.mark(Key::Site(s.id));
            }
            Fact::SiteUpdated(s) => {
                self.sites.insert(s.id, s.clone());
                self.mark(Key::Site(s.id));
            }
            Fact::SiteActivitySet { site, active } => {
                self.sites
                    .get_mut(site)
                    .expect("fact names a known site")
                    .active = *active;
                self.mark(Key::Site(*site));
            }
            Fact::CredentialIssued { token_hash, role } => {
                let c = Credential {
                    role: role.clone(),
                    revoked_at: None,
                    expires_at: None,
                    requests_forgotten: false,
                };
                self.credentials.insert(*token_hash, c);
                self.mark(Key::Credential(*token_hash));
            }
            Fact::CredentialRevoked { token_hash } => {
                self.credential_mut(token_hash).revoked_at = Some(at);
            }
            Fact::CredentialExpires {
                token_hash,
                at: expires,
            } => self.credential_mut(token_hash).expires_at = Some(*expires),
            Fact::RequestsForgotten { token_hashes } => self.forget_requests(token_hashes),
            Fact::OrderCreated(o) => {
                self.orders.insert(o.id, o.clone());
                self.mark(Key::Order(o.id));
            }
            Fact::PassesMinted { order, serials } => self.mint(*order, serials),
            Fact::OrderFunded { order, funding } => self.fund(*order, funding),
            Fact::CarnetDistributed { order, carnet } => {
                self.order_mut(*order).distributed.insert(*carnet);
                self.mark(Key::Order(*order));
            }
            Fact::WorkshopHeld(w) => {
                self.workshops.insert(w.id, w.clone());
                self.mark(Key::Workshop(w.id));
            }
            Fact::PassRedeemed { serial, redemption } => self.redeem(*serial, redemption, at),
            Fact::RedemptionReversed { serial, .. } => self.reverse(*serial, at),
            Fact::PassCancelled { serial } => self.close(*serial, PassStatus::Cancelled, at),
            Fact::PassExpired { serial } => self.close(*serial, PassStatus::Expired, at),
            Fact::SettlementCreated(s) => self.open_settlement(s),
            Fact::SettlementStatusSet { settlement, status } => {
                self.set_settlement_status(*settlement, status)
            }
            Fact::OrderFee { order, rate } => {
                self.order_fees.insert(*order, *rate);
                self.mark(Key::OrderFee(*order));
            }
            Fact::CreditReturned {
                commanditaire,
                amount,
                ..
            } => {
                self.credit_returned.entry(*commanditaire).or_default().0 += amount.0;
                self.mark(Key::CreditReturned(*commanditaire));
            }
            Fact::OrderSwept { order } => {
                self.order_mut(*order).swept = true;
                self.mark(Key::Order(*order));
            }
        }
    }

    fn redeem(&mut self, serial: Serial, redemption: &Redemption, at: Timestamp) {
        let live = LiveRedemption {
            redemption: redemption.clone(),
            recorded_at: at,
        };
        let key = live.unsettled_key(serial);
        self.change_pass(serial, |pass| {
            pass.status = PassStatus::Redeemed;
            pass.redeemed = Some(Box::new(live));
        });
        self.mark_unsettled(redemption.structure, key, true);
    }

    /// The pass is active again; its redemption is kept among the reversals.
    fn reverse(&mut self, serial: Serial, at: Timestamp) {
        let (order, redeemed) = self.change_pass(serial, |pass| {
            pass.status = PassStatus::Active;
            (pass.order, pass.redeemed.take())
        });
        if let Some(r) = redeemed {
            let key = r.unsettled_key(serial);
            self.mark_unsettled(r.redemption.structure, key, false);
            self.mark(Key::Reversal(self.reversals.len() as u64));
            self.reversals.push(Reversal {
                serial,
                order,
                redemption: r.redemption,
                reversed_at: at,
            });
        }
    }

    /// Its lines' redemptions leave the unsettled index.
    fn open_settlement(&mut self, s: &Settlement) {
        for line in s.lines.iter() {
            let key = self.settle(line.serial, Some(s.id));
            self.mark_unsettled(s.structure, key, false);
        }
        self.settlements.insert(s.id, s.clone());
        self.mark(Key::Settlement(s.id));
    }

    /// A rejected settlement's redemptions are unsettled again, for the next run.
    fn set_settlement_status(&mut self, settlement: SettlementId, status: &SettlementStatus) {
        let s = self
            .settlements
            .get_mut(&settlement)
            .expect("fact names a known settlement");
        s.status = status.clone();
        if matches!(status, SettlementStatus::Rejected { .. }) {
            let structure = s.structure;
            let serials: Vec<Serial> = s.lines.iter().map(|l| l.serial).collect();
            for serial in serials {
                let key = self.settle(serial, None);
                self.mark_unsettled(structure, key, true);
            }
        }
        self.mark(Key::Settlement(settlement));
    }

    fn credential_mut(&mut self, token_hash: &[u8; 32]) -> &mut Credential {
        self.mark(Key::Credential(*token_hash));
        self.credentials
            .get_mut(token_hash)
            .expect("fact names a known credential")
    }

    fn mark_unsettled(&mut self, s: StructureId, key: (Timestamp, Serial), on: bool) {
        if on {
            self.unsettled.entry(s).or_default().insert(key);
        } else if let Some(set) = self.unsettled.get_mut(&s) {
            set.remove(&key);
            if set.is_empty() {
                self.unsettled.remove(&s);
            }
        }
    }

    fn mint(&mut self, order: OrderId, serials: &[Serial]) {
        for (index, serial) in serials.iter().enumerate() {
            let pass = Pass {
                serial: *serial,
                order,
                index: index as u32,
                status: PassStatus::Minted,
                redeemed: None,
                closed_at: None,
            };
            self.dirty.changes.passes.push(pass.clone());
            self.passes.insert(*serial, pass);
        }
        self.order_serials.insert(order, serials.into());
        self.order_mut(order).minted = true;
        self.mark(Key::OrderSerials(order));
        self.mark(Key::Order(order));
    }

    fn fund(&mut self, order: OrderId, funding: &Funding) {
        self.order_mut(order).funding = Some(funding.clone());
        self.mark(Key::Order(order));
        let serials = self.order_serials.get(&order).cloned().unwrap_or_default();
        for &serial in serials.iter() {
            self.change_pass(serial, |pass| {
                if pass.status == PassStatus::Minted {
                    pass.status = PassStatus::Active;
                }
            });
        }
    }

    fn close(&mut self, serial: Serial, status: PassStatus, at: Timestamp) {
        self.change_pass(serial, |pass| {
            pass.status = status;
            pass.closed_at = Some(at);
        });
    }

    /// Changes a pass, and captures its new value for storage at once, while it is in
    /// cache: a clearing record settles 100 000 passes, and looking each up again at the
    /// record's end missed the cache every time (a quarter of a run, measured with perf).
    /// A pass changed twice in one record is captured twice; the later value wins.
    fn change_pass<R>(&mut self, serial: Serial, change: impl FnOnce(&mut Pass) -> R) -> R {
        let pass = self
            .passes
            .get_mut(&serial)
            .expect("fact names a known pass");
        let out = change(pass);
        self.dirty.changes.passes.push(pass.clone());
        out
    }
    /// Sets the settlement that pays a redeemed pass (`None`: the bank returned it), and
    /// says where the pass sits among its structure's unsettled redemptions.
    fn settle(&mut self, serial: Serial, settlement: Option<SettlementId>) -> (Timestamp, Serial) {
        self.change_pass(serial, |pass| {
            let live = pass.redeemed.as_mut().expect("a settled pass is redeemed");
            live.redemption.settlement = settlement;
            live.unsettled_key(serial)
        })
    }
    fn order_mut(&mut self, order: OrderId) -> &mut Order {
        self.orders
            .get_mut(&order)
            .expect("fact names a known order")
    }
    fn structure_mut(&mut self, s: StructureId) -> &mut Structure {
        self.structures
            .get_mut(&s)
            .expect("fact names a known structure")
    }

    /// What changed since the last call, keys each once, in the order first marked.
    pub fn take_changes(&mut self) -> Changes {
        self.dirty.marked.clear();
        // The next period is likely as busy as this one: sizing its lists now spares the
        // writer their regrowth (copies into fresh pages: about 1.5 % of the CPU under load).
        let c = &self.dirty.changes;
        let next = Changes {
            keys: Vec::with_capacity(c.keys.len()),
            passes: Vec::with_capacity(c.passes.len()),
            requests: Vec::with_capacity(c.requests.len()),
        };
        std::mem::replace(&mut self.dirty.changes, next)
    }

    pub fn balance(&self, account: Account) -> i64 {
        self.balances.get(&account).copied().unwrap_or(0)
    }

    /// Puts a pass loaded from storage (start-up), replacing an earlier value of it: nothing
    /// becomes dirty.
    pub fn load_pass(&mut self, pass: Pass) {
        if let Some((s, key)) = self.passes.get(&pass.serial).and_then(unsettled_entry) {
            self.mark_unsettled(s, key, false);
        }
        if let Some((s, key)) = unsettled_entry(&pass) {
            self.mark_unsettled(s, key, true);
        }
        self.passes.insert(pass.serial, pass);
    }

    /// Checks every invariant of the money and of the passes; names the first broken one.
    /// O(passes): run at start-up, in tests after every step, and by `verify`.
    pub fn check_invariants(&self) -> Result<(), String> {
        let total: i128 = self.balances.values().map(|v| i128::from(*v)).sum();
        if total != 0 {
            return Err(format!(
                "money is not conserved: balances sum to {total} cents"
            ));
        }
        let sums = self.pass_sums()?;
        let tracked: usize = self.unsettled.values().map(BTreeSet::len).sum();
        if tracked != sums.unsettled {
            return Err(format!(
                "{tracked} redemptions tracked as unsettled, passes say {}",
                sums.unsettled
            ));
        }
        let (paid, in_payment) = self.check_settlements()?;
        self.check_commanditaire_balances(&sums, &paid)?;
        self.check_structure_balances(&sums, &in_payment)?;
        self.check_forgotten()
    }

    /// Each pass checked on its own, and the face values its status puts in each account.
    fn pass_sums(&self) -> Result<PassSums, String> {
        let mut sums = PassSums::default();
        for pass in self.passes.values() {
            let order = self
                .orders
                .get(&pass.order)
                .ok_or("a pass names an unknown order")?;
            check_pass(pass)?;
            let (face, c) = (order.face_value.0, order.commanditaire);
            match pass.status {
                PassStatus::Active => *sums.outstanding.entry(c).or_default() += face,
                PassStatus::Redeemed => {
                    if let Some((s, key)) = unsettled_entry(pass) {
                        *sums.payable.entry(s).or_default() += face;
                        sums.unsettled += 1;
                        let tracked = self.unsettled.get(&s).is_some_and(|set| set.contains(&key));
                        if !tracked {
                            return Err(format!(
                                "pass {} is unsettled but not tracked",
                                pass.serial
                            ));
                        }
                    }
                }
                PassStatus::Cancelled | PassStatus::Expired if order.funding.is_some() => {
                    *sums.credit.entry(c).or_default() += face;
                }
                PassStatus::Minted if order.funding.is_some() => {
                    return Err(format!(
                        "pass {} of a funded order is not activated",
                        pass.serial
                    ));
                }
                _ => {}
            }
        }
        Ok(sums)
    }

    /// Funds, outstanding and credit due of each commanditaire against its orders and passes.
    fn check_commanditaire_balances(
        &self,
        sums: &PassSums,
        paid: &HashMap<CommanditaireId, i64>,
    ) -> Result<(), String> {
        // One pass over the orders, not one per commanditaire: this runs at every start-up.
        let mut funded: HashMap<CommanditaireId, i64> = HashMap::new();
        for o in self.orders.values() {
            if let Some(f) = &o.funding {
                *funded.entry(o.commanditaire).or_default() += f.amount.0;
            }
        }
        for c in self.commanditaires.keys() {
            // What went back to it left both its funds and its credit due.
            let returned = self.credit_returned.get(c).map_or(0, |r| r.0);
            let funds = self.balance(Account::Funds(*c));
            let held = cents_of(&funded, c) - cents_of(paid, c) - returned;
            expect_eq("funds", *c, funds, held)?;
            let outstanding = -self.balance(Account::Outstanding(*c));
            expect_eq(
                "outstanding",
                *c,
                outstanding,
                cents_of(&sums.outstanding, c),
            )?;
            let credit = -self.balance(Account::CreditDue(*c));
            let due = cents_of(&sums.credit, c) - returned;
            expect_eq("credit due", *c, credit, due)?;
        }
        Ok(())
    }

    /// Payable and in payment of each structure against its passes and open settlements.
    fn check_structure_balances(
        &self,
        sums: &PassSums,
        in_payment: &HashMap<StructureId, i64>,
    ) -> Result<(), String> {
        for s in self.structures.keys() {
            let payable = -self.balance(Account::Payable(*s));
            expect_eq("payable", *s, payable, cents_of(&sums.payable, s))?;
            let sent = -self.balance(Account::InPayment(*s));
            expect_eq("in payment", *s, sent, cents_of(in_payment, s))?;
        }
        Ok(())
    }

    /// No request is remembered for a credential whose requests were forgotten.
    fn check_forgotten(&self) -> Result<(), String> {
        let forgotten: std::collections::HashSet<CredentialTag> = self
            .credentials
            .iter()
            .filter(|(_, c)| c.requests_forgotten)
            .filter_map(|(hash, _)| CredentialTag::of(hash))
            .collect();
        if forgotten.is_empty() {
            return Ok(());
        }
        match self
            .requests
            .values()
            .find(|r| r.credential.is_some_and(|t| forgotten.contains(&t)))
        {
            Some(r) => Err(format!(
                "the request of record {} is remembered, but its credential's were forgotten",
                r.seq
            )),
            None => Ok(()),
        }
    }

    /// Each settlement's total is the sum of its lines and its root their Merkle root; an
    /// open or paid settlement's passes point back at it. Returns what was paid out per
    /// commanditaire and what is in payment per structure.
    #[allow(clippy::type_complexity)]
    fn check_settlements(
        &self,
    ) -> Result<(HashMap<CommanditaireId, i64>, HashMap<StructureId, i64>), String> {
        let mut paid: HashMap<CommanditaireId, i64> = HashMap::new();
        let mut in_payment: HashMap<StructureId, i64> = HashMap::new();
        for s in self.settlements.values() {
            if s.total != s.lines_total() {
                return Err(format!(
                    "settlement {}: total {} is not the sum of its lines {}",
                    s.id,
                    s.total,
                    s.lines_total()
                ));
            }
            if s.merkle_root != super::merkle::root(&s.leaves()) {
                return Err(format!(
                    "settlement {}: Merkle root does not match its lines",
                    s.id
                ));
            }
            let rejected = matches!(s.status, SettlementStatus::Rejected { .. });
            for line in s.lines.iter() {
                let points_back = self
                    .passes
                    .get(&line.serial)
                    .and_then(Pass::redemption)
                    .and_then(|r| r.settlement)
                    == Some(s.id);
                if points_back == rejected {
                    return Err(format!(
                        "settlement {}: pass {} does not match the settlement's status",
                        s.id, line.serial
                    ));
                }
            }
            match s.status {
                SettlementStatus::Created => {
                    *in_payment.entry(s.structure).or_default() += s.total.0
                }
                SettlementStatus::Paid { .. } => {
                    for (c, amount) in s.by_commanditaire() {
                        *paid.entry(c).or_default() += amount.0;
                    }
                }
                SettlementStatus::Rejected { .. } => {}
            }
        }
        Ok((paid, in_payment))
    }
}

/// Face values the passes' statuses put in each account, and the unsettled redemptions.
#[derive(Default)]
struct PassSums {
    outstanding: HashMap<CommanditaireId, i64>,
    payable: HashMap<StructureId, i64>,
    credit: HashMap<CommanditaireId, i64>,
    unsettled: usize,
}

/// A pass's own coherence: a redemption exactly when redeemed, made before its record.
fn check_pass(pass: &Pass) -> Result<(), String> {
    if (pass.status == PassStatus::Redeemed) != pass.redeemed.is_some() {
        return Err(format!(
            "pass {} has a redemption that does not match its status",
            pass.serial
        ));
    }
    // Clearing relies on it: a redemption whose window closed by a cut-off was made
    // before it.
    match pass.redeemed.as_deref() {
        Some(live) if live.redemption.at > live.recorded_at => Err(format!(
            "pass {} is redeemed after its record was written",
            pass.serial
        )),
        _ => Ok(()),
    }
}

/// A redeemed pass that no settlement pays: its structure, and its place in `unsettled`.
fn unsettled_entry(pass: &Pass) -> Option<(StructureId, (Timestamp, Serial))> {
    let live = pass.redeemed.as_deref()?;
    let r = &live.redemption;
    r.settlement
        .is_none()
        .then(|| (r.structure, live.unsettled_key(pass.serial)))
}

/// The cents a sum holds for `key`; none is zero.
fn cents_of<K: std::hash::Hash + Eq>(sums: &HashMap<K, i64>, key: &K) -> i64 {
    sums.get(key).copied().unwrap_or(0)
}

fn expect_eq(
    what: &str,
    who: impl std::fmt::Display,
    ledger: i64,
    passes: i64,
) -> Result<(), String> {
    if ledger == passes {
        return Ok(());
    }
    Err(format!(
        "{what} of {who}: ledger says {ledger} cents, passes say {passes} cents"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state holds every pass and every remembered request (13 million each at national
    /// scale): a field or an answer variant that widens these entries costs gigabytes.
    /// Large, rare parts go in a `Box` (`cargo bench --bench growth` gives bytes per entry).
    #[test]
    fn the_big_maps_entries_stay_small() {
        let (pass, request) = (
            std::mem::size_of::<(Serial, Pass)>(),
            std::mem::size_of::<(RequestDigest, Remembered)>(),
        );
        assert!(pass <= 56, "a pass's entry takes {pass} bytes");
        assert!(
            request <= 96,
            "a remembered request's entry takes {request} bytes"
        );
    }
}
