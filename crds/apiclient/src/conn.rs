//! Connections the watchdog can see (any data received) and drop (all at once).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::{BoxError, Service};

/// Shared by every connection of one client: when data last arrived, and the switch that
/// fails them all.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` of the last read that returned data (or EOF).
    last_read_ms: AtomicU64,
    /// Cancelled by [`Liveness::reset_all`]; replaced by a fresh one for later connections.
    token: Mutex<CancellationToken>,
    resets: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            token: Mutex::new(CancellationToken::new()),
            resets: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// A fresh one, counting as "data just arrived".
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Note that a connection delivered something.
    pub fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When a connection last delivered something (or when this was created).
    pub fn last_activity(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }

    /// Fail every connection and connect attempt made so far: their reads and writes return
    /// `ConnectionAborted`. Later connections are not affected.
    pub fn reset_all(&self) {
        let old = {
            let mut t = self.token.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *t)
        };
        old.cancel();
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times [`Liveness::reset_all`] ran.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    fn token(&self) -> CancellationToken {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "API connection dropped: the API server stopped answering",
    )
}

/// A connection that reports data received to its [`Liveness`] and fails once that is reset.
pub struct Tracked<T> {
    inner: T,
    live: Arc<Liveness>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> std::fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}

impl<T> Tracked<T> {
    /// Wraps `inner`; it fails once `token` is cancelled.
    pub fn new(inner: T, live: Arc<Liveness>, token: CancellationToken) -> Self {
        Self {
            inner,
            live,
            cancelled: Box::pin(token.cancelled_owned()),
        }
    }

    /// Ready(error) once reset; else registers the waker for the reset.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.cancelled.as_mut().poll(cx).is_ready().then(aborted)
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_reset(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Data or EOF: either way the peer is there. A silent peer never gets here.
        if matches!(r, Poll::Ready(Ok(()))) {
            this.live.touch();
        }
        r
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_reset(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_reset(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.poll_reset(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// Wraps the connections of connector `C` in [`Tracked`]; a reset also fails the connect
/// attempts under way (a SYN into a blackhole, a TLS handshake nobody answers).
#[derive(Debug, Clone)]
pub struct TrackedConnector<C> {
    inner: C,
    live: Arc<Liveness>,
}

impl<C> TrackedConnector<C> {
    /// Wraps `inner`, reporting to `live`.
    pub fn new(inner: C, live: Arc<Liveness>) -> Self {
        Self { inner, live }
    }
}

impl<C> Service<Uri> for TrackedConnector<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Tracked<C::Response>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| io::Error::other(e.into()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let token = self.live.token();
        let live = self.live.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            tokio::select! {
                r = connecting => {
                    let io = r.map_err(|e| io::Error::other(e.into()))?;
                    Ok(Tracked::new(io, live, token))
                }
                () = token.cancelled() => Err(aborted()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn pair(
        live: &Arc<Liveness>,
    ) -> (
        Tracked<TokioIo<tokio::net::TcpStream>>,
        tokio::net::TcpStream,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        (Tracked::new(TokioIo::new(c), live.clone(), live.token()), s)
    }

    #[tokio::test]
    async fn data_marks_the_api_alive_and_a_reset_fails_a_silent_connection() {
        let live = Liveness::new();
        let (client, mut server) = pair(&live).await;
        let mut client = TokioIo::new(client);
        let before = live.last_activity();
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.expect("read");
        assert!(live.last_activity() > before);

        // The server now stays silent: the pending read ends only through the reset.
        let read = tokio::spawn(async move { client.read(&mut b).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished());
        live.reset_all();
        let r = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("reset wakes the read")
            .expect("task");
        assert_eq!(
            r.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionAborted)
        );
        // A connection made after the reset works.
        let (client, mut server) = pair(&live).await;
        let mut client = TokioIo::new(client);
        server.write_all(b"y").await.expect("write");
        client.read_exact(&mut b).await.expect("read after reset");
        assert_eq!(live.resets(), 1);
    }
}
