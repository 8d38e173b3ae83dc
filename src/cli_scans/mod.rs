//! `passnum sync-scans FILE`: sends the scans a device made offline (a bus back from a
//! fortnight of villages, a library whose network was down) and says, scan by scan, what
//! the ledger answered. Each scan carries the request id the device gave it when it was
//! made, so a sync cut short is simply run again: what was answered is answered the same
//! way, and nothing is redeemed twice. A workshop held offline comes in the same file, one
//! row per pass (`session.rs`).

mod session;
pub use session::{group, Sending, Session, Workshop};

use crate::client::{CliError, Clients};
use crate::domain::{parse_instant, Timestamp};
use crate::opendata::{csv_field, records, FileError};
use crate::rpc::pb;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Scans in one file: a busy bus makes a few hundred a fortnight.
pub const SCANS_MAX: usize = 100_000;
/// Redemptions sent at once: enough to hide a slow link's round trips, and within the
/// server's queue.
pub const IN_FLIGHT_MAX: usize = 64;
/// Tries per scan while the server answers "later" (unavailable, queue full, budget spent).
const TRIES: u32 = 4;
/// A token that expires within this many days gets a warning at each sync: a bus syncs
/// every fortnight.
const TOKEN_WARNING_DAYS: i64 = 15;

/// The device's export: one scan per row, columns in any order; a workshop's rows add
/// `session::COLUMNS`.
pub const COLUMNS: [&str; 7] = [
    "request_id",
    "scanned_at",
    "code",
    "site_id",
    "stop",
    "insee",
    "service",
];

/// One scan as the device recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub line: u32,
    pub request_id: String,
    pub scanned_at: Timestamp,
    pub code: String,
    pub site_id: u64,
    pub stop: Option<u32>,
    pub insee: String,
    pub service: String,
    /// The workshop it was redeemed in, for a row of one.
    pub session: Option<Session>,
}

/// What became of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Redeemed {
        serial: String,
        redeemed_at_ms: i64,
        /// Redeemed by an earlier sync of this scan (see `earlier_sync`).
        earlier: bool,
    },
    /// The ledger refused it, for good: its reason is the machine-readable one.
    Refused { reason: String, message: String },
    /// The row could not be read; it was not sent.
    Invalid { message: String },
    /// No answer (server unreachable or busy): run the sync again.
    Unanswered { message: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub line: u32,
    pub request_id: String,
    pub answer: Answer,
}

/// Reads a device's export: the scans to send, and the rows that cannot be.
pub fn read(text: &str) -> Result<(Vec<Scan>, Vec<Row>), FileError> {
    let mut rows = records(text)?.into_iter();
    let header = rows.next().ok_or(FileError::Empty)?;
    let at = |name: &str| header.fields.iter().position(|f| f.trim() == name);
    let mut missing: Vec<&'static str> = COLUMNS
        .into_iter()
        .filter(|c| !matches!(*c, "stop" | "insee") && at(c).is_none())
        .collect();
    missing.sort();
    if !missing.is_empty() {
        return Err(FileError::MissingColumns(missing));
    }
    let columns: HashMap<&str, usize> = COLUMNS
        .iter()
        .chain(&session::COLUMNS)
        .filter_map(|&c| Some((c, at(c)?)))
        .collect();
    let (mut scans, mut invalid) = (vec![], vec![]);
    for r in rows {
        let get = |name: &str| {
            columns
                .get(name)
                .and_then(|&c| r.fields.get(c))
                .map_or("", |f| f.trim())
        };
        match scan(r.line, &get) {
            Ok(s) => scans.push(s),
            Err(message) => invalid.push(Row {
                line: r.line,
                request_id: get("request_id").to_owned(),
                answer: Answer::Invalid { message },
            }),
        }
    }
    Ok((scans, invalid))
}

fn scan<'r>(line: u32, get: &dyn Fn(&str) -> &'r str) -> Result<Scan, String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        match get(name) {
            "" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}: not a number")),
        }
    };
    let scanned_at = parse_instant(get("scanned_at")).map_err(|e| format!("scanned_at: {e}"))?;
    let site_id = number("site_id")?.ok_or("site_id: missing")?;
    let stop = match number("stop")? {
        Some(s) => Some(u32::try_from(s).map_err(|_| "stop: too large")?),
        None => None,
    };
    let service = get("service");
    let session = session::read(get, service)?;
    // A workshop's row is answered under its session's request id unless it has its own.
    let request_id = match (get("request_id"), &session) {
        ("", Some(s)) => s.id.clone(),
        (id, _) => id.to_owned(),
    };
    Ok(Scan {
        line,
        request_id,
        scanned_at,
        code: get("code").to_owned(),
        site_id,
        stop,
        insee: get("insee").to_owned(),
        service: service.to_owned(),
        session,
    })
}

