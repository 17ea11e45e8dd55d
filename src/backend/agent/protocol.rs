//! The wire protocol between the module (an agent slot) and the custody agent: one request,
//! one response, each a frame of a 4-byte big-endian length and a `postcard` body. Versioned by
//! the first exchange (`Hello`), bounded by [`MAX_FRAME`]; `docs/agent.md` describes it.
//! Secrets that cross it (PINs, key material of an imported key, plaintexts) travel in
//! zeroizing buffers on both sides.

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The largest frame either side accepts (a PQ signature is under 5 KiB; a key pair's
/// public and private templates under 16 KiB).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest output buffer a request may announce: bigger offers are capped to it, which
/// keeps every answer inside one frame.
pub const MAX_OUTPUT: u64 = (MAX_FRAME as u64) - 4096;

/// Bytes that may be secret: wiped when dropped, never printed, and encoded as one byte
/// string (not a sequence of numbers, which costs a call per byte).
#[derive(Clone, Default, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }
}

impl std::ops::Deref for Secret {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Secret {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Attribute bytes (already zeroizing) as they travel.
impl From<zeroize::Zeroizing<Vec<u8>>> for Secret {
    fn from(mut bytes: zeroize::Zeroizing<Vec<u8>>) -> Self {
        Secret(std::mem::take(&mut *bytes))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Secret(b.into_vec()))
    }
}

/// What the module asks.
#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    /// The first request on every connection. `client` names the module instance (all the
    /// connections of one initialized module share sessions and logins).
    Hello {
        version: u32,
        client: [u8; 16],
    },
    /// The tokens this client may use.
    Tokens,
    TokenInfo {
        token: u32,
    },
    Mechanisms {
        token: u32,
    },
    MechanismInfo {
        token: u32,
        mechanism: u64,
    },
    InitToken {
        token: u32,
        so_pin: Secret,
        label: [u8; 32],
    },
    OpenSession {
        token: u32,
        flags: u64,
    },
    /// A call on one of this client's sessions.
    Session {
        session: u64,
        call: SessionCall,
    },
}

