//! Plain configuration data. Every limit is explicit, with its unit last and one sentence
//! of why.

use crate::domain::Rules;
use crate::engine::EngineConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Passes in one order: 5× the largest known order, and a mint record stays under 1 MiB.
    pub order_passes_max: u32,
    /// Passes in one workshop redemption: a 2 h workshop never has more than a few dozen.
    pub workshop_passes_max: usize,
    /// Serials in one cancellation: a lost box of carnets, not a whole order.
    pub cancel_passes_max: usize,
    /// Passes in one ListPasses page.
    pub page_passes_max: u32,
    pub page_passes_default: u32,
    /// Records in one StreamRecords call; clients continue from the last seq.
    pub stream_records_max: u32,
    /// Records read ahead of a StreamRecords reader: a page is never whole in memory (a
    /// mint's record alone is about 1.5 MB).
    pub stream_queue_records: usize,
    /// Communes, départements and sites in one perimeter: a région has about 5 000 communes.
    pub perimeter_entries_max: usize,
    /// Services an order may restrict to, and themes in one workshop.
    pub services_max: usize,
    /// Stops of one bus.
    pub stops_max: usize,
    /// Passes in one PDF sheet: 1 000 pages of carnets.
    pub sheet_passes_max: u32,
    /// Bytes of one request message, checked after decoding.
    pub request_bytes_max: usize,
    /// Bytes the transport accepts before decoding; above `request_bytes_max` so that our
    /// own limit, with its precise refusal, is the one callers meet.
    pub transport_bytes_max: usize,
    /// Bytes of one open-data file: the national file of ~18 000 places is ~10 MiB.
    pub import_bytes_max: usize,
    /// Rows of one open-data file: the national map lists about 18 000 places.
    pub import_rows_max: usize,
    /// Sites in one ListSites page.
    pub page_sites_max: u32,
    /// Credentials in one ListCredentials page (a site or two each: tens of thousands).
    pub page_credentials_max: u32,
    /// Requests in progress on one connection.
    pub connection_requests_max: usize,
    /// Connections open at once: thousands of sites' devices with room to spare, each
    /// holding its buffers; past it a new one is closed at once (`gate`). The process's
    /// descriptor limit (`ulimit -n`) must be above it.
    pub connections_max: usize,
    /// How often HTTP/2 pings a connection, and how long it waits for the answer before
    /// closing it: a peer that vanished (a bus out of coverage, a laptop shut) otherwise
    /// holds its connection and its place until the kernel gives up, hours later.
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Settlements in one ListSettlements page.
    pub page_settlements_max: u32,
    /// Rows of one reconciliation: a département's structures × sites × orders stay in the
    /// low thousands; a larger answer asks for fewer départements.
    pub reconcile_rows_max: usize,
    /// Days in one reported period: a year and a month, for annual accounts.
    pub period_days_max: i32,
    /// Bytes of one streamed export chunk, and chunks queued before the reader catches up:
    /// an export holds at most their product in memory.
    pub export_chunk_bytes: usize,
    pub export_queue_chunks: usize,
    /// Log pages, chain verifications and exports running at once: each holds a blocking
    /// thread (tokio has 512) and its queue's memory until its reader has read it or left.
    pub readers_max: usize,
    /// How long a long read waits for its reader to make room in its queue before it
    /// gives up (`READER_STALLED`) and frees its slot: a reader that stops reading would
    /// otherwise hold it until it disconnects. Far above any pause of a reader that reads.
    pub reader_stall_ms: u64,
    /// How long a shutdown lets open connections finish what they carry before it closes
    /// them: a client that opened a page and never reads it would otherwise hold the
    /// server up for as long as it stays. Well below a supervisor's stop timeout (systemd
    /// kills after 90 s), so a stop stays graceful: the engine still drains and syncs.
    pub shutdown_grace_ms: u64,
    /// Refusals one credential may earn at once (codes that fail their check, commands the
    /// engine refuses), then per hour: a counter scanning a stack of used passes stays far
    /// below; guessing a 35-bit verification code at 600 an hour takes about 3 000 years.
    /// The operator is not limited (`rpc::budget`).
    pub refusal_burst: u32,
    pub refusals_per_hour: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            order_passes_max: 100_000,
            workshop_passes_max: 200,
            cancel_passes_max: 1_000,
            page_passes_max: 1_000,
            page_passes_default: 100,
            stream_records_max: 10_000,
            stream_queue_records: 64,
            perimeter_entries_max: 5_000,
            services_max: 64,
            stops_max: 64,
            sheet_passes_max: 10_000,
            request_bytes_max: 1 << 20,
            transport_bytes_max: 4 << 20,
            connection_requests_max: 256,
            connections_max: 8_192,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
            import_bytes_max: 12 << 20,
            import_rows_max: 30_000,
            page_sites_max: 1_000,
            page_credentials_max: 1_000,
            page_settlements_max: 1_000,
            reconcile_rows_max: 50_000,
            period_days_max: 400,
            export_chunk_bytes: 64 << 10,
            export_queue_chunks: 4,
            readers_max: 32,
            reader_stall_ms: 30_000,
            shutdown_grace_ms: 10_000,
            refusal_burst: 200,
            refusals_per_hour: 600,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub engine: EngineConfig,
    /// How often the server runs the expiry sweep by itself.
    pub sweep_interval_ms: u64,
    pub transport: Transport,
}

/// How the server speaks to its clients: bearer tokens and pass codes cross it.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS with this certificate chain and key (PEM files).
    Tls { cert: PathBuf, key: PathBuf },
    /// Plaintext: on a loopback address, or when asked for, behind a proxy that
    /// terminates TLS. `server::start` refuses any other address without TLS.
    Plaintext { asked: bool },
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            limits: Limits::default(),
            engine: EngineConfig {
                rules: Rules::default(),
                ..EngineConfig::default()
            },
            sweep_interval_ms: 3_600_000,
            transport: Transport::Plaintext { asked: false },
        }
    }
}
