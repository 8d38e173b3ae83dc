//! What every service handler shares: the engine handle, the index to read, the keyring,
//! the limits. `submit` is the one path from a validated request to the writer.

use super::auth::{self, Principal};
use super::budget::RefusalBudget;
use super::{convert, errors, pb};
use crate::code::Keyring;
use crate::config::Limits;
use crate::domain::*;
use crate::engine::{read_state, Clock, EngineHandle, SharedState};
use std::path::PathBuf;
use std::sync::RwLockReadGuard;
use tonic::Status;

pub struct Ctx {
    pub engine: EngineHandle,
    /// The state as of the last durable batch: every read is served from it.
    pub state: SharedState,
    pub keys: Keyring,
    /// Signs the heads the server states (`GetHead`, a reconciliation's).
    pub head_key: crate::signed_head::HeadSigner,
    pub limits: Limits,
    pub log_path: PathBuf,
    pub clock: Clock,
    pub refusals: RefusalBudget,
    /// One permit per long read running (`Limits::readers_max`).
    pub readers: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Ctx {
    /// The head at `seq`, signed now by the operator's head key.
    pub fn signed_head(&self, seq: u64, hash: [u8; 32]) -> pb::Head {
        let statement = crate::signed_head::HeadStatement {
            seq,
            hash,
            at_ms: (self.clock)().0,
        };
        pb::Head {
            seq,
            hash: crate::code::hex(&hash),
            at_ms: statement.at_ms,
            public_key: crate::code::hex(&self.head_key.public_key()),
            signature: crate::code::hex(&self.head_key.sign(&statement)),
        }
    }

    pub fn auth<T: prost::Message>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Principal, Status> {
        let principal = auth::authenticate(&self.engine.directory(), request, (self.clock)())?;
        let len = request.get_ref().encoded_len();
        if len > self.limits.request_bytes_max {
            return Err(errors::limit(
                "request_bytes",
                self.limits.request_bytes_max,
                len,
            ));
        }
        Ok(principal)
    }

    /// Sends a command to the writer under the caller's request id; a refusal becomes its
    /// status. The fingerprint covers the method and the whole request message.
    pub async fn submit<M: prost::Message>(
        &self,
        who: &Principal,
        method: &str,
        request_id: &str,
        message: &M,
        command: Command,
    ) -> Result<Outcome, Status> {
        self.within_budget(who)?;
        let key = request_key(who, method, request_id, message)?;
        let answer = self
            .submit_envelope(Envelope {
                request: Some(key),
                command,
            })
            .await?;
        let refused = match &answer {
            Err(_) => 1,
            Ok(Outcome::Workshop { passes, .. }) => passes.iter().filter(|p| p.is_err()).count(),
            Ok(_) => 0,
        };
        self.spend(who, refused as u32);
        answer.map_err(|r| errors::refused(&r))
    }

    /// A pass's code, checked with the keyring once the caller's budget allows it: a code
    /// that fails its MAC (a guess, or a mistyped tag) spends from the budget. A mistyped
    /// serial is caught by its check character and spends nothing.
    pub fn pass_code(
        &self,
        who: &Principal,
        field: &str,
        code: Option<&pb::PassCode>,
    ) -> Result<Serial, Status> {
        self.within_budget(who)?;
        convert::checked_code(&self.keys, field, code)?.map_err(|e| {
            if e.is_guess() {
                self.spend(who, 1);
            }
            errors::code(field, &e)
        })
    }

    fn within_budget(&self, who: &Principal) -> Result<(), Status> {
        if matches!(who.role, Role::Operator) {
            return Ok(());
        }
        let now = (self.clock)().0;
        self.refusals
            .check(&who.scope, now)
            .map_err(errors::budget_spent)
    }

    fn spend(&self, who: &Principal, refusals: u32) {
        if refusals > 0 && !matches!(who.role, Role::Operator) {
            self.refusals.spend(&who.scope, (self.clock)().0, refusals);
        }
    }

    /// The one path to the writer: its failures become statuses, the command's answer
    /// is the caller's to read.
    async fn submit_envelope(
        &self,
        envelope: Envelope,
    ) -> Result<Result<Outcome, Refusal>, Status> {
        self.engine.submit(envelope).await.map_err(errors::engine)
    }

    /// Waits until everything applied so far is durable: a pure read calls it after
    /// reading and before replying, so no reply shows what a crash could still undo (the
    /// state may run a few batches ahead of the disk while they are synced).
    pub async fn settle(&self) -> Result<(), Status> {
        let seq = self.read()?.seq;
        self.engine.wait_durable(seq).await.map_err(errors::engine)
    }

    pub fn read(&self) -> Result<RwLockReadGuard<'_, State>, Status> {
        read_state(&self.state).map_err(errors::engine)
    }
    pub fn order(&self, id: OrderId) -> Result<Order, Status> {
        self.read()?
            .orders
            .get(&id)
            .cloned()
            .ok_or_else(|| errors::refused(&Refusal::UnknownOrder(id)))
    }
    pub fn site(&self, id: SiteId) -> Result<Site, Status> {
        self.read()?
            .sites
            .get(&id)
            .cloned()
            .ok_or_else(|| errors::refused(&Refusal::UnknownSite(id)))
    }
    pub fn pass(&self, serial: Serial) -> Result<Pass, Status> {
        self.read()?
            .passes
            .get(&serial)
            .cloned()
            .ok_or_else(|| errors::refused(&Refusal::UnknownPass(serial)))
    }
}

