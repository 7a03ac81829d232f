//! `crd`: the CustomResourceDefinitions, printed or written to a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::output::EXIT_ERROR;

#[derive(Args, Debug)]
pub struct CrdArgs {
    /// Write the files here (e.g. crds/) instead of printing one YAML stream.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

pub fn run_crd(a: CrdArgs) -> ExitCode {
    match write_crds(a.output_dir.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn write_crds(dir: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
    let all = crate::api::crds_yaml()?;
    let Some(dir) = dir else {
        print!("{all}");
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    for crd in crate::api::all_crds() {
        let text = format!("---\n{}", serde_norway::to_string(&crd)?);
        std::fs::write(dir.join(crate::api::crd_file_name(&crd)), text)?;
    }
    std::fs::write(dir.join("crds.yaml"), all)?;
    // Lets deploy/kubernetes include the CRDs (kustomize loads no file outside a directory).
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - crds.yaml\n",
    )?;
    Ok(())
}
