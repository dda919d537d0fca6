//! Full TLS 1.3 handshakes in memory with [`provider()`] on both sides, over an SM2 PKI made by
//! OpenSSL (these tests need the `openssl` command), and the refusal of a non-SM peer.

use std::{
    io::{Read as _, Write as _},
    sync::Arc,
};

use rustls::{
    ClientConfig, ClientConnection, Connection, Error, PeerIncompatible, RootCertStore,
    ServerConfig, ServerConnection,
    client::WebPkiServerVerifier,
    pki_types::{CertificateDer, ServerName},
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
    version::TLS13,
};

use super::{
    tests_openssl::{Pki, make_pki, openssl_dir},
    *,
};

/// Moves TLS records between the two ends until neither has anything to send; the first
/// error either end reports on the records it received.
fn pump(client: &mut Connection, server: &mut Connection) -> Result<(), Error> {
    while transfer(client, server)? | transfer(server, client)? {}
    Ok(())
}

/// Sends what `from` has to `to`; whether anything moved.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(!buf.is_empty())
}

fn certified(cert: &[u8], key: &[u8]) -> Arc<SingleCertAndKey> {
    let key = Sm2SigningKey::from_pkcs8_der(key).unwrap();
    let ck = CertifiedKey::new(vec![CertificateDer::from(cert.to_vec())], Arc::new(key));
    Arc::new(SingleCertAndKey::from(ck))
}

fn roots(pki: &Pki) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca.clone())).unwrap();
    Arc::new(roots)
}

fn sm_server(pki: &Pki) -> ServerConfig {
    let provider = Arc::new(provider());
    let clients = WebPkiClientVerifier::builder_with_provider(roots(pki), provider.clone())
        .build()
        .unwrap();
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_cert_resolver(certified(&pki.server, &pki.server_key))
}

fn sm_client(pki: &Pki) -> ClientConfig {
    let provider = Arc::new(provider());
    let servers = WebPkiServerVerifier::builder_with_provider(roots(pki), provider.clone())
        .build()
        .unwrap();
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_webpki_verifier(servers)
        .with_client_cert_resolver(certified(&pki.client, &pki.client_key))
}

fn connect(client: ClientConfig, server: ServerConfig) -> (Connection, Connection) {
    let name = ServerName::try_from("server.sm.test").unwrap();
    let client = ClientConnection::new(Arc::new(client), name).unwrap();
    let server = ServerConnection::new(Arc::new(server)).unwrap();
    (client.into(), server.into())
}

#[test]
fn sm_mutual_tls13_handshake_negotiates_sm4_gcm_sm3_on_curve_sm2() {
    let dir = openssl_dir();
    let pki = make_pki(dir.path());
    let (mut client, mut server) = connect(sm_client(&pki), sm_server(&pki));
    pump(&mut client, &mut server).unwrap();
    assert!(!client.is_handshaking() && !server.is_handshaking());

    for conn in [&client, &server] {
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let suite = conn.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, TLS_SM4_GCM_SM3);
        assert_eq!(u16::from(suite), 0x00C6);
        let group = conn.negotiated_key_exchange_group().unwrap().name();
        assert_eq!(u16::from(group), 41);
    }
    // Both ends authenticated the other with its OpenSSL-issued SM2 certificate.
    let peer = |conn: &Connection| conn.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(peer(&client), pki.server);
    assert_eq!(peer(&server), pki.client);

    // Application data both ways, over many records (the receiver drains between rounds:
    // rustls buffers at most 16 KiB of unread plaintext).
    client.writer().write_all(b"ping over SM4-GCM").unwrap();
    pump(&mut client, &mut server).unwrap();
    assert_eq!(read_all(&mut server), b"ping over SM4-GCM");
    let mut got = Vec::new();
    for round in 0..8u8 {
        server.writer().write_all(&[round; 10_000]).unwrap();
        pump(&mut client, &mut server).unwrap();
        got.extend(read_all(&mut client));
    }
    let want: Vec<u8> = (0..8u8).flat_map(|r| [r; 10_000]).collect();
    assert_eq!(got, want);
}

/// Everything readable on `conn` now.
fn read_all(conn: &mut Connection) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.reader().read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A client with ring's default provider and an SM-only server: the handshake fails.
#[test]
fn sm_server_refuses_a_client_without_the_sm_suite() {
    let dir = openssl_dir();
    let pki = make_pki(dir.path());
    let ring_client = |provider: rustls::crypto::CryptoProvider| {
        let provider = Arc::new(provider);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&pki), provider.clone())
            .build()
            .unwrap();
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_webpki_verifier(verifier)
            .with_no_client_auth()
    };

    // Stock ring: neither its groups nor its suites are SM; the server refuses on the first
    // mismatch it checks (the groups).
    let stock = ring_client(rustls::crypto::ring::default_provider());
    let (mut client, mut server) = connect(stock, sm_server(&pki));
    let err = pump(&mut client, &mut server).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PeerIncompatible(
                PeerIncompatible::NoKxGroupsInCommon | PeerIncompatible::NoCipherSuitesInCommon
            )
        ),
        "{err:?}"
    );
    assert!(client.is_handshaking() && server.is_handshaking());

    // Ring's suites with curveSM2 added: the suites alone decide, and there is none in common.
    let mut with_sm2 = rustls::crypto::ring::default_provider();
    with_sm2.kx_groups.insert(0, CURVE_SM2_KX);
    let (mut client, mut server) = connect(ring_client(with_sm2), sm_server(&pki));
    let err = pump(&mut client, &mut server).unwrap_err();
    assert_eq!(
        err,
        Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon)
    );
}

#[test]
fn sm_client_refuses_a_server_certificate_from_another_ca() {
    let dir = openssl_dir();
    let pki = make_pki(dir.path());
    let other_dir = openssl_dir();
    let other = make_pki(other_dir.path());
    // The client trusts only the other CA.
    let (mut client, mut server) = connect(sm_client(&other), sm_server(&pki));
    let err = pump(&mut client, &mut server).unwrap_err();
    assert!(
        matches!(err, Error::InvalidCertificate(_) | Error::AlertReceived(_)),
        "{err:?}"
    );
    assert!(client.is_handshaking() || server.is_handshaking());
}

/// A server key that signs its CertificateVerify under the certificate distid instead of
/// RFC 8998's: the client must reject the handshake signature.
#[derive(Debug)]
struct CertDistidKey(Sm2SigningKey);

#[derive(Debug)]
struct CertDistidSigner(Sm2SigningKey);

impl rustls::sign::SigningKey for CertDistidKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(CertDistidSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rustls::sign::Signer for CertDistidSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.0
            .sign_der(CERT_DISTID, message)
            .map_err(|e| Error::General(e.to_string()))
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        SM2SIG_SM3
    }
}

#[test]
fn sm_client_rejects_a_certificate_verify_under_the_certificate_distid() {
    use rustls::sign::SigningKey as _;
    let dir = openssl_dir();
    let pki = make_pki(dir.path());
    let key = CertDistidKey(Sm2SigningKey::from_pkcs8_der(&pki.server_key).unwrap());
    assert!(key.choose_scheme(&[SM2SIG_SM3]).is_some());
    let ck = CertifiedKey::new(
        vec![CertificateDer::from(pki.server.clone())],
        Arc::new(key),
    );
    let mut server = sm_server(&pki);
    server.cert_resolver = Arc::new(SingleCertAndKey::from(ck));
    let (mut client, mut server) = connect(sm_client(&pki), server);
    let err = pump(&mut client, &mut server).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}
