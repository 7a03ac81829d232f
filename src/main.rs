use std::process::ExitCode;

use clap::Parser;
use resiliency_operator::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Crd(a) = cli.command {
        return cli::crd::run_crd(a);
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
            return ExitCode::from(cli::EXIT_ERROR);
        }
    };
    runtime.block_on(cli.command.run())
}
