//! The checks before any controller starts: the API server answers, we may list what we
//! watch, and every CustomResourceDefinition we need is installed.
//!
//! The CRDs themselves are never read (that needs a ClusterRole): listing one object of each
//! kind, in each watched namespace or cluster-wide, proves both that the CRD is installed (a
//! 404 otherwise) and that our RBAC lets us list there, so the namespaced install needs no
//! cluster-scoped permission for it.

use std::fmt::Debug;

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::scope::{Scope, Within};
use super::{apply, ControllerGroup, OperatorError};
use crate::api::assets::{Bucket, Database, KubernetesCluster};
use crate::api::automation::{
    LiveSynchronization, Switchover, Synchronization, SynchronizationPlan,
};

/// A kind we watch, by its CustomResourceDefinition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Crd {
    Database,
    KubernetesCluster,
    Synchronization,
    SynchronizationPlan,
    LiveSynchronization,
    Bucket,
    Switchover,
}

impl Crd {
    /// Each group's own kinds, plus the Databases the Synchronization controller watches.
    fn watched_by(group: ControllerGroup) -> &'static [Crd] {
        match group {
            ControllerGroup::Database => &[Crd::Database, Crd::Bucket, Crd::KubernetesCluster],
            ControllerGroup::Synchronization => &[
                Crd::Synchronization,
                Crd::LiveSynchronization,
                Crd::Switchover,
                Crd::Database,
            ],
            ControllerGroup::Synchronizationplan => {
                &[Crd::SynchronizationPlan, Crd::Synchronization]
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Crd::Database => "databases.assets.astronetes.io",
            Crd::Synchronization => "synchronizations.automation.astronetes.io",
            Crd::SynchronizationPlan => "synchronizationplans.automation.astronetes.io",
            Crd::KubernetesCluster => "kubernetesclusters.assets.astronetes.io",
            Crd::Bucket => "buckets.assets.astronetes.io",
            Crd::LiveSynchronization => "livesynchronizations.automation.astronetes.io",
            Crd::Switchover => "switchovers.automation.astronetes.io",
        }
    }

    /// Lists one object of the kind: enough to prove the CRD is there and we may read it.
    async fn list_one(self, within: &Within) -> Result<(), kube::Error> {
        match self {
            Crd::Database => list_one(within.api::<Database>()).await,
            Crd::Synchronization => list_one(within.api::<Synchronization>()).await,
            Crd::SynchronizationPlan => list_one(within.api::<SynchronizationPlan>()).await,
            Crd::KubernetesCluster => list_one(within.api::<KubernetesCluster>()).await,
            Crd::Bucket => list_one(within.api::<Bucket>()).await,
            Crd::LiveSynchronization => list_one(within.api::<LiveSynchronization>()).await,
            Crd::Switchover => list_one(within.api::<Switchover>()).await,
        }
    }
}

async fn list_one<K>(api: Api<K>) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Fails early, with the fix in the message, when the API server is unreachable, we lack
/// permission, or a CRD is missing, instead of logging watch errors forever.
pub(super) async fn preflight(
    client: &Client,
    controllers: &[ControllerGroup],
    scope: &Scope,
) -> Result<(), OperatorError> {
    let mut crds: Vec<Crd> = controllers
        .iter()
        .flat_map(|g| Crd::watched_by(*g).iter().copied())
        .collect();
    crds.sort();
    crds.dedup();
    for within in scope.within(client) {
        for crd in &crds {
            let name = crd.name();
            match crd.list_one(&within).await {
                Ok(()) => {}
                Err(e) if apply::is_not_found(&e) => {
                    return Err(OperatorError::CrdMissing(name.into()))
                }
                Err(source) => {
                    return Err(OperatorError::Preflight {
                        what: format!("listing {name} {}", within.describe()),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}
