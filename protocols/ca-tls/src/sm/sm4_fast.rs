//! [`FastSm4`]: the SM4 block cipher with x86_64 SIMD back ends chosen at run time, behind
//! the RustCrypto `cipher` traits so that `AesGcm<FastSm4, U12>` is SM4-GCM.

use core::fmt;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::{sm4_avx512 as x512, sm4_x86 as x86};

use sm4::cipher::{
    AlgorithmName, BlockCipherDecClosure, BlockCipherDecrypt, BlockCipherEncClosure,
    BlockCipherEncrypt, BlockSizeUser, Key, KeyInit, KeySizeUser, consts::U16,
};

/// The SM4 S-box (GB/T 32907-2016 §6.2).
pub(super) const SBOX: [u8; 256] = [
    0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
    0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
    0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
    0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
    0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
    0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
    0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
    0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
    0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
    0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
    0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
    0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
    0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
    0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
    0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
    0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
];

/// The system parameter FK of the key schedule.
const FK: [u32; 4] = [0xa3b1_bac6, 0x56aa_3350, 0x677d_9197, 0xb270_22dc];

/// The round keys of `key` (GB/T 32907-2016 §7.3); `CK[i]` has bytes `7·(4i + j) mod 256`.
pub(super) fn expand_key(key: &[u8; 16]) -> [u32; 32] {
    let mut k = [0u32; 4];
    for (w, (chunk, fk)) in k.iter_mut().zip(key.chunks_exact(4).zip(FK)) {
        *w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ fk;
    }
    let mut rk = [0u32; 32];
    for (i, out) in rk.iter_mut().enumerate() {
        let ck = u32::from_be_bytes(core::array::from_fn(|j| ((4 * i + j) * 7) as u8));
        let b = u32::from_be_bytes(
            (k[1] ^ k[2] ^ k[3] ^ ck)
                .to_be_bytes()
                .map(|v| SBOX[usize::from(v)]),
        );
        let next = k[0] ^ b ^ b.rotate_left(13) ^ b.rotate_left(23);
        k = [k[1], k[2], k[3], next];
        *out = next;
    }
    rk
}

/// The implementation a [`FastSm4`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sm4Backend {
    /// AVX-512 (F, BW) and GFNI: 64 blocks per call on 512-bit registers.
    Avx512Gfni,
    /// AVX2 and GFNI: 32 blocks per call, the S-box in two affine instructions.
    Avx2Gfni,
    /// AVX2 and VAES (with AES-NI): 32 blocks per call, the S-box through one 256-bit
    /// `VAESENCLAST` between nibble-table affine maps.
    VaesAvx2,
    /// AVX2 and AES-NI: 32 blocks per call, as [`Self::VaesAvx2`] with `AESENCLAST` on each
    /// 128-bit half.
    Avx2AesNi,
    /// AES-NI and SSSE3: 16 blocks per call, the S-box through `AESENCLAST`.
    AesNi,
    /// The portable `sm4` crate, one block at a time.
    Soft,
}

/// The environment variable that caps [`Sm4Backend::detect`]: see [`Sm4Backend::cap`].
pub const SM4_BACKEND_ENV: &str = "BCOS_P2P_SM4_BACKEND";

impl Sm4Backend {
    /// Every back end, fastest first: the order in which [`Self::detect`] tries them.
    pub const ALL: [Self; 6] = [
        Self::Avx512Gfni,
        Self::Avx2Gfni,
        Self::VaesAvx2,
        Self::Avx2AesNi,
        Self::AesNi,
        Self::Soft,
    ];

    /// The fastest back end this CPU supports, at or below the cap of
    /// [`SM4_BACKEND_ENV`] when it is set.
    pub fn detect() -> Self {
        Engine::detect().backend()
    }

    /// Whether this CPU can run the back end (whatever the cap: [`FastSm4::with_backend`]
    /// runs any back end the CPU supports).
    pub fn is_supported(self) -> bool {
        Engine::of(self).is_some()
    }

