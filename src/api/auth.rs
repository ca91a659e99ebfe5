//! Who may do what through the local API, decided from the peer's credentials (SO_PEERCRED).
//!
//! Any local user who can open the socket may read; only root, the agent's own user, or a member
//! of group `edgeroll` may act. The decision is the pure function [`authorize`]; looking up the
//! peer's groups (NSS, which may block) is done once per connection, only when it first acts.
//! This module must never trust anything the client says about itself, such as headers.

use std::ffi::CString;

use tokio::sync::OnceCell;

use super::OPERATOR_GROUP;

/// The uid of root.
const ROOT_UID: u32 = 0;

/// Whether a peer may act (POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the rule that allowed it (for logs).
    Allowed(&'static str),
    /// Refused, with the message the client sees.
    Denied(String),
}

/// Decide whether the peer `peer_uid`/`peer_gid` (with supplementary groups `peer_groups`) may
/// act on an agent running as `agent_uid`; `operator_gid` is the gid of group `edgeroll` if that
/// group exists.
pub fn authorize(
    peer_uid: u32,
    peer_gid: u32,
    peer_groups: &[u32],
    agent_uid: u32,
    operator_gid: Option<u32>,
) -> Decision {
    if peer_uid == ROOT_UID {
        return Decision::Allowed("root");
    }
    if peer_uid == agent_uid {
        return Decision::Allowed("the agent's user");
    }
    if let Some(operator_gid) = operator_gid {
        if peer_gid == operator_gid || peer_groups.contains(&operator_gid) {
            return Decision::Allowed("member of the operator group");
        }
    }
    Decision::Denied(format!(
        "permission denied: uid {peer_uid} is not root and not in group {OPERATOR_GROUP}"
    ))
}

/// The credentials of one connection's peer, with its decision computed on first use.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Effective uid of the connecting process.
    pub(crate) uid: u32,
    /// Effective gid of the connecting process.
    pub(crate) gid: u32,
    /// The decision, looked up once per connection the first time it acts.
    decision: OnceCell<Decision>,
}

impl Peer {
    /// A peer with the credentials read from its socket.
    pub(crate) fn new(uid: u32, gid: u32) -> Self {
        Peer {
            uid,
            gid,
            decision: OnceCell::new(),
        }
    }

    /// Whether this peer may act on an agent running as `agent_uid`.
    pub(crate) async fn decision(&self, agent_uid: u32) -> &Decision {
        let (uid, gid) = (self.uid, self.gid);
        self.decision
            .get_or_init(|| async move {
                // Group lookups go through NSS (files, LDAP, …) and may block.
                let lookup = tokio::task::spawn_blocking(move || {
                    (supplementary_groups(uid, gid), operator_gid())
                })
                .await;
                let (groups, operator_gid) = lookup.unwrap_or_else(|error| {
                    tracing::warn!(%error, "group lookup for an API client failed");
                    (Vec::new(), None)
                });
                authorize(uid, gid, &groups, agent_uid, operator_gid)
            })
            .await
    }
}

/// The supplementary groups of the user `uid` (empty when the uid has no user entry).
fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(uid, %error, "cannot look up the user of an API client");
            return Vec::new();
        }
    };
    let Ok(name) = CString::new(user.name.as_bytes()) else {
        return Vec::new();
    };
    match nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
        Ok(groups) => groups.into_iter().map(|group| group.as_raw()).collect(),
        Err(error) => {
            tracing::warn!(user = %user.name, %error, "cannot look up the groups of an API client");
            Vec::new()
        }
    }
}

/// The gid of group `edgeroll`, if it exists.
fn operator_gid() -> Option<u32> {
    match nix::unistd::Group::from_name(OPERATOR_GROUP) {
        Ok(group) => group.map(|group| group.gid.as_raw()),
        Err(error) => {
            tracing::warn!(group = OPERATOR_GROUP, %error, "cannot look up the operator group");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: u32 = 998;
    const OPERATORS: u32 = 990;

    #[test]
    fn root_may_act() {
        assert!(matches!(
            authorize(0, 0, &[], AGENT, Some(OPERATORS)),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            authorize(0, 0, &[], AGENT, None),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn the_agents_own_user_may_act() {
        assert!(matches!(
            authorize(AGENT, AGENT, &[], AGENT, None),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn a_member_by_primary_group_may_act() {
        assert!(matches!(
            authorize(1000, OPERATORS, &[], AGENT, Some(OPERATORS)),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn a_member_by_supplementary_group_may_act() {
        assert!(matches!(
            authorize(1000, 1000, &[1000, 27, OPERATORS], AGENT, Some(OPERATORS)),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn a_stranger_is_refused_with_a_message_naming_the_uid() {
        assert_eq!(
            authorize(1000, 1000, &[1000, 27], AGENT, Some(OPERATORS)),
            Decision::Denied(
                "permission denied: uid 1000 is not root and not in group edgeroll".to_owned()
            )
        );
    }

    #[test]
    fn without_the_group_only_root_and_the_agent_may_act() {
        assert!(matches!(
            authorize(1000, 1000, &[1000], AGENT, None),
            Decision::Denied(_)
        ));
    }
}
