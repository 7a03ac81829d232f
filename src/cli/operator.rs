//! `operator`: the Kubernetes controllers.

use std::process::ExitCode;

use clap::Args;

use super::output::fail;

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Controllers to run, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "database,synchronization,synchronizationplan"
    )]
    pub controllers: Vec<crate::operator::ControllerGroup>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "RESILIENCY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Leases (one per controller).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "resiliency-operator",
        value_name = "NAMESPACE"
    )]
    pub leader_election_namespace: String,
    /// This replica's identity in the Leases (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Act without a Lease. Only safe when a single replica runs, e.g. on a laptop.
    #[arg(long)]
    pub no_leader_election: bool,
    /// Accept KubernetesCluster kubeconfigs that turn TLS down: `insecure-skip-tls-verify:
    /// true`, a plain `http://` server, `tls-server-name`. Refused by default, since the
    /// operator would send their credentials to a server it cannot verify. For test clusters.
    #[arg(long, env = "RESILIENCY_ALLOW_INSECURE_KUBECONFIGS")]
    pub allow_insecure_kubeconfigs: bool,
}

pub async fn run_operator(a: OperatorArgs) -> ExitCode {
    let metrics = match crate::metrics::install() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            None
        }
    };
    let identity = a.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "resiliency-operator".into());
        format!("{host}-{}", std::process::id())
    });
    let mut controllers = a.controllers;
    controllers.dedup();
    let settings = crate::operator::Settings {
        controllers,
        listen: a.listen,
        lease_namespace: (!a.no_leader_election).then_some(a.leader_election_namespace),
        identity,
        kubeconfig_policy: crate::remote_cluster::KubeconfigPolicy {
            allow_insecure: a.allow_insecure_kubeconfigs,
        },
    };
    match crate::operator::run(settings, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(false, &e),
    }
}
