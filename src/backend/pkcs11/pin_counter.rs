//! The PIN policy of SPEC §4 on a pkcs11 slot, enforced by this module whatever the HSM does
//! (SoftHSM2 never locks a PIN): wrong PINs in a row are counted in a small file per token, and
//! once the limit is reached no PIN reaches the HSM through this module until the SO sets a
//! new user PIN (`C_InitPIN`).
//!
//! The file lives in a directory this module creates (0700, files 0600), under `state_dir`
//! or the user's XDG state directory. A login holds an exclusive lock on it from the count's
//! check to its update, so parallel guessers in any number of processes get exactly the limit,
//! and a process killed during the call has written nothing: a login a crash interrupted is
//! not a failure (and its answer was never seen). What this counter cannot stop is written in
//! docs/security.md: the same OS user can delete the file, or call the HSM's library directly.

use crate::error::{Error, Result};
use cryptoki_sys::*;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The counts of one token, as the file holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub user: u32,
    pub so: u32,
    /// The limit the token was first counted with; a configuration may lower it, never raise it.
    pub limit: Option<u32>,
}

impl Counts {
    fn parse(text: &str) -> Counts {
        let mut counts = Counts::default();
        for line in text.lines() {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u32>() else {
                continue;
            };
            match name.trim() {
                "user" => counts.user = value,
                "so" => counts.so = value,
                "limit" if value > 0 => counts.limit = Some(value),
                _ => {}
            }
        }
        counts
    }

    fn render(&self) -> String {
        let mut text = format!("user={}\nso={}\n", self.user, self.so);
        if let Some(limit) = self.limit {
            text += &format!("limit={limit}\n");
        }
        text
    }

    fn of(&mut self, user: CK_USER_TYPE) -> &mut u32 {
        if user == CKU_SO {
            &mut self.so
        } else {
            &mut self.user
        }
    }
}

/// Where the counters of this user's tokens are kept, when the configuration names no place.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("B4AE_PKCS11_STATE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state"))
}

pub struct PinCounter {
    /// The directory this module made for the counters (inside the configured place).
    dir: Option<PathBuf>,
    limit: u32,
}

impl PinCounter {
    pub fn new(state_dir: Option<&Path>, limit: u32) -> Self {
        let dir = state_dir
            .map(Path::to_path_buf)
            .or_else(default_state_dir)
            .map(|d| d.join("b4ae-pkcs11-pins"));
        PinCounter {
            dir,
            limit: limit.max(1),
        }
    }

    /// The file of the token `identity` (its label, manufacturer, model and serial number:
    /// a token initialised again is a new token, counted afresh).
    fn path(&self, identity: &[u8]) -> Result<PathBuf> {
        let Some(dir) = &self.dir else {
            tracing::error!("no directory for the PIN failure counter: set state_dir in the configuration (or HOME)");
            return Err(Error::DEVICE);
        };
        let name: String = Sha256::digest(identity)
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(dir.join(name))
    }