    /// The back end's name in [`SM4_BACKEND_ENV`]: `avx512-gfni`, `avx2-gfni`, `vaes-avx2`,
    /// `avx2-aesni`, `aesni` or `soft`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512Gfni => "avx512-gfni",
            Self::Avx2Gfni => "avx2-gfni",
            Self::VaesAvx2 => "vaes-avx2",
            Self::Avx2AesNi => "avx2-aesni",
            Self::AesNi => "aesni",
            Self::Soft => "soft",
        }
    }

    /// The back end of a [`Self::name`] (ASCII case and surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }

    /// The cap that [`SM4_BACKEND_ENV`] sets, read once per process: with
    /// `BCOS_P2P_SM4_BACKEND=<name>`, [`Self::detect`] (and so [`FastSm4`]'s `KeyInit` and
    /// the record layer) picks the fastest back end this CPU runs that is not faster than
    /// the named one in the order of [`Self::ALL`]; the one-pass AVX-512 SM4-GCM runs only
    /// under a cap of `avx512-gfni`. Like `OPENSSL_ia32cap`, it lets an operator keep the
    /// process off instructions that misbehave on a CPU, and lets the slower paths be
    /// measured on a CPU that has the faster ones. Unset or empty: no cap. An unknown name
    /// is ignored with a warning.
    pub fn cap() -> Option<Self> {
        static CAP: OnceLock<Option<Sm4Backend>> = OnceLock::new();
        *CAP.get_or_init(read_cap)
    }

    /// Whether the cap of [`SM4_BACKEND_ENV`] allows this back end.
    pub fn is_allowed(self) -> bool {
        allowed_under(Self::cap(), self)
    }
}

/// The cap of [`SM4_BACKEND_ENV`] in this process's environment, logged (an unknown name
/// as a warning).
fn read_cap() -> Option<Sm4Backend> {
    let value = std::env::var_os(SM4_BACKEND_ENV).map(|v| v.to_string_lossy().into_owned());
    match parse_cap(value.as_deref()) {
        Ok(Some(cap)) => {
            tracing::info!(cap = cap.name(), "{SM4_BACKEND_ENV}: SM4 back end capped");
            Some(cap)
        }
        Ok(None) => None,
        Err(unknown) => {
            let names = Sm4Backend::ALL.map(Sm4Backend::name).join(", ");
            tracing::warn!(
                value = unknown,
                names,
                "{SM4_BACKEND_ENV}: unknown SM4 back end ignored"
            );
            None
        }
    }
}

/// The cap a value of [`SM4_BACKEND_ENV`] sets: `Ok(None)` when unset or blank, `Err` with
/// the value when it names no back end.
pub(super) fn parse_cap(value: Option<&str>) -> Result<Option<Sm4Backend>, &str> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => Sm4Backend::from_name(v).map(Some).ok_or(v),
    }
}

/// Whether `backend` is at or below `cap` in the order of [`Sm4Backend::ALL`].
pub(super) fn allowed_under(cap: Option<Sm4Backend>, backend: Sm4Backend) -> bool {
    let rank = |b| Sm4Backend::ALL.iter().position(|&x| x == b);
    cap.is_none_or(|cap| rank(backend) >= rank(cap))
}

/// A back end together with the proof that the CPU runs it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Engine {
    #[cfg(target_arch = "x86_64")]
    Avx512(x512::Avx512Token),
    #[cfg(target_arch = "x86_64")]
    Gfni(x86::GfniToken),
    #[cfg(target_arch = "x86_64")]
    Vaes(x86::VaesToken),
    #[cfg(target_arch = "x86_64")]
    Avx2AesNi(x86::Avx2AesNiToken),
    #[cfg(target_arch = "x86_64")]
    AesNi(x86::AesNiToken),
    Soft,
}

impl Engine {
    /// The fastest engine of this CPU that the cap allows.
    fn detect() -> Self {
        Self::best_under(Sm4Backend::cap())
    }

    /// The fastest engine of this CPU at or below `cap`.
    pub(super) fn best_under(cap: Option<Sm4Backend>) -> Self {
        Sm4Backend::ALL
            .into_iter()
            .filter(|&b| allowed_under(cap, b))
            .find_map(Self::of)
            .unwrap_or(Self::Soft)
    }

