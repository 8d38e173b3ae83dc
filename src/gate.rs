//! Connections open at once, bounded. Each one holds buffers and a task, and a client that
//! opens them without end would otherwise take the server's memory and descriptors. Past the
//! bound a new connection is closed at once (its client sees UNAVAILABLE and retries);
//! the ones open are not touched. A connection's place is freed when it ends, including
//! when HTTP/2 keepalive finds its peer gone (a bus that drove out of coverage).
//!
//! At shutdown, the connections still open after the grace period are closed (`Closer`):
//! their reads see the end and their writes fail, so the HTTP/2 connection ends even when
//! its peer holds a stream open without reading it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// A connection that holds one of the gate's places while it is open.
pub struct Counted<IO> {
    io: IO,
    _place: OwnedSemaphorePermit,
    /// Ready once the gate's connections are closed; polled with every read and write,
    /// so that closing wakes a connection waiting on its peer.
    close: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    closed: bool,
}

/// Closes every connection the gate let through, when it is dropped or told to.
pub struct Closer(watch::Sender<bool>);

impl Closer {
    pub fn close_all(&self) {
        self.0.send_replace(true);
    }
}

/// Lets through the connections of `incoming` while fewer than `max` are open; the
/// `Closer` closes those open.
pub fn bounded<IO, S>(
    incoming: S,
    max: usize,
) -> (impl Stream<Item = std::io::Result<Counted<IO>>>, Closer)
where
    S: Stream<Item = std::io::Result<IO>>,
{
    let places = Arc::new(Semaphore::new(max));
    let (closer, closing) = watch::channel(false);
    let stream = incoming.filter_map(move |accepted| match accepted {
        Ok(io) => match places.clone().try_acquire_owned() {
            Ok(place) => Some(Ok(Counted {
                io,
                _place: place,
                close: Box::pin(closed(closing.clone())),
                closed: false,
            })),
            Err(_) => {
                tracing::warn!(max, "connection refused: the server has its most open");
                None
            }
        },
        // An accept that failed (out of descriptors, say) is tonic's to log and survive.
        Err(e) => Some(Err(e)),
    });
    (stream, Closer(closer))
}

/// Resolves when the connections are to close: told so, or the closer gone.
async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|close| *close).await;
}

impl<IO> Counted<IO> {
    /// Whether the connection is closed; registers the task to be woken when it is.
    fn closing(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.close.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

fn shut() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "closed by the server's shutdown",
    )
}

impl<IO: Connected> Connected for Counted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.closing(cx) {
            return Poll::Ready(Ok(())); // the end of the stream
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.closing(cx) {
            return Poll::Ready(Err(shut()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.closing(cx) {
            return Poll::Ready(Err(shut()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
