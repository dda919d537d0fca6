//! Interoperability with OpenSSL 3: SM2 keys and signatures both ways, SM2 certificate chains
//! through webpki, and HKDF-SM3. These tests need the `openssl` command and fail without it.

use std::{path::Path, process::Command};

use der::Decode as _;
use rustls::{
    pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime},
    sign::SigningKey as _,
};

use super::*;

/// Runs `openssl args…` in `dir` and returns its standard output; fails the test if openssl
/// is missing or the command fails.
pub(super) fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let (ok, stdout, stderr) = openssl_status(dir, args);
    assert!(
        ok,
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// Runs `openssl args…` in `dir`: whether it succeeded, its stdout and its stderr.
fn openssl_status(dir: &Path, args: &[&str]) -> (bool, Vec<u8>, Vec<u8>) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the openssl command (OpenSSL 3) is needed for this test; `openssl {}`: {e}",
                args.join(" ")
            )
        });
    (out.status.success(), out.stdout, out.stderr)
}

/// A temporary directory, after checking that `openssl` is OpenSSL 3 (SM2 `distid` options).
pub(super) fn openssl_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let version = openssl(dir.path(), &["version"]);
    assert!(
        version.starts_with(b"OpenSSL 3"),
        "OpenSSL 3 is needed for this test, found {}",
        String::from_utf8_lossy(&version)
    );
    dir
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// A new SM2 key `name.key` (PEM, as genpkey writes it) and its PKCS#8 DER.
pub(super) fn sm2_key(dir: &Path, name: &str) -> Vec<u8> {
    let pem = format!("{name}.key");
    let der = format!("{name}.p8.der");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:SM2",
            "-out",
            &pem,
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der,
        ],
    );
    read(dir, &der)
}

/// An SM2 CA and two leaves, all made by OpenSSL with SM3 and distid 1234567812345678.
pub(super) struct Pki {
    /// CA certificate, DER.
    pub ca: Vec<u8>,
    /// Server leaf (`DNS:server.sm.test`, serverAuth), DER.
    pub server: Vec<u8>,
    /// Server key, PKCS#8 DER.
    pub server_key: Vec<u8>,
    /// Client leaf (clientAuth), DER.
    pub client: Vec<u8>,
    /// Client key, PKCS#8 DER.
    pub client_key: Vec<u8>,
}

const DISTID_OPT: &str = "distid:1234567812345678";

pub(super) fn make_pki(dir: &Path) -> Pki {
    sm2_key(dir, "ca");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key",
            "-sm3",
            "-sigopt",
            DISTID_OPT,
            "-subj",
            "/CN=SM test CA",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &["x509", "-in", "ca.crt", "-outform", "DER", "-out", "ca.der"],
    );
    let server_key = leaf(dir, "server", "serverAuth", DISTID_OPT);
    let client_key = leaf(dir, "client", "clientAuth", DISTID_OPT);
    Pki {
        ca: read(dir, "ca.der"),
        server: read(dir, "server.der"),
        server_key,
        client: read(dir, "client.der"),
        client_key,
    }
}

/// A leaf `name.der` issued by `ca.key`, signed under `sigopt`; returns its PKCS#8 key.
fn leaf(dir: &Path, name: &str, eku: &str, sigopt: &str) -> Vec<u8> {
    let key = sm2_key(dir, name);
    let (keyf, csr, ext, crt, der) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.crt"),
        format!("{name}.der"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={eku}\nsubjectAltName=DNS:{name}.sm.test\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &keyf,
            "-sm3",
            "-sigopt",
            DISTID_OPT,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sm3",
            "-sigopt",
            sigopt,
            "-vfyopt",
            DISTID_OPT,
            "-days",
            "365",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    openssl(dir, &["x509", "-in", &crt, "-outform", "DER", "-out", &der]);
    key
}

/// The uncompressed point of an SM2 SubjectPublicKeyInfo, after checking its algorithm.
fn spki_point(spki_der: &[u8]) -> Vec<u8> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).unwrap();
    assert_eq!(spki.algorithm.oid, OID_EC_PUBLIC_KEY);
    assert_eq!(spki.algorithm.parameters_oid().unwrap(), OID_SM2_CURVE);
    spki.subject_public_key.raw_bytes().to_vec()
}

