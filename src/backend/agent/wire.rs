//! Conversions between the module's types and the protocol's, used by both ends.

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

use super::protocol::{Kind, WireTokenInfo};
use crate::token::operations::OpKind;
use cryptoki_sys::*;

impl From<OpKind> for Kind {
    fn from(kind: OpKind) -> Self {
        match kind {
            OpKind::Digest => Kind::Digest,
            OpKind::Sign => Kind::Sign,
            OpKind::Verify => Kind::Verify,
            OpKind::Encrypt => Kind::Encrypt,
            OpKind::Decrypt => Kind::Decrypt,
        }
    }
}

impl From<Kind> for OpKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Digest => OpKind::Digest,
            Kind::Sign => OpKind::Sign,
            Kind::Verify => OpKind::Verify,
            Kind::Encrypt => OpKind::Encrypt,
            Kind::Decrypt => OpKind::Decrypt,
        }
    }
}

impl From<&CK_TOKEN_INFO> for WireTokenInfo {
    fn from(info: &CK_TOKEN_INFO) -> Self {
        WireTokenInfo {
            label: info.label,
            manufacturer: info.manufacturerID,
            model: info.model,
            serial: info.serialNumber,
            flags: info.flags as u64,
            counts: [
                info.ulMaxSessionCount,
                info.ulSessionCount,
                info.ulMaxRwSessionCount,
                info.ulRwSessionCount,
                info.ulMaxPinLen,
                info.ulMinPinLen,
                info.ulTotalPublicMemory,
                info.ulFreePublicMemory,
                info.ulTotalPrivateMemory,
                info.ulFreePrivateMemory,
            ]
            .map(|c| c as u64),
            versions: [
                info.hardwareVersion.major,
                info.hardwareVersion.minor,
                info.firmwareVersion.major,
                info.firmwareVersion.minor,
            ],
            utc_time: info.utcTime,
        }
    }
}

impl From<&WireTokenInfo> for CK_TOKEN_INFO {
    fn from(w: &WireTokenInfo) -> Self {
        let c = w.counts.map(|c| c as CK_ULONG);
        CK_TOKEN_INFO {
            label: w.label,
            manufacturerID: w.manufacturer,
            model: w.model,
            serialNumber: w.serial,
            flags: w.flags as CK_FLAGS,
            ulMaxSessionCount: c[0],
            ulSessionCount: c[1],
            ulMaxRwSessionCount: c[2],
            ulRwSessionCount: c[3],
            ulMaxPinLen: c[4],
            ulMinPinLen: c[5],
            ulTotalPublicMemory: c[6],
            ulFreePublicMemory: c[7],
            ulTotalPrivateMemory: c[8],
            ulFreePrivateMemory: c[9],
            hardwareVersion: CK_VERSION {
                major: w.versions[0],
                minor: w.versions[1],
            },
            firmwareVersion: CK_VERSION {
                major: w.versions[2],
                minor: w.versions[3],
            },
            utcTime: w.utc_time,
        }
    }
}
