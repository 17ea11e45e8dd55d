//! The audit trail (SPEC §6): one JSON line per security event, each carrying the SHA-256 of
//! the line before it, so a removed, reordered or edited line breaks the chain that
//! `b4ae-pkcs11 audit verify` follows. Several processes may append to one file: each append
//! holds an exclusive `flock` while it reads the last line and writes its own. Never a secret
//! in a line: callers pass names, numbers and labels only.

use nix::fcntl::{Flock, FlockArg};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How far back from the end the last line is looked for (lines are far shorter).
const TAIL: u64 = 64 * 1024;

/// An audit trail file.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

/// The last complete line of the file (without its newline), if any.
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty()))
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        AuditLog { path }
    }

    /// Appends one event. `fields` are the event's details (names and numbers only). A trail
    /// that cannot be written is logged as an error; the operation it records goes on.
    pub fn record(&self, event: &str, fields: Map<String, Value>) {
        if let Err(e) = self.append(event, fields) {
            tracing::error!("audit trail {}: {e}", self.path.display());
        }
    }

    fn append(&self, event: &str, fields: Map<String, Value>) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let mut file =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let prev = last_line(&mut file)?.map_or_else(|| GENESIS.to_owned(), |l| line_hash(&l));
        let mut line = Map::new();
        line.insert(
            "time".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("event".into(), event.into());
        line.insert("pid".into(), std::process::id().into());
        for (k, v) in fields {
            line.insert(k, v);
        }
        line.insert("prev".into(), prev.into());
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// What `audit verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every line chains to the one before; the number of lines.
    Intact(usize),
    /// The chain breaks at this line (1-based), with the reason.
    Broken(usize, String),
}

/// Follows the chain of an audit trail file.
pub fn verify(path: &Path) -> std::io::Result<Verdict> {
    let text = std::fs::read_to_string(path)?;
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return Ok(Verdict::Broken(number, format!("not a JSON line: {e}"))),
        };
        match value.get("prev").and_then(Value::as_str) {
            Some(p) if p == prev => {}
            Some(_) => {
                return Ok(Verdict::Broken(
                    number,
                    "its `prev` is not the hash of the line before: a line was removed, \
                     reordered or edited"
                        .into(),
                ))
            }
            None => return Ok(Verdict::Broken(number, "no `prev` field".into())),
        }
        prev = line_hash(line);
        count = number;
    }
    Ok(Verdict::Intact(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("n".into(), n.into());
        m
    }

    #[test]
    fn a_chain_verifies_and_every_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new(path.clone());
        for n in 0..5 {
            log.record("login_ok", fields(n));
        }
        assert_eq!(verify(&path).unwrap(), Verdict::Intact(5));
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let removed = [lines[0], lines[1], lines[3], lines[4]].join("\n");
        std::fs::write(&path, removed + "\n").unwrap();
        assert!(matches!(verify(&path).unwrap(), Verdict::Broken(3, _)));

        let reordered = [lines[0], lines[2], lines[1], lines[3], lines[4]].join("\n");
        std::fs::write(&path, reordered + "\n").unwrap();
        assert!(matches!(verify(&path).unwrap(), Verdict::Broken(2, _)));

        let edited = original.replacen("\"n\":2", "\"n\":7", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(verify(&path).unwrap(), Verdict::Broken(4, _)));
    }
}
