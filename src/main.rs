use std::process::ExitCode;

use clap::Parser;
use resiliency_operator::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Crd(a) = cli.command {
        return cli::run_crd(a);
    }
    resiliency_operator::telemetry::init(matches!(cli.command, Command::Operator(_)));
    // Two TLS crypto providers are compiled in (kube: ring, object_store: aws-lc-rs); rustls
    // refuses to pick one by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Sync(a) => cli::run_sync(*a).await,
            Command::Verify(a) => cli::run_verify(a).await,
            Command::Run(a) => cli::run_standalone(a).await,
            Command::Crd(a) => cli::run_crd(a),
            Command::Operator(a) => cli::run_operator(a).await,
            Command::Backup(a) => cli::backup::run_backup(a).await,
            Command::Restore(a) => cli::backup::run_restore(a).await,
            Command::Snapshots(a) => cli::backup::run_snapshots(a).await,
        }
    })
}
