//! Who is at the other end of a connection: the kernel's peer credentials (`SO_PEERCRED`),
//! and the groups of that user, checked against a token's allow-list.

use super::config::AllowList;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{getgrouplist, Gid, Uid, User};
use std::ffi::CString;
use std::os::unix::net::UnixStream;

#[derive(Debug, Clone)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
    /// The primary and supplementary groups of the user.
    pub groups: Vec<u32>,
    pub name: String,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
        let user = User::from_uid(Uid::from_raw(cred.uid())).ok().flatten();
        let name = user
            .as_ref()
            .map_or_else(|| cred.uid().to_string(), |u| u.name.clone());
        let mut groups = vec![cred.gid()];
        if let Some(user) = &user {
            if let Ok(cname) = CString::new(user.name.clone()) {
                if let Ok(list) = getgrouplist(&cname, Gid::from_raw(cred.gid())) {
                    groups.extend(list.iter().map(|g| g.as_raw()));
                }
            }
        }
        Ok(Peer {
            uid: cred.uid(),
            pid: cred.pid(),
            groups,
            name,
        })
    }

    /// Whether the allow-list names this user or one of its groups. An empty list allows no one.
    pub fn allowed_by(&self, allow: &AllowList) -> bool {
        allow.uids.contains(&self.uid) || self.groups.iter().any(|g| allow.gids.contains(g))
    }
}
