//! SM4-GCM record throughput: the `sm4` crate, [`FastSm4`] on each back end this CPU runs
//! (whatever `BCOS_P2P_SM4_BACKEND` says; it caps only the detected one and the one pass),
//! and ring's AES-128-GCM for comparison, sealing and opening 16 KiB records (the TLS maximum
//! plaintext) with a TLS 1.3 record header as additional data.
//!
//! `cargo build --release -p bcos-p2p-ca-tls --bench sm4_gcm`, then run the built
//! `sm4_gcm-*` binary (`--quick` for a run under 20 s). The last line is JSON; each GCM figure
//! is seal and open together, `2·bytes / (seal time + open time)`, and each `sm4_blocks_*`
//! figure is block encryption alone, in MB/s (10⁶ bytes).

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use aes_gcm::{AeadInOut as _, AesGcm, KeyInit as _, aead::consts::U12};
use bcos_p2p_ca_tls::sm::{FastSm4, SM4_BACKEND_ENV, Sm4Backend, Sm4GcmKey};
use ghash::{GHash, universal_hash::UniversalHash as _};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sm4::cipher::BlockCipherEncrypt as _;

const RECORD: usize = 16 * 1024;
const KEY: [u8; 16] = *b"0123456789abcdef";
const NONCE: [u8; 12] = *b"nonce-nonce!";
const AAD: [u8; 5] = [0x17, 0x03, 0x03, 0x40, 0x11];

/// Seal and open of one record, as closures over a record buffer.
trait Aead {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16];
    fn open(&self, buf: &mut [u8], tag: &[u8; 16]);
}

impl<C> Aead for AesGcm<C, U12>
where
    C: sm4::cipher::BlockCipherEncrypt
        + sm4::cipher::BlockSizeUser<BlockSize = sm4::cipher::consts::U16>,
{
    fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
        self.encrypt_inout_detached(&NONCE.into(), &AAD, buf.into())
            .expect("seal")
            .into()
    }

    fn open(&self, buf: &mut [u8], tag: &[u8; 16]) {
        self.decrypt_inout_detached(&NONCE.into(), &AAD, buf.into(), &(*tag).into())
            .expect("open");
    }
}

impl Aead for Sm4GcmKey {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
        Sm4GcmKey::seal(self, &NONCE, &AAD, buf).expect("seal")
    }

    fn open(&self, buf: &mut [u8], tag: &[u8; 16]) {
        Sm4GcmKey::open(self, &NONCE, &AAD, buf, tag).expect("open");
    }
}

impl Aead for LessSafeKey {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
        let tag = self
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(AAD), buf)
            .expect("seal");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    fn open(&self, buf: &mut [u8], tag: &[u8; 16]) {
        let tag = ring::aead::Tag::from(*tag);
        self.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(NONCE),
            Aad::from(AAD),
            tag,
            buf,
            0..,
        )
        .expect("open");
    }
}

/// MB/s of `f` run over and over for `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    (n as f64 * RECORD as f64) / start.elapsed().as_secs_f64() / 1e6
}

/// Seal MB/s, open MB/s and the combined figure; `open` starts each record from a copy of
/// a sealed one (the 16 KiB copy is counted, and is small next to the cipher).
fn measure(name: &str, aead: &dyn Aead, budget: Duration) -> f64 {
    let mut buf = vec![0xa5u8; RECORD];
    let seal = rate(budget, || {
        black_box(aead.seal(black_box(&mut buf)));
    });
    let mut sealed = vec![0xa5u8; RECORD];
    let tag = aead.seal(&mut sealed);
    let open = rate(budget, || {
        buf.copy_from_slice(&sealed);
        aead.open(black_box(&mut buf), &tag);
    });
    let both = 2.0 / (1.0 / seal + 1.0 / open);
    println!("{name:<28} seal {seal:>8.1} MB/s   open {open:>8.1} MB/s   both {both:>8.1} MB/s");
    both
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 700 } else { 3000 });
    println!(
        "16 KiB records; detected SM4 back end: {:?} ({SM4_BACKEND_ENV} cap: {})",
        Sm4Backend::detect(),
        Sm4Backend::cap().map_or("none", Sm4Backend::name)
    );

    let soft = measure(
        "SM4-GCM, sm4 crate",
        &AesGcm::<sm4::Sm4, U12>::new(&KEY.into()),
        budget,
    );
    let mut figures = vec![("sm4_gcm_soft_mb_per_s".to_owned(), soft)];
    let mut fast = soft;
    // Slowest first, the portable one apart.
    for backend in Sm4Backend::ALL.into_iter().rev().skip(1) {
        if let Some(cipher) = FastSm4::with_backend(&KEY, backend) {
            let mb = measure(
                &format!("SM4-GCM, FastSm4 {backend:?}"),
                &AesGcm::<FastSm4, U12>::from(cipher),
                budget,
            );
            figures.push((format!("sm4_gcm_{backend:?}_mb_per_s").to_lowercase(), mb));
            if backend == Sm4Backend::detect() {
                fast = mb;
            }
        }
    }
    // What the TLS records use: the one-pass AVX-512 kernel where the CPU has it.
    let key = Sm4GcmKey::new(&KEY);
    if key.is_wide() {
        fast = measure("SM4-GCM, one pass AVX-512", &key, budget);
        figures.push(("sm4_gcm_wide_mb_per_s".to_owned(), fast));
    }
    for backend in Sm4Backend::ALL.into_iter().rev() {
        if let Some(cipher) = FastSm4::with_backend(&KEY, backend) {
            let mut blocks = vec![sm4::cipher::Block::<FastSm4>::default(); RECORD / 16];
            let mb = rate(budget / 2, || cipher.encrypt_blocks(black_box(&mut blocks)));
            println!(
                "SM4 blocks only, {:<12}     {mb:>8.1} MB/s",
                format!("{backend:?}")
            );
            figures.push((
                format!("sm4_blocks_{backend:?}_mb_per_s").to_lowercase(),
                mb,
            ));
        }
    }
    let mut ghash = GHash::new(&KEY.into());
    let record = vec![0x5au8; RECORD];
    let ghash_mb = rate(budget / 2, || {
        ghash.update_padded(black_box(&record));
        black_box(&ghash);
    });
    println!("GHASH only                       {ghash_mb:>8.1} MB/s");
    let ring = measure(
        "AES-128-GCM, ring",
        &LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("key")),
        budget,
    );
    println!(
        "fast / ring AES = {:.2}, fast / soft = {:.1}",
        fast / ring,
        fast / soft
    );
    figures.insert(1, ("sm4_gcm_fast_mb_per_s".to_owned(), fast));
    figures.insert(2, ("aes128_gcm_ring_mb_per_s".to_owned(), ring));
    let json: Vec<String> = figures
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v:.1}"))
        .collect();
    println!("{{{}}}", json.join(","));
}
