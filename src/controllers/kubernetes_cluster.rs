//! KubernetesCluster: can its kubeconfig reach the API server, as whom, at which version. Pure
//! decision; the glue is in [`crate::operator::kubernetes_cluster`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::assets::{KubernetesCluster, KubernetesClusterStatus};
use crate::api::conditions::{set_condition, types, Desired};
use crate::remote_cluster::{ClusterError, Probe};
use crate::resolve::ResolveError;

/// What checking a KubernetesCluster gave: its Secret could not be used, or the server named
/// in it answered (or not).
pub enum Outcome {
    Resolve(ResolveError),
    Checked {
        server: Option<String>,
        result: Result<Probe, ClusterError>,
    },
}

/// The status a KubernetesCluster should have.
pub fn desired(
    kc: &KubernetesCluster,
    outcome: Outcome,
    now: Timestamp,
) -> KubernetesClusterStatus {
    let mut st = kc.status.clone().unwrap_or_default();
    st.observed_generation = kc.metadata.generation;
    st.last_checked_time = Some(Time(now));
    let want = match outcome {
        Outcome::Resolve(e) => {
            st.server = None;
            Desired::new(types::READY, false, e.reason(), e.to_string())
        }
        Outcome::Checked {
            server,
            result: Ok(p),
        } => {
            st.server = server;
            st.server_version = Some(p.version.clone());
            st.user = p.user.clone();
            let who = p.user.map(|u| format!(" as {u}")).unwrap_or_default();
            Desired::new(
                types::READY,
                true,
                crate::api::conditions::Reason::Connected,
                format!("{} answers{who}: Kubernetes {}", p.server, p.version),
            )
        }
        Outcome::Checked {
            server,
            result: Err(e),
        } => {
            // The version last seen stays: it says what the cluster was, not that it is up.
            st.server = server;
            Desired::new(types::READY, false, e.reason(), e.to_string())
        }
    };
    set_condition(&mut st.conditions, want, kc.metadata.generation, now);
    st
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::conditions::{find, ConditionStatus};

    fn cluster() -> KubernetesCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "KubernetesCluster",
            "metadata": {"name": "east", "namespace": "dr", "generation": 2},
            "spec": {"secretName": "east-kubeconfig"}
        }))
        .unwrap()
    }

    #[test]
    fn ready_names_the_server_version_and_user() {
        let t = Timestamp::UNIX_EPOCH;
        let server = "https://east:6443".to_string();
        let st = desired(
            &cluster(),
            Outcome::Checked {
                server: Some(server.clone()),
                result: Ok(Probe {
                    server: server.clone(),
                    version: "v1.33.2".into(),
                    user: Some("system:serviceaccount:dr:backup".into()),
                }),
            },
            t,
        );
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::True, "Connected")
        );
        assert_eq!(
            c.message,
            "https://east:6443 answers as system:serviceaccount:dr:backup: Kubernetes v1.33.2"
        );
        assert_eq!(st.server_version.as_deref(), Some("v1.33.2"));
        assert_eq!(st.observed_generation, Some(2));
        // Refused credentials: AuthFailed, and the version seen before stays.
        let mut kc = cluster();
        kc.status = Some(st);
        let st = desired(
            &kc,
            Outcome::Checked {
                server: Some(server.clone()),
                result: Err(ClusterError::Refused {
                    server: server.clone(),
                    message: "credentials refused (401): Unauthorized".into(),
                }),
            },
            t,
        );
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::False, "AuthFailed")
        );
        assert!(c.message.contains("401"), "{}", c.message);
        assert_eq!(st.server_version.as_deref(), Some("v1.33.2"));
    }

    #[test]
    fn a_missing_secret_or_unreachable_server_has_its_own_reason() {
        let t = Timestamp::UNIX_EPOCH;
        let st = desired(
            &cluster(),
            Outcome::Resolve(ResolveError::SecretNotFound {
                namespace: "dr".into(),
                name: "east-kubeconfig".into(),
                needed_by: "KubernetesCluster east needs it for its kubeconfig".into(),
            }),
            t,
        );
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(c.reason, "SecretNotFound");
        assert!(c.message.contains("east-kubeconfig"), "{}", c.message);
        let st = desired(
            &cluster(),
            Outcome::Checked {
                server: Some("https://east:6443".into()),
                result: Err(ClusterError::Unreachable {
                    server: "https://east:6443".into(),
                    message: "connection refused".into(),
                }),
            },
            t,
        );
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::False, "Unreachable")
        );
        assert_eq!(st.server.as_deref(), Some("https://east:6443"));
    }
}
