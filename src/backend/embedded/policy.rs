//! The PIN policy of an embedded token. It is chosen when the token is initialized and kept in
//! the token: a configuration that opens the store later cannot loosen it. It is stored in the
//! clear (`C_GetTokenInfo` needs it before anyone logs in) and bound into the associated data of
//! every PIN wrap and of the head, so an altered policy makes the correct PIN fail.

/// Accepted bounds for a policy read from a file.
const MAX_FAILURES_LIMIT: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min_pin_len: u32,
    pub max_failures: u32,
}

impl Policy {
    pub fn encode(self) -> Vec<u8> {
        let mut out = self.min_pin_len.to_le_bytes().to_vec();
        out.extend_from_slice(&self.max_failures.to_le_bytes());
        out
    }

    /// `None` for a malformed or out-of-bounds policy.
    pub fn decode(bytes: &[u8]) -> Option<Policy> {
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        let policy = Policy {
            min_pin_len: u32::from_le_bytes(bytes[..4].try_into().ok()?),
            max_failures: u32::from_le_bytes(bytes[4..].try_into().ok()?),
        };
        let sane = (1..=crate::token::MAX_PIN_LEN as u32).contains(&policy.min_pin_len)
            && (1..=MAX_FAILURES_LIMIT).contains(&policy.max_failures);
        sane.then_some(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_and_absurd_ones_are_refused() {
        let p = Policy {
            min_pin_len: 8,
            max_failures: 3,
        };
        assert_eq!(Policy::decode(&p.encode()), Some(p));
        let zero = Policy {
            min_pin_len: 8,
            max_failures: 0,
        };
        assert_eq!(Policy::decode(&zero.encode()), None);
        assert_eq!(Policy::decode(&[1, 2, 3]), None);
    }
}