/// A call on a session.
#[derive(Serialize, Deserialize, Debug)]
pub enum SessionCall {
    Close,
    Info,
    Login {
        user: u64,
        pin: Secret,
    },
    Logout,
    InitPin {
        pin: Secret,
    },
    SetPin {
        old: Secret,
        new: Secret,
    },
    /// Templates are [`Attributes::serialize`](crate::token::attributes::Attributes) bytes.
    CreateObject {
        template: Secret,
    },
    CopyObject {
        object: u64,
        template: Secret,
    },
    DestroyObject {
        object: u64,
    },
    ObjectSize {
        object: u64,
    },
    /// Each request: the attribute type and the caller's buffer size (`None`: length only).
    GetAttributes {
        object: u64,
        requests: Vec<(u64, Option<u64>)>,
    },
    SetAttributes {
        object: u64,
        template: Secret,
    },
    /// The whole search at once; the module pages through it.
    Find {
        template: Secret,
    },
    Init {
        kind: Kind,
        mechanism: Mechanism,
        key: Option<u64>,
    },
    Cancel {
        kind: Kind,
    },
    /// `Init` and the operation's first step in one request (an init the module answered
    /// itself, see docs/agent.md); an error of the init is the answer.
    Begin {
        kind: Kind,
        mechanism: Mechanism,
        key: Option<u64>,
        step: WireStep,
    },
    Step {
        kind: Kind,
        step: WireStep,
    },
    GenerateKey {
        mechanism: Mechanism,
        template: Secret,
    },
    GenerateKeyPair {
        mechanism: Mechanism,
        public: Secret,
        private: Secret,
    },
    SeedRandom {
        seed: Secret,
    },
    GenerateRandom {
        len: u32,
    },
    CiphertextLen {
        mechanism: Mechanism,
        key: u64,
    },
    Encapsulate {
        mechanism: Mechanism,
        key: u64,
        template: Secret,
    },
    Decapsulate {
        mechanism: Mechanism,
        key: u64,
        template: Secret,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
}

/// [`OpKind`](crate::token::operations::OpKind) on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Digest,
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

/// One call of an active operation; `out` is the caller's buffer size (`None`: a length query).
#[derive(Serialize, Deserialize, Debug)]
pub enum WireStep {
    Whole {
        data: Secret,
        out: Option<u64>,
    },
    Update {
        data: Secret,
    },
    CipherUpdate {
        data: Secret,
        out: Option<u64>,
    },
    Final {
        out: Option<u64>,
    },
    Verify {
        data: Secret,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    VerifyFinal {
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
}

impl WireStep {
    /// Whether an operation of `kind` has this call (`C_SignUpdate` exists, `C_EncryptUpdate`
    /// on a signature does not). The module only sends fitting pairs; a client of the agent can
    /// send any, and a misfit is a bad argument, not a device error.
    pub fn fits(&self, kind: crate::token::operations::OpKind) -> bool {
        use crate::token::operations::OpKind::*;
        match self {
            WireStep::Whole { .. } | WireStep::Final { .. } => kind != Verify,
            WireStep::Update { .. } => matches!(kind, Digest | Sign | Verify),
            WireStep::CipherUpdate { .. } => matches!(kind, Encrypt | Decrypt),
            WireStep::Verify { .. } | WireStep::VerifyFinal { .. } => kind == Verify,
        }
    }
}

/// The agent's answer: the `CK_RV` and what goes with it (some replies carry data with an
/// error, as `C_GetAttributeValue` and the two-call length convention do).
#[derive(Serialize, Deserialize, Debug)]
pub struct Response {
    pub rv: u64,
    pub reply: Reply,
    /// The agent has a processor to spare: the client may poll for its next answer instead
    /// of sleeping (polling would take the processor from a signature otherwise).
    pub spin: bool,
}

#[derive(Serialize, Deserialize, Debug)]
pub enum Reply {
    None,
    /// `instance` names the agent's state for this client; when it changes (the agent
    /// restarted, or every connection of the client had closed) the sessions made before
    /// are gone.
    Hello {
        version: u32,
        instance: [u8; 16],
    },
    Tokens(Vec<TokenEntry>),
    TokenInfo(Box<WireTokenInfo>),
    Mechanisms(Vec<u64>),
    MechanismInfo {
        min: u64,
        max: u64,
        flags: u64,
    },
    Session(u64),
    SessionInfo {
        state: u64,
        flags: u64,
        device_error: u64,
    },
    Handle(u64),
    Pair(u64, u64),
    Size(u64),
    /// Per request: the length to report, and the value when one was delivered.
    Attributes(Vec<(u64, Option<Secret>)>),
    Handles(Vec<u64>),
    /// The length to report and the bytes delivered (none for a length query or a short buffer).
    Output {
        len: u64,
        data: Option<Secret>,
    },
    Random(Secret),
    Encapsulated {
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
        handle: u64,
    },
}

/// One token the agent serves this client.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TokenEntry {
    pub id: u32,
    pub description: String,
}

/// `CK_TOKEN_INFO` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct WireTokenInfo {
    pub label: [u8; 32],
    pub manufacturer: [u8; 32],
    pub model: [u8; 16],
    pub serial: [u8; 16],
    pub flags: u64,
    /// Max / current session counts, max / min PIN length, memory figures, in
    /// `CK_TOKEN_INFO` order.
    pub counts: [u64; 10],
    /// Hardware then firmware version (major, minor).
    pub versions: [u8; 4],
    pub utc_time: [u8; 16],
}

impl Response {
    pub fn ok(reply: Reply) -> Self {
        Response {
            rv: 0,
            reply,
            spin: false,
        }
    }

    pub fn error(e: Error) -> Self {
        Response {
            rv: e.0 as u64,
            reply: Reply::None,
            spin: false,
        }
    }

