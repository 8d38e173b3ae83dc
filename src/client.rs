//! A gRPC client with a bearer token, used by the CLI, the demo and the tests, and the
//! client subcommands: each builds a request, calls, and prints the answer.

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

fn role_pb(role: RoleArg) -> pb::Role {
    match role {
        RoleArg::Operator => pb::Role::Operator,
        RoleArg::Commanditaire => pb::Role::Commanditaire,
        RoleArg::Structure => pb::Role::Structure,
        RoleArg::Site => pb::Role::Site,
        RoleArg::Hub => pb::Role::Hub,
    }
}

/// A fresh request id for one action of a person at the CLI.
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

/// One credential, a line of text or of JSON.
fn credential_out(conn: &Conn, x: &pb::CredentialInfo) {
    use serde_json::json;
    let role = pb::Role::try_from(x.role).unwrap_or(pb::Role::Unspecified);
    // Expired or not by this machine's clock: the server refuses by its own.
    let state = match (x.revoked_at_ms, x.expires_at_ms) {
        (0, 0) => "live, never expires".to_owned(),
        (0, at) if at <= now_ms() => format!("expired at {}", instant(at)),
        (0, at) => format!("live until {}", instant(at)),
        (at, _) => format!("revoked at {}", instant(at)),
    };
    out(
        conn,
        json!({"credential_id": x.credential_id, "role": role.as_str_name(),
            "actor_id": x.actor_id, "departements": x.departements,
            "revoked_at_ms": x.revoked_at_ms, "expires_at_ms": x.expires_at_ms}),
        format!(
            "{} {} {} {} {state}",
            x.credential_id,
            role.as_str_name(),
            x.actor_id,
            x.departements.join(",")
        ),
    );
}

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
    use serde_json::json;
    match cmd {
        ClientCmd::Register { what, conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            match what {
                RegisterCmd::Commanditaire { name } => {
                    let r = c
                        .registry
                        .register_commanditaire(pb::RegisterCommanditaireRequest {
                            request_id: request_id(),
                            name,
                        })
                        .await?
                        .into_inner();
                    out(
                        &conn,
                        json!({"commanditaire_id": r.commanditaire_id}),
                        format!("commanditaire {} registered", r.commanditaire_id),
                    );
                }
                RegisterCmd::Structure { name, siret, iban } => {
                    let req = pb::RegisterStructureRequest {
                        request_id: request_id(),
                        name,
                        siret_or_rna: siret,
                        iban,
                    };
                    let r = c.registry.register_structure(req).await?.into_inner();
                    out(
                        &conn,
                        json!({"structure_id": r.structure_id}),
                        format!("structure {} registered", r.structure_id),
                    );
                }
                RegisterCmd::Site {
                    structure,
                    name,
                    kind,
                    insee,
                    stops,
                } => {
                    let stops = stops
                        .iter()
                        .map(|s| {
                            s.rsplit_once('=').map(|(l, i)| pb::BusStop {
                                label: l.into(),
                                insee_code: i.into(),
                            })
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| CliError::Usage("a --stop is label=INSEE".into()))?;
                    let kind = match kind {
                        KindArg::Fixed => pb::SiteKind::Fixed,
                        KindArg::Itinerant => pb::SiteKind::Itinerant,
                        KindArg::Workshop => pb::SiteKind::Workshop,
                    } as i32;
                    let req = pb::RegisterSiteRequest {
                        request_id: request_id(),
                        structure_id: structure,
                        name,
                        kind,
                        insee_code: insee,
                        stops,
                    };
                    let r = c.registry.register_site(req).await?.into_inner();
                    out(
                        &conn,
                        json!({"site_id": r.site_id}),
                        format!("site {} registered", r.site_id),
                    );
                }
            }
        }
        ClientCmd::Credential {
            role,
            actor,
            departements,
            out: file,
            valid_days,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let req = pb::IssueCredentialRequest {
                request_id: request_id(),
                role: role_pb(role) as i32,
                actor_id: actor,
                departements,
                valid_days,
            };
            let issued = c.registry.issue_credential(req).await?.into_inner();
            let (token, id, expires) = (issued.token, issued.credential_id, issued.expires_at_ms);
            match file {
                Some(path) => {
                    crate::server::write_secret(&path, &format!("{token}\n"))
                        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
                    out(
                        &conn,
                        json!({"token_file": path, "credential_id": id, "expires_at_ms": expires}),
                        format!(
                            "credential {id}: token written to {} (mode 0600), valid until {}",
                            path.display(),
                            instant(expires)
                        ),
                    );
                }
                None => out(
                    &conn,
                    json!({"token": token, "credential_id": id, "expires_at_ms": expires}),
                    format!(
                        "credential {id}, valid until {}, token (shown once): {token}",
                        instant(expires)
                    ),
                ),
            }
        }
        ClientCmd::RevokeCredential { id, conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            let req = pb::RevokeCredentialRequest {
                request_id: request_id(),
                credential_id: id.clone(),
            };
            let r = c.registry.revoke_credential(req).await?.into_inner();
            out(
                &conn,
                json!({"credential_id": id, "revoked_at_ms": r.revoked_at_ms}),
                format!("credential {id} revoked: its token is refused from now on"),
            );
        }
        ClientCmd::Whoami { conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            let own = pb::GetOwnCredentialRequest {};
            credential_out(
                &conn,
                &c.registry.get_own_credential(own).await?.into_inner(),
            );
        }
        ClientCmd::Credentials {
            role,
            actor,
            expiring_before,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let role = role.map_or(pb::Role::Unspecified, role_pb) as i32;
            let expiring_before_ms = match expiring_before {
                Some(day) => date_ms("expiring-before", &day, false)?,
                None => 0,
            };
            let mut after = String::new();
            loop {
                let req = pb::ListCredentialsRequest {
                    role,
                    actor_id: actor,
                    after,
                    page_size: 1_000,
                    expiring_before_ms,
                };
                let page = c.registry.list_credentials(req).await?.into_inner();
                for x in &page.credentials {
                    credential_out(&conn, x);
                }
                if page.next_after.is_empty() {
                    break;
                }
                after = page.next_after;
            }
        }
        ClientCmd::Order(a) => {
            let mut c = Clients::from_conn(&a.conn).await?;
            let req = pb::CreateOrderRequest {
                request_id: request_id(),
                commanditaire_id: a.commanditaire,
                pass_count: a.passes,
                carnet_size: a.carnet,
                face_value_cents: a.face_cents,
                valid_from_ms: date_ms("from", &a.from, false)?,
                valid_until_ms: date_ms("until", &a.until, true)?,
                grace_days: a.grace_days,
                perimeter: Some(pb::Perimeter {
                    insee_codes: a.communes,
                    departements: a.departements,
                    site_ids: a.sites,
                }),
                services: a.services,
                programme: a.programme,
            };
            let r = c.issuance.create_order(req).await?.into_inner();
            out(
                &a.conn,
                json!({"order_id": r.order_id}),
                format!("order {} created", r.order_id),
            );
        }
        ClientCmd::Mint { order, conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            let r = c
                .issuance
                .mint_order(pb::MintOrderRequest {
                    request_id: request_id(),
                    order_id: order,
                })
                .await?
                .into_inner();
            out(
                &conn,
                json!({"order_id": r.order_id, "passes": r.passes}),
                format!("order {} minted: {} passes", r.order_id, r.passes),
            );
        }
        ClientCmd::Fund {
            order,
            amount_cents,
            reference,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let req = pb::RecordFundingRequest {
                request_id: request_id(),
                order_id: order,
                amount_cents,
                reference,
            };
            let r = c.issuance.record_funding(req).await?.into_inner();
            out(
                &conn,
                json!({"activated": r.activated}),
                format!("order {order} funded: {} passes activated", r.activated),
            );
        }
        ClientCmd::Passes {
            order,
            page_size,
            page_token,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let mut stream = c
                .issuance
                .list_passes(pb::ListPassesRequest {
                    order_id: order,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            while let Some(p) = stream.message().await? {
                let status = pb::PassStatus::try_from(p.status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?");
                out(
                    &conn,
                    json!({"serial": p.serial, "code": p.code, "verification_code": p.verification_code, "carnet": p.carnet, "status": status, "next_page_token": p.next_page_token}),
                    format!(
                        "{}  code {}  carnet {}  {}  {}",
                        p.serial, p.verification_code, p.carnet, status, p.code
                    ),
                );
                if !p.next_page_token.is_empty() && !conn.json {
                    println!("next page: --page-token {}", p.next_page_token);
                }
            }
        }
        ClientCmd::Render {
            serial,
            format,
            order,
            carnet,
            out: path,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let bytes = match (serial, order) {
                (Some(serial), _) => {
                    let format = match format {
                        FormatArg::Svg => pb::CodeFormat::Svg,
                        FormatArg::Png => pb::CodeFormat::Png,
                    } as i32;
                    c.issuance
                        .render_code(pb::RenderCodeRequest { serial, format })
                        .await?
                        .into_inner()
                        .image
                }
                (None, Some(order)) => {
                    let mut stream = c
                        .issuance
                        .render_sheet(pb::RenderSheetRequest {
                            order_id: order,
                            carnet,
                        })
                        .await?
                        .into_inner();
                    let mut pdf = Vec::new();
                    while let Some(chunk) = stream.message().await? {
                        pdf.extend_from_slice(&chunk.data);
                    }
                    pdf
                }
                (None, None) => return Err(CliError::Usage("give --serial or --order".into())),
            };
            std::fs::write(&path, &bytes)
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            out(
                &conn,
                json!({"file": path, "bytes": bytes.len()}),
                format!("wrote {} ({} bytes)", path.display(), bytes.len()),
            );
        }
        ClientCmd::Check(a) => {
            let mut c = Clients::from_conn(&a.conn).await?;
            let req = pb::CheckPassRequest {
                pass: Some(pass_code(&a.pass)?),
                site_id: a.site,
                place: place(a.stop, &a.insee),
                service: a.service,
            };
            let r = c.redemptions.check_pass(req).await?.into_inner();
            let text = if r.redeemable {
                format!("{}: redeemable", r.serial)
            } else {
                format!("{}: not redeemable: {} ({})", r.serial, r.reason, r.message)
            };
            out(
                &a.conn,
                json!({"serial": r.serial, "redeemable": r.redeemable, "reason": r.reason}),
                text,
            );
        }
        ClientCmd::Redeem(a) => {
            let mut c = Clients::from_conn(&a.conn).await?;
            let req = pb::RedeemRequest {
                request_id: a.request_id.clone().unwrap_or_else(request_id),
                pass: Some(pass_code(&a.pass)?),
                site_id: a.site,
                place: place(a.stop, &a.insee),
                service: a.service,
                scanned_at_ms: 0,
            };
            let r = c.redemptions.redeem(req).await?.into_inner();
            out(
                &a.conn,
                json!({"serial": r.serial, "order_id": r.order_id, "amount_cents": r.amount_cents, "redeemed_at_ms": r.redeemed_at_ms}),
                format!(
                    "{} redeemed at site {}: {} cents",
                    r.serial, r.site_id, r.amount_cents
                ),
            );
        }
        ClientCmd::SyncScans {
            file,
            out: results,
            in_flight,
            conn,
        } => {
            if !(1..=crate::cli_scans::IN_FLIGHT_MAX).contains(&in_flight) {
                return Err(CliError::Usage(format!(
                    "--in-flight: 1 to {}",
                    crate::cli_scans::IN_FLIGHT_MAX
                )));
            }
            let c = Clients::from_conn(&conn).await?;
            let t = crate::cli_scans::sync_file(&c, &file, &results, in_flight).await?;
            out(
                &conn,
                json!({"redeemed": t.redeemed, "redeemed_earlier": t.earlier, "refused": t.refused, "invalid": t.invalid, "unanswered": t.unanswered, "results": results}),
                format!(
                    "{} redeemed{}, {} refused, {} rows unreadable, {} unanswered; each scan's answer is in {}",
                    t.redeemed,
                    match t.earlier {
                        0 => String::new(),
                        n => format!(" ({n} by an earlier sync)"),
                    },
                    t.refused,
                    t.invalid,
                    t.unanswered,
                    results.display()
                ),
            );
            if t.unanswered > 0 {
                return Err(CliError::Unreachable(format!(
                    "{} scans got no answer: run the same sync again (each scan keeps its request id)",
                    t.unanswered
                )));
            }
        }
        ClientCmd::Workshop(a) => {
            let mut c = Clients::from_conn(&a.conn).await?;
            let passes = a
                .codes
                .iter()
                .map(|code| pb::PassCode {
                    form: Some(pb::pass_code::Form::Scanned(code.clone())),
                })
                .collect();
            let req = pb::RedeemWorkshopRequest {
                request_id: a.request_id.clone().unwrap_or_else(request_id),
                site_id: a.site,
                place: place(a.stop, &a.insee),
                date: a.date,
                start: a.start,
                duration_minutes: a.duration,
                themes: a.themes,
                participants: a.participants,
                mediator_id: a.mediator,
                passes,
                held_at_ms: a.held_at.map_or(0, |t| t.0),
            };
            let r = c.redemptions.redeem_workshop(req).await?.into_inner();
            if a.conn.json {
                let outcomes: Vec<_> = r
                    .outcomes
                    .iter()
                    .map(
                        |o| json!({"serial": o.serial, "redeemed": o.redeemed, "reason": o.reason}),
                    )
                    .collect();
                println!(
                    "{}",
                    json!({"workshop_id": r.workshop_id, "redeemed": r.redeemed, "amount_cents": r.amount_cents, "outcomes": outcomes})
                );
            } else {
                println!(
                    "workshop {}: {} passes redeemed, {} cents",
                    r.workshop_id, r.redeemed, r.amount_cents
                );
                for o in r.outcomes {
                    println!(
                        "  {} {}",
                        o.serial,
                        if o.redeemed {
                            "redeemed".to_string()
                        } else {
                            format!("refused: {} ({})", o.reason, o.message)
                        }
                    );
                }
            }
        }
        ClientCmd::Reverse {
            pass,
            site,
            request_id: rid,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let req = pb::ReverseRequest {
                request_id: rid.unwrap_or_else(request_id),
                pass: Some(pass_code(&pass)?),
                site_id: site,
            };
            let r = c.redemptions.reverse(req).await?.into_inner();
            out(
                &conn,
                json!({"serial": r.serial, "amount_cents": r.amount_cents}),
                format!(
                    "{} reversed: {} cents back to its order",
                    r.serial, r.amount_cents
                ),
            );
        }
        ClientCmd::Cancel {
            serials,
            order,
            carnet,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            let req = pb::CancelPassesRequest {
                request_id: request_id(),
                serials,
                order_id: order.unwrap_or(0),
                carnet,
            };
            let r = c.issuance.cancel_passes(req).await?.into_inner();
            out(
                &conn,
                json!({"cancelled": r.cancelled, "credited_cents": r.credited_cents}),
                format!(
                    "{} passes cancelled, {} cents credited back",
                    r.cancelled, r.credited_cents
                ),
            );
        }
        ClientCmd::Distribute {
            order,
            carnet,
            conn,
        } => {
            let mut c = Clients::from_conn(&conn).await?;
            c.issuance
                .mark_distributed(pb::MarkDistributedRequest {
                    request_id: request_id(),
                    order_id: order,
                    carnet,
                })
                .await?;
            out(
                &conn,
                json!({"order_id": order, "carnet": carnet}),
                format!("order {order} carnet {carnet} marked distributed"),
            );
        }
        ClientCmd::Dashboard { order, conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            let d = c
                .issuance
                .get_dashboard(pb::GetDashboardRequest { order_id: order })
                .await?
                .into_inner();
            if conn.json {
                println!("{}", dashboard_json(&d));
            } else {
                print!("{}", dashboard_text(&d));
            }
        }
        ClientCmd::Sweep { conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            let r = c
                .issuance
                .run_expiry_sweep(pb::RunExpirySweepRequest {})
                .await?
                .into_inner();
            out(
                &conn,
                json!({
                    "expired": r.expired,
                    "credited_cents": r.credited_cents,
                    "credentials_forgotten": r.credentials_forgotten,
                    "requests_remembered": r.requests_remembered,
                }),
                format!(
                    "{} passes expired, {} cents credited back; {} credentials' requests forgotten, {} requests remembered",
                    r.expired, r.credited_cents, r.credentials_forgotten, r.requests_remembered
                ),
            );
        }
        ClientCmd::Sites { what, conn } => sites(what, &conn).await?,
        ClientCmd::Ledger { what, conn } => {
            let mut c = Clients::from_conn(&conn).await?;
            match what {
                LedgerCmd::Head => {
                    let h = c.ledger.get_head(pb::GetHeadRequest {}).await?.into_inner();
                    out(
                        &conn,
                        json!({"seq": h.seq, "hash": h.hash}),
                        format!("head: record {} hash {}", h.seq, h.hash),
                    );
                }
                LedgerCmd::Syncs => {
                    let g = c
                        .ledger
                        .get_group_commits(pb::GetGroupCommitsRequest {})
                        .await?
                        .into_inner();
                    out(
                        &conn,
                        json!({"syncs": g.syncs, "requests": g.requests, "sync_p50_us": g.sync_p50_us,
                            "sync_p99_us": g.sync_p99_us, "sync_max_us": g.sync_max_us,
                            "answered": g.answered, "engine_mean_us": g.engine_mean_us,
                            "queue_mean_us": g.queue_mean_us, "staging_mean_us": g.staging_mean_us,
                            "sync_wait_mean_us": g.sync_wait_mean_us, "fsync_mean_us": g.fsync_mean_us,
                            "answer_mean_us": g.answer_mean_us}),
                        format!(
                            "{} fsyncs acknowledged {} requests; durations at most p50 {} µs, p99 {} µs, max {} µs\n\
                             {} requests answered in {} µs on average: queue {}, staging {}, waiting for the running fsync {}, own fsync {}, answer {}",
                            g.syncs, g.requests, g.sync_p50_us, g.sync_p99_us, g.sync_max_us,
                            g.answered, g.engine_mean_us, g.queue_mean_us, g.staging_mean_us,
                            g.sync_wait_mean_us, g.fsync_mean_us, g.answer_mean_us
                        ),
                    );
                }
                LedgerCmd::Verify => {
                    let v = c
                        .ledger
                        .verify_chain(pb::VerifyChainRequest {})
                        .await?
                        .into_inner();
                    let text = if v.ok {
                        format!(
                            "chain verified: {} records, head {}",
                            v.records, v.head_hash
                        )
                    } else {
                        format!("CHAIN BROKEN: {}", v.problem)
                    };
                    out(
                        &conn,
                        json!({"ok": v.ok, "records": v.records, "head_hash": v.head_hash, "problem": v.problem}),
                        text,
                    );
                    if !v.ok {
                        return Err(CliError::Failed("the ledger does not verify".into()));
                    }
                }
                LedgerCmd::Mirror { file } => {
                    let m = crate::cli_mirror::mirror(&c, &file).await?;
                    out(
                        &conn,
                        json!({"from": m.from, "to": m.to, "head_hash": m.head_hash}),
                        format!(
                            "copy checked and extended from record {} to {}, head {}",
                            m.from, m.to, m.head_hash
                        ),
                    );
                }
                LedgerCmd::Records { from, limit } => {
                    let mut s = c
                        .ledger
                        .stream_records(pb::StreamRecordsRequest {
                            from_seq: from,
                            limit,
                        })
                        .await?
                        .into_inner();
                    while let Some(r) = s.message().await? {
                        out(
                            &conn,
                            json!({"seq": r.seq, "at_ms": r.at_ms, "hash": r.hash, "body": serde_json::from_str::<serde_json::Value>(&r.body_json).unwrap_or_default()}),
                            format!("#{} {} {}", r.seq, r.hash, r.body_json),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Bytes of one import chunk: well under the transport's message limit.
const IMPORT_CHUNK_BYTES: usize = 256 << 10;

async fn sites(what: SitesCmd, conn: &Conn) -> Result<(), CliError> {
    use serde_json::json;
    let c = Clients::from_conn(conn).await?;
    match what {
        SitesCmd::Import { file, dry_run } => {
            let data = std::fs::read(&file)
                .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
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
            out(conn, summary, text);
        }
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
            let mut req = pb::ListSitesRequest {
                insee_code: insee,
                departement: dept,
                structure_id: structure,
                kind,
                service,
                page_size: 500,
                page_token: String::new(),
            };
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
                    break;
                }
                req.page_token = next;
            }
        }
        SitesCmd::Export { out: path, dept } => {
            let mut s = c
                .sites
                .clone()
                .export_sites(pb::ExportSitesRequest { departement: dept })
                .await?
                .into_inner();
            let mut bytes = vec![];
            while let Some(chunk) = s.message().await? {
                bytes.extend(chunk.data);
            }
            std::fs::write(&path, &bytes)
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            out(
                conn,
                json!({"file": path, "bytes": bytes.len()}),
                format!("wrote {} ({} bytes)", path.display(), bytes.len()),
            );
        }
    }
    Ok(())
}

pub fn dashboard_json(d: &pb::Dashboard) -> serde_json::Value {
    let c = |c: &Option<pb::Count>| {
        c.as_ref().map_or(
            serde_json::json!({"passes": 0, "cents": 0}),
            |c| serde_json::json!({"passes": c.passes, "cents": c.cents}),
        )
    };
    serde_json::json!({
        "order_id": d.order_id, "issued": c(&d.issued), "activated": c(&d.activated), "redeemed": c(&d.redeemed),
        "cancelled": c(&d.cancelled), "expired": c(&d.expired), "outstanding": c(&d.outstanding),
        "carnets": d.carnets, "carnets_distributed": d.carnets_distributed, "carnets_started": d.carnets_started, "carnets_finished": d.carnets_finished,
    })
}

pub fn dashboard_text(d: &pb::Dashboard) -> String {
    let row = |name: &str, c: &Option<pb::Count>| {
        let c = c.unwrap_or_default();
        format!(
            "  {name:<12} {:>6} passes {:>14}\n",
            c.passes,
            crate::domain::Cents(c.cents).to_string()
        )
    };
    let mut s = format!(
        "order {} (commanditaire {})\n",
        d.order_id, d.commanditaire_id
    );
    for (n, c) in [
        ("issued", &d.issued),
        ("activated", &d.activated),
        ("redeemed", &d.redeemed),
        ("cancelled", &d.cancelled),
        ("expired", &d.expired),
        ("outstanding", &d.outstanding),
    ] {
        s.push_str(&row(n, c));
    }
    s.push_str(&format!(
        "  carnets      {} issued, {} handed out, {} started, {} finished\n",
        d.carnets, d.carnets_distributed, d.carnets_started, d.carnets_finished
    ));
    s
}
