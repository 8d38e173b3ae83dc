//! Command-line arguments, parsed into plain values. Subcommands stay thin: they call the
//! server (`client`), the store (`rebuild-index`, `verify-log`) or run it (`serve`).

use crate::domain::{parse_instant, FeeRate, Timestamp};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "passnum",
    version,
    about = "Voucher ledger and clearing engine for the Pass numérique"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Server address.
    #[arg(
        long,
        env = "PASSNUM_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// File holding the bearer token (the operator's is created in the data directory).
    #[arg(
        long,
        env = "PASSNUM_TOKEN_FILE",
        default_value = "passnum-data/operator.token",
        global = true
    )]
    pub token_file: PathBuf,
    /// CA certificate (PEM) to trust for an https:// server, besides the system's.
    #[arg(long, env = "PASSNUM_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Runs the gRPC service on its embedded store.
    Serve {
        #[arg(long, env = "PASSNUM_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        #[arg(long, env = "PASSNUM_DATA", default_value = "passnum-data")]
        data: PathBuf,
        /// TLS certificate chain (PEM); with --tls-key. Required on any address but
        /// loopback, unless --plaintext.
        #[arg(long, env = "PASSNUM_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, env = "PASSNUM_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serves without TLS on a non-loopback address: only behind a proxy that
        /// terminates TLS.
        #[arg(long, conflicts_with = "tls_cert")]
        plaintext: bool,
        /// How many days a scan made offline may take to reach the ledger (0 to 60; 0 turns
        /// offline scans off). The expiry sweep waits as long past an order's validity.
        #[arg(long, env = "PASSNUM_OFFLINE_WINDOW_DAYS", default_value_t = 15,
              value_parser = clap::value_parser!(u32).range(0..=60))]
        offline_window_days: u32,
        /// How many days a credential issued from now on may be valid (1 to 1 830), and
        /// what it gets when its issuer names no lifetime.
        #[arg(long, env = "PASSNUM_CREDENTIAL_DAYS", default_value_t = 400,
              value_parser = clap::value_parser!(u32).range(1..=1_830))]
        credential_days: u32,
        /// The fee billed to a commanditaire on each order created from now on, in basis
        /// points of its face value before VAT (400 = 4 %; 0 to 2 000). Recorded with the
        /// order, so changing it moves no existing order's fee.
        #[arg(long, env = "PASSNUM_ORDER_FEE_BASIS_POINTS", default_value_t = 0,
              value_parser = clap::value_parser!(u16).range(0..=i64::from(FeeRate::MAX_BASIS_POINTS)))]
        order_fee_basis_points: u16,
        /// Idle polling: while a few requests wait in the ledger, and this many µs after the
        /// last answer (0 to 10 000; 0 turns it off), one thread per core spins at idle
        /// priority, so that each hand-off of a request finds its core awake (a virtual
        /// machine without guest halt polling pays dearly to wake one). Only idle CPU.
        #[arg(long, env = "PASSNUM_IDLE_POLL_US", default_value_t = crate::engine::IDLE_POLL_US,
              value_parser = clap::value_parser!(u64).range(0..=10_000))]
        idle_poll_us: u64,
    },
    /// Drops the index and rebuilds it from the ledger log (server stopped).
    RebuildIndex {
        #[arg(long, env = "PASSNUM_DATA", default_value = "passnum-data")]
        data: PathBuf,
    },
    /// Verifies a ledger log file offline: frames, hash chain, money invariants.
    VerifyLog {
        file: PathBuf,
        /// Verifies up to this record only, and prints its hash: what two hubs compare, each
        /// from its own copy, to show the server gave them the same history.
        #[arg(long)]
        at: Option<u64>,
        /// With --at: the hash another copy has at that record (exit 4 if this one differs).
        #[arg(long, requires = "at")]
        expect: Option<String>,
    },
    /// Plays a whole day of the scheme against a running server and tells what happened.
    Demo {
        #[command(flatten)]
        conn: Conn,
    },
    #[command(flatten)]
    Client(ClientCmd),
    /// Clearing and settlement: runs, payments, statements, exports, reconciliation, proofs.
    Clearing {
        #[command(subcommand)]
        cmd: crate::cli_clearing::ClearingCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Checks a pass's settlement proof (from `clearing proof --out`) offline, without the
    /// server; with --root, also that it leads to the root you hold (ledger or bank statement).
    VerifyProof {
        file: PathBuf,
        #[arg(long)]
        root: Option<String>,
    },
    /// Test support: appends records in a loop, printing each acknowledged batch.
    #[command(hide = true)]
    StressAppend {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        batches: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Registers a commanditaire, structure or site (operator).
    Register {
        #[command(subcommand)]
        what: RegisterCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Issues a bearer token for one role and actor (operator); prints it once.
    Credential {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, default_value_t = 0)]
        actor: u64,
        /// Hub only: the départements it covers.
        #[arg(long = "dept")]
        departements: Vec<String>,
        /// Writes the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// How many days the token is valid (default: the longest the server allows).
        #[arg(long, default_value_t = 0)]
        valid_days: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revokes a credential by the id it was issued with (operator): its token is refused
    /// from then on.
    RevokeCredential {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The credential of the token given: its id, role and when it expires (any role).
    Whoami {
        #[command(flatten)]
        conn: Conn,
    },
    /// Lists credentials, revoked ones included (operator).
    Credentials {
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Only this commanditaire's, structure's or site's.
        #[arg(long, default_value_t = 0)]
        actor: u64,
        /// Only live credentials that expire before this day, YYYY-MM-DD (to renew them).
        #[arg(long)]
        expiring_before: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Creates an order of passes.
    Order(OrderArgs),
    /// Mints an order's passes.
    Mint {
        #[arg(long)]
        order: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Records the commanditaire's payment, which activates the order (operator).
    Fund {
        #[arg(long)]
        order: u64,
        #[arg(long)]
        amount_cents: i64,
        #[arg(long)]
        reference: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lists an order's passes, one page.
    Passes {
        #[arg(long)]
        order: u64,
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Renders a pass's code (SVG or PNG), or a printable PDF of an order or carnet.
    Render {
        #[arg(long, conflicts_with = "order")]
        serial: Option<String>,
        #[arg(long, value_enum, default_value = "svg")]
        format: FormatArg,
        #[arg(long)]
        order: Option<u64>,
        #[arg(long)]
        carnet: Option<u32>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Says whether a pass could be redeemed here, without redeeming it.
    Check(PassAtSite),
    /// Redeems one pass.
    Redeem(PassAtSite),
    /// Sends the scans a device made offline and writes what each got. The file is CSV
    /// with a header: request_id, scanned_at (RFC 3339 or ms), code, site_id, service, and
    /// stop or insee where the site needs one; a workshop's rows add session, date, start,
    /// duration_minutes, themes, participants, mediator_id (one request per session). Run
    /// it again if some got no answer (exit 3).
    SyncScans {
        file: PathBuf,
        /// Where each scan's answer goes (CSV, in the file's order).
        #[arg(long)]
        out: PathBuf,
        /// Scans sent at once (1 to 64).
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Redeems a workshop's passes in one session.
    Workshop(WorkshopArgs),
    /// Reverses a redemption made by mistake (same site, within the window).
    Reverse {
        #[command(flatten)]
        pass: PassArg,
        #[arg(long)]
        site: u64,
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancels passes (lost or stolen), by serial or by carnet.
    Cancel {
        #[arg(long = "serial")]
        serials: Vec<String>,
        #[arg(long)]
        order: Option<u64>,
        #[arg(long)]
        carnet: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Marks a carnet as handed out.
    Distribute {
        #[arg(long)]
        order: u64,
        #[arg(long)]
        carnet: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Shows an order's dashboard.
    Dashboard {
        #[arg(long)]
        order: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Expires passes whose validity and grace have ended (operator).
    Sweep {
        #[command(flatten)]
        conn: Conn,
    },
    /// Sites from the national open data: import, list, export.
    Sites {
        #[command(subcommand)]
        what: SitesCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The ledger: head, verify, records.
    Ledger {
        #[command(subcommand)]
        what: LedgerCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegisterCmd {
    Commanditaire {
        #[arg(long)]
        name: String,
    },
    Structure {
        #[arg(long)]
        name: String,
        /// SIRET (14 digits) or RNA (W + 9 digits).
        #[arg(long)]
        siret: String,
        #[arg(long, default_value = "")]
        iban: String,
    },
    Site {
        #[arg(long)]
        structure: u64,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        kind: KindArg,
        /// The commune (fixed site) or home commune (workshop).
        #[arg(long, default_value = "")]
        insee: String,
        /// A bus stop, as `label=INSEE`; repeat for each stop, in order.
        #[arg(long = "stop")]
        stops: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SitesCmd {
    /// Imports a CSV file of the standard "standard-mediation-num".
    Import {
        file: PathBuf,
        /// Reports what would change, changes nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Lists sites, filtered.
    List {
        #[arg(long, default_value = "")]
        insee: String,
        #[arg(long, default_value = "")]
        dept: String,
        #[arg(long, default_value_t = 0)]
        structure: u64,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Writes the referenced sites in the standard's CSV.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "")]
        dept: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LedgerCmd {
    Head,
    Verify,
    /// The engine's fsyncs since it started: how many, the requests they acknowledged,
    /// their p50 / p99 / max durations (operator).
    Syncs,
    Records {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Brings your own copy of the ledger (FILE, created if missing) up to the server's
    /// head, checking every record before it is kept: `passnum verify-log FILE` then
    /// checks it with nothing else (operator or hub). The head it reached, signed by the
    /// operator, is added to FILE.heads.
    Mirror {
        file: PathBuf,
        /// The operator's published head key (hex): a head signed by any other is refused.
        #[arg(long, env = "PASSNUM_HEAD_KEY")]
        head_key: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct OrderArgs {
    #[arg(long)]
    pub commanditaire: u64,
    #[arg(long)]
    pub passes: u32,
    #[arg(long, default_value_t = 10)]
    pub carnet: u32,
    #[arg(long, default_value_t = 1000)]
    pub face_cents: i64,
    /// First day of validity, YYYY-MM-DD.
    #[arg(long)]
    pub from: String,
    /// Last day of validity, YYYY-MM-DD.
    #[arg(long)]
    pub until: String,
    #[arg(long, default_value_t = 31)]
    pub grace_days: u32,
    #[arg(long = "dept")]
    pub departements: Vec<String>,
    #[arg(long = "insee")]
    pub communes: Vec<String>,
    #[arg(long = "site")]
    pub sites: Vec<u64>,
    #[arg(long = "service")]
    pub services: Vec<String>,
    #[arg(long)]
    pub programme: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct PassArg {
    /// The scanned QR text (PN1:…).
    #[arg(long, conflicts_with = "serial")]
    pub code: Option<String>,
    /// The typed serial, with --verification.
    #[arg(long, requires = "verification")]
    pub serial: Option<String>,
    #[arg(long)]
    pub verification: Option<String>,
}

#[derive(Args, Debug)]
pub struct PassAtSite {
    #[command(flatten)]
    pub pass: PassArg,
    #[arg(long)]
    pub site: u64,
    /// Bus stop number (itinerant sites).
    #[arg(long)]
    pub stop: Option<u32>,
    /// Commune of the service (workshop-kind sites).
    #[arg(long, default_value = "")]
    pub insee: String,
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct WorkshopArgs {
    #[arg(long)]
    pub site: u64,
    #[arg(long)]
    pub stop: Option<u32>,
    #[arg(long, default_value = "")]
    pub insee: String,
    /// YYYY-MM-DD
    #[arg(long)]
    pub date: String,
    /// HH:MM
    #[arg(long)]
    pub start: String,
    #[arg(long)]
    pub duration: u32,
    #[arg(long = "theme", required = true)]
    pub themes: Vec<String>,
    #[arg(long)]
    pub participants: u32,
    #[arg(long)]
    pub mediator: String,
    /// Scanned codes, one per pass.
    #[arg(long = "code", required = true)]
    pub codes: Vec<String>,
    /// For a session held offline: when the device recorded its passes
    /// (2026-01-25T14:30:00+01:00, or ms since 1970). Send it with the request id it was
    /// given then, so a second sync is answered the same way.
    #[arg(long, value_parser = parse_instant)]
    pub held_at: Option<Timestamp>,
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Operator,
    Commanditaire,
    Structure,
    Site,
    Hub,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    Fixed,
    Itinerant,
    Workshop,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Svg,
    Png,
}
