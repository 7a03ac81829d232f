//! From resources to engine settings: the one place that turns a Database, its Secret and a
//! Synchronization spec into connection and copy options. The operator and the standalone mode
//! both call it, so they accept and reject exactly the same input.
//!
//! Here the errors and a Database's connection; one file each for a copy's settings (`copy`),
//! a LiveSynchronization's (`live`), a Switchover's (`switchover`), a Bucket's location
//! (`bucket`) and what a Synchronization runs (`job`).

mod bucket;
mod copy;
mod job;
mod live;
mod switchover;

pub use bucket::{bucket_location, bucket_secret_name, BucketLookup};
pub use copy::{deletion_guard, resolve_config, resolve_sync, sync_options};
pub use job::resolve_job;
pub use live::resolve_live;
pub use switchover::{resolve_switchover, switchover_timeout};

use std::collections::BTreeMap;

use thiserror::Error;
use verifier::{ConnectOptions, DigestAuth};

use crate::api::assets::Database;
use crate::api::automation::EphemeralPolicy;
use crate::api::conditions::Reason;

/// Why a resource cannot be turned into engine settings yet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("Database {name} not found in namespace {namespace}")]
    DatabaseNotFound { namespace: String, name: String },
    #[error("Secret {name} not found in namespace {namespace}: {needed_by}")]
    SecretNotFound {
        namespace: String,
        name: String,
        /// Who needs it, for what: "Database zk needs it for its credentials (…)".
        needed_by: String,
    },
    #[error("Secret {name}: {message}")]
    SecretInvalid { name: String, message: String },
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    #[error("Bucket {name} not found in namespace {namespace}")]
    BucketNotFound { namespace: String, name: String },
    #[error("KubernetesCluster {name} not found in namespace {namespace}: Database {database} runs in it (spec.kubernetesClusterName)")]
    KubernetesClusterNotFound {
        namespace: String,
        name: String,
        database: String,
    },
}

impl ResolveError {
    pub fn reason(&self) -> Reason {
        match self {
            ResolveError::DatabaseNotFound { .. } => Reason::DatabaseNotFound,
            ResolveError::SecretNotFound { .. } => Reason::SecretNotFound,
            ResolveError::SecretInvalid { .. } => Reason::SecretInvalid,
            ResolveError::InvalidSpec { .. } => Reason::InvalidSpec,
            ResolveError::BucketNotFound { .. } => Reason::BucketNotFound,
            ResolveError::KubernetesClusterNotFound { .. } => Reason::KubernetesClusterNotFound,
        }
    }

    /// Only a fix to the spec helps (as opposed to a resource that may still appear).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ResolveError::InvalidSpec { .. })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ResolveError {
    ResolveError::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The bytes of a Secret: `data` (base64 in YAML, bytes here) wins over `stringData`, which
/// only exists in manifests that were never stored by an API server.
pub type SecretData = BTreeMap<String, Vec<u8>>;

pub fn secret_data(secret: &k8s_openapi::api::core::v1::Secret) -> SecretData {
    let mut out: SecretData = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// Digest credentials from a Database's Secret (keys `user` and `password`).
pub fn credentials(secret_name: &str, data: &SecretData) -> Result<DigestAuth, ResolveError> {
    let key = |k: &str| -> Result<String, ResolveError> {
        let v = data.get(k).ok_or_else(|| ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: format!("key {k} is missing"),
        })?;
        let s = String::from_utf8(v.clone()).map_err(|_| ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: format!("key {k} is not UTF-8"),
        })?;
        let s = s.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            return Err(ResolveError::SecretInvalid {
                name: secret_name.to_string(),
                message: format!("key {k} is empty"),
            });
        }
        Ok(s)
    };
    let user = key("user")?;
    if user.contains(':') {
        return Err(ResolveError::SecretInvalid {
            name: secret_name.to_string(),
            message: "key user must not contain ':' (ZooKeeper digest ids are user:password)"
                .into(),
        });
    }
    Ok(DigestAuth {
        user,
        password: key("password")?,
    })
}

