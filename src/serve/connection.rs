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
/// A plain connection must also show it speaks HTTP/2 in time: until its first
/// [`PREFACE_BYTES`] have arrived, reads fail once `opening_deadline` passes, so a socket that
/// never sends the preface does not hold its file descriptor for ever (keep-alive PINGs only
/// start after the HTTP/2 handshake). TLS connections met their handshake deadline already.
pub struct BatchedWrites<T> {
    io: T,
    /// Bytes still expected before the connection counts as opened, and until when.
    opening: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4) is 24 bytes.
pub const PREFACE_BYTES: usize = 24;

impl<T> BatchedWrites<T> {
    /// A connection already past its handshake (TLS).
    pub(crate) fn opened(io: T) -> Self {
        Self { io, opening: None }
    }

    /// The connection underneath.
    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    /// A plain connection that must send [`PREFACE_BYTES`] within `deadline`.
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
            let arrived = buffer.filled().len() - before;
            if arrived == 0 || arrived >= *missing {
                this.opening = None;
            } else {
                *missing -= arrived;
            }
            return read;
        }
        if read.is_pending() && deadline.as_mut().poll(context).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no HTTP/2 preface in time",
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
        assert!(!BatchedWrites::opened(stream).is_write_vectored());
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
        // A whole preface in time: the deadline no longer applies.
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client.write_all(&[b'P'; PREFACE_BYTES]).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut server = BatchedWrites::opening(accepted, deadline);
        let mut buffer = [0u8; PREFACE_BYTES];
        server.read_exact(&mut buffer).await.unwrap();
        tokio::time::sleep(deadline * 2).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"x");
    }
}