    fn open(&self, identity: &[u8]) -> Result<File> {
        let path = self.path(identity)?;
        let dir = path.parent().expect("the counter file is in a directory");
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        let file = made.and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
        });
        file.map_err(|e| {
            tracing::error!(
                "cannot open the PIN failure counter {}: {e}",
                path.display()
            );
            Error::DEVICE
        })
    }

    fn read(file: &mut File) -> Result<Counts> {
        let mut text = String::new();
        file.rewind().map_err(|_| Error::DEVICE)?;
        file.read_to_string(&mut text).map_err(|_| Error::DEVICE)?;
        Ok(Counts::parse(&text))
    }

    fn write(file: &mut File, counts: &Counts) -> Result<()> {
        let text = counts.render();
        let written = file
            .rewind()
            .and_then(|()| file.set_len(0))
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_data());
        written.map_err(|e| {
            tracing::error!("cannot update the PIN failure counter: {e}");
            Error::DEVICE
        })
    }

    fn limit_of(&self, counts: &Counts) -> u32 {
        counts.limit.map_or(self.limit, |l| l.min(self.limit))
    }

    /// The counts of a token now (for `C_GetTokenInfo`), with the limit in force. Reading
    /// creates nothing: a token never counted has no file.
    pub fn counts(&self, identity: &[u8]) -> Result<(Counts, u32)> {
        let mut file = match File::open(self.path(identity)?) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Counts::default(), self.limit))
            }
            Err(_) => return Err(Error::DEVICE),
        };
        file.lock_shared().map_err(|_| Error::DEVICE)?;
        let counts = Self::read(&mut file)?;
        Ok((counts, self.limit_of(&counts)))
    }

    /// Runs a PIN check (`C_Login`, `C_SetPIN`) of `user` under the policy: refused when the
    /// PIN is locked; a `CKR_PIN_INCORRECT` counted; a success clears the count.
    pub fn attempt(
        &self,
        identity: &[u8],
        user: CK_USER_TYPE,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut file = self.open(identity)?;
        file.lock().map_err(|_| Error::DEVICE)?;
        let mut counts = Self::read(&mut file)?;
        let limit = self.limit_of(&counts);
        // The limit in force is pinned in the file: a later configuration can only lower it.
        let unpinned = counts.limit.replace(limit) != Some(limit);
        if *counts.of(user) >= limit {
            return Err(Error::PIN_LOCKED);
        }
        let result = check();
        match result {
            Err(Error::PIN_INCORRECT) => {
                *counts.of(user) += 1;
                Self::write(&mut file, &counts)?;
                if *counts.of(user) >= limit {
                    tracing::warn!("PIN locked after {limit} wrong PINs in a row");
                }
            }
            Ok(()) if *counts.of(user) > 0 || unpinned => {
                *counts.of(user) = 0;
                Self::write(&mut file, &counts)?;
            }
            _ => {}
        }
        result
    }

    /// The SO set a new user PIN: the user's count starts again.
    pub fn reset_user(&self, identity: &[u8]) -> Result<()> {
        let mut file = self.open(identity)?;
        file.lock().map_err(|_| Error::DEVICE)?;
        let mut counts = Self::read(&mut file)?;
        if counts.user != 0 {
            counts.user = 0;
            Self::write(&mut file, &counts)?;
        }
        Ok(())
    }

    /// `CKF_*_PIN_COUNT_LOW`, `_FINAL_TRY` and `_LOCKED` of the counts.
    pub fn flags(counts: &Counts, limit: u32) -> CK_FLAGS {
        let flag = |count: u32, low, last, locked| match count {
            0 => 0,
            n if n >= limit => locked,
            n if n + 1 == limit => low | last,
            _ => low,
        };
        flag(
            counts.user,
            CKF_USER_PIN_COUNT_LOW,
            CKF_USER_PIN_FINAL_TRY,
            CKF_USER_PIN_LOCKED,
        ) | flag(
            counts.so,
            CKF_SO_PIN_COUNT_LOW,
            CKF_SO_PIN_FINAL_TRY,
            CKF_SO_PIN_LOCKED,
        )
    }
}

/// The identity of a real token, from its `CK_TOKEN_INFO`.
pub fn identity(info: &CK_TOKEN_INFO) -> Vec<u8> {
    [
        &info.label[..],
        &info.manufacturerID[..],
        &info.model[..],
        &info.serialNumber[..],
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_ignore_garbage() {
        let counts = Counts {
            user: 3,
            so: 1,
            limit: Some(5),
        };
        assert_eq!(Counts::parse(&counts.render()), counts);
        assert_eq!(
            Counts::parse("user=x\n\0\nso=2"),
            Counts {
                so: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn flags_follow_the_count() {
        let c = |user| Counts {
            user,
            ..Default::default()
        };
        assert_eq!(PinCounter::flags(&c(0), 3), 0);
        assert_eq!(PinCounter::flags(&c(1), 3), CKF_USER_PIN_COUNT_LOW);
        assert_eq!(
            PinCounter::flags(&c(2), 3),
            CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
        );
        assert_eq!(PinCounter::flags(&c(3), 3), CKF_USER_PIN_LOCKED);
    }
}
