//! Database: is the ensemble reachable with its credentials, and which version does it run.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verifier::ConnectOptions;

use crate::api::assets::{Database, DatabaseStatus, ZookeeperAdmin};
use crate::api::conditions::{set_condition, types, Desired, Reason};
use crate::resolve::ResolveError;

/// How often a Database is checked again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What a successful check learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub version: Option<String>,
    pub server: Option<String>,
}

/// A failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub reason: Reason,
    pub message: String,
}

/// The status a Database should have, from the outcome of resolving and checking it.
pub fn desired(
    db: &Database,
    outcome: Result<Probe, Result<ProbeFailure, ResolveError>>,
    now: Timestamp,
) -> DatabaseStatus {
    let mut st = db.status.clone().unwrap_or_default();
    st.observed_generation = db.metadata.generation;
    st.last_checked_time = Some(Time(now));
    let want = match outcome {
        Ok(p) => {
            let msg = format!(
                "connected to {}{}",
                p.server.as_deref().unwrap_or("the ensemble"),
                p.version
                    .as_deref()
                    .map(|v| format!(", ZooKeeper {v}"))
                    .unwrap_or_default()
            );
            st.server_version = p.version;
            st.connected_server = p.server;
            Desired::new(types::READY, true, Reason::Connected, msg)
        }
        Err(Ok(f)) => Desired::new(types::READY, false, f.reason, f.message),
        Err(Err(e)) => Desired::new(types::READY, false, e.reason(), e.to_string()),
    };
    set_condition(&mut st.conditions, want, db.metadata.generation, now);
    st
}

/// Opens a session with the credentials (so a refused session shows), then asks one server
/// for its version: the AdminServer when `admin` is set, else the `srvr` four-letter word.
pub async fn probe(
    opts: &ConnectOptions,
    admin: Option<&ZookeeperAdmin>,
) -> Result<Probe, ProbeFailure> {
    let client = verifier::connect(verifier::Role::Database, opts)
        .await
        .map_err(|e| {
            let reason = match &e {
                verifier::ConnectError::Refused {
                    source: zookeeper_client::Error::AuthFailed,
                    ..
                } => Reason::AuthFailed,
                verifier::ConnectError::InvalidServers { .. } => Reason::InvalidSpec,
                _ => Reason::Unreachable,
            };
            ProbeFailure {
                reason,
                message: e.to_string(),
            }
        })?;
    drop(client);
    let servers: Vec<&str> = opts
        .servers
        .split('/')
        .next()
        .unwrap_or("")
        .split(',')
        .collect();
    let version = match admin {
        Some(a) if a.protocol == "http" => admin_version(a).await,
        _ => {
            // Through the operator's tunnels, the key goes first.
            let preamble = opts
                .proxy_auth
                .as_ref()
                .map(crate::remote_cluster::tunnel::admit::probe_preamble)
                .unwrap_or_default();
            let mut found = None;
            for s in &servers {
                if let Some(v) = srvr_version(s, &preamble).await {
                    found = Some((v, s.to_string()));
                    break;
                }
            }
            found.map(|(v, _)| v)
        }
    };
    Ok(Probe {
        version,
        server: servers.first().map(|s| s.to_string()),
    })
}

/// How long a four-letter-word probe may take: a healthy server answers in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a probe's reply read (a `srvr` answer or an AdminServer response is far smaller),
/// so a wrong server cannot make the probe buffer without end.
const MAX_REPLY_BYTES: u64 = 64 * 1024;

/// Sends `preamble` then `request` to `addr`, and reads the reply.
async fn exchange(addr: &str, preamble: &[u8], request: &[u8]) -> Option<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(&[preamble, request].concat()).await.ok()?;
        let mut out = Vec::new();
        s.take(MAX_REPLY_BYTES).read_to_end(&mut out).await.ok()?;
        String::from_utf8(out).ok()
    };
    tokio::time::timeout(PROBE_TIMEOUT, io).await.ok().flatten()
}

/// `srvr` is whitelisted by default since ZooKeeper 3.5; servers that refuse it simply report
/// no version. `preamble` goes first (a tunnel's key; empty when dialling a server directly).
pub async fn srvr_version(addr: &str, preamble: &[u8]) -> Option<String> {
    parse_srvr(&exchange(addr, preamble, b"srvr").await?)
}

pub fn parse_srvr(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Zookeeper version: "))?;
    Some(line.split(',').next().unwrap_or(line).trim().to_string())
}

async fn admin_version(a: &ZookeeperAdmin) -> Option<String> {
    let req = format!(
        "GET /commands/srvr HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
        a.host
    );
    let resp = exchange(&format!("{}:{}", a.host, a.port), &[], req.as_bytes()).await?;
    let body = resp.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let version = v.get("version")?.as_str()?;
    Some(
        version
            .split(',')
            .next()
            .unwrap_or(version)
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::conditions::{find, ConditionStatus};

    #[test]
    fn srvr_output_yields_the_version() {
        let out = "Zookeeper version: 3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c, built on 2024-02-12 22:16 UTC\nLatency min/avg/max: 0/0.0/0\n";
        assert_eq!(
            parse_srvr(out).as_deref(),
            Some("3.8.4-9316c2a7a97e1666d8f4593f34dd6fc36ecc436c")
        );
        assert_eq!(
            parse_srvr("srvr is not executed because it is not in the whitelist.\n"),
            None
        );
    }

    #[test]
    fn status_reflects_each_outcome() {
        let db = Database::new("zk", Default::default());
        let now = Timestamp::from_second(1000).unwrap();
        let ok = desired(
            &db,
            Ok(Probe {
                version: Some("3.8.4".into()),
                server: Some("a:2181".into()),
            }),
            now,
        );
        let r = find(&ok.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(r), r.reason.as_str()),
            (ConditionStatus::True, "Connected")
        );
        assert_eq!(ok.server_version.as_deref(), Some("3.8.4"));
        let missing = desired(
            &db,
            Err(Err(ResolveError::SecretNotFound {
                namespace: "ns".into(),
                name: "zk".into(),
                needed_by: "Database zk needs it".into(),
            })),
            now,
        );
        assert_eq!(
            find(&missing.conditions, types::READY).unwrap().reason,
            "SecretNotFound"
        );
        let down = desired(
            &db,
            Err(Ok(ProbeFailure {
                reason: Reason::Unreachable,
                message: "x".into(),
            })),
            now,
        );
        assert_eq!(
            find(&down.conditions, types::READY).unwrap().reason,
            "Unreachable"
        );
    }
}
