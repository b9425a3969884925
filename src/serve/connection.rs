//! The connection type every listener hands to h2 (plain TCP, Unix, and TLS).

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
pub struct BatchedWrites<T>(pub(crate) T);

impl Connected for BatchedWrites<tokio::net::TcpStream> {
    type ConnectInfo = <tokio::net::TcpStream as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl Connected for BatchedWrites<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

/// `is_write_vectored` keeps its default, `false` (the point of the type).
impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
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
        assert!(!BatchedWrites(stream).is_write_vectored());
    }
}
