//! Test support: the real server on 127.0.0.1:0 over a temp data dir, with a clock the
//! test moves, and clients holding each role's token.
#![allow(dead_code)]

use passnum::client::Clients;

#[path = "../support/scenario.rs"]
mod scenario;
use passnum::code::Keyring;
use passnum::config::ServerConfig;
use passnum::domain::Timestamp;
use passnum::rpc::pb;
use passnum::server::{self, RunningServer};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tonic::Code;

pub const DAY: i64 = 86_400_000;
pub const T0: i64 = 1_767_225_600_000; // 2026-01-01

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub clock: Arc<AtomicI64>,
    pub op: Clients,
    pub keys: Keyring,
    pub operator_token: String,
    /// Applied at every (re)start: a test may change it between restarts.
    pub tune: fn(&mut ServerConfig),
}

pub fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_owned());
    c.limits.workshop_passes_max = 20;
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_tuned(|_| {}).await
    }

    /// Starts with `tune` applied to the test configuration (at every restart too).
    pub async fn start_tuned(tune: fn(&mut ServerConfig)) -> TestServer {
        Self::start_in(&std::env::temp_dir(), tune).await
    }

    /// Starts with its data directory inside `parent` (a small filesystem, say).
    pub async fn start_in(parent: &std::path::Path, tune: fn(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::TempDir::new_in(parent).unwrap();
        let clock = Arc::new(AtomicI64::new(T0 + DAY));
        let (server, operator_token, op, keys) = Self::boot(dir.path(), &clock, None, tune).await;
        TestServer {
            dir,
            server: Some(server),
            clock,
            op,
            keys,
            operator_token,
            tune,
        }
    }

    async fn boot(
        dir: &std::path::Path,
        clock: &Arc<AtomicI64>,
        token: Option<String>,
        tune: fn(&mut ServerConfig),
    ) -> (RunningServer, String, Clients, Keyring) {
        let c = clock.clone();
        let mut cfg = config(dir);
        tune(&mut cfg);
        let server = server::start(cfg, Arc::new(move || Timestamp(c.load(Ordering::SeqCst))))
            .await
            .unwrap();
        let token = token.unwrap_or_else(|| {
            std::fs::read_to_string(server.operator_token_file.as_ref().unwrap())
                .unwrap()
                .trim()
                .to_owned()
        });
        let op = Clients::connect(&format!("http://{}", server.addr), Some(&token))
            .await
            .unwrap();
        let keys =
            Keyring::from_text(&std::fs::read_to_string(dir.join(server::KEYS_FILE)).unwrap())
                .unwrap();
        (server, token, op, keys)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().addr)
    }

    pub async fn client(&self, token: Option<&str>) -> Clients {
        Clients::connect(&self.url(), token).await.unwrap()
    }

    pub fn set_now(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    pub async fn restart(&mut self) {
        self.restart_after(|_| {}).await
    }

    /// Stops the server, lets `between` work on the data directory, starts it again.
    pub async fn restart_after(&mut self, between: impl FnOnce(&std::path::Path)) {
        self.server.take().unwrap().shutdown().await.unwrap();
        between(self.dir.path());
        self.start_again().await;
    }

    /// Starts the server again on its data directory, once the test has stopped it.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is stopped first");
        let (server, _, op, _) = Self::boot(
            self.dir.path(),
            &self.clock,
            Some(self.operator_token.clone()),
            self.tune,
        )
        .await;
        assert!(
            server.operator_token_file.is_none(),
            "a restart creates no new operator credential"
        );
        self.server = Some(server);
        self.op = op;
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }

    /// Clients holding a fresh credential for `role` and actor.
    pub async fn credential(
        &self,
        role: pb::Role,
        actor_id: u64,
        departements: &[&str],
    ) -> Clients {
        let token = self.token(role, actor_id, departements).await;
        self.client(Some(&token)).await
    }

    /// A fresh credential's bearer token, issued by the operator.
    pub async fn token(&self, role: pb::Role, actor_id: u64, departements: &[&str]) -> String {
        let req = pb::IssueCredentialRequest {
            request_id: rid(),
            role: role as i32,
            actor_id,
            departements: departements.iter().map(|d| d.to_string()).collect(),
            valid_days: 0,
        };
        let issued = self.op.registry.clone().issue_credential(req).await;
        issued.unwrap().into_inner().token
    }
}