fn request_key<M: prost::Message>(
    who: &Principal,
    method: &str,
    id: &str,
    message: &M,
) -> Result<RequestKey, Status> {
    let ok = !id.is_empty()
        && id.len() <= RequestKey::ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        let mut v = errors::Violations::default();
        v.add("request_id", "1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':' (a fresh UUID per action is best)");
        v.into_result()?;
    }
    let mut h = blake3::Hasher::new();
    h.update(method.as_bytes());
    h.update(&[0]);
    h.update(&message.encode_to_vec());
    Ok(RequestKey {
        scope: who.scope.clone(),
        id: id.to_owned(),
        fingerprint: *h.finalize().as_bytes(),
    })
}

impl Ctx {
    /// A command the server itself issues (the expiry sweep): no request id to remember.
    pub async fn submit_unkeyed(&self, command: Command) -> Result<Outcome, Status> {
        self.submit_envelope(Envelope {
            request: None,
            command,
        })
        .await?
        .map_err(|r| errors::refused(&r))
    }

    /// Runs the expiry sweep until no order is left to sweep, then forgets the requests of
    /// credentials refused for good (`domain::retention`).
    pub async fn sweep(&self) -> Result<Swept, Status> {
        let mut swept = Swept::default();
        loop {
            match self.submit_unkeyed(Command::ExpireSweep).await? {
                Outcome::Expired { passes: 0, .. } => break,
                Outcome::Expired { passes, credited } => {
                    swept.passes += passes;
                    swept.cents += credited.0;
                }
                o => return Err(errors::unexpected(o)),
            }
        }
        match self.submit_unkeyed(Command::ForgetRequests).await? {
            Outcome::RequestsForgotten { credentials } => swept.credentials_forgotten = credentials,
            o => return Err(errors::unexpected(o)),
        }
        swept.requests_remembered = self.read()?.requests.len() as u64;
        self.settle().await?;
        Ok(swept)
    }
}

/// What a sweep did, and the remembered requests it left.
#[derive(Clone, Copy, Debug, Default)]
pub struct Swept {
    pub passes: u32,
    pub cents: i64,
    pub credentials_forgotten: u32,
    pub requests_remembered: u64,
}

/// A server-streamed file.
pub type ChunkStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<super::pb::Chunk, Status>> + Send>>;

impl Ctx {
    /// Streams an export: a blocking task writes it part by part, each part under a short
    /// read lock, into a bounded queue of chunks (`rpc::feed`). A slow reader holds the
    /// task back, a reader gone or stalled stops it, and the file is never whole in memory.
    pub fn stream_export(
        &self,
        mut export: Box<dyn crate::export::Export>,
    ) -> Result<ChunkStream, Status> {
        let permit = self.reader_permit()?;
        let (mut feed, stream) = super::feed::feed(self.limits.export_queue_chunks, self.stall());
        let state = self.state.clone();
        let chunk = self.limits.export_chunk_bytes;
        let (engine, runtime) = (self.engine.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut buf = Vec::with_capacity(chunk);
            loop {
                // The state only moves forward: the chunk leaves once what its last part
                // read is durable.
                let (more, read_up_to) = match read_state(&state) {
                    Ok(st) => (export.next(&st, &mut buf), st.seq),
                    Err(e) => return feed.fail(errors::engine(e)),
                };
                if buf.len() >= chunk || !more {
                    if let Err(e) = runtime.block_on(engine.wait_durable(read_up_to)) {
                        return feed.fail(errors::engine(e));
                    }
                    let data = std::mem::replace(&mut buf, Vec::with_capacity(chunk));
                    if feed.send(super::pb::Chunk { data }).is_err() {
                        return;
                    }
                }
                if !more {
                    return;
                }
            }
        });
        Ok(Box::pin(stream))
    }

    /// How long a long read waits for its reader (`rpc::feed`).
    pub fn stall(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.limits.reader_stall_ms)
    }

    /// A slot for a long read (a log page, a verification, an export), held until it ends.
    pub fn reader_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let busy = || errors::readers_busy(self.limits.readers_max);
        self.readers.clone().try_acquire_owned().map_err(|_| busy())
    }

    /// Streams bytes already made (a PDF), in export-sized chunks.
    pub fn stream_bytes(&self, bytes: Vec<u8>) -> ChunkStream {
        let chunks: Vec<Result<super::pb::Chunk, Status>> = bytes
            .chunks(self.limits.export_chunk_bytes)
            .map(|c| Ok(super::pb::Chunk { data: c.to_vec() }))
            .collect();
        Box::pin(tokio_stream::iter(chunks))
    }
}