    /// The engine of `backend`, if this CPU runs it.
    fn of(backend: Sm4Backend) -> Option<Self> {
        match backend {
            #[cfg(target_arch = "x86_64")]
            Sm4Backend::Avx512Gfni => x512::Avx512Token::detect().map(Self::Avx512),
            #[cfg(target_arch = "x86_64")]
            Sm4Backend::Avx2Gfni => x86::GfniToken::detect().map(Self::Gfni),
            #[cfg(target_arch = "x86_64")]
            Sm4Backend::VaesAvx2 => x86::VaesToken::detect().map(Self::Vaes),
            #[cfg(target_arch = "x86_64")]
            Sm4Backend::Avx2AesNi => x86::Avx2AesNiToken::detect().map(Self::Avx2AesNi),
            #[cfg(target_arch = "x86_64")]
            Sm4Backend::AesNi => x86::AesNiToken::detect().map(Self::AesNi),
            Sm4Backend::Soft => Some(Self::Soft),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    pub(super) fn backend(self) -> Sm4Backend {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => Sm4Backend::Avx512Gfni,
            #[cfg(target_arch = "x86_64")]
            Self::Gfni(_) => Sm4Backend::Avx2Gfni,
            #[cfg(target_arch = "x86_64")]
            Self::Vaes(_) => Sm4Backend::VaesAvx2,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2AesNi(_) => Sm4Backend::Avx2AesNi,
            #[cfg(target_arch = "x86_64")]
            Self::AesNi(_) => Sm4Backend::AesNi,
            Self::Soft => Sm4Backend::Soft,
        }
    }
}

/// The SM4 block cipher for counter-mode use: a RustCrypto block cipher whose encryption
/// backend handles 64 (AVX-512 + GFNI), 32 (AVX2 with GFNI, VAES or AES-NI) or 16 (AES-NI +
/// SSSE3) blocks at once on x86_64 CPUs that have the instructions, detected when the key is
/// set (see [`Sm4Backend::detect`]); elsewhere, and for decryption, it is the `sm4` crate.
#[derive(Clone)]
pub struct FastSm4 {
    /// The portable cipher: the fallback, and the decryption direction.
    soft: sm4::Sm4,
    /// Encryption round keys of the SIMD back ends.
    rk: [u32; 32],
    /// The back end, with the proof that this CPU runs it.
    engine: Engine,
}

impl FastSm4 {
    /// The cipher with a chosen back end, or `None` when this CPU cannot run it.
    pub fn with_backend(key: &[u8; 16], backend: Sm4Backend) -> Option<Self> {
        Engine::of(backend).map(|engine| Self::with_engine(key, engine))
    }

    fn with_engine(key: &[u8; 16], engine: Engine) -> Self {
        Self {
            soft: sm4::Sm4::new(&Key::<sm4::Sm4>::from(*key)),
            rk: expand_key(key),
            engine,
        }
    }

