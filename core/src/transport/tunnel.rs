//! The TCP connection to the server: direct, or a tunnel through a proxy (the sans-IO
//! handshakes of [`crate::proxy`] driven over a tokio socket). The whole connect and handshake
//! is bounded by the connect timeout, and every failure names the proxy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TransportConfig;
use crate::error::{Error, Result};
use crate::proxy::{Proxy, ProxyFailure, ProxyScheme, http, socks5};

/// A TCP stream to the server `config` names, through its proxy when it has one.
pub(super) async fn connect(config: &TransportConfig) -> Result<TcpStream> {
    let stream = match &config.proxy {
        None => direct(&config.host, config.port, config.connect_timeout).await?,
        Some(proxy) => {
            let fail = |failure| Error::Proxy { proxy: proxy.url(), failure };
            let timeout = config.connect_timeout;
            let stream = tokio::time::timeout(timeout, through(proxy, &config.host, config.port))
                .await
                .map_err(|_| fail(ProxyFailure::Timeout { millis: timeout.as_millis() as u64 }))??;
            tracing::debug!(proxy = %proxy, target = %crate::proxy::authority(&config.host, config.port), "tunnel open");
            stream
        }
    };
    let address = crate::proxy::authority(&config.host, config.port);
    stream.set_nodelay(true).map_err(|source| Error::Connect { address, source })?;
    Ok(stream)
}

async fn direct(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let address = format!("{host}:{port}");
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(Error::Connect { address, source }),
        Err(_) => Err(Error::Connect {
            address,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }),
    }
}

/// A TCP stream to `host:port` through `proxy` (also the SSH carrier's, `transport::ssh`).
pub(super) async fn through(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream> {
    let fail = |failure| Error::Proxy { proxy: proxy.url(), failure };
    match proxy.scheme {
        ProxyScheme::Http => {
            let mut stream = to_proxy(proxy).await?;
            http_connect(&mut stream, proxy, host, port).await.map_err(fail)?;
            Ok(stream)
        }
        ProxyScheme::Socks5h => {
            let dest = match host.parse::<IpAddr>() {
                Ok(ip) => socks5::Destination::Ip(ip),
                Err(_) => socks5::Destination::Name(host.to_owned()),
            };
            let hs = socks5::Handshake::new(dest, port, proxy.credentials.clone())?;
            let mut stream = to_proxy(proxy).await?;
            socks(&mut stream, hs).await.map_err(fail)?;
            Ok(stream)
        }
        ProxyScheme::Socks5 => {
            // The name is resolved here; each address is tried on a connection of its own
            // until the proxy reaches one, as a direct connect tries them.
            let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|source| Error::Connect { address: format!("{host}:{port}"), source })?
                    .collect(),
            };
            let mut last = None;
            for addr in addrs {
                let hs = socks5::Handshake::new(socks5::Destination::Ip(addr.ip()), port, proxy.credentials.clone())?;
                let mut stream = to_proxy(proxy).await?;
                match socks(&mut stream, hs).await {
                    Ok(()) => return Ok(stream),
                    // The proxy could not reach this address: another may do.
                    Err(f @ ProxyFailure::Refused { status: Some(3..=5), .. }) => last = Some(f),
                    Err(f) => return Err(fail(f)),
                }
            }
            Err(fail(last.unwrap_or_else(|| ProxyFailure::Refused {
                target: format!("{host}:{port}"),
                status: None,
                reason: "the name resolved to no address".into(),
            })))
        }
    }
}

async fn to_proxy(proxy: &Proxy) -> Result<TcpStream> {
    TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| Error::Proxy { proxy: proxy.url(), failure: ProxyFailure::Unreachable { message: e.to_string() } })
}

/// An end of stream or a reset during the handshake is the proxy closing the connection.
fn io_failure(e: &std::io::Error) -> ProxyFailure {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe) {
        ProxyFailure::Closed
    } else {
        ProxyFailure::Io(e.to_string())
    }
}

async fn http_connect(stream: &mut TcpStream, proxy: &Proxy, host: &str, port: u16) -> Result<(), ProxyFailure> {
    let mut exchange = http::Connect::new(host, port);
    let request = exchange.request(proxy.credentials.as_ref());
    stream.write_all(&request).await.map_err(|e| io_failure(&e))?;
    drop(request);
    // Read as it comes, up to one byte past the bound; the parser refuses what passes it.
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let room = (http::MAX_HEAD + 1 - received.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await.map_err(|e| io_failure(&e))?;
        if n == 0 {
            return Err(ProxyFailure::Closed);
        }
        received.extend_from_slice(&chunk[..n]);
        if exchange.read_reply(&received)?.is_some() {
            return Ok(());
        }
    }
}

async fn socks(stream: &mut TcpStream, mut hs: socks5::Handshake) -> Result<(), ProxyFailure> {
    stream.write_all(&hs.greeting()).await.map_err(|e| io_failure(&e))?;
    let mut buf = [0u8; 258];
    loop {
        let n = hs.wants();
        stream.read_exact(&mut buf[..n]).await.map_err(|e| io_failure(&e))?;
        match hs.receive(&buf[..n])? {
            socks5::Step::Send(bytes) => stream.write_all(&bytes).await.map_err(|e| io_failure(&e))?,
            socks5::Step::Read => {}
            socks5::Step::Done => return Ok(()),
        }
    }
}
