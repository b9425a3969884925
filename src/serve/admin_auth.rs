//! Who is calling the revocation API, and whether they may.
//!
//! The admin listener learns its peer from the transport, never from the request: a Unix
//! socket's kernel credentials (`SO_PEERCRED`), a TLS peer's X509-SVID (already checked against
//! `listen.admin_tls.allow_peers` by the handshake), or, on plain TCP, only an address. Each
//! operation — revoke, unrevoke, list — is then authorized on its own against
//! [`AdminRights`]; see there for the defaults. A call whose peer is unknown is refused.

use crate::config::{AdminOperation, AdminRights, ListenAddress, Listeners};
use crate::decision::spiffe::{CallerPattern, SpiffeId};
use crate::serve::connection::BatchedWrites;
use crate::serve::tls::TlsPeer;
use std::net::SocketAddr;
use tokio::net::{UnixListener, UnixStream};

/// The peer of one admin connection, as the transport proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminPeer {
    /// A Unix-socket peer by its kernel credentials.
    Socket { uid: u32, pid: Option<i32> },
    /// A TLS peer that passed `allow_peers`, by its SPIFFE ID (`None` when the certificate
    /// carried none, which the admin gate refuses before this is read).
    Tls {
        id: Option<SpiffeId>,
        address: SocketAddr,
    },
    /// A plain-TCP peer: an address, no identity.
    Tcp { address: SocketAddr },
}

impl AdminPeer {
    /// How audit records and logs name the peer.
    pub fn describe(&self) -> String {
        match self {
            Self::Socket {
                uid,
                pid: Some(pid),
            } => format!("uid:{uid} pid:{pid}"),
            Self::Socket { uid, pid: None } => format!("uid:{uid}"),
            Self::Tls { id: Some(id), .. } => id.as_str().to_owned(),
            Self::Tls { id: None, address } => format!("tls:{address} (no SPIFFE ID)"),
            Self::Tcp { address } => format!("tcp:{address} (unauthenticated)"),
        }
    }
}

impl From<SocketAddr> for AdminPeer {
    /// A plain-TCP peer.
    fn from(address: SocketAddr) -> Self {
        Self::Tcp { address }
    }
}

impl From<TlsPeer> for AdminPeer {
    /// A TLS peer that passed the handshake's checks.
    fn from(TlsPeer { address, id }: TlsPeer) -> Self {
        Self::Tls { id, address }
    }
}

impl From<SocketCredentials> for AdminPeer {
    /// A Unix-socket peer.
    fn from(SocketCredentials { uid, pid }: SocketCredentials) -> Self {
        Self::Socket { uid, pid }
    }
}

/// A Unix-socket listener that hands over each connection with its peer's credentials; a
/// connection must send its first bytes within the deadline.
pub struct CredentialedUnixListener {
    pub listener: UnixListener,
    pub deadline: std::time::Duration,
}

/// The kernel credentials of a Unix-socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketCredentials {
    pub uid: u32,
    pub pid: Option<i32>,
}

impl crate::serve::http_server::PeerAddress for SocketCredentials {
    /// None: the socket's peers share the listener's cap (and are authorized by uid).
    fn ip(&self) -> Option<std::net::IpAddr> {
        None
    }
}

impl axum::serve::Listener for CredentialedUnixListener {
    type Io = BatchedWrites<UnixStream>;
    type Addr = SocketCredentials;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's own accept loop: connection errors skipped, others backed off.
            let (stream, _) = axum::serve::Listener::accept(&mut self.listener).await;
            match stream.peer_cred() {
                Ok(credentials) => {
                    let peer = SocketCredentials {
                        uid: credentials.uid(),
                        pid: credentials.pid(),
                    };
                    return (BatchedWrites::opening(stream, self.deadline), peer);
                }
                // Without credentials nothing could be authorized: drop the connection.
                Err(error) => tracing::warn!(%error, "admin socket: no peer credentials"),
            }
        }
    }

    /// A listening socket has no peer: there are no credentials to report.
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a Unix listener has no peer credentials",
        ))
    }
}