/// Connection settings of a Database with its Secret's data (`None`: the Secret is missing).
pub fn connect_options(
    db: &Database,
    secret: Option<&SecretData>,
) -> Result<ConnectOptions, ResolveError> {
    let name = db.metadata.name.clone().unwrap_or_default();
    let namespace = db.metadata.namespace.clone().unwrap_or_default();
    if let Some(cluster) = &db.spec.kubernetes_cluster_name {
        // The operator routes such a Database through tunnels first (and clears the field);
        // its servers are names inside that cluster, never to be dialled from here.
        return Err(invalid(
            "spec.kubernetesClusterName",
            format!(
                "Database {name} runs in KubernetesCluster {cluster}, which only the operator \
                 reaches (standalone mode and the CLI connect to servers directly)"
            ),
        ));
    }
    let client = db.spec.zookeeper.as_ref().and_then(|z| z.client.as_ref());
    let servers = client.map(|c| c.servers.clone()).unwrap_or_default();
    if servers.is_empty() {
        return Err(invalid(
            "spec.zookeeper.client.servers",
            "must list at least one HOST:PORT",
        ));
    }
    for s in &servers {
        let ok = s.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(invalid(
                "spec.zookeeper.client.servers",
                format!("{s:?} is not HOST:PORT"),
            ));
        }
    }
    if let Some(admin) = db.spec.zookeeper.as_ref().and_then(|z| z.admin.as_ref()) {
        if !is_host(&admin.host) {
            return Err(invalid(
                "spec.zookeeper.admin.host",
                format!("{:?} is not a host name or IP address", admin.host),
            ));
        }
    }
    let data = secret.ok_or_else(|| ResolveError::SecretNotFound {
        namespace,
        name: name.clone(),
        needed_by: format!("Database {name} needs it for its credentials (keys user and password)"),
    })?;
    let auth = credentials(&name, data)?;
    let mut o = ConnectOptions::new(servers.join(","));
    o.auth = Some(auth);
    // Servers the operator routed through its tunnels: the key they admit.
    o.proxy_auth = client.and_then(|c| c.tunnel_key.clone());
    Ok(o)
}

/// A DNS name, an IPv4 address or a bracketed IPv6 address: nothing else may reach the raw HTTP
/// request the AdminServer check sends (a CR or LF there would add header lines).
pub fn is_host(h: &str) -> bool {
    let name = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    let ipv6 = |h: &str| {
        h.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    };
    name(h) || ipv6(h)
}

/// A Database looked up by name, with the Secret of the same name; an error when it cannot be
/// used as found (its KubernetesCluster is missing, say).
pub type Found = Result<(Option<Database>, Option<SecretData>), ResolveError>;

/// The Database `name` in `namespace` as connection settings.
fn database(
    namespace: &str,
    name: &str,
    lookup: impl Fn(&str) -> Found,
) -> Result<ConnectOptions, ResolveError> {
    let (db, secret) = lookup(name)?;
    let db = db.ok_or_else(|| ResolveError::DatabaseNotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })?;
    connect_options(&db, secret.as_ref())
}

/// A duration field of the spec, its error naming the field once.
fn duration(field: &str, v: &str) -> Result<std::time::Duration, ResolveError> {
    crate::api::automation::parse_duration(field, v).map_err(|m| ResolveError::InvalidSpec {
        field: field.to_string(),
        message: m
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&m)
            .to_string(),
    })
}