    /// The back end this cipher runs.
    pub fn backend(&self) -> Sm4Backend {
        self.engine.backend()
    }
}

impl KeySizeUser for FastSm4 {
    type KeySize = U16;
}

impl BlockSizeUser for FastSm4 {
    type BlockSize = U16;
}

impl KeyInit for FastSm4 {
    fn new(key: &Key<Self>) -> Self {
        Self::with_engine(&(*key).into(), Engine::detect())
    }
}

impl BlockCipherEncrypt for FastSm4 {
    fn encrypt_with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = Self::BlockSize>) {
        match self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::Avx512(token) => f.call(&backends::Avx512 {
                token,
                rk: &self.rk,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Gfni(token) => f.call(&backends::Gfni {
                token,
                rk: &self.rk,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Vaes(token) => f.call(&backends::Vaes {
                token,
                rk: &self.rk,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2AesNi(token) => f.call(&backends::Avx2AesNi {
                token,
                rk: &self.rk,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi(token) => f.call(&backends::AesNi {
                token,
                rk: &self.rk,
            }),
            Engine::Soft => self.soft.encrypt_with_backend(f),
        }
    }
}

impl BlockCipherDecrypt for FastSm4 {
    fn decrypt_with_backend(&self, f: impl BlockCipherDecClosure<BlockSize = Self::BlockSize>) {
        self.soft.decrypt_with_backend(f)
    }
}

impl AlgorithmName for FastSm4 {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4")
    }
}

impl fmt::Debug for FastSm4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FastSm4 {{ backend: {:?}, .. }}", self.backend())
    }
}

/// The `cipher` backends over the SIMD kernels of [`super::sm4_x86`].
#[cfg(target_arch = "x86_64")]
mod backends {
    use sm4::cipher::{
        Block, BlockCipherEncBackend, BlockSizeUser, InOut, InOutBuf, ParBlocks, ParBlocksSizeUser,
        consts::{U16, U32, U64},
    };

    use super::{FastSm4, x86, x512};

    /// Runs `kernel` on a copy of `blocks` (at most `N` of them; the kernel is told how
    /// many) and writes the result back.
    fn run<const N: usize>(
        mut blocks: InOutBuf<'_, '_, Block<FastSm4>>,
        kernel: impl FnOnce(&mut [[u8; 16]; N], usize),
    ) {
        let n = blocks.len();
        let mut buf = [[0u8; 16]; N];
        for (b, i) in buf.iter_mut().zip(blocks.get_in()) {
            *b = (*i).into();
        }
        kernel(&mut buf, n);
        for (o, b) in blocks.get_out().iter_mut().zip(&buf) {
            *o = (*b).into();
        }
    }

    /// Implements the encryption backend traits for a kernel of `$n` blocks.
    macro_rules! backend {
        ($name:ident, $n:ty, $kernel:ident) => {
            impl $name<'_> {
                fn blocks(&self, blocks: InOutBuf<'_, '_, Block<FastSm4>>) {
                    run(blocks, |buf, n| self.token.$kernel(self.rk, buf, n));
                }
            }

            impl BlockSizeUser for $name<'_> {
                type BlockSize = U16;
            }

            impl ParBlocksSizeUser for $name<'_> {
                type ParBlocksSize = $n;
            }

            impl BlockCipherEncBackend for $name<'_> {
                fn encrypt_block(&self, mut block: InOut<'_, '_, Block<Self>>) {
                    let mut b = block.clone_in();
                    self.blocks(InOutBuf::from_mut(&mut b));
                    *block.get_out() = b;
                }

                fn encrypt_par_blocks(&self, blocks: InOut<'_, '_, ParBlocks<Self>>) {
                    self.blocks(blocks.into_buf());
                }

                fn encrypt_tail_blocks(&self, blocks: InOutBuf<'_, '_, Block<Self>>) {
                    self.blocks(blocks);
                }
            }
        };
    }

    /// The AVX-512 + GFNI backend: 64 blocks per call.
    pub(super) struct Avx512<'a> {
        pub(super) token: x512::Avx512Token,
        pub(super) rk: &'a [u32; 32],
    }

    backend!(Avx512, U64, encrypt64);

    /// The AVX2 + GFNI backend: 32 blocks per call.
    pub(super) struct Gfni<'a> {
        pub(super) token: x86::GfniToken,
        pub(super) rk: &'a [u32; 32],
    }

    backend!(Gfni, U32, encrypt32);

    /// The AVX2 + VAES backend: 32 blocks per call.
    pub(super) struct Vaes<'a> {
        pub(super) token: x86::VaesToken,
        pub(super) rk: &'a [u32; 32],
    }

    backend!(Vaes, U32, encrypt32);

    /// The AVX2 + AES-NI backend: 32 blocks per call.
    pub(super) struct Avx2AesNi<'a> {
        pub(super) token: x86::Avx2AesNiToken,
        pub(super) rk: &'a [u32; 32],
    }

    backend!(Avx2AesNi, U32, encrypt32);

    /// The AES-NI + SSSE3 backend: 16 blocks per call.
    pub(super) struct AesNi<'a> {
        pub(super) token: x86::AesNiToken,
        pub(super) rk: &'a [u32; 32],
    }

    backend!(AesNi, U16, encrypt16);
}