/// The rights of one admin listener, resolved against how it listens.
#[derive(Debug, Clone)]
pub struct AdminPolicy {
    rights: AdminRights,
    /// `listen.admin_tls.allow_peers`: the TLS default for revoke and list.
    tls_peers: Vec<CallerPattern>,
    /// The uid the socket belongs to (actguard's own): the socket default.
    socket_owner: Option<u32>,
}

impl AdminPolicy {
    /// The policy of the admin listener in `listen`. `socket_owner` is the owner of the bound
    /// socket file, when the listener is a Unix socket.
    pub fn new(listen: &Listeners, rights: AdminRights, socket_owner: Option<u32>) -> Self {
        let tls_peers = listen
            .admin_tls
            .as_ref()
            .map(|tls| tls.allow_peers.clone())
            .unwrap_or_default();
        let socket_owner = match &listen.admin {
            Some(ListenAddress::Unix(_)) => socket_owner,
            _ => None,
        };
        Self {
            rights,
            tls_peers,
            socket_owner,
        }
    }

    /// `Ok` when `peer` may perform `operation`; else why not, in words for the caller.
    pub fn permits(
        &self,
        operation: AdminOperation,
        peer: Option<&AdminPeer>,
    ) -> Result<(), String> {
        let grantees = self.rights.grantees(operation);
        let op = operation.name();
        match peer {
            None => Err("the caller's identity is unknown".into()),
            Some(AdminPeer::Socket { uid, .. }) => {
                let allowed = match &grantees.uids {
                    Some(uids) => uids.contains(uid),
                    None => self.socket_owner == Some(*uid),
                };
                if allowed {
                    Ok(())
                } else {
                    Err(format!("uid {uid} may not {op} (admin.{op}_uids)"))
                }
            }
            Some(AdminPeer::Tls { id: None, .. }) => {
                Err("the TLS peer's certificate carries no SPIFFE ID".into())
            }
            Some(AdminPeer::Tls { id: Some(id), .. }) => {
                let patterns = match (&grantees.peers, operation) {
                    (Some(patterns), _) => patterns.as_slice(),
                    // Lifting a revocation is never a default right of a workload identity.
                    (None, AdminOperation::Unrevoke) => &[],
                    (None, _) => self.tls_peers.as_slice(),
                };
                if patterns.iter().any(|pattern| pattern.matches(id)) {
                    Ok(())
                } else {
                    Err(format!("{id} may not {op} (admin.{op}_peers)"))
                }
            }
            Some(AdminPeer::Tcp { .. }) => {
                if self
                    .rights
                    .insecure_unauthenticated_tcp
                    .contains(&operation)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "the revocation API does not {op} for unauthenticated plain-TCP peers: serve it on listen.admin: unix:/path or with listen.admin_tls"
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Grantees;

    fn listen(admin: &str, tls_peers: Option<&[&str]>) -> Listeners {
        let admin_tls = tls_peers.map(|peers| crate::config::tls::TlsSettings {
            cert: "svid.pem".into(),
            key: "key.pem".into(),
            client_ca: "bundle.pem".into(),
            allow_peers: peers
                .iter()
                .map(|p| CallerPattern::parse(p).unwrap())
                .collect(),
            reload_interval: std::time::Duration::from_secs(10),
        });
        Listeners {
            grpc: ListenAddress::parse("127.0.0.1:9191").unwrap(),
            grpc_tls: None,
            http: None,
            http_request: Default::default(),
            admin: ListenAddress::parse(admin),
            admin_tls,
            probes: None,
            reflection: false,
        }
    }

    fn tls_peer(id: &str) -> AdminPeer {
        AdminPeer::Tls {
            id: Some(SpiffeId::parse(id).unwrap()),
            address: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn rule_socket_peers_other_than_the_owner_have_no_default_rights() {
        let policy = AdminPolicy::new(
            &listen("unix:/run/a.sock", None),
            AdminRights::default(),
            Some(1000),
        );
        let owner = AdminPeer::Socket {
            uid: 1000,
            pid: None,
        };
        let other = AdminPeer::Socket {
            uid: 1001,
            pid: None,
        };
        let root = AdminPeer::Socket { uid: 0, pid: None };
        for operation in AdminOperation::ALL {
            assert_eq!(policy.permits(operation, Some(&owner)), Ok(()));
            assert!(policy.permits(operation, Some(&other)).is_err());
            assert!(policy.permits(operation, Some(&root)).is_err());
            assert!(policy.permits(operation, None).is_err());
        }
    }

    #[test]
    fn rule_socket_rights_are_separate_per_operation() {
        let rights = AdminRights {
            revoke: Grantees {
                peers: None,
                uids: Some(vec![1000, 2000]),
            },
            unrevoke: Grantees {
                peers: None,
                uids: Some(vec![]),
            },
            ..AdminRights::default()
        };
        let policy = AdminPolicy::new(&listen("unix:/run/a.sock", None), rights, Some(1000));
        let owner = AdminPeer::Socket {
            uid: 1000,
            pid: None,
        };
        let operator = AdminPeer::Socket {
            uid: 2000,
            pid: None,
        };
        assert_eq!(
            policy.permits(AdminOperation::Revoke, Some(&operator)),
            Ok(())
        );
        assert!(
            policy
                .permits(AdminOperation::List, Some(&operator))
                .is_err()
        );
        assert_eq!(policy.permits(AdminOperation::List, Some(&owner)), Ok(()));
        assert!(
            policy
                .permits(AdminOperation::Unrevoke, Some(&owner))
                .is_err()
        );
    }

    #[test]
    fn rule_tls_peers_may_revoke_and_list_by_default_but_never_unrevoke() {
        let listen = listen("127.0.0.1:9192", Some(&["spiffe://example.org/ops/*"]));
        let ops = tls_peer("spiffe://example.org/ops/alice");
        let policy = AdminPolicy::new(&listen, AdminRights::default(), None);
        assert_eq!(policy.permits(AdminOperation::Revoke, Some(&ops)), Ok(()));
        assert_eq!(policy.permits(AdminOperation::List, Some(&ops)), Ok(()));
        assert!(
            policy
                .permits(AdminOperation::Unrevoke, Some(&ops))
                .is_err()
        );
        // A socket peer is not a TLS peer: no right carries over.
        let socket = AdminPeer::Socket { uid: 0, pid: None };
        assert!(
            policy
                .permits(AdminOperation::Revoke, Some(&socket))
                .is_err()
        );
        let rights = AdminRights {
            unrevoke: Grantees {
                peers: Some(vec![
                    CallerPattern::parse("spiffe://example.org/ops/oncall").unwrap(),
                ]),
                uids: None,
            },
            ..AdminRights::default()
        };
        let policy = AdminPolicy::new(&listen, rights, None);
        assert!(
            policy
                .permits(AdminOperation::Unrevoke, Some(&ops))
                .is_err()
        );
        let oncall = tls_peer("spiffe://example.org/ops/oncall");
        assert_eq!(
            policy.permits(AdminOperation::Unrevoke, Some(&oncall)),
            Ok(())
        );
    }

    #[test]
    fn rule_plain_tcp_peers_may_do_nothing_unless_opted_in() {
        let peer = AdminPeer::Tcp {
            address: "127.0.0.1:40000".parse().unwrap(),
        };
        let listen = listen("127.0.0.1:9192", None);
        let policy = AdminPolicy::new(&listen, AdminRights::default(), None);
        for operation in AdminOperation::ALL {
            assert!(policy.permits(operation, Some(&peer)).is_err());
        }
        let rights = AdminRights {
            insecure_unauthenticated_tcp: vec![AdminOperation::Revoke],
            ..AdminRights::default()
        };
        let policy = AdminPolicy::new(&listen, rights, None);
        assert_eq!(policy.permits(AdminOperation::Revoke, Some(&peer)), Ok(()));
        assert!(
            policy
                .permits(AdminOperation::Unrevoke, Some(&peer))
                .is_err()
        );
        assert!(policy.permits(AdminOperation::List, Some(&peer)).is_err());
    }
}
