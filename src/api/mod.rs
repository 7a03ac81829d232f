//! The custom resources: their Rust types are the source of truth for `crds/`.
//!
//! Field names and shapes follow the Astronetes API reference so that its samples apply
//! unchanged; everything we add is optional and defaulted.

pub mod assets;
pub mod automation;
pub mod conditions;

use kube::CustomResourceExt;

/// Every CRD we serve, in install order.
pub fn all_crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        assets::Database::crd(),
        assets::Bucket::crd(),
        assets::KubernetesCluster::crd(),
        automation::Synchronization::crd(),
        automation::SynchronizationPlan::crd(),
        automation::LiveSynchronization::crd(),
        automation::Switchover::crd(),
    ]
}

/// All CRDs as one YAML stream, the content of `crds/crds.yaml`.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// File name of a CRD in `crds/`, e.g. `automation.astronetes.io_synchronizations.yaml`.
pub fn crd_file_name(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
