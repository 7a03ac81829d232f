//! SynchronizationPlan controller glue: list the plan's children, decide, prune history,
//! create the child of a due slot, write the status, requeue at the next slot.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};

use super::apply::{self, is_conflict, is_not_found, Error};
use super::shared::{drive, stores, HasShared};
use super::Shared;
use crate::api::automation::{Synchronization, SynchronizationPlan};
use crate::api::conditions::Reason;
use crate::controllers::synchronization::Note;
use crate::controllers::synchronization_plan::{self as decide, Child, PLAN_LABEL};

pub const NAME: &str = "synchronizationplan";

pub struct Ctx {
    pub shared: Shared,
}

impl HasShared for Ctx {
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// The plan's child for `slot`, owned by the plan so deleting the plan deletes its history.
pub fn owned_child(plan: &SynchronizationPlan, name: &str, slot: Timestamp) -> Synchronization {
    let mut s = decide::child(plan, name, slot);
    if let Some(mut owner) = plan.controller_owner_ref(&()) {
        owner.block_owner_deletion = Some(true);
        s.metadata.owner_references = Some(vec![owner]);
    }
    s
}

/// Whether `s` belongs to `plan`: labelled with its name and, when it has owners, owned by
/// this plan's UID (not by a deleted plan of the same name).
fn is_child(plan: &SynchronizationPlan, s: &Synchronization) -> bool {
    let uid = plan.metadata.uid.as_deref();
    match &s.metadata.owner_references {
        Some(owners) if !owners.is_empty() => owners.iter().any(|o| Some(o.uid.as_str()) == uid),
        _ => true,
    }
}

pub async fn reconcile(plan: Arc<SynchronizationPlan>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = apply::key(&*plan, "SynchronizationPlan")?;
    let syncs = Api::<Synchronization>::namespaced(ctx.shared.client.clone(), &ns);
    let plans = Api::<SynchronizationPlan>::namespaced(ctx.shared.client.clone(), &ns);
    let now = Timestamp::now();
    // Read from the API server rather than a cache: a child created by the last pass must be
    // seen, or the same slot could be counted as missing.
    let listed = syncs
        .list(&ListParams::default().labels(&format!("{PLAN_LABEL}={name}")))
        .await
        .map_err(Error::api(
            "listing the Synchronizations of",
            "SynchronizationPlan",
            &ns,
            &name,
        ))?;
    let children: Vec<Child> = listed
        .items
        .iter()
        .filter(|s| is_child(&plan, s))
        .map(|s| Child::of(s, now))
        .collect();
    let mut d = decide::desired(&plan, &children, now);

    prune(&syncs, &ns, &d.delete).await?;
    if let Some((child, slot)) = &d.create {
        if let Some(note) = create(&syncs, &plan, &ns, child, *slot).await? {
            d.notes.push(note);
        }
    }
    apply::status(&plans, &*plan, plan.status.as_ref(), &d.status).await?;
    ctx.shared
        .events
        .publish_all(&*plan, "Schedule", &d.notes)
        .await;
    Ok(match d.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Deletes the children past the plan's history limits (gone already is fine).
async fn prune(syncs: &Api<Synchronization>, ns: &str, children: &[String]) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for child in children {
        match syncs.delete(child, &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(Error::api("deleting", "Synchronization", ns, child)(e)),
        }
    }
    Ok(())
}

/// Creates the child `child` of the due `slot`; the Note says why a slot was skipped.
async fn create(
    syncs: &Api<Synchronization>,
    plan: &SynchronizationPlan,
    ns: &str,
    child: &str,
    slot: Timestamp,
) -> Result<Option<Note>, Error> {
    let s = owned_child(plan, child, slot);
    match syncs.create(&PostParams::default(), &s).await {
        Ok(_) => Ok(None),
        // Created by an earlier pass that crashed before writing the status: reuse it,
        // unless it is somebody else's.
        Err(e) if is_conflict(&e) => {
            let existing = syncs.get_opt(child).await.map_err(Error::api(
                "reading",
                "Synchronization",
                ns,
                child,
            ))?;
            let name = plan.name_any();
            let ours = existing
                .as_ref()
                .is_some_and(|s| s.labels().get(PLAN_LABEL) == Some(&name) && is_child(plan, s));
            Ok((!ours).then(|| Note {
                warning: true,
                reason: Reason::Active,
                message: format!(
                    "Synchronization {child} already exists and does not belong to this plan; slot {slot} skipped"
                ),
            }))
        }
        Err(e) => Err(Error::api("creating", "Synchronization", ns, child)(e)),
    }
}

/// The controller, until `stop` resolves. Children wake their plan when they change phase.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let exports = ctx.shared.process.exports.clone();
    let controllers: Vec<_> = ctx
        .shared
        .within()
        .iter()
        .map(|w| {
            Controller::new(
                w.api::<SynchronizationPlan>(),
                watcher::Config::default().any_semantic(),
            )
            .owns(
                w.api::<Synchronization>(),
                watcher::Config::default().labels(PLAN_LABEL),
            )
        })
        .collect();
    exports.register_plans(stores(&controllers));
    let _exported = crate::metrics::compat::Exported::new(exports, NAME);
    drive(NAME, controllers, reconcile, ctx, stop).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn children_are_owned_by_their_plan() {
        let mut plan: SynchronizationPlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "automation.astronetes.io/v1alpha1",
            "kind": "SynchronizationPlan",
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "u-1"},
            "spec": {"schedule": "@daily", "template": {"spec": {
                "plugin": "zookeeper-to-zookeeper-nodes",
                "config": {"sourceName": "a", "destinationName": "b", "rootPath": "/x"}}}}
        }))
        .unwrap();
        let slot = Timestamp::from_second(1_800_000_000).unwrap();
        let s = owned_child(&plan, "nightly-30000000", slot);
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SynchronizationPlan", "nightly", "u-1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert!(is_child(&plan, &s));
        plan.metadata.uid = Some("u-2".into());
        assert!(
            !is_child(&plan, &s),
            "a child of a deleted plan of the same name"
        );
    }
}