    /// The reply, or the error the agent answered.
    pub fn into_result(self) -> Result<Reply> {
        match self.rv {
            0 => Ok(self.reply),
            rv => Err(Error(rv as _)),
        }
    }
}

/// Encodes a message as one frame (length prefix included).
pub fn encode<T: Serialize>(message: &T) -> Result<Secret> {
    // The length prefix is written in place afterwards: one buffer, one copy.
    let frame = postcard::to_extend(message, vec![0u8; 4]).map_err(|_| Error::GENERAL)?;
    let mut frame = Secret::new(frame);
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(Error::DATA_LEN_RANGE);
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Decodes a frame's body. Never panics: whatever the bytes, a message or an error.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, postcard::Error> {
    postcard::from_bytes(body)
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection before a frame began.
    Closed,
    Io(std::io::Error),
    /// The length prefix exceeds [`MAX_FRAME`].
    TooLong(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let request = Request::Session {
            session: 7,
            call: SessionCall::Step {
                kind: Kind::Sign,
                step: WireStep::Whole {
                    data: Secret::new(b"message".to_vec()),
                    out: Some(4627),
                },
            },
        };
        let frame = encode(&request).unwrap();
        assert_eq!(frame[..4], ((frame.len() - 4) as u32).to_be_bytes());
        match decode::<Request>(&frame[4..]).unwrap() {
            Request::Session {
                session: 7,
                call:
                    SessionCall::Step {
                        kind: Kind::Sign,
                        step: WireStep::Whole { data, out },
                    },
            } => {
                assert_eq!(&data[..], b"message");
                assert_eq!(out, Some(4627));
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn an_oversized_length_is_refused_before_any_allocation() {
        use super::super::transport::{recv, Patience};
        use std::io::Write;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
            .unwrap();
        let patience = Patience {
            spin: std::time::Duration::ZERO,
            first: None,
            rest: std::time::Duration::from_secs(5),
        };
        assert!(matches!(recv(&b, patience), Err(FrameError::TooLong(_))));
    }

    #[test]
    fn garbage_and_truncations_decode_to_errors() {
        let frame = encode(&Request::Hello {
            version: VERSION,
            client: [9; 16],
        })
        .unwrap();
        for cut in 0..frame.len() - 4 {
            let _ = decode::<Request>(&frame[4..4 + cut]);
        }
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8)
                .collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }

    /// `B4AE_WRITE_FUZZ_SEEDS=1 cargo test --lib write_fuzz_seeds` writes the agent fuzz
    /// target's seeds (fuzz/seeds/agent_protocol/): request sequences that reach signing,
    /// encryption, searches and attribute reads, in the target's input format.
    #[test]
    fn write_fuzz_seeds() {
        use crate::mechanism::aes_gcm::GcmParams;
        use crate::mechanism::Param;
        use crate::token::attributes::Attributes;
        use cryptoki_sys::*;
        if std::env::var_os("B4AE_WRITE_FUZZ_SEEDS").is_none() {
            return;
        }
        let call = |call| Request::Session { session: 1, call };
        let attrs = |set: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]| {
            let mut a = Attributes::new();
            for (t, v) in set {
                a.set(*t, v.clone());
            }
            Secret::from(a.serialize())
        };
        let yes = vec![1u8];
        let no = vec![0u8];
        let ulong = |v: CK_ULONG| v.to_ne_bytes().to_vec();
        let sign_flow = vec![
            call(SessionCall::GenerateKeyPair {
                mechanism: Mechanism::plain(CKM_ML_DSA_KEY_PAIR_GEN),
                public: attrs(&[
                    (CKA_PARAMETER_SET, ulong(CKP_ML_DSA_87)),
                    (CKA_TOKEN, no.clone()),
                ]),
                private: attrs(&[(CKA_SIGN, yes.clone()), (CKA_TOKEN, no.clone())]),
            }),
            call(SessionCall::Init {
                kind: Kind::Sign,
                mechanism: Mechanism::plain(CKM_ML_DSA),
                key: Some(2),
            }),
            call(SessionCall::Step {
                kind: Kind::Sign,
                step: WireStep::Whole {
                    data: Secret::new(b"fuzz".to_vec()),
                    out: Some(4627),
                },
            }),
            call(SessionCall::Begin {
                kind: Kind::Sign,
                mechanism: Mechanism::plain(CKM_ML_DSA),
                key: Some(2),
                step: WireStep::Whole {
                    data: Secret::new(b"fuzz".to_vec()),
                    out: None,
                },
            }),
        ];
        let gcm = Mechanism {
            mechanism: CKM_AES_GCM,
            param: Param::Gcm(GcmParams {
                iv: vec![0; 12],
                aad: vec![],
                tag_bits: 128,
            }),
        };
        let cipher_flow = vec![
            call(SessionCall::GenerateKey {
                mechanism: Mechanism::plain(CKM_AES_KEY_GEN),
                template: attrs(&[(CKA_VALUE_LEN, ulong(32)), (CKA_ENCRYPT, yes.clone())]),
            }),
            call(SessionCall::Init {
                kind: Kind::Encrypt,
                mechanism: gcm,
                key: Some(1),
            }),
            call(SessionCall::Step {
                kind: Kind::Encrypt,
                step: WireStep::Final { out: Some(64) },
            }),
        ];
        let object_flow = vec![
            Request::Tokens,
            Request::TokenInfo { token: 0 },
            Request::Mechanisms { token: 0 },
            call(SessionCall::CreateObject {
                template: attrs(&[(CKA_CLASS, ulong(CKO_DATA)), (CKA_VALUE, b"x".to_vec())]),
            }),
            call(SessionCall::Find {
                template: attrs(&[]),
            }),
            call(SessionCall::GetAttributes {
                object: 1,
                requests: vec![(CKA_VALUE as u64, None), (CKA_LABEL as u64, Some(0))],
            }),
            call(SessionCall::GenerateRandom { len: 16 }),
            call(SessionCall::Logout),
        ];
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/agent_protocol");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, flow) in [
            ("sign", sign_flow),
            ("cipher", cipher_flow),
            ("objects", object_flow),
        ] {
            let mut input = Vec::new();
            for request in flow {
                let frame = encode(&request).unwrap();
                input.extend_from_slice(&((frame.len() - 4) as u16).to_be_bytes());
                input.extend_from_slice(&frame[4..]);
            }
            std::fs::write(dir.join(name), input).unwrap();
        }
    }
}