/// Runs the `passnum` binary with `args`, whatever comes of it.
pub fn cli_output<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the `passnum` binary with `args`, asserts it succeeded, returns what it printed.
pub fn cli_ok(args: &[&str]) -> String {
    let run = cli_output(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    String::from_utf8(run.stdout).unwrap()
}

/// What a `--json` command printed: one document.
pub fn json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// What a `--json` listing printed: a document per line.
pub fn json_lines(text: String) -> Vec<serde_json::Value> {
    text.lines().map(|l| json(l.to_owned())).collect()
}

/// The command line as a token's holder runs it against a test server, with `--json`.
pub struct CliAs {
    _dir: tempfile::TempDir,
    conn: Vec<String>,
}

impl CliAs {
    /// Runs `args` with the connection's; asserts it succeeded; returns what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let conn: Vec<&str> = self.conn.iter().map(String::as_str).collect();
        cli_ok(&[args, &conn].concat())
    }

    /// The same, printing text for people rather than JSON.
    pub fn text(&self, args: &[&str]) -> String {
        let conn: Vec<&str> = self.conn[1..].iter().map(String::as_str).collect();
        cli_ok(&[args, &conn].concat())
    }

    /// Runs `args` with the connection's, whatever comes of it.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        let conn: Vec<&str> = self.conn.iter().map(String::as_str).collect();
        cli_output(&[args, &conn].concat())
    }
}

impl TestServer {
    /// The command line holding `token` (in a file of its own).
    pub fn cli_as(&self, token: &str) -> CliAs {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cli.token");
        std::fs::write(&file, token).unwrap();
        // `--json` first: `text` leaves it out.
        let conn = ["--json", "--server", &self.url(), "--token-file"]
            .map(str::to_owned)
            .into_iter()
            .chain([file.to_str().unwrap().to_owned()])
            .collect();
        CliAs { _dir: dir, conn }
    }
}

/// `passnum serve` with a flag's value out of its range: refused before anything starts
/// (exit 2), naming the range.
pub fn serve_refuses(flag: &str, value: &str, range: &str) {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_passnum"))
        .args(["serve", flag, value])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{flag} {value}");
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains(range), "{flag} {value}: {said}");
}

/// A self-signed certificate for localhost and its key, as PEM.
pub fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

pub fn rid() -> String {
    passnum::client::request_id()
}

/// Asserts a call was refused with this status code and machine-readable reason.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) -> tonic::Status {
    match result {
        Ok(v) => panic!("expected {code:?} {reason}, got success {v:?}"),
        Err(s) => {
            assert_eq!(
                (s.code(), passnum::client::reason(&s).as_str()),
                (code, reason),
                "{}",
                passnum::client::describe(&s)
            );
            s
        }
    }
}

pub fn scanned(code: &str) -> Option<pb::PassCode> {
    Some(pb::PassCode {
        form: Some(pb::pass_code::Form::Scanned(code.to_owned())),
    })
}

pub fn typed(serial: &str, verification: &str) -> Option<pb::PassCode> {
    Some(pb::PassCode {
        form: Some(pb::pass_code::Form::Typed(pb::TypedCode {
            serial: serial.into(),
            verification_code: verification.into(),
        })),
    })
}

pub fn redeem_req(
    code: &str,
    site: u64,
    place: Option<pb::Place>,
    service: &str,
) -> pb::RedeemRequest {
    pb::RedeemRequest {
        request_id: rid(),
        pass: scanned(code),
        site_id: site,
        place,
        service: service.into(),
        scanned_at_ms: 0,
    }
}

/// A code with its last character changed: well formed, but its MAC fails (a forgery, or
/// a guess).
pub fn forged(code: &str) -> String {
    let last = if code.ends_with('A') { "B" } else { "A" };
    format!("{}{last}", &code[..code.len() - 1])
}

/// A two-hour workshop at site 3 (a workshop site in Bordeaux) redeeming these codes.
pub fn workshop_req(codes: &[&str]) -> pb::RedeemWorkshopRequest {
    pb::RedeemWorkshopRequest {
        request_id: rid(),
        site_id: 3,
        place: commune("33063"),
        date: "2026-01-02".into(),
        start: "14:00".into(),
        duration_minutes: 120,
        themes: vec!["aide".into()],
        participants: codes.len() as u32,
        mediator_id: "CNFS-33-0042".into(),
        passes: codes.iter().map(|c| scanned(c).unwrap()).collect(),
        held_at_ms: 0,
    }
}

pub fn stop(n: u32) -> Option<pb::Place> {
    Some(pb::Place {
        stop: Some(n),
        insee_code: String::new(),
    })
}

pub fn commune(insee: &str) -> Option<pb::Place> {
    Some(pb::Place {
        stop: None,
        insee_code: insee.into(),
    })
}

/// Every pass of an order, 7 at a time so that the tests cross page boundaries.
/// The records `c` may read from `from_seq` on, as a stream (`limit` 0: the server's page).
pub async fn record_stream(
    c: &Clients,
    from_seq: u64,
    limit: u32,
) -> tonic::Streaming<pb::LedgerRecord> {
    let req = pb::StreamRecordsRequest { from_seq, limit };
    c.ledger
        .clone()
        .stream_records(req)
        .await
        .unwrap()
        .into_inner()
}