impl Scan {
    fn request(&self) -> pb::RedeemRequest {
        pb::RedeemRequest {
            request_id: self.request_id.clone(),
            pass: Some(self.code()),
            site_id: self.site_id,
            place: Some(self.place()),
            service: self.service.clone(),
            scanned_at_ms: self.scanned_at.0,
        }
    }

    fn code(&self) -> pb::PassCode {
        pb::PassCode {
            form: Some(pb::pass_code::Form::Scanned(self.code.clone())),
        }
    }

    fn place(&self) -> pb::Place {
        pb::Place {
            stop: self.stop,
            insee_code: self.insee.clone(),
        }
    }
}

type RedemptionsClient = pb::redemptions_client::RedemptionsClient<crate::client::Svc>;

/// Sends every scan and every workshop, `in_flight` requests at a time, and returns one
/// row per scan, in file order, with the rows that could not be sent.
pub async fn sync(c: &Clients, scans: Vec<Scan>, in_flight: usize) -> Vec<Row> {
    let (sendings, mut rows) = session::group(scans);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(
        in_flight.clamp(1, IN_FLIGHT_MAX),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for sending in sendings {
        let (client, gate) = (c.redemptions.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            send(client, sending).await
        });
    }
    rows.extend(tasks.join_all().await.into_iter().flatten());
    rows.sort_by_key(|r| r.line);
    rows
}

async fn send(client: RedemptionsClient, sending: Sending) -> Vec<Row> {
    match sending {
        Sending::Scan(s) => {
            let answer = match tried(|| redeem(client.clone(), s.request())).await {
                Ok(r) => Answer::Redeemed {
                    serial: r.serial,
                    redeemed_at_ms: r.redeemed_at_ms,
                    earlier: false,
                },
                Err(status) => earlier_sync(&status, &s).unwrap_or_else(|| answer_of(&status)),
            };
            vec![Row {
                line: s.line,
                request_id: s.request_id,
                answer,
            }]
        }
        Sending::Workshop(w) => {
            let reply = tried(|| redeem_workshop(client.clone(), w.request())).await;
            w.answers(reply)
        }
    }
}

async fn redeem(
    mut c: RedemptionsClient,
    r: pb::RedeemRequest,
) -> Result<pb::RedeemResponse, Status> {
    c.redeem(r).await.map(tonic::Response::into_inner)
}

async fn redeem_workshop(
    mut c: RedemptionsClient,
    r: pb::RedeemWorkshopRequest,
) -> Result<pb::RedeemWorkshopResponse, Status> {
    c.redeem_workshop(r).await.map(tonic::Response::into_inner)
}

/// Sends a request until it is answered: at most `TRIES` times while the server says
/// "later", waiting twice as long each time.
async fn tried<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut wait = Duration::from_millis(250);
    let mut try_ = 1;
    loop {
        match call().await {
            Err(status) if answers_later(&status) && try_ < TRIES => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                try_ += 1;
            }
            answered => return answered,
        }
    }
}

/// A scan the ledger already holds: the pass was redeemed at this scan's site, at this scan's
/// time to the millisecond, so that redemption is this scan's, made by an earlier sync. The
/// request ids of a sync are scoped to its token, so a file sent again after the device got
/// a new token (the old one expired, or another tablet of the site sends it) gets
/// `ALREADY_REDEEMED` for what was redeemed: the evidence that refusal carries tells them
/// apart. A scan whose time was ahead of the server's, taken as then, stays a refusal.
fn earlier_sync(status: &Status, s: &Scan) -> Option<Answer> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    ours(&info.reason, &info.metadata, s.scanned_at, s.site_id).then(|| Answer::Redeemed {
        // The server checked the code when it redeemed the pass.
        serial: crate::code::named_serial(&s.code).map_or_else(String::new, |s| s.to_string()),
        redeemed_at_ms: s.scanned_at.0,
        earlier: true,
    })
}

