//! The connection type every listener hands to h2 (plain TCP, Unix, and TLS).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection as the servers hand it to h2: without vectored writes, so answers are batched.
///
/// h2 writes every DATA frame of 256 bytes or more on a vectored-write connection as its own
/// chained buffer, and buffers nothing more until that frame is out: each allow (its headers
/// and dynamic metadata are a few hundred bytes) then costs a write system call of its own,
/// while smaller frames of concurrent streams share one. Without vectored writes h2 copies
/// frames up to 1 KiB into its connection buffer instead, and many answers leave in one
/// write (measured: ~9 % of cache-hit allow throughput; docs/benchmarks.md). Plain TCP and
/// Unix connections and TLS ones ([`crate::serve::tls::TlsConnection`]) all go through it.
///
/// A plain connection must also show in time what it speaks: while what it sent is no more
/// than the start of the HTTP/2 preface (nothing, or fewer than [`PREFACE_BYTES`] of it),
/// reads fail once `opening_deadline` passes, so a socket that never sends the preface does
/// not hold its file descriptor for ever (keep-alive PINGs only start after the HTTP/2
/// handshake). Bytes that are not the preface end the deadline: the protocol in use answers
/// them (h2 refuses them; HTTP/1 has its own head deadline). A TLS connection owes its first
/// bytes from when its handshake ends (the handshake has its own deadline).
pub struct BatchedWrites<T> {
    io: T,
    /// Bytes still expected before the connection counts as opened, and until when.
    opening: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; PREFACE_BYTES] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// It is 24 bytes.
pub const PREFACE_BYTES: usize = 24;

impl<T> BatchedWrites<T> {
    /// The connection underneath.
    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    /// A connection that must send [`PREFACE_BYTES`] (or bytes that are not the preface) within
    /// `deadline`.
    pub(crate) fn opening(io: T, deadline: std::time::Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(deadline));
        Self {
            io,
            opening: Some((PREFACE_BYTES, sleep)),
        }
    }
}

impl Connected for BatchedWrites<tokio::net::TcpStream> {
    type ConnectInfo = <tokio::net::TcpStream as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl Connected for BatchedWrites<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buffer.filled().len();
        let read = Pin::new(&mut this.io).poll_read(context, buffer);
        let Some((missing, deadline)) = &mut this.opening else {
            return read;
        };
        if let Poll::Ready(Ok(())) = read {
            // Armed while what arrived is the start of the HTTP/2 preface; disarmed once it is
            // whole, or once a byte differs (then it is no HTTP/2 connection: an h2 server
            // refuses it at once, an HTTP/1 one applies its own head deadline, and a short
            // HTTP/1 request such as `GET / HTTP/1.0` is not cut while it is answered).
            let arrived = &buffer.filled()[before..];
            let matched = PREFACE_BYTES - *missing;
            let expected = &PREFACE[matched..];
            let compared = arrived.len().min(expected.len());
            if arrived.is_empty()
                || arrived[..compared] != expected[..compared]
                || compared >= *missing
            {
                this.opening = None;
            } else {
                *missing -= compared;
            }
            return read;
        }
        if read.is_pending() && deadline.as_mut().poll(context).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request in time",
            )));
        }
        read
    }
}

/// `is_write_vectored` keeps its default, `false` (the point of the type).
impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(context, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(context)
    }
}

/// Counts per peer address, each bounded: what one client (or a flood from one host) may hold
/// of a listener's slots (TLS handshakes in progress, HTTP connections).
pub(crate) struct PeerShares {
    limit: usize,
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One peer's share of a [`PeerShares`], given back when dropped.
pub(crate) struct PeerShare {
    shares: std::sync::Arc<PeerShares>,
    peer: std::net::IpAddr,
}

impl PeerShares {
    /// At most `limit` shares per peer address.
    pub(crate) fn new(limit: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            limit,
            counts: Default::default(),
        })
    }

    /// One more share for `peer`, unless it holds its limit already.
    pub(crate) fn enter(self: &std::sync::Arc<Self>, peer: std::net::IpAddr) -> Option<PeerShare> {
        // A poisoned lock is recovered: the map holds only counters.
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(peer).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerShare {
            shares: std::sync::Arc::clone(self),
            peer,
        })
    }
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut counts = self
            .shares
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn plain_connections_are_offered_to_h2_without_vectored_writes() {
        // The socket itself writes vectored; the wrapper must hide it, or h2 goes back to one
        // write system call per allow (see `BatchedWrites`).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(stream.is_write_vectored());
        assert!(
            !BatchedWrites::opening(stream, std::time::Duration::from_secs(10)).is_write_vectored()
        );
    }

    #[tokio::test]
    async fn rule_a_plain_connection_must_send_the_preface_in_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let deadline = std::time::Duration::from_millis(200);
        // Silent, and sending part of the preface only: both cut at the deadline.
        for sent in [&b""[..], &b"PRI * HTTP/2.0"[..]] {
            let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
            client.write_all(sent).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let mut server = BatchedWrites::opening(accepted, deadline);
            let started = std::time::Instant::now();
            let mut buffer = [0u8; 64];
            let mut total = 0;
            let error = loop {
                match server.read(&mut buffer).await {
                    Ok(0) => panic!("the client did not close"),
                    Ok(read) => total += read,
                    Err(error) => break error,
                }
            };
            assert_eq!(total, sent.len());
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= deadline);
        }
        // A whole preface in time, or bytes that are no preface at all (a short HTTP/1
        // request: its own protocol's deadlines apply): the deadline no longer applies.
        for sent in [&PREFACE[..], &b"GET / HTTP/1.0\r\n\r\n"[..]] {
            let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
            client.write_all(sent).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let mut server = BatchedWrites::opening(accepted, deadline);
            let mut buffer = vec![0u8; sent.len()];
            server.read_exact(&mut buffer).await.unwrap();
            tokio::time::sleep(deadline * 2).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
            assert_eq!(&one, b"x");
        }
    }
}
