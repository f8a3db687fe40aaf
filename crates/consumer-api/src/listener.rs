//! The API's TCP listener, with bounds `axum::serve` does not have: at most
//! `max_connections` open at once (past it, new connections wait in the kernel's accept
//! queue instead of each costing buffers here), a write timeout that closes a
//! connection whose client stopped reading, so its response body (and the bytes it
//! holds in the [`crate::budget`]) are freed instead of pinned forever, and an idle
//! timeout that closes a connection on which nothing was read or written for that long.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::serve::Listener;
use prometheus::IntGauge;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

/// A [`TcpListener`] that caps open connections and times out stalled writes and idle
/// connections.
pub struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    write_timeout: Duration,
    idle_timeout: Duration,
    open: IntGauge,
}

impl BoundedListener {
    /// Wraps `inner`; `open` reports the connections open.
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        write_timeout: Duration,
        idle_timeout: Duration,
        open: IntGauge,
    ) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            write_timeout,
            idle_timeout,
            open,
        }
    }
}

impl Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, SocketAddr) {
        // A slot first: while none is free, connections stay in the accept queue.
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        self.open.inc();
        (
            BoundedStream {
                stream,
                write_timeout: self.write_timeout,
                stalled: None,
                idle_timeout: self.idle_timeout,
                idle: None,
                _slot: Slot(slot, self.open.clone()),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection's slot: freed, and the gauge lowered, when the connection is dropped.
struct Slot(
    #[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit,
    IntGauge,
);

impl Drop for Slot {
    fn drop(&mut self) {
        self.1.dec();
    }
}

/// An accepted connection whose writes fail with `TimedOut` once they have made no
/// progress for the write timeout, and whose reads fail so once nothing has moved either
/// way for the idle timeout.
pub struct BoundedStream {
    stream: TcpStream,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

impl BoundedStream {
    /// `Pending` from the socket starts (or continues) the stall clock; any progress
    /// stops it; a stall as long as the write timeout is an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            self.idle = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading: write timed out",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if poll.is_ready() {
            self.idle = None;
            return poll;
        }
        let timeout = self.idle_timeout;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle: nothing read or written within the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
