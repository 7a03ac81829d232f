//! `operator`: the Kubernetes controllers.

use std::process::ExitCode;

use clap::Args;

use super::output::fail;
use crate::operator::scope::{Scope, ScopeError};

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
    /// Watch only these namespaces, comma separated (empty: all namespaces). Every request
    /// then goes to a namespace, so Roles in them (and in the Lease namespace) suffice.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_name = "NAMESPACES",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_scope
    )]
    pub watch_namespaces: Scope,
    /// Accept KubernetesCluster kubeconfigs that turn TLS down: `insecure-skip-tls-verify:
    /// true`, a plain `http://` server, `tls-server-name`. Refused by default, since the
    /// operator would send their credentials to a server it cannot verify. For test clusters.
    #[arg(long, env = "RESILIENCY_ALLOW_INSECURE_KUBECONFIGS")]
    pub allow_insecure_kubeconfigs: bool,
}

/// `--watch-namespaces`: the message names the flag and the bad item.
fn parse_scope(s: &str) -> Result<Scope, ScopeError> {
    Scope::parse(s)
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
        scope: a.watch_namespaces,
        kubeconfig_policy: crate::remote_cluster::KubeconfigPolicy {
            allow_insecure: a.allow_insecure_kubeconfigs,
        },
    };
    match crate::operator::run(settings, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(false, &e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        a: OperatorArgs,
    }

    fn parse(args: &[&str]) -> Result<Scope, String> {
        let argv = std::iter::once("operator").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.a.watch_namespaces)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn watch_namespaces_defaults_to_all_and_takes_a_list() {
        assert_eq!(parse(&[]), Ok(Scope::All));
        assert_eq!(parse(&["--watch-namespaces", ""]), Ok(Scope::All));
        assert_eq!(
            parse(&["--watch-namespaces", "ns-a,ns-b"]),
            Ok(Scope::Namespaces(vec!["ns-a".into(), "ns-b".into()]))
        );
    }

    #[test]
    fn bad_watch_namespaces_are_refused_naming_the_flag() {
        for bad in ["ns-a,,ns-b", "ns-a,", "NS-A", "ns_a", "-a"] {
            let err = parse(&[&format!("--watch-namespaces={bad}")]).unwrap_err();
            assert!(err.contains("--watch-namespaces"), "{bad}: {err}");
            assert!(err.contains("WATCH_NAMESPACES"), "{bad}: {err}");
        }
    }
}
