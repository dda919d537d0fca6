//! A hand-made dialler that speaks the wire protocol step by step (TCP from a chosen loopback
//! address, multistream-select, CA-TLS, the muxer), so a test can stop or misbehave at any step.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bcos_p2p::{
    NodeKey,
    ca_tls::{CertificateDer, crypto::Secp256k1SigningKey},
};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

/// A TLS stream of the raw dialler.
pub type Tls = futures_rustls::client::TlsStream<Compat<TcpStream>>;

/// A TCP connection to `to` from `from` (any port): all of 127.0.0.0/8 is loopback, so tests
/// can give attackers and honest peers different source addresses.
pub async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// The multistream-select messages that propose `protocol` (header first).
pub fn select(protocol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for msg in ["/multistream/1.0.0\n".to_string(), format!("{protocol}\n")] {
        out.push(msg.len() as u8);
        out.extend_from_slice(msg.as_bytes());
    }
    out
}

/// Proposes `protocol` on `io` and reads the listener's echo of both messages.
pub async fn negotiate<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    io: &mut S,
    protocol: &str,
) -> io::Result<()> {
    let proposal = select(protocol);
    io.write_all(&proposal).await?;
    io.flush().await?;
    let mut echo = vec![0u8; proposal.len()];
    io.read_exact(&mut echo).await?;
    if echo != proposal {
        return Err(io::Error::other(format!("listener answered {echo:?}")));
    }
    Ok(())
}

/// A TLS 1.3 client config that trusts any listener and presents `identity` (a secp256k1 key
/// and its certificate chain), or no certificate.
pub fn client_config(
    identity: Option<(&NodeKey, Vec<CertificateDer<'static>>)>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(super::accept_any::AcceptAnyServer));
    let config = match identity {
        Some((key, chain)) => {
            let signing = Secp256k1SigningKey::from_pkcs8_der(key.pkcs8_der()).expect("secp256k1");
            let certified = rustls::sign::CertifiedKey::new(chain, Arc::new(signing));
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                Arc::new(certified),
            )))
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Selects CA-TLS on `tcp`, runs the TLS handshake with `config` and reads the listener's
/// verdict byte (CA-TLS SPEC §4): with TLS 1.3 the client finishes before the listener has
/// checked its certificate, so a refusal only shows there (as an error).
pub async fn tls(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> io::Result<Tls> {
    let mut tcp = tcp.compat();
    negotiate(&mut tcp, bcos_p2p::ca_tls::PROTOCOL_NAME).await?;
    let name = rustls::pki_types::ServerName::try_from("node").expect("a name");
    let mut tls = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut verdict = [0u8; 1];
    tls.read_exact(&mut verdict).await?;
    if verdict != [1] {
        return Err(io::Error::other(format!("verdict byte {verdict:?}")));
    }
    Ok(tls)
}

/// A whole valid connection setup from `from`: TCP, CA-TLS with `config`, then yamux selected
/// and echoed by the listener (which therefore accepted the certificate).
pub async fn handshake(
    from: Ipv4Addr,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<Tls> {
    let tcp = connect_from(from, to).await?;
    let mut tls = tls(tcp, config).await?;
    negotiate(&mut tls, "/yamux/1.0.0").await?;
    Ok(tls)
}

/// Reads (and discards) until the peer closes `io` (EOF or an error such as a reset); returns
/// how long that took, or `None` if it stayed open for `wait`.
pub async fn closed_within<S: futures::AsyncRead + Unpin>(
    io: &mut S,
    wait: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    tokio::time::timeout(wait, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A yamux frame header (version 0): `kind` 0 data, 1 window update, 2 ping, 3 go away;
/// `flags` SYN 1, ACK 2, FIN 4, RST 8.
pub fn yamux_header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
