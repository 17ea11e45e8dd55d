//! One module with `pairs` embedded tokens (slots 0..pairs) and `pairs` tokens over SoftHSM2
//! (slots pairs..2·pairs), so that a test runs the same code on both backends.

use crate::common::{
    config_toml, init_token, initialize, load_module, ok, pin, temp_dir, user_session, CONF_VAR,
    USER_PIN,
};
use crate::forward_common::{
    softhsm_init_token_with, write_softhsm_conf, HSM_PIN, SOFTHSM_CONF_VAR, SOFTHSM_LIB,
};
use cryptoki::context::Pkcs11;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Hsm,
}

impl Backend {
    pub fn user_pin(self) -> &'static str {
        match self {
            Backend::Embedded => USER_PIN,
            Backend::Hsm => HSM_PIN,
        }
    }
}

pub struct Both {
    pub pkcs11: Pkcs11,
    pub slots: Vec<Slot>,
    pairs: usize,
    prefix: &'static str,
}

impl Both {
    /// The process's fixture in `cell`, made on first use; tokens are labelled `prefix-<i>`.
    pub fn get(cell: &'static OnceLock<Both>, prefix: &'static str, pairs: usize) -> &'static Both {
        cell.get_or_init(|| {
            let dir = temp_dir(&format!("b4ae-{prefix}-")).keep();
            std::fs::create_dir_all(dir.join("softhsm")).expect("token directory");
            let softhsm_conf = dir.join("softhsm2.conf");
            write_softhsm_conf(&softhsm_conf, &dir.join("softhsm"));
            std::env::set_var(SOFTHSM_CONF_VAR, &softhsm_conf);
            let mut conf = config_toml(&dir, pairs, None);
            for i in 0..pairs {
                softhsm_init_token_with(Some(&softhsm_conf), &format!("{prefix}-{i}"));
                conf += &format!(
                    "[[token]]\nlabel = \"HSM {prefix}-{i}\"\nbackend = \"pkcs11\"\n\
                     library = \"{SOFTHSM_LIB}\"\ntoken_label = \"{prefix}-{i}\"\n\n"
                );
            }
            std::fs::write(dir.join("b4ae-pkcs11.toml"), conf).expect("configuration");
            std::env::set_var(CONF_VAR, dir.join("b4ae-pkcs11.toml"));
            let pkcs11 = load_module();
            initialize(&pkcs11);
            let slots = ok(pkcs11.get_all_slots());
            assert_eq!(slots.len(), 2 * pairs);
            Both {
                pkcs11,
                slots,
                pairs,
                prefix,
            }
        })
    }

    pub fn slot(&self, backend: Backend, index: usize) -> Slot {
        match backend {
            Backend::Embedded => self.slots[index],
            Backend::Hsm => self.slots[self.pairs + index],
        }
    }

    /// A logged-in R/W session on token `index` of `backend` (the embedded token is
    /// initialised first).
    pub fn session(&self, backend: Backend, index: usize) -> Session {
        let slot = self.slot(backend, index);
        if backend == Backend::Embedded {
            init_token(&self.pkcs11, slot, &format!("{}-{index}", self.prefix));
            return user_session(&self.pkcs11, slot);
        }
        let session = ok(self.pkcs11.open_rw_session(slot));
        ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
        session
    }

    /// Runs `test` on both backends.
    pub fn on_both(&self, index: usize, test: impl Fn(&Session, Backend)) {
        for backend in [Backend::Embedded, Backend::Hsm] {
            eprintln!("-- {backend:?}");
            test(&self.session(backend, index), backend);
        }
    }
}
