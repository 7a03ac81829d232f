//! `verify`: compare two subtrees.

use std::process::ExitCode;

use clap::Args;

use super::endpoints::Endpoints;
use super::output::{fail, EXIT_DIVERGED};

/// Divergent paths listed by default.
pub(super) const DEFAULT_MAX_PATHS: usize = 1000;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Divergent paths to list (all are counted).
    #[arg(long, default_value_t = DEFAULT_MAX_PATHS, value_name = "N")]
    pub max_paths: usize,
}

pub async fn run_verify(a: VerifyArgs) -> ExitCode {
    let json = a.endpoints.json;
    match verify_trees(&a.endpoints, a.max_paths).await {
        Err(e) => fail(json, e.as_ref()),
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!(r));
            } else {
                print!("{}", r.render());
            }
            if r.equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DIVERGED)
            }
        }
    }
}

/// Runs the verifier on the two subtrees of `e`.
pub(super) async fn verify_trees(
    e: &Endpoints,
    max_paths: usize,
) -> Result<verifier::Report, Box<dyn std::error::Error>> {
    let root = e.root_path.clone();
    let dst_root = e.destination_root();
    verifier::path::validate_root("--root-path", &root)?;
    verifier::path::validate_root("--destination-root-path", &dst_root)?;
    let (s, d) = e.connect_options()?;
    let n = verifier::zk::READ_SESSIONS;
    let (src, dst) = tokio::join!(
        verifier::connect_pool(verifier::Side::Source, &s, n),
        verifier::connect_pool(verifier::Side::Destination, &d, n)
    );
    let (src, dst) = (src?, dst?);
    Ok(verifier::verify(&src, &root, &dst, &dst_root, e.verify_options(max_paths)).await?)
}
