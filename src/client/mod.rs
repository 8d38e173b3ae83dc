//! A gRPC client with a bearer token, used by the CLI, the demo and the tests, and the
//! client subcommands: each builds a request, calls, and prints the answer.

mod actors;
mod files;
mod ledger;
mod orders;
mod redeem;
mod sites;

pub use files::{failed, save};
pub use orders::{dashboard_json, dashboard_text};

use crate::cli::*;
use crate::rpc::pb;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub type Svc = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
pub struct Clients {
    pub registry: pb::registry_client::RegistryClient<Svc>,
    pub issuance: pb::issuance_client::IssuanceClient<Svc>,
    pub redemptions: pb::redemptions_client::RedemptionsClient<Svc>,
    pub ledger: pb::ledger_client::LedgerClient<Svc>,
    pub sites: pb::sites_client::SitesClient<Svc>,
    pub clearing: pb::clearing_client::ClearingClient<Svc>,
    /// The channel itself, for other services (health, reflection).
    pub channel: Channel,
}

impl Clients {
    /// Clients over one channel; `token` None sends no authorization (for tests).
    pub fn new(channel: Channel, token: Option<&str>) -> Clients {
        let bearer =
            Bearer(token.map(|t| format!("Bearer {t}").parse().expect("a token is ASCII")));
        Clients {
            registry: pb::registry_client::RegistryClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            issuance: pb::issuance_client::IssuanceClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            redemptions: pb::redemptions_client::RedemptionsClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            sites: pb::sites_client::SitesClient::with_interceptor(channel.clone(), bearer.clone()),
            clearing: pb::clearing_client::ClearingClient::with_interceptor(
                channel.clone(),
                bearer.clone(),
            ),
            channel: channel.clone(),
            ledger: pb::ledger_client::LedgerClient::with_interceptor(channel, bearer),
        }
    }

    pub async fn connect(server: &str, token: Option<&str>) -> Result<Clients, String> {
        Clients::connect_trusting(server, token, None).await
    }

    /// Connects over TLS to an https:// server, trusting the system's CAs and `ca_file`'s.
    pub async fn connect_trusting(
        server: &str,
        token: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Clients, String> {
        let mut endpoint = Channel::from_shared(server.to_owned())
            .map_err(|e| format!("server address {server}: {e}"))?
            .connect_timeout(Duration::from_secs(5));
        if server.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        } else if ca_file.is_some() {
            return Err(format!("a CA file is for an https:// server, not {server}"));
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach {server}: {}", with_causes(&e)))?;
        Ok(Clients::new(channel, token))
    }

    pub async fn from_conn(conn: &Conn) -> Result<Clients, CliError> {
        let token = std::fs::read_to_string(&conn.token_file).map_err(|e| {
            CliError::Usage(format!("token file {}: {e}", conn.token_file.display()))
        })?;
        Clients::connect_trusting(&conn.server, Some(token.trim()), conn.ca_file.as_deref())
            .await
            .map_err(CliError::Unreachable)
    }
}

/// An error and what caused it: a transport error's own text says little ("transport
/// error") where its causes say what went wrong (a refused certificate, say).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // Some errors repeat their cause in their own text.
        if !text.ends_with(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// This machine's clock, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An instant as people read it: "2027-02-05T10:00:00Z".
pub fn instant(ms: i64) -> String {
    format!(
        "{}Z",
        crate::export::iso_datetime(crate::domain::Timestamp(ms))
    )
}

/// A fresh request id for one action of a person at the CLI.
pub fn request_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random source works");
    format!("cli-{}", crate::code::hex(&b))
}

/// The machine-readable reason of a refusal, if the server sent one.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

pub fn describe(status: &Status) -> String {
    let details = status.get_error_details();
    let mut s = format!("{:?}", status.code());
    if let Some(info) = details.error_info() {
        s.push_str(&format!(" {}", info.reason));
        let mut meta: Vec<_> = info
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        meta.sort();
        if !meta.is_empty() {
            s.push_str(&format!(" [{}]", meta.join(", ")));
        }
    }
    s.push_str(&format!(": {}", status.message()));
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            s.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    s
}

#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Unreachable(String),
    Refused(Status),
    Failed(String),
}

