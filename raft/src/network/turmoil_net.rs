//! The gRPC transport over turmoil's simulated network (feature `turmoil`): a [`Dialer`] that
//! connects with turmoil's TCP, and [`Accepted`], a turmoil stream tonic's server can serve.
//! The simulator (`tests/sim`) and this crate's transport tests use them.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::grpc::{Dialer, Io};

/// turmoil's TCP as a [`Dialer`].
pub struct TurmoilDialer;

impl Dialer for TurmoilDialer {
    fn dial(&self, addr: &str) -> BoxFuture<'static, std::io::Result<Box<dyn Io>>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// The connections turmoil accepts on `port` of the current host.
pub async fn incoming(
    port: u16,
) -> std::io::Result<impl futures::Stream<Item = std::io::Result<Accepted>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| Accepted(s));
        Some((accepted, l))
    }))
}

/// An accepted turmoil stream, with the `Connected` tonic's server wants.
pub struct Accepted(turmoil::net::TcpStream);

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
