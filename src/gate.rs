//! Connections open at once, bounded. Each one holds buffers and a task, and a client that
//! opens them without end would otherwise take the server's memory and descriptors. Past the
//! bound a new connection is closed at once (its client sees UNAVAILABLE and retries);
//! the ones open are not touched. A connection's place is freed when it ends, including
//! when HTTP/2 keepalive finds its peer gone (a bus that drove out of coverage).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// A connection that holds one of the gate's places while it is open.
pub struct Counted<IO> {
    io: IO,
    _place: OwnedSemaphorePermit,
}

/// Lets through the connections of `incoming` while fewer than `max` are open.
pub fn bounded<IO, S>(incoming: S, max: usize) -> impl Stream<Item = std::io::Result<Counted<IO>>>
where
    S: Stream<Item = std::io::Result<IO>>,
{
    let places = Arc::new(Semaphore::new(max));
    incoming.filter_map(move |accepted| match accepted {
        Ok(io) => match places.clone().try_acquire_owned() {
            Ok(place) => Some(Ok(Counted { io, _place: place })),
            Err(_) => {
                tracing::warn!(max, "connection refused: the server has its most open");
                None
            }
        },
        // An accept that failed (out of descriptors, say) is tonic's to log and survive.
        Err(e) => Some(Err(e)),
    })
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
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
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
