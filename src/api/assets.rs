//! `assets.astronetes.io/v1alpha1`: the things synchronizations read from and write to.
// Several printcolumn(...) entries repeat `type_ = ...`; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A ZooKeeper ensemble. Its credentials live in the Secret of the same name and namespace
/// (keys `user` and `password`, ZooKeeper digest authentication). The Secret is required: until
/// it exists the Database reports Ready=False with reason SecretNotFound.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "assets.astronetes.io",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    status = "DatabaseStatus",
    shortname = "astdb",
    category = "astronetes",
    doc = "Database is the Schema for the databases API",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Servers",
        type_ = "string",
        json_path = ".spec.zookeeper.client.servers"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.serverVersion"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        priority = 1,
        json_path = ".spec.kubernetesClusterName"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Zookeeper database
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zookeeper: Option<Zookeeper>,
    /// A KubernetesCluster in this namespace that the ensemble runs in, for an ensemble the
    /// operator cannot reach directly. Each of spec.zookeeper.client.servers is then a name in
    /// that cluster: a Service (`NAME.NAMESPACE:PORT`, or `NAME.NAMESPACE.svc.cluster.local:PORT`)
    /// or a StatefulSet pod (`POD.SERVICE.NAMESPACE.svc.cluster.local:PORT`), reached through
    /// that cluster's API server with a port-forward, as `kubectl port-forward` does. Its
    /// kubeconfig needs get on services and pods, list on endpointslices, and create on
    /// pods/portforward there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must name a KubernetesCluster"))]
    pub kubernetes_cluster_name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Zookeeper {
    /// Credentials for the admin port
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<ZookeeperAdmin>,
    /// Credentials for the client port
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ZookeeperClient>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ZookeeperAdmin {
    /// Zookeeper protocol: http or https.
    #[x_kube(validation = Rule::new("self == 'http' || self == 'https'").message("must be http or https"))]
    #[schemars(length(max = 5))]
    pub protocol: String,
    /// Zookeeper host: a DNS name, an IPv4 address or a bracketed IPv6 address.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9.-]+$') || self.matches('^\\\\[[0-9a-fA-F:.]+\\\\]$')").message("must be a host name or IP address (no spaces or line breaks)"))]
    #[schemars(length(max = 253))]
    pub host: String,
    /// Zookeeper port (the AdminServer's, 8080 by default).
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,5}$') && int(self) > 0 && int(self) < 65536").message("must be a port number between 1 and 65535"))]
    #[schemars(length(max = 5))]
    pub port: String,
    /// Zookeeper authentication data: a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel)]
pub struct ZookeeperClient {
    /// Client endpoints of the ensemble, each HOST:PORT.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must list at least one HOST:PORT"))]
    #[x_kube(validation = Rule::new("self.all(s, s.matches('^[^\\\\s:/]+:[0-9]{1,5}$') || s.matches('^\\\\[[0-9a-fA-F:.]+\\\\]:[0-9]{1,5}$'))").message("each server must be HOST:PORT"))]
    #[schemars(length(max = 64), inner(length(max = 262)))]
    pub servers: Vec<String>,
    /// Never in the API: set in memory only, when the operator routes this Database through
    /// its tunnels into another cluster, to the key those tunnels ask of every connection.
    // Never serialized (the predicate always holds) nor read. Not `serde(skip)`: the copy of
    // this struct the schema derive makes would then never read the field (dead code).
    #[serde(
        skip_deserializing,
        skip_serializing_if = "in_memory_only",
        serialize_with = "never_serialized"
    )]
    #[schemars(skip)]
    pub tunnel_key: Option<verifier::DigestAuth>,
}

/// A field that lives in memory only is never serialized.
fn in_memory_only<T>(_: &T) -> bool {
    true
}

/// What a field that is never serialized would serialize as: nothing.
fn never_serialized<T, S: serde::Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_none()
}

/// Observed state of a Database.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (with a reason such as Connected, Unreachable, AuthFailed, SecretNotFound).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Server version, as reported by the `srvr` command or the AdminServer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The server that answered the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_server: Option<String>,
    /// When the ensemble was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
}

/// Object storage for backups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "assets.astronetes.io",
    version = "v1alpha1",
    kind = "Bucket",
    namespaced,
    status = "AssetStatus",
    shortname = "astbucket",
    category = "astronetes",
    doc = "Bucket is the Schema for the buckets API",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// Reference a GCP Cloud Storage service
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_cloud_storage: Option<GcpCloudStorage>,
    /// Reference a AWS Bucket service
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "awsS3")]
    pub aws_s3: Option<AwsS3>,
    /// A directory on the operator's filesystem (standalone mode, or a mounted volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalDirectory>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalDirectory {
    /// Absolute path of the directory.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be an absolute path"))]
    #[schemars(length(max = 4096))]
    pub path: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsS3 {
    /// Bucket name.
    pub name: String,
    /// Bucket region.
    pub region: String,
    /// Secret with the access key (keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and
    /// optionally `AWS_SESSION_TOKEN`).
    pub secret_name: String,
    /// Endpoint of an S3-compatible store (default: AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcpCloudStorage {
    /// Bucket name.
    pub name: String,
    /// Secret with the service account key (key `credentials.json`).
    pub secret_name: String,
    /// A GCS-compatible endpoint (default: Google).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A Kubernetes cluster that ensembles may live in.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "assets.astronetes.io",
    version = "v1alpha1",
    kind = "KubernetesCluster",
    namespaced,
    status = "KubernetesClusterStatus",
    shortname = "astkc",
    category = "astronetes",
    doc = "KubernetesCluster is the Schema for the kubernetesclusters API",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.serverVersion"
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        priority = 1,
        json_path = ".status.server"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesClusterSpec {
    /// Reference to the secret that stores the cluster Kubeconfig
    #[x_kube(validation = Rule::new("size(self) > 0").message("must name a Secret"))]
    pub secret_name: String,
}

/// Observed state of a KubernetesCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (with a reason such as Connected, Unreachable, AuthFailed, SecretNotFound,
    /// SecretInvalid).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The API server's version (gitVersion), e.g. v1.33.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The API server the kubeconfig names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Who the kubeconfig's credentials authenticate as (Kubernetes 1.28 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the cluster was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
}

/// Observed state of a Bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