/// The engine's policy for ephemeral nodes.
fn ephemerals(p: EphemeralPolicy) -> verifier::EphemeralPolicy {
    match p {
        EphemeralPolicy::Skip => verifier::EphemeralPolicy::Skip,
        EphemeralPolicy::Persistent => verifier::EphemeralPolicy::Persistent,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::assets::{Bucket, DatabaseSpec, Zookeeper, ZookeeperClient};
    use crate::api::automation::{AclPolicy, SyncConfig};

    fn db(servers: &[&str]) -> Database {
        let mut d = Database::new(
            "zk",
            DatabaseSpec {
                zookeeper: Some(Zookeeper {
                    admin: None,
                    client: Some(ZookeeperClient {
                        servers: servers.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    }),
                }),
                kubernetes_cluster_name: None,
            },
        );
        d.metadata.namespace = Some("ns".into());
        d
    }

    fn secret(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_tunnel_key_reaches_the_connection_settings_and_never_the_api() {
        let mut routed = db(&["127.0.0.1:4711"]);
        let key = verifier::DigestAuth {
            user: "resiliency-tunnel".into(),
            password: "k".into(),
        };
        routed
            .spec
            .zookeeper
            .as_mut()
            .and_then(|z| z.client.as_mut())
            .unwrap()
            .tunnel_key = Some(key.clone());
        let data = secret(&[("user", "admin"), ("password", "pw")]);
        let o = connect_options(&routed, Some(&data)).unwrap();
        assert_eq!(o.proxy_auth, Some(key));
        // Neither written out nor taken in: a Database cannot carry a key of its own.
        let json = serde_json::to_value(&routed).unwrap();
        assert_eq!(
            json["spec"]["zookeeper"]["client"],
            serde_json::json!({"servers": ["127.0.0.1:4711"]})
        );
        let mut typed = json.clone();
        typed["spec"]["zookeeper"]["client"]["tunnelKey"] =
            serde_json::json!({"user": "resiliency-tunnel", "password": "k"});
        let read: Database = serde_json::from_value(typed).unwrap();
        assert_eq!(
            connect_options(&read, Some(&data)).unwrap().proxy_auth,
            None
        );
    }

    #[test]
    fn a_database_with_its_secret_resolves() {
        let o = connect_options(
            &db(&["a:2181", "b:2182"]),
            Some(&secret(&[("user", "admin"), ("password", "pw\n")])),
        )
        .unwrap();
        assert_eq!(o.servers, "a:2181,b:2182");
        let auth = o.auth.unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("admin", "pw")
        );
    }

    #[test]
    fn an_admin_host_is_a_host_and_nothing_that_could_add_a_header() {
        for good in ["zk-0.zk.kafka.svc", "10.0.0.1", "[::1]", "localhost"] {
            assert!(is_host(good), "{good}");
        }
        for bad in [
            "",
            "zk\r\nX-Evil: 1",
            "zk 0",
            "zk/admin",
            "[not-v6]",
            "zk:8080",
        ] {
            assert!(!is_host(bad), "{bad:?}");
        }
        let mut d = db(&["a:2181"]);
        d.spec.zookeeper.as_mut().unwrap().admin = Some(crate::api::assets::ZookeeperAdmin {
            protocol: "http".into(),
            host: "zk\r\nHost: evil".into(),
            port: "8080".into(),
            secret_name: None,
        });
        let e =
            connect_options(&d, Some(&secret(&[("user", "u"), ("password", "p")]))).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.zookeeper.admin.host"),
            "{e}"
        );
        assert_eq!(e.reason(), Reason::InvalidSpec);
    }

    #[test]
    fn each_bad_input_names_what_is_wrong() {
        let ok = secret(&[("user", "u"), ("password", "p")]);
        assert_eq!(
            connect_options(&db(&["a:2181"]), None)
                .unwrap_err()
                .reason(),
            Reason::SecretNotFound
        );
        let e = connect_options(&db(&["a:2181"]), Some(&secret(&[("user", "u")]))).unwrap_err();
        assert_eq!(e.to_string(), "Secret zk: key password is missing");
        let e = connect_options(&db(&["a"]), Some(&ok)).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.zookeeper.client.servers:"),
            "{e}"
        );
        let e = connect_options(&db(&[]), Some(&ok)).unwrap_err();
        assert_eq!(e.reason(), Reason::InvalidSpec);
        // Names inside another cluster are never dialled directly (only the operator routes).
        let mut remote = db(&["zk-client.zk:2181"]);
        remote.spec.kubernetes_cluster_name = Some("east".into());
        let e = connect_options(&remote, Some(&ok)).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "spec.kubernetesClusterName: Database zk runs in KubernetesCluster east"
            ),
            "{e}"
        );
        let e = connect_options(
            &db(&["a:2181"]),
            Some(&secret(&[("user", "a:b"), ("password", "p")])),
        )
        .unwrap_err();
        assert!(e.to_string().contains("must not contain ':'"), "{e}");
    }

    fn config(root: &str, dst: Option<&str>) -> SyncConfig {
        serde_json::from_value(serde_json::json!({
            "sourceName": "a", "destinationName": "b", "rootPath": root, "destinationRootPath": dst
        }))
        .unwrap()
    }

    #[test]
    fn sync_options_apply_defaults_and_policies() {
        let c = config("/app", None);
        assert!(c.prune && c.verify && !c.dry_run);
        let o = sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap();
        assert_eq!(
            (o.source_root.as_str(), o.destination_root.as_str()),
            ("/app", "/app")
        );
        assert!(o.prune && o.copy_acl);
        let mut c = config("/app", Some("/dr/app"));
        c.acl_policy = AclPolicy::Ignore;
        c.ephemeral_policy = EphemeralPolicy::Persistent;
        c.container_paths = vec!["/app/locks/*".into()];
        let o = sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap();
        assert_eq!(o.destination_root, "/dr/app");
        assert!(!o.copy_acl);
        assert_eq!(o.ephemerals, verifier::EphemeralPolicy::Persistent);
        assert_eq!(o.type_rules.len(), 1);
    }

    #[test]
    fn bad_paths_are_refused_naming_the_field() {
        for (root, dst, field) in [
            ("app", None, "spec.config.rootPath"),
            ("/zookeeper", None, "spec.config.rootPath"),
            (
                "/app",
                Some("/zookeeper/x"),
                "spec.config.destinationRootPath",
            ),
        ] {
            let e = sync_options(
                &config(root, dst),
                ConnectOptions::new("a:1"),
                ConnectOptions::new("b:1"),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with(field), "{root} {dst:?}: {e}");
        }
        let mut c = config("/app", None);
        c.container_paths = vec!["/app/[".into()];
        let e =
            sync_options(&c, ConnectOptions::new("a:1"), ConnectOptions::new("b:1")).unwrap_err();
        assert!(
            e.to_string().starts_with("spec.config.containerPaths[0]"),
            "{e}"
        );
    }

    fn live(spec: serde_json::Value) -> crate::api::automation::LiveSynchronization {
        let mut base = serde_json::json!({"plugin": "zookeeper-to-zookeeper-nodes",
            "config": {"sourceName": "zk", "destinationName": "zk2", "rootPath": "/app"}});
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "LiveSynchronization",
            "metadata": {"name": "l", "namespace": "ns"}, "spec": base
        }))
        .unwrap()
    }

    fn resolve(
        l: &crate::api::automation::LiveSynchronization,
    ) -> Result<crate::continuous::ContinuousOptions, ResolveError> {
        resolve_live(l, |name| {
            Ok((
                Some(db(&[if name == "zk" { "a:1" } else { "b:1" }])),
                Some(secret(&[("user", "u"), ("password", "p")])),
            ))
        })
    }

    #[test]
    fn a_live_synchronization_resolves_with_its_intervals_and_heartbeat() {
        let o = resolve(&live(
            serde_json::json!({"verifyInterval": "1m30s", "maxLag": "250ms",
            "resyncInterval": "0s", "repair": true, "heartbeat": {"enabled": true}}),
        ))
        .unwrap();
        assert_eq!(o.verify_interval, Some(std::time::Duration::from_secs(90)));
        assert_eq!(o.max_lag, std::time::Duration::from_millis(250));
        assert_eq!(o.live.resync_interval, None);
        assert!(o.repair);
        let h = o.heartbeat.unwrap();
        assert_eq!(h.path, "/app/.resiliency-heartbeat");
        assert_eq!(h.interval, std::time::Duration::from_secs(10));
        // Defaults: verify every 5 minutes, 30 s objective, a re-walk every 10 minutes.
        let o = resolve(&live(serde_json::json!({}))).unwrap();
        assert_eq!(o.verify_interval, Some(std::time::Duration::from_secs(300)));
        assert_eq!(o.max_lag, std::time::Duration::from_secs(30));
        assert_eq!(
            o.live.resync_interval,
            Some(std::time::Duration::from_secs(600))
        );
        assert!(o.heartbeat.is_none());
        assert!(o.live.delay.is_none());
        assert_eq!(o.live.gate.delay(), crate::engine::live::DELETE_DELAY);
        assert_eq!(o.live.sync.holder, "LiveSynchronization ns/l");
    }

    #[test]
    fn the_guard_limits_the_delete_delay_and_the_apply_delay_resolve() {
        let o = resolve(&live(serde_json::json!({
            "config": {"sourceName": "zk", "destinationName": "zk2", "rootPath": "/app",
                "deletionGuard": {"maxDeletes": 5, "maxDeletePercent": 0, "deleteDelay": "500ms"}},
            "applyDelay": "10m", "maxLag": "30s"})))
        .unwrap();
        let g = o.live.sync.guard;
        assert_eq!((g.max_deletes, g.max_delete_percent), (5, 0.0));
        assert_eq!(o.live.gate.delay(), std::time::Duration::from_millis(500));
        let delay = o.live.delay.as_ref().map(|q| q.delay);
        assert_eq!(delay, Some(std::time::Duration::from_secs(600)));
        // The objective counts on top of the delay, and there is no periodic re-walk.
        assert_eq!(o.max_lag, std::time::Duration::from_secs(630));
        assert_eq!(o.live.resync_interval, None);
    }

    #[test]
    fn bad_live_settings_are_refused_naming_the_field() {
        for (spec, field) in [
            (serde_json::json!({"maxLag": "soon"}), "spec.maxLag"),
            (
                serde_json::json!({"verifyInterval": "5"}),
                "spec.verifyInterval",
            ),
            (
                serde_json::json!({"resyncInterval": "1d"}),
                "spec.resyncInterval",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "path": "/elsewhere/hb"}}),
                "spec.heartbeat.path",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "path": "/app"}}),
                "spec.heartbeat.path",
            ),
            (
                serde_json::json!({"heartbeat": {"enabled": true, "interval": "1ms"}}),
                "spec.heartbeat.interval",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "dryRun": true}}),
                "spec.config.dryRun",
            ),
            (
                serde_json::json!({"applyDelay": "later"}),
                "spec.applyDelay",
            ),
            // Intervals so short they would only load the ensembles.
            (
                serde_json::json!({"verifyInterval": "100ms"}),
                "spec.verifyInterval",
            ),
            (
                serde_json::json!({"resyncInterval": "2s"}),
                "spec.resyncInterval",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "deletionGuard": {"deleteDelay": "2"}}}),
                "spec.config.deletionGuard.deleteDelay",
            ),
            (
                serde_json::json!({"config": {"sourceName": "zk", "destinationName": "zk2",
                    "rootPath": "/app", "deletionGuard": {"maxDeletePercent": 101}}}),
                "spec.config.deletionGuard.maxDeletePercent",
            ),
        ] {
            let e = resolve(&live(spec.clone())).unwrap_err();
            assert!(e.to_string().starts_with(field), "{spec}: {e}");
            assert!(e.is_permanent());
        }
    }

    fn backup_job(config: serde_json::Value) -> Result<crate::runs::Job, ResolveError> {
        let mut c = serde_json::json!({"sourceName": "zk", "destinationName": "store",
            "rootPath": "/app"});
        for (k, v) in config.as_object().unwrap() {
            c[k] = v.clone();
        }
        let sync: crate::api::automation::Synchronization =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "automation.astronetes.io/v1alpha1", "kind": "Synchronization",
                "metadata": {"name": "b", "namespace": "ns"},
                "spec": {"plugin": "zookeeper-to-bucket", "config": c}
            }))
            .unwrap();
        let bucket: Bucket = serde_json::from_value(serde_json::json!({
            "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "store", "namespace": "ns"},
            "spec": {"local": {"path": "/backups"}}
        }))
        .unwrap();
        resolve_job(
            &sync,
            |_| {
                Ok((
                    Some(db(&["a:1"])),
                    Some(secret(&[("user", "u"), ("password", "p")])),
                ))
            },
            &|_| (Some(bucket.clone()), None),
        )
    }

    #[test]
    fn retention_needs_the_read_back_check() {
        let job = backup_job(serde_json::json!({"retention": {"keepLast": 3, "maxAge": "1h"}}));
        match job.unwrap() {
            crate::runs::Job::Backup {
                retention, verify, ..
            } => {
                assert!(verify);
                assert_eq!(retention.keep_last, Some(3));
                assert_eq!(
                    retention.max_age,
                    Some(std::time::Duration::from_secs(3600))
                );
            }
            other => panic!("{other:?}"),
        }
        // Unverified snapshots never count, so this retention could never delete anything.
        let e = backup_job(serde_json::json!({"retention": {"keepLast": 3}, "verify": false}))
            .unwrap_err();
        assert!(e.to_string().starts_with("spec.config.verify:"), "{e}");
        assert_eq!(e.reason(), Reason::InvalidSpec);
        // Without retention, verify may be off.
        assert!(backup_job(serde_json::json!({"verify": false})).is_ok());
    }
}
