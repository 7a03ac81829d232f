//! The checks before any controller starts: the API server answers, we may list what we
//! watch, and every CustomResourceDefinition we need is installed.

use std::fmt::Debug;

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

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
    async fn list_one(self, client: Client) -> Result<(), kube::Error> {
        match self {
            Crd::Database => list_one::<Database>(client).await,
            Crd::Synchronization => list_one::<Synchronization>(client).await,
            Crd::SynchronizationPlan => list_one::<SynchronizationPlan>(client).await,
            Crd::KubernetesCluster => list_one::<KubernetesCluster>(client).await,
            Crd::Bucket => list_one::<Bucket>(client).await,
            Crd::LiveSynchronization => list_one::<LiveSynchronization>(client).await,
            Crd::Switchover => list_one::<Switchover>(client).await,
        }
    }
}

async fn list_one<K>(client: Client) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Api::<K>::all(client)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Fails early, with the fix in the message, when the API server is unreachable, we lack
/// permission, or a CRD is missing, instead of logging watch errors forever.
pub(super) async fn preflight(
    client: &Client,
    controllers: &[ControllerGroup],
) -> Result<(), OperatorError> {
    let mut crds: Vec<Crd> = controllers
        .iter()
        .flat_map(|g| Crd::watched_by(*g).iter().copied())
        .collect();
    crds.sort();
    crds.dedup();
    for crd in crds {
        let name = crd.name();
        match crd.list_one(client.clone()).await {
            Ok(()) => {}
            Err(e) if apply::is_not_found(&e) => {
                return Err(OperatorError::CrdMissing(name.into()))
            }
            Err(source) => {
                return Err(OperatorError::Preflight {
                    what: format!("listing {name}"),
                    source,
                })
            }
        }
    }
    Ok(())
}