/// Whether a refusal is the evidence of a redemption made at `site`, dated `at` to the
/// millisecond: this scan's or this session's own.
fn ours(reason: &str, evidence: &HashMap<String, String>, at: Timestamp, site: u64) -> bool {
    let number = |key: &str| evidence.get(key).and_then(|v| v.parse::<i64>().ok());
    reason == "ALREADY_REDEEMED"
        && number("redeemed_at_ms") == Some(at.0)
        && number("site") == i64::try_from(site).ok()
}

/// The server could not answer now: the same request later may get its answer. A limit
/// exceeded (a session with more passes than a workshop may have) never will.
fn answers_later(status: &Status) -> bool {
    let later = matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled
    );
    later
        && status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.as_str())
            != Some("LIMIT_EXCEEDED")
}

fn answer_of(status: &Status) -> Answer {
    let message = crate::client::describe(status);
    if answers_later(status) || status.code() == Code::Unauthenticated {
        return Answer::Unanswered { message };
    }
    let reason = status
        .get_error_details()
        .error_info()
        .map_or_else(|| format!("{:?}", status.code()), |i| i.reason.clone());
    Answer::Refused {
        reason,
        message: status.message().to_owned(),
    }
}

/// Counts per answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub redeemed: usize,
    /// Of those, redeemed by an earlier sync of the same scan.
    pub earlier: usize,
    pub refused: usize,
    pub invalid: usize,
    pub unanswered: usize,
}

pub fn tally(rows: &[Row]) -> Tally {
    let mut t = Tally::default();
    for r in rows {
        match r.answer {
            Answer::Redeemed { earlier, .. } => {
                t.redeemed += 1;
                t.earlier += usize::from(earlier);
            }
            Answer::Refused { .. } => t.refused += 1,
            Answer::Invalid { .. } => t.invalid += 1,
            Answer::Unanswered { .. } => t.unanswered += 1,
        }
    }
    t
}