#[test]
fn sm_openssl_signatures_verify_with_ours() {
    let dir = openssl_dir();
    let d = dir.path();
    sm2_key(d, "k");
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "k.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "k.pub.der",
        ],
    );
    let point = spki_point(&read(d, "k.pub.der"));
    let msg = b"signed by OpenSSL".repeat(7);
    std::fs::write(d.join("msg"), &msg).unwrap();

    for (distid, ours, other) in [
        (CERT_DISTID, SM2_SM3, SM2_SM3_TLS13),
        (TLS13_DISTID, SM2_SM3_TLS13, SM2_SM3),
    ] {
        let opt = format!("distid:{distid}");
        let sig = openssl(
            d,
            &[
                "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", "k.key", "-pkeyopt",
                &opt, "-in", "msg",
            ],
        );
        assert!(
            signature_from_der(&sig).is_ok(),
            "OpenSSL writes strict DER"
        );
        assert!(
            ours.verify_signature(&point, &msg, &sig).is_ok(),
            "{distid}"
        );
        assert!(
            other.verify_signature(&point, &msg, &sig).is_err(),
            "{distid}"
        );
        assert!(ours.verify_signature(&point, b"other", &sig).is_err());
    }
}

#[test]
fn sm_our_signatures_verify_with_openssl() {
    let dir = openssl_dir();
    let d = dir.path();
    let key = Sm2SigningKey::from_pkcs8_der(&sm2_key(d, "k")).unwrap();
    openssl(
        d,
        &[
            "pkey",
            "-in",
            "k.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "k.pub.der",
        ],
    );
    openssl(d, &["pkey", "-in", "k.key", "-pubout", "-out", "k.pub"]);
    assert_eq!(key.public_key().unwrap().as_ref(), read(d, "k.pub.der"));
    assert_eq!(key.public_point(), spki_point(&read(d, "k.pub.der")));

    let msg = b"signed by us";
    std::fs::write(d.join("msg"), msg).unwrap();
    let tls_sig = key.choose_scheme(&[SM2SIG_SM3]).unwrap().sign(msg).unwrap();
    for (distid, sig) in [
        (CERT_DISTID, key.sign_der(CERT_DISTID, msg).unwrap()),
        (TLS13_DISTID, tls_sig),
    ] {
        std::fs::write(d.join("sig"), &sig).unwrap();
        let verify = |opt: &str| {
            openssl_status(
                d,
                &[
                    "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", "k.pub",
                    "-pkeyopt", opt, "-in", "msg", "-sigfile", "sig",
                ],
            )
        };
        let (ok, out, err) = verify(&format!("distid:{distid}"));
        assert!(
            ok,
            "{distid}: {} {}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
        let (ok, _, _) = verify("distid:ALICE123@YAHOO.COM");
        assert!(!ok, "{distid}: OpenSSL must reject it under another distid");
    }
}

fn verify_leaf(
    leaf: &[u8],
    ca: &[u8],
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), webpki::Error> {
    let ca = CertificateDer::from(ca.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    let leaf = CertificateDer::from(leaf.to_vec());
    let cert = webpki::EndEntityCert::try_from(&leaf).unwrap();
    cert.verify_for_usage(
        algs,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn sm_openssl_certificates_verify_with_webpki() {
    let dir = openssl_dir();
    let d = dir.path();
    let pki = make_pki(d);
    let all = SUPPORTED_ALGORITHMS.all;
    verify_leaf(&pki.server, &pki.ca, all).unwrap();
    // The CA's self-signature (webpki does not check a trust anchor's), with the raw
    // algorithm: TBSCertificate bytes, the CA's own key, the BIT STRING's signature.
    let (_, ca_cert, _) = tlv(&pki.ca);
    let (_, _, after_tbs) = tlv(ca_cert);
    let tbs = &ca_cert[..ca_cert.len() - after_tbs.len()];
    let (_, _, sig_field) = tlv(after_tbs);
    let (_, sig_bits, _) = tlv(sig_field);
    openssl(
        d,
        &[
            "x509", "-in", "ca.crt", "-noout", "-pubkey", "-out", "ca.pub",
        ],
    );
    openssl(
        d,
        &[
            "pkey",
            "-pubin",
            "-in",
            "ca.pub",
            "-outform",
            "DER",
            "-out",
            "ca.pub.der",
        ],
    );
    let ca_point = spki_point(&read(d, "ca.pub.der"));
    assert!(
        SM2_SM3
            .verify_signature(&ca_point, tbs, &sig_bits[1..])
            .is_ok()
    );
    assert!(
        SM2_SM3
            .verify_signature(&ca_point, &tbs[1..], &sig_bits[1..])
            .is_err()
    );

    // Only the absent-parameters algorithm matches OpenSSL's certificates...
    assert!(verify_leaf(&pki.server, &pki.ca, &[SM2_SM3_NULL_PARAMS]).is_err());
    // ...and only under the certificate distid.
    let tls_distid = Sm2Sm3Verifier::new(TLS13_DISTID, SM2_SM3_ALG_ID);
    assert!(verify_leaf(&pki.server, &pki.ca, &[&tls_distid]).is_err());
    // The client leaf lacks serverAuth.
    assert!(verify_leaf(&pki.client, &pki.ca, all).is_err());

    // A leaf OpenSSL signed under another distid does not verify.
    leaf(d, "alice", "serverAuth", "distid:ALICE123@YAHOO.COM");
    let alice = read(d, "alice.der");
    assert!(matches!(
        verify_leaf(&alice, &pki.ca, all),
        Err(webpki::Error::InvalidSignatureForPublicKey)
    ));
    let alice_distid = Sm2Sm3Verifier::new("ALICE123@YAHOO.COM", SM2_SM3_ALG_ID);
    verify_leaf(&alice, &pki.ca, &[&alice_distid]).unwrap();
}

/// One DER TLV: tag, contents, rest.
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (input[0], input[1]);
    let (len, off) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    (tag, &input[off..off + len], &input[off + len..])
}

/// A DER TLV from tag and contents.
fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// A certificate whose signature AlgorithmIdentifier has NULL parameters (as non-OpenSSL CAs
/// write it) verifies through [`SM2_SM3_NULL_PARAMS`], and OpenSSL accepts it as well.
#[test]
fn sm_null_parameter_certificates_verify() {
    let dir = openssl_dir();
    let d = dir.path();
    let pki = make_pki(d);
    let ca_key = Sm2SigningKey::from_pkcs8_der(&read(d, "ca.p8.der")).unwrap();

    // Re-issue the server leaf with NULL parameters in both AlgorithmIdentifiers.
    let (_, cert, _) = tlv(&pki.server);
    let (_, tbs, _) = tlv(cert);
    let null_alg = encode(0x30, &SM2_SM3_NULL_ALG_ID);
    let mut fields = Vec::new();
    let mut rest = tbs;
    let mut index = 0;
    while !rest.is_empty() {
        let (tag, contents, next) = tlv(rest);
        if index == 2 {
            assert_eq!(contents, SM2_SM3_ALG_ID.as_ref(), "the TBS signature field");
            fields.extend(&null_alg);
        } else {
            fields.extend(encode(tag, contents));
        }
        rest = next;
        index += 1;
    }
    let tbs = encode(0x30, &fields);
    let mut bits = vec![0];
    bits.extend(ca_key.sign_der(CERT_DISTID, &tbs).unwrap());
    let cert = encode(0x30, &[tbs, null_alg, encode(0x03, &bits)].concat());

    verify_leaf(&cert, &pki.ca, SUPPORTED_ALGORITHMS.all).unwrap();
    verify_leaf(&cert, &pki.ca, &[SM2_SM3_NULL_PARAMS]).unwrap();
    assert!(verify_leaf(&cert, &pki.ca, &[SM2_SM3]).is_err());

    // OpenSSL reads the NULL form and checks our signature with the CA key.
    std::fs::write(d.join("null.der"), &cert).unwrap();
    openssl(
        d,
        &[
            "x509", "-inform", "DER", "-in", "null.der", "-out", "null.crt",
        ],
    );
    let out = openssl(
        d,
        &[
            "verify", "-CAfile", "ca.crt", "-vfyopt", DISTID_OPT, "null.crt",
        ],
    );
    assert!(String::from_utf8_lossy(&out).contains("OK"));
}

/// HKDF-SM3 (ours: HkdfUsingHmac over HMAC-SM3) against OpenSSL's HKDF with digest SM3.
#[test]
fn sm_hkdf_matches_openssl() {
    let dir = openssl_dir();
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let out = openssl(
        dir.path(),
        &[
            "kdf",
            "-keylen",
            "42",
            "-kdfopt",
            "digest:SM3",
            "-kdfopt",
            &format!("hexkey:{}", hex(&ikm)),
            "-kdfopt",
            &format!("hexsalt:{}", hex(&salt)),
            "-kdfopt",
            &format!("hexinfo:{}", hex(&info)),
            "HKDF",
        ],
    );
    let want: String = String::from_utf8(out)
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_lowercase();
    let mut okm = [0u8; 42];
    HKDF_SM3
        .extract_from_secret(Some(&salt), &ikm)
        .expand_slice(&[&info], &mut okm)
        .unwrap();
    assert_eq!(hex(&okm), want);
}
