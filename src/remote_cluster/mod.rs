//! Other Kubernetes clusters, named by KubernetesCluster assets: their kubeconfig
//! ([`kubeconfig`]: from a Secret, checked), a client for them, and the check the
//! KubernetesCluster controller reports. [`tunnel`] reaches ZooKeeper services inside them
//! through their API server.

mod kubeconfig;
pub mod tunnel;

pub use kubeconfig::{
    kubeconfig_for, kubeconfig_from_secret, namespace, server, KubeconfigPolicy,
    ALLOW_INSECURE_FLAG, KUBECONFIG_KEYS,
};

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, SelfSubjectReviewStatus};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use thiserror::Error;

use crate::api::conditions::Reason;

/// How long a check of a remote API server may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a remote cluster could not be used.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("the kubeconfig cannot be used: {0}")]
    Config(String),
    #[error("{server}: {message}")]
    Refused { server: String, message: String },
    #[error("{server}: {message}")]
    Unreachable { server: String, message: String },
}

impl ClusterError {
    pub fn reason(&self) -> Reason {
        match self {
            ClusterError::Config(_) => Reason::SecretInvalid,
            ClusterError::Refused { .. } => Reason::AuthFailed,
            ClusterError::Unreachable { .. } => Reason::Unreachable,
        }
    }
}

/// A client for the cluster a checked kubeconfig names.
pub async fn client(kc: Kubeconfig) -> Result<Client, ClusterError> {
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Config(crate::runs::cause_chain(&e)))?;
    config.connect_timeout = Some(TIMEOUT);
    config.read_timeout = Some(TIMEOUT);
    Client::try_from(config).map_err(|e| ClusterError::Config(crate::runs::cause_chain(&e)))
}

/// What a check of a remote cluster found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub server: String,
    /// `gitVersion`, e.g. v1.33.2.
    pub version: String,
    /// Who the credentials authenticate as, when the server says (Kubernetes 1.28+).
    pub user: Option<String>,
}

/// Connects: the version (reachability), then who the credentials are. `/version` answers
/// anonymous requests on most clusters, so it alone proves nothing about the credentials.
pub async fn probe(client: &Client, server: &str) -> Result<Probe, ClusterError> {
    let classify = |e: kube::Error| match &e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => ClusterError::Refused {
            server: server.to_string(),
            message: format!("credentials refused ({}): {}", s.code, s.message),
        },
        _ => ClusterError::Unreachable {
            server: server.to_string(),
            message: crate::runs::cause_chain(&e),
        },
    };
    let info = tokio::time::timeout(TIMEOUT, client.apiserver_version())
        .await
        .map_err(|_| ClusterError::Unreachable {
            server: server.to_string(),
            message: format!("no answer in {}s", TIMEOUT.as_secs()),
        })?
        .map_err(classify)?;
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let user = match reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(r) => r
            .status
            .and_then(|s: SelfSubjectReviewStatus| s.user_info)
            .and_then(|u| u.username),
        // Before 1.28 there is no SelfSubjectReview; any authenticated user may ask an access
        // review, and an anonymous one is refused.
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let access: Api<SelfSubjectAccessReview> = Api::all(client.clone());
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some("get".into()),
                        resource: Some("namespaces".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            access
                .create(&PostParams::default(), &review)
                .await
                .map_err(classify)?;
            None
        }
        Err(e) => return Err(classify(e)),
    };
    if user.as_deref().is_some_and(|u| u == "system:anonymous") {
        return Err(ClusterError::Refused {
            server: server.to_string(),
            message: "the credentials authenticate as system:anonymous".into(),
        });
    }
    Ok(Probe {
        server: server.to_string(),
        version: info.git_version,
        user,
    })
}
