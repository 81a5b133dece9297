//! The SRTP master keys of one viewer connection, as `rtc` derives them.
//!
//! `rtc` 0.21 keeps a connection's SRTP contexts to itself (`pub(crate)`), so the shard could
//! not seal media for a viewer without running every packet through `rtc`'s whole write path,
//! which costs more than the sealing and the send together. [`KeyCapture`] is the connection's
//! crypto provider: it passes every call to the default provider and remembers the master key
//! and salt of each SRTP key derivation it sees. In RFC 3711's key derivation (§4.3.3, AES-CM
//! PRF) the first AES input block for a master key is the master salt itself, padded with
//! zeros; `rtc` derives the label-0 key first, so that block shows the salt. Which profile the
//! salt belongs to (12 bytes for AES-GCM, 14 for AES-CM: Chromium 156 picks
//! AES_CM_128_HMAC_SHA1_80) is left to the proof too.
//!
//! Nothing here decides which key is ours: a candidate is only used once it opened a packet
//! `rtc` itself sealed for this viewer (see `direct.rs`).

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher,
    StreamCipherAlgorithm,
};
use std::sync::{Arc, Mutex};

/// AES-128 master keys (AES-128-GCM and AES_CM_128_HMAC_SHA1_80 both use them).
const KEY_LEN: usize = 16;

/// A master key, with the first AES input block of its derivation: the master salt (12
/// bytes for GCM, 14 for AES-CM) followed by zeros.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct MasterKey {
    pub key: [u8; KEY_LEN],
    block: [u8; 16],
}

impl MasterKey {
    /// The master salt of `len` bytes, if the block can hold one that long.
    pub(crate) fn salt(&self, len: usize) -> Option<&[u8]> {
        let (salt, rest) = self.block.split_at_checked(len)?;
        rest.iter().all(|b| *b == 0).then_some(salt)
    }
}

/// A crypto provider that records SRTP master keys on their way through.
pub(crate) struct KeyCapture {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: Recorder,
}

struct Recorder {
    inner: Arc<dyn RTCCryptoProvider>,
    // Touched only when DTLS completes (key derivation), never per packet.
    seen: Mutex<Vec<MasterKey>>,
}

impl KeyCapture {
    /// Wraps `rtc`'s default provider.
    pub(crate) fn new() -> Result<Self, CryptoError> {
        let inner = rtc::crypto::default_provider()?;
        Ok(Self {
            inner: inner.clone(),
            crypto: Recorder {
                inner,
                seen: Mutex::new(Vec::new()),
            },
        })
    }

    /// The master keys seen so far, in derivation order.
    pub(crate) fn candidates(&self) -> Vec<MasterKey> {
        self.crypto
            .seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }

    /// The provider the keys were derived with, for sealing with them.
    pub(crate) fn crypto(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }
}

impl RTCCryptoProvider for KeyCapture {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl Recorder {
    fn record(&self, key: &[u8], block: &[u8]) {
        // A first block ends in block counter 0.
        let (Ok(key), Ok(block)) = (<[u8; KEY_LEN]>::try_from(key), <[u8; 16]>::try_from(block))
        else {
            return;
        };
        if block[14..] != [0, 0] {
            return;
        }
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        // Later labels of the same key show other blocks; the first (label 0) is the salt.
        if !seen.iter().any(|k| k.key == key) {
            seen.push(MasterKey { key, block });
        }
    }
}

impl RTCCrypto for Recorder {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        if algorithm == BlockCipherAlgorithm::Aes128 {
            self.record(key, block);
        }
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}
