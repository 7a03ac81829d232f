//! `run -f`: the manifests in files, without Kubernetes (see [`crate::standalone`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::output::{fail, EXIT_DIVERGED};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Manifest files or directories (YAML, several documents per file allowed).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE_OR_DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

pub async fn run_standalone(a: RunArgs) -> ExitCode {
    let manifests = match crate::standalone::load(&a.files) {
        Ok(m) => m,
        Err(e) => return fail(false, &e),
    };
    match crate::standalone::run(manifests).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_DIVERGED),
        Err(e) => fail(false, &e),
    }
}