impl CliError {
    /// Exit codes: 1 refused by the rules or the caller's scope, 2 usage, 3 server
    /// unreachable or unavailable, 4 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused(s) => match s.code() {
                Code::Unavailable => 3,
                Code::Internal | Code::Unknown | Code::DataLoss => 4,
                _ => 1,
            },
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
            CliError::Failed(_) => 4,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unreachable(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Refused(s) => write!(f, "refused: {}", describe(s)),
        }
    }
}

impl From<Status> for CliError {
    fn from(s: Status) -> Self {
        CliError::Refused(s)
    }
}

fn date_ms(field: &str, text: &str, end_of_day: bool) -> Result<i64, CliError> {
    let days =
        crate::domain::parse_date(text).map_err(|e| CliError::Usage(format!("--{field}: {e}")))?;
    Ok((i64::from(days) + i64::from(end_of_day)) * crate::domain::Timestamp::MS_PER_DAY)
}

fn pass_code(p: &PassArg) -> Result<pb::PassCode, CliError> {
    let form = match (&p.code, &p.serial, &p.verification) {
        (Some(code), _, _) => pb::pass_code::Form::Scanned(code.clone()),
        (None, Some(serial), Some(v)) => pb::pass_code::Form::Typed(pb::TypedCode {
            serial: serial.clone(),
            verification_code: v.clone(),
        }),
        _ => {
            return Err(CliError::Usage(
                "give --code, or --serial and --verification".into(),
            ))
        }
    };
    Ok(pb::PassCode { form: Some(form) })
}

fn place(stop: Option<u32>, insee: &str) -> Option<pb::Place> {
    Some(pb::Place {
        stop,
        insee_code: insee.to_owned(),
    })
}

/// Prints JSON when asked, else the readable line.
pub fn out(conn: &Conn, json: serde_json::Value, text: String) {
    if conn.json {
        println!("{json}");
    } else {
        println!("{text}");
    }
}

pub async fn run(cmd: ClientCmd) -> Result<(), CliError> {
    match cmd {
        ClientCmd::Register { what, conn } => actors::register(what, conn).await,
        ClientCmd::Credential {
            role,
            actor,
            departements,
            out: file,
            valid_days,
            conn,
        } => actors::credential(role, actor, departements, file, valid_days, conn).await,
        ClientCmd::RevokeCredential { id, conn } => actors::revoke_credential(id, conn).await,
        ClientCmd::Whoami { conn } => actors::whoami(conn).await,
        ClientCmd::Credentials {
            role,
            actor,
            expiring_before,
            conn,
        } => actors::credentials(role, actor, expiring_before, conn).await,
        ClientCmd::Order(a) => orders::order(a).await,
        ClientCmd::Mint { order, conn } => orders::mint(order, conn).await,
        ClientCmd::Fund {
            order,
            amount_cents,
            reference,
            conn,
        } => orders::fund(order, amount_cents, reference, conn).await,
        ClientCmd::Passes {
            order,
            page_size,
            page_token,
            conn,
        } => orders::passes(order, page_size, page_token, conn).await,
        ClientCmd::Render {
            serial,
            format,
            order,
            carnet,
            out: path,
            conn,
        } => orders::render(serial, format, order, carnet, path, conn).await,
        ClientCmd::Check(a) => redeem::check(a).await,
        ClientCmd::Redeem(a) => redeem::redeem(a).await,
        ClientCmd::SyncScans {
            file,
            out: results,
            in_flight,
            conn,
        } => redeem::sync_scans(file, results, in_flight, conn).await,
        ClientCmd::Workshop(a) => redeem::workshop(a).await,
        ClientCmd::Reverse {
            pass,
            site,
            request_id: rid,
            conn,
        } => redeem::reverse(pass, site, rid, conn).await,
        ClientCmd::Cancel {
            serials,
            order,
            carnet,
            conn,
        } => orders::cancel(serials, order, carnet, conn).await,
        ClientCmd::Distribute {
            order,
            carnet,
            conn,
        } => orders::distribute(order, carnet, conn).await,
        ClientCmd::Dashboard { order, conn } => orders::dashboard(order, conn).await,
        ClientCmd::Sweep { conn } => orders::sweep(conn).await,
        ClientCmd::Sites { what, conn } => sites::sites(what, &conn).await,
        ClientCmd::Ledger { what, conn } => ledger::ledger(what, conn).await,
    }
}