/// The results as CSV, in line order: what a site's manager opens in a spreadsheet.
pub fn results_csv(rows: &[Row]) -> String {
    let mut out = String::from("line,request_id,outcome,serial,redeemed_at_ms,reason,message\n");
    for r in rows {
        let (outcome, serial, at, reason, message) = match &r.answer {
            Answer::Redeemed {
                serial,
                redeemed_at_ms,
                earlier,
            } => (
                "redeemed",
                serial.as_str(),
                redeemed_at_ms.to_string(),
                "",
                if *earlier { "by an earlier sync" } else { "" },
            ),
            Answer::Refused { reason, message } => (
                "refused",
                "",
                String::new(),
                reason.as_str(),
                message.as_str(),
            ),
            Answer::Invalid { message } => (
                "invalid",
                "",
                String::new(),
                "INVALID_ROW",
                message.as_str(),
            ),
            Answer::Unanswered { message } => {
                ("unanswered", "", String::new(), "", message.as_str())
            }
        };
        let fields = [
            &r.line.to_string(),
            r.request_id.as_str(),
            outcome,
            serial,
            &at,
            reason,
            message,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// The whole command: reads `file`, sends its scans, writes the results to `out`.
pub async fn sync_file(
    c: &Clients,
    file: &std::path::Path,
    out: &std::path::Path,
    in_flight: usize,
) -> Result<Tally, CliError> {
    let failed = |e: String| CliError::Failed(format!("{}: {e}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| failed(e.to_string()))?;
    if meta.len() > 64 << 20 {
        return Err(failed("larger than 64 MiB: split it".into()));
    }
    let text = std::fs::read_to_string(file).map_err(|e| failed(e.to_string()))?;
    let (scans, mut rows) = read(&text).map_err(|e| failed(e.to_string()))?;
    if scans.len() > SCANS_MAX {
        return Err(failed(format!(
            "{} scans: at most {SCANS_MAX} per file",
            scans.len()
        )));
    }
    check_token(c).await?;
    rows.extend(sync(c, scans, in_flight).await);
    rows.sort_by_key(|r| r.line);
    std::fs::write(out, results_csv(&rows))
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    Ok(tally(&rows))
}

/// A token the server refuses (expired, revoked) would leave every scan unanswered: say so
/// once and send nothing. One close to its expiry gets a warning, so the device asks for a
/// new one in time. Other failures are left to each scan's own answer.
async fn check_token(c: &Clients) -> Result<(), CliError> {
    let mut registry = c.registry.clone();
    match registry
        .get_own_credential(pb::GetOwnCredentialRequest {})
        .await
    {
        Err(status) if status.code() == Code::Unauthenticated => Err(status.into()),
        Ok(own) if own.get_ref().expires_at_ms != 0 => {
            let at = own.get_ref().expires_at_ms;
            if at - crate::client::now_ms() < TOKEN_WARNING_DAYS * Timestamp::MS_PER_DAY {
                eprintln!(
                    "warning: this token expires at {}: ask the operator for a new one",
                    crate::client::instant(at)
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_export_is_read_row_by_row_and_a_bad_row_stops_nothing() {
        let text = "service,code,request_id,site_id,scanned_at,stop\n\
                    aide,C1,bus-1,2,2026-01-01T09:00:00+01:00,0\n\
                    aide,C2,bus-2,2,yesterday,1\n\
                    aide,C3,bus-3,,2026-01-01T08:00:00Z,\n\
                    aide,C4,bus-4,2,1767254400000,\n";
        let (scans, invalid) = read(text).unwrap();
        assert_eq!(scans.len(), 2);
        assert_eq!(scans[0].scanned_at, Timestamp(1_767_254_400_000));
        assert_eq!(scans[0].stop, Some(0));
        assert_eq!(scans[0].insee, "", "an optional column may be absent");
        assert_eq!((scans[1].line, scans[1].stop), (5, None));
        assert_eq!(invalid.len(), 2);
        assert_eq!(
            (invalid[0].line, invalid[0].request_id.as_str()),
            (3, "bus-2")
        );
        assert!(
            matches!(&invalid[1].answer, Answer::Invalid { message } if message.contains("site_id"))
        );
        let Err(FileError::MissingColumns(c)) = read("code,site_id\n") else {
            panic!()
        };
        assert_eq!(c, ["request_id", "scanned_at", "service"]);
    }

    #[test]
    fn an_earlier_sync_is_told_apart_by_the_refusals_evidence() {
        use crate::domain::{Refusal, Serial, SiteId};
        use crate::rpc::errors::refused;
        let serial = Serial::from_random(7);
        let text = format!(
            "request_id,scanned_at,code,site_id,service\n\
             bus-1,1767254400000,PN1:{}:ABCDE,2,aide\n",
            serial.compact()
        );
        let scan = read(&text).unwrap().0.remove(0);
        let at = scan.scanned_at;
        let ours = Refusal::AlreadyRedeemed {
            at,
            site: SiteId(2),
        };
        assert_eq!(
            earlier_sync(&refused(&ours), &scan),
            Some(Answer::Redeemed {
                serial: serial.to_string(),
                redeemed_at_ms: at.0,
                earlier: true,
            })
        );
        let elsewhere = Refusal::AlreadyRedeemed {
            at,
            site: SiteId(1),
        };
        let other_time = Refusal::AlreadyRedeemed {
            at: Timestamp(at.0 + 1),
            site: SiteId(2),
        };
        for other in [elsewhere, other_time, Refusal::OutsidePerimeter] {
            assert_eq!(earlier_sync(&refused(&other), &scan), None, "{other:?}");
        }
    }

    #[test]
    fn a_limit_exceeded_is_not_tried_again_a_full_queue_is() {
        use crate::rpc::errors::limit;
        assert!(!answers_later(&limit("workshop_passes", 200, 201)));
        assert!(answers_later(&Status::resource_exhausted("queue full")));
        assert!(answers_later(&Status::unavailable("reopening")));
        assert!(!answers_later(&Status::invalid_argument("date")));
    }

    #[test]
    fn results_are_one_csv_line_per_row_with_quoted_messages() {
        let rows = [
            Row {
                line: 2,
                request_id: "a".into(),
                answer: Answer::Redeemed {
                    serial: "S1".into(),
                    redeemed_at_ms: 5,
                    earlier: false,
                },
            },
            Row {
                line: 3,
                request_id: "b".into(),
                answer: Answer::Refused {
                    reason: "ALREADY_REDEEMED".into(),
                    message: "at 5 ms, at site 1".into(),
                },
            },
        ];
        assert_eq!(
            results_csv(&rows),
            "line,request_id,outcome,serial,redeemed_at_ms,reason,message\n\
             2,a,redeemed,S1,5,,\n\
             3,b,refused,,,ALREADY_REDEEMED,\"at 5 ms, at site 1\"\n"
        );
        assert_eq!(
            tally(&rows),
            Tally {
                redeemed: 1,
                refused: 1,
                ..Tally::default()
            }
        );
    }
}
