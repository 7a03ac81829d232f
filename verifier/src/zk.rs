//! Connecting to an ensemble with digest credentials, and telling transient errors from final ones.

use crate::side::Role;
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use sha1::Digest as _;
use thiserror::Error;
use zookeeper_client::{Client, Error as ZkError};

/// ZooKeeper `digest` credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestAuth {
    pub user: String,
    pub password: String,
}

// Never print the password.
impl std::fmt::Debug for DigestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DigestAuth({}:***)", self.user)
    }
}

impl DigestAuth {
    /// Parses `user:password` (the password may itself contain ':').
    pub fn parse(s: &str) -> Result<DigestAuth, String> {
        let s = s.trim_end_matches(['\n', '\r']);
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(DigestAuth {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("expected user:password".to_string()),
        }
    }

    /// The id the server derives for these credentials: `user:base64(sha1(user:password))`,
    /// as found in `digest` ACL entries.
    pub fn acl_id(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("{}:{}", self.user, self.password).as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        format!("{}:{}", self.user, b64)
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `host:port[,host:port...]`, optionally with a chroot suffix as in the Java client.
    pub servers: String,
    pub auth: Option<DigestAuth>,
    /// Credentials a proxy in front of the servers asks of every connection (the operator's
    /// tunnels into other clusters: their key), sent before `auth` on each connection; the
    /// proxy takes them out, so the servers never see them.
    pub proxy_auth: Option<DigestAuth>,
    pub session_timeout: Duration,
    /// How long to try before calling the ensemble unreachable.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(servers: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            servers: servers.into(),
            auth: None,
            proxy_auth: None,
            session_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_auth(mut self, auth: Option<DigestAuth>) -> ConnectOptions {
        self.auth = auth;
        self
    }
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(
        "{role} ensemble {servers:?} is unreachable: no session within {timeout:?} \
         ({attempts} attempts, each on every server of the connect string; last error: {last})"
    )]
    Unreachable {
        role: Role,
        servers: String,
        timeout: Duration,
        /// Rounds of attempts: each tries every server once.
        attempts: u32,
        /// What the last round failed with.
        last: String,
    },
    #[error("{role} ensemble {servers:?} refused the session: {source}")]
    Refused {
        role: Role,
        servers: String,
        #[source]
        source: ZkError,
    },
    #[error(
        "{role} servers: {servers:?} is not a valid connection string (host:port[,host:port...])"
    )]
    InvalidServers { role: Role, servers: String },
}

/// Opens a session and authenticates, trying every server again with backoff until
/// `connect_timeout` has passed. `role` names the side (or the Database) in errors.
pub async fn connect(role: impl Into<Role>, opts: &ConnectOptions) -> Result<Client, ConnectError> {
    let role = role.into();
    if opts.servers.trim().is_empty()
        || opts
            .servers
            .split('/')
            .next()
            .unwrap_or("")
            .split(',')
            .any(|s| s.trim().is_empty() || !s.contains(':'))
    {
        return Err(ConnectError::InvalidServers {
            role,
            servers: opts.servers.clone(),
        });
    }
    let deadline = Instant::now() + opts.connect_timeout;
    let mut pause = RETRY_FIRST;
    let mut attempts = 0;
    let mut last = String::new();
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, connector(opts, left).connect(&opts.servers)).await {
            // A round cut short by the deadline says less than the one before it.
            Err(_) if last.is_empty() => last = "timed out".to_string(),
            Err(_) => {}
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) if e == ZkError::NoHosts || is_transient(&e) => last = e.to_string(),
            Ok(Err(source)) => {
                return Err(ConnectError::Refused {
                    role,
                    servers: opts.servers.clone(),
                    source,
                })
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::Unreachable {
                role,
                servers: opts.servers.clone(),
                timeout: opts.connect_timeout,
                attempts,
                last: std::mem::take(&mut last),
            });
        }
        tracing::debug!(role = role.as_str(), servers = %opts.servers, attempts, %last, "no session yet, trying again");
        // The last round runs at the deadline, so the whole timeout is used.
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Pause after a failed round of attempts, doubled after each up to [`RETRY_MAX`]. A server
/// that is starting (a new ensemble, each step of a rolling restart) answers ruok but closes
/// sessions ("ZooKeeperServer not running") for a moment: one round is not enough.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One round: every server of the connect string once (fail eagerly), within `left`.
fn connector(opts: &ConnectOptions, left: Duration) -> zookeeper_client::Connector {
    let mut connector = Client::connector()
        .with_session_timeout(opts.session_timeout)
        .with_connection_timeout(left.min(opts.session_timeout))
        .with_fail_eagerly();
    // First: a proxy reads the first auth packet after the ConnectRequest.
    if let Some(proxy) = &opts.proxy_auth {
        connector = connector.with_auth(
            "digest",
            format!("{}:{}", proxy.user, proxy.password).as_bytes(),
        );
    }
    if let Some(auth) = &opts.auth {
        connector = connector.with_auth(
            "digest",
            format!("{}:{}", auth.user, auth.password).as_bytes(),
        );
    }
    connector
}

/// Errors a fresh attempt can cure: the connection or session, not the request.
/// zookeeper-client reports socket failures (e.g. a reset when a server restarts) as
/// `Custom` errors carrying the I/O error.
pub fn is_transient(e: &ZkError) -> bool {
    matches!(e, ZkError::Custom(_))
        || matches!(
            e,
            ZkError::ConnectionLoss
                | ZkError::SessionExpired
                | ZkError::SessionMoved
                | ZkError::Timeout
                | ZkError::Throttled
                | ZkError::NotReadOnly
                | ZkError::ClientClosed
                | ZkError::NoHosts
        )
}

/// Sessions to one ensemble for parallel reads (getACL has no batched form, and one session's
/// requests are served one after another).
pub async fn connect_pool(
    role: impl Into<Role>,
    opts: &ConnectOptions,
    size: usize,
) -> Result<Vec<Client>, ConnectError> {
    let role = role.into();
    let first = connect(role, opts).await?;
    let mut pool = vec![first];
    let rest = futures::future::join_all((1..size.max(1)).map(|_| connect(role, opts))).await;
    for c in rest {
        pool.push(c?);
    }
    Ok(pool)
}

/// Sessions per ensemble used for reads.
pub const READ_SESSIONS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials() {
        let a = DigestAuth::parse("admin:pa:ss\n").expect("valid");
        assert_eq!(a.user, "admin");
        assert_eq!(a.password, "pa:ss");
        assert!(DigestAuth::parse("nocolon").is_err());
        assert!(DigestAuth::parse(":pw").is_err());
        assert!(!format!("{a:?}").contains("pa:ss"));
    }

    #[test]
    fn digest_id_matches_zookeeper() {
        // What `java org.apache.zookeeper.server.auth.DigestAuthenticationProvider super:superpw` prints.
        let a = DigestAuth::parse("super:superpw").expect("valid");
        assert_eq!(a.acl_id(), "super:g9oN2HttPfn8MMWJZ2r45Np/LIA=");
    }
}
