//! The one table that maps refusals and failures to gRPC status codes and machine-readable
//! reasons (google.rpc.ErrorInfo), with field violations (google.rpc.BadRequest).

use crate::code::CodeError;
use crate::domain::Refusal;
use crate::engine::EngineError;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "passnum";

pub fn refusal_code(r: &Refusal) -> Code {
    use Refusal::*;
    match r {
        RequestIdReused | PayeeAlreadyRegistered | CredentialExists => Code::AlreadyExists,
        UnknownCredential => Code::NotFound,
        CredentialRevoked => Code::FailedPrecondition,
        UnknownCommanditaire(_)
        | UnknownStructure(_)
        | UnknownSite(_)
        | UnknownOrder(_)
        | UnknownPass(_)
        | UnknownStop { .. }
        | UnknownCarnet { .. } => Code::NotFound,
        PlaceDoesNotFitSite
        | EmptyPerimeter
        | ValidityWindowInverted
        | CarnetSizeInvalid
        | MintCountMismatch { .. } => Code::InvalidArgument,
        SerialCollision(_) => Code::Aborted,
        RecordTooLarge { .. } => Code::ResourceExhausted,
        UnknownSettlement(_) => Code::NotFound,
        CutOffInFuture { .. } => Code::InvalidArgument,
        SettlementNotOpen(_) | AlreadySettled(_) => Code::FailedPrecondition,
        PaymentAmountMismatch { .. } => Code::InvalidArgument,
        NotSettled(_) => Code::FailedPrecondition,
        NotMinted
        | AlreadyFunded
        | FundingMismatch { .. }
        | AlreadyDistributed { .. }
        | NotActivated
        | Cancelled
        | Expired { .. }
        | NotYetValid { .. }
        | AlreadyRedeemed { .. }
        | SiteInactive(_)
        | OutsidePerimeter
        | ServiceNotAllowed
        | NotRedeemed
        | WrongSite { .. }
        | ReversalWindowClosed { .. }
        | NotCancellable
        | ScanTooOld { .. }
        | CreditExceeded { .. } => Code::FailedPrecondition,
        ScanInFuture { .. } | CredentialLifetimeOutOfRange { .. } => Code::InvalidArgument,
    }
}

pub fn status(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: Vec<(&str, String)>,
) -> Status {
    let meta: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let details = ErrorDetails::with_error_info(reason, DOMAIN, meta);
    Status::with_error_details(code, message, details)
}

/// The engine answered a command with another command's outcome: a bug, logged.
pub fn unexpected(o: crate::domain::Outcome) -> Status {
    tracing::error!(
        ?o,
        "the engine answered with another outcome than the command's"
    );
    Status::internal("unexpected outcome")
}

pub fn refused(r: &Refusal) -> Status {
    status(refusal_code(r), r.reason(), r.to_string(), r.metadata())
}

pub fn engine(e: EngineError) -> Status {
    match e {
        EngineError::Overloaded => status(
            Code::ResourceExhausted,
            "WRITER_QUEUE_FULL",
            e.to_string(),
            vec![],
        ),
        EngineError::Stopped => status(Code::Unavailable, "WRITER_STOPPED", e.to_string(), vec![]),
        EngineError::StorageFailed { disk_full: true } => {
            status(Code::Unavailable, "DISK_FULL", e.to_string(), vec![])
        }
        EngineError::StorageFailed { disk_full: false } => {
            status(Code::Unavailable, "STORAGE_FAILED", e.to_string(), vec![])
        }
    }
}

pub fn code(field: &str, e: &CodeError) -> Status {
    let mut details = ErrorDetails::with_error_info(e.reason(), DOMAIN, HashMap::new());
    details.add_bad_request_violation(field, e.to_string());
    Status::with_error_details(Code::InvalidArgument, e.to_string(), details)
}

pub fn limit(what: &str, max: usize, got: usize) -> Status {
    status(
        Code::ResourceExhausted,
        "LIMIT_EXCEEDED",
        format!("{what}: at most {max}, got {got}"),
        vec![
            ("limit", what.to_owned()),
            ("max", max.to_string()),
            ("got", got.to_string()),
        ],
    )
}

/// Every reader slot is taken (`Limits::readers_max`): try again shortly.
pub fn readers_busy(max: usize) -> Status {
    let meta = HashMap::from([("max".to_owned(), max.to_string())]);
    let mut details = ErrorDetails::with_error_info("READERS_BUSY", DOMAIN, meta);
    details.set_retry_info(Some(std::time::Duration::from_secs(1)));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{max} log pages, verifications and exports are running: try again shortly"),
        details,
    )
}

/// The reader of a long read left its queue full for `stall` (`rpc::feed`): the read
/// stopped there, and freed its reader slot.
pub fn reader_stalled(stall: std::time::Duration) -> Status {
    let ms = stall.as_millis();
    let meta = HashMap::from([("stall_ms".to_owned(), ms.to_string())]);
    let details = ErrorDetails::with_error_info("READER_STALLED", DOMAIN, meta);
    Status::with_error_details(
        Code::Aborted,
        format!(
            "nothing was read for {ms} ms: the answer stops here, after what was sent \
             (a log page: ask again from the next record)"
        ),
        details,
    )
}

/// The caller's credential has earned too many refusals (`rpc::budget`).
pub fn budget_spent(retry_after_ms: i64) -> Status {
    let wait = std::time::Duration::from_millis(retry_after_ms.max(0) as u64);
    let meta = HashMap::from([("retry_after_ms".to_owned(), retry_after_ms.to_string())]);
    let mut details = ErrorDetails::with_error_info("REFUSAL_BUDGET_SPENT", DOMAIN, meta);
    details.set_retry_info(Some(wait));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "this credential has had too many refusals (codes that fail their check, refused \
             commands): try again in {} s",
            (retry_after_ms.max(1) as u64).div_ceil(1000)
        ),
        details,
    )
}

pub fn unauthenticated(reason: &str, message: &str) -> Status {
    status(Code::Unauthenticated, reason, message, vec![])
}

pub fn denied(message: impl Into<String>) -> Status {
    status(Code::PermissionDenied, "OUT_OF_SCOPE", message, vec![])
}

/// Collects every invalid field of a request, so one answer names them all.
#[derive(Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    /// Keeps a parsed value, or records why its field is invalid.
    pub fn check<T, E: std::fmt::Display>(&mut self, field: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.0.push((field.to_owned(), e.to_string())))
            .ok()
    }
    pub fn add(&mut self, field: &str, why: impl Into<String>) {
        self.0.push((field.to_owned(), why.into()));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(f, w)| format!("{f}: {w}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::with_error_info("INVALID_FIELDS", DOMAIN, HashMap::new());
        for (f, w) in self.0 {
            details.add_bad_request_violation(f, w);
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            message,
            details,
        ))
    }
}
