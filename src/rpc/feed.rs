//! The bounded queue between a long read on a blocking thread (a log page, an export) and
//! its response stream.
//!
//! A reader that does not keep up holds the read back, for at most `Limits::reader_stall_ms`
//! at a time: then the read gives up and frees its reader slot, and the stream ends with
//! `ABORTED` `READER_STALLED` after what was queued. So a reader that stops reading cannot
//! hold a slot for ever, and one that comes back learns that its answer was cut: a short
//! export is never taken for a whole one.

use super::errors;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// The read's end of the queue.
pub struct Feed<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    /// How the stream ends once the queue is read out, if not well.
    end: Option<oneshot::Sender<Status>>,
    stall: Duration,
    runtime: tokio::runtime::Handle,
}

/// The reader is gone, or stalled past the limit: the read stops.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped;

/// A queue of `depth` items; the read gives up after `stall` without room. Call from the
/// runtime: the feed goes to a blocking thread, the stream to the response.
pub fn feed<T: Send + 'static>(depth: usize, stall: Duration) -> (Feed<T>, FeedStream<T>) {
    let (tx, rx) = mpsc::channel(depth);
    let (end_tx, end_rx) = oneshot::channel();
    let feed = Feed {
        tx,
        end: Some(end_tx),
        stall,
        runtime: tokio::runtime::Handle::current(),
    };
    (
        feed,
        FeedStream {
            rx,
            end: Some(end_rx),
        },
    )
}

impl<T: Send + 'static> Feed<T> {
    /// Queues `item`, waiting for room at most the stall limit. Blocks: call it from a
    /// blocking thread.
    pub fn send(&mut self, item: T) -> Result<(), Stopped> {
        let item = match self.tx.try_send(Ok(item)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stopped),
            Err(mpsc::error::TrySendError::Full(item)) => item,
        };
        let waited = tokio::time::timeout(self.stall, self.tx.send(item));
        match self.runtime.block_on(waited) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stopped),
            Err(_) => {
                self.end_with(errors::reader_stalled(self.stall));
                Err(Stopped)
            }
        }
    }

    /// Ends the stream with `status`, after what is queued. Never waits.
    pub fn fail(mut self, status: Status) {
        self.end_with(status);
    }

    fn end_with(&mut self, status: Status) {
        if let Some(end) = self.end.take() {
            // The stream may be gone already: then nobody is told, as nobody listens.
            let _ = end.send(status);
        }
    }
}

/// The response's end: the queued items, then the status the read ended with, if any.
pub struct FeedStream<T> {
    rx: mpsc::Receiver<Result<T, Status>>,
    end: Option<oneshot::Receiver<Status>>,
}

impl<T> tokio_stream::Stream for FeedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(item) = ready!(self.rx.poll_recv(cx)) {
            return Poll::Ready(Some(item));
        }
        // The queue is read out and the feed dropped: the read is over.
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(ended.ok().map(Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    const STALL: Duration = Duration::from_millis(50);

    /// Runs `read` on a blocking thread with the feed, as a long read does.
    fn reading(
        depth: usize,
        read: impl FnOnce(Feed<u32>) + Send + 'static,
    ) -> (FeedStream<u32>, tokio::task::JoinHandle<()>) {
        let (feed, stream) = feed(depth, STALL);
        (stream, tokio::task::spawn_blocking(move || read(feed)))
    }

    fn reason(status: &Status) -> String {
        use tonic_types::StatusExt;
        status
            .get_error_details()
            .error_info()
            .unwrap()
            .reason
            .clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_keeps_up_gets_every_item_then_the_end() {
        let (stream, read) = reading(2, |mut feed| {
            for i in 0..100 {
                feed.send(i).unwrap();
            }
        });
        let got: Vec<u32> = stream.map(Result::unwrap).collect().await;
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        read.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_reader_is_given_up_on_and_told_after_what_was_queued() {
        let (mut stream, read) = reading(2, |mut feed| {
            let sent: Vec<_> = (0..5).map(|i| feed.send(i)).collect();
            assert_eq!(
                sent,
                [Ok(()), Ok(()), Err(Stopped), Err(Stopped), Err(Stopped)]
            );
        });
        // The read ends on its own while nobody reads.
        tokio::time::timeout(STALL * 20, read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 0);
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        let cut = stream.next().await.unwrap().unwrap_err();
        assert_eq!(cut.code(), tonic::Code::Aborted);
        assert_eq!(reason(&cut), "READER_STALLED");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_ends_with_its_status_without_waiting_for_room() {
        let (mut stream, read) = reading(1, |mut feed| {
            feed.send(7).unwrap();
            feed.fail(Status::data_loss("record 3 is damaged"));
        });
        tokio::time::timeout(STALL / 2, read)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 7);
        let failed = stream.next().await.unwrap().unwrap_err();
        assert_eq!(failed.code(), tonic::Code::DataLoss);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_gone_stops_the_read_at_once() {
        let (stream, read) = reading(1, |mut feed| {
            std::thread::sleep(STALL);
            let started = std::time::Instant::now();
            assert_eq!(feed.send(1), Err(Stopped));
            assert!(
                started.elapsed() < STALL,
                "no wait for room nobody will make"
            );
        });
        drop(stream);
        read.await.unwrap();
    }
}