/// The ledger's durable head, as `c` reads it.
pub async fn head(c: &Clients) -> pb::Head {
    let head = c.ledger.clone().get_head(pb::GetHeadRequest {}).await;
    head.unwrap().into_inner()
}

/// The same, read to the end.
pub async fn records(c: &Clients, from_seq: u64, limit: u32) -> Vec<pb::LedgerRecord> {
    let mut s = record_stream(c, from_seq, limit).await;
    let mut out = vec![];
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

pub async fn passes(c: &Clients, order: u64) -> Vec<pb::PassInfo> {
    scenario::order_passes_by(c, order, 7).await
}

/// A registry for the tests: commanditaire 1 (Gironde); structure 1 with a fixed site (1,
/// Bordeaux), a bus (2: stops Bordeaux, Périgueux) and a workshop site (3, home Bordeaux);
/// structure 2 with a fixed site (4, Bordeaux).
pub async fn registry(t: &TestServer) {
    let mut r = t.op.registry.clone();
    r.register_commanditaire(pb::RegisterCommanditaireRequest {
        request_id: rid(),
        name: "Gironde".into(),
    })
    .await
    .unwrap();
    r.register_commanditaire(pb::RegisterCommanditaireRequest {
        request_id: rid(),
        name: "Dordogne".into(),
    })
    .await
    .unwrap();
    for siret in ["21330063500017", "11000201100044"] {
        r.register_structure(pb::RegisterStructureRequest {
            request_id: rid(),
            name: format!("S {siret}"),
            siret_or_rna: siret.into(),
            iban: String::new(),
        })
        .await
        .unwrap();
    }
    let site = |structure, kind: pb::SiteKind, insee: &str, stops: Vec<(&str, &str)>| {
        pb::RegisterSiteRequest {
            request_id: rid(),
            structure_id: structure,
            name: "site".into(),
            kind: kind as i32,
            insee_code: insee.into(),
            stops: stops
                .into_iter()
                .map(|(l, i)| pb::BusStop {
                    label: l.into(),
                    insee_code: i.into(),
                })
                .collect(),
        }
    };
    r.register_site(site(1, pb::SiteKind::Fixed, "33063", vec![]))
        .await
        .unwrap();
    r.register_site(site(
        1,
        pb::SiteKind::Itinerant,
        "",
        vec![("Bordeaux", "33063"), ("Périgueux", "24322")],
    ))
    .await
    .unwrap();
    r.register_site(site(1, pb::SiteKind::Workshop, "33063", vec![]))
        .await
        .unwrap();
    r.register_site(site(2, pb::SiteKind::Fixed, "33063", vec![]))
        .await
        .unwrap();
}

pub fn order_req(commanditaire: u64, passes: u32, services: &[&str]) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        request_id: rid(),
        commanditaire_id: commanditaire,
        pass_count: passes,
        carnet_size: 5.min(passes),
        face_value_cents: 1000,
        valid_from_ms: T0,
        valid_until_ms: T0 + 365 * DAY,
        grace_days: 31,
        perimeter: Some(pb::Perimeter {
            departements: vec!["33".into()],
            ..Default::default()
        }),
        services: services.iter().map(|s| s.to_string()).collect(),
        programme: "AAP".into(),
    }
}

/// Creates, mints and (if asked) funds an order; returns its id and passes.
pub async fn order(
    t: &TestServer,
    commanditaire: u64,
    n: u32,
    fund: bool,
) -> (u64, Vec<pb::PassInfo>) {
    order_from(t, order_req(commanditaire, n, &[]), fund).await
}

/// Creates the order `req` describes and mints it; its id.
pub async fn minted(t: &TestServer, req: pb::CreateOrderRequest) -> u64 {
    let mut i = t.op.issuance.clone();
    let order_id = i.create_order(req).await.unwrap().into_inner().order_id;
    let mint = pb::MintOrderRequest {
        request_id: rid(),
        order_id,
    };
    i.mint_order(mint).await.unwrap();
    order_id
}

/// Creates the order `req` describes, mints it and (if asked) funds it at its full value.
pub async fn order_from(
    t: &TestServer,
    req: pb::CreateOrderRequest,
    fund: bool,
) -> (u64, Vec<pb::PassInfo>) {
    let amount_cents = req.face_value_cents * i64::from(req.pass_count);
    let id = minted(t, req).await;
    let mut i = t.op.issuance.clone();
    if fund {
        let funding = pb::RecordFundingRequest {
            request_id: rid(),
            order_id: id,
            amount_cents,
            reference: "VIR".into(),
        };
        i.record_funding(funding).await.unwrap();
    }
    (id, passes(&t.op, id).await)
}

/// The ledger's chain and money invariants verify, as the operator sees them; returns how
/// many records the verification covered.
pub async fn assert_chain_verifies(t: &TestServer) -> u64 {
    scenario::verified_chain(&t.op, "the operator's verification")
        .await
        .records
}
