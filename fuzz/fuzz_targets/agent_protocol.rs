//! libFuzzer target: the custody agent's request decoder and dispatch (docs/agent.md).
//!
//! Set-up, once per process: an agent (in-process, no socket) serving one embedded token, made
//! with SO and user PINs. Each input is a new client with the allow-list rights of uid 0 that
//! has opened session 1 (read/write) and logged in as the user; then the input is cut into
//! frames (a 2-byte big-endian length, then that many bytes) and each body is answered as a
//! connection's request would be. Findings: a panic in the decoder or in a backend (the panic
//! hook sees it before the agent's `catch_unwind`), and `CKR_GENERAL_ERROR` from a request
//! that decoded (the module's answer to internal errors only).
#![no_main]

use b4ae_pkcs11::agent::{Agent, Config, LocalClient};
use b4ae_pkcs11::backend::agent::protocol::{encode, Request, Secret, SessionCall};
use cryptoki_sys::*;
use std::sync::OnceLock;

const SO_PIN: &[u8] = b"fuzz-so-pin";
const USER_PIN: &[u8] = b"fuzz-user-pin";

fn agent() -> &'static Agent {
    static AGENT: OnceLock<(Agent, std::path::PathBuf)> = OnceLock::new();
    &AGENT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("b4ae-fuzz-agent-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("fuzz directory");
            let conf = dir.join("agent.toml");
            std::fs::write(
                &conf,
                format!(
                    "[agent]\nsocket = \"{0}/unused.sock\"\n[[token]]\nlabel = \"fuzz\"\n\
                     path = \"{0}/store\"\npin_kdf = \"test-only-fast\"\nallow_users = [\"0\"]\n",
                    dir.display()
                ),
            )
            .expect("agent.toml");
            let agent = Agent::new(Config::from_file(&conf).expect("config")).expect("agent");
            let setup = agent.local_client(0).expect("a client");
            let mut label = [b' '; 32];
            label[..4].copy_from_slice(b"fuzz");
            let so_pin = Secret::new(SO_PIN.to_vec());
            ask(&agent, &setup, Request::InitToken { token: 0, so_pin, label });
            ask(&agent, &setup, Request::OpenSession { token: 0, flags: (CKF_SERIAL_SESSION | CKF_RW_SESSION) as u64 });
            let pin = Secret::new(SO_PIN.to_vec());
            ask(&agent, &setup, session(SessionCall::Login { user: CKU_SO as u64, pin }));
            let pin = Secret::new(USER_PIN.to_vec());
            ask(&agent, &setup, session(SessionCall::InitPin { pin }));
            (agent, dir)
        })
        .0
}

fn session(call: SessionCall) -> Request {
    Request::Session { session: 1, call }
}

fn ask(agent: &Agent, client: &LocalClient, request: Request) -> u64 {
    let frame = encode(&request).expect("encodes");
    let response = agent.answer_local(client, &frame[4..]).expect("a request");
    response.rv
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let agent = agent();
    let client = agent.local_client(0).expect("a client");
    ask(agent, &client, Request::OpenSession { token: 0, flags: (CKF_SERIAL_SESSION | CKF_RW_SESSION) as u64 });
    let pin = Secret::new(USER_PIN.to_vec());
    ask(agent, &client, session(SessionCall::Login { user: CKU_USER as u64, pin }));
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if let Some(response) = agent.answer_local(&client, body) {
            if response.rv == CKR_GENERAL_ERROR as u64 {
                panic!("B4AE FUZZ FINDING: CKR_GENERAL_ERROR for a request that decoded: {body:02x?}");
            }
        }
    }
});
