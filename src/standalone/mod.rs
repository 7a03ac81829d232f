//! Standalone mode: the same manifests (Secrets included) read from files, driven through the
//! same resolver and decisions as the operator, without Kubernetes. Each status change is
//! printed. Plans fire on schedule, and streams run until a signal; without them the command
//! ends when every Synchronization and Switchover has finished.

mod load;
mod say;
mod switchover;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use thiserror::Error;

use crate::api::automation::{LivePhase, Phase, Synchronization};
use crate::api::conditions::{find, types};
use crate::controllers::database as db_ctl;
use crate::controllers::synchronization::{self as sync_ctl, Action};
use crate::controllers::synchronization_plan::{self as plan_ctl, Child, PLAN_LABEL};
use crate::resolve::{self, ResolveError};
use crate::runs::Runs;
use load::admit;
pub use load::{load, Manifests};
use say::{phase_line, say, say_notes, show_live, Kind};
use switchover::Switchovers;

#[derive(Debug, Error)]
pub enum StandaloneError {
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error("{kind} {name}: {source}")]
    Resolve {
        kind: &'static str,
        name: String,
        #[source]
        source: ResolveError,
    },
    /// Refused by the operator's decisions (a Switchover's input), with their message.
    #[error("{kind} {name}: {message}")]
    Refused {
        kind: &'static str,
        name: String,
        message: String,
    },
}

/// The pause between two passes over the resources.
const PASS_INTERVAL: Duration = Duration::from_millis(200);

/// Engine settings of a sync from the loaded Databases and Secrets.
pub fn resolve_sync(m: &Manifests, s: &Synchronization) -> Result<crate::runs::Job, ResolveError> {
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    resolve::resolve_job(s, m.lookup(&ns), &|name| {
        let bucket = m.buckets.get(&(ns.clone(), name.to_string())).cloned();
        let secret = bucket
            .as_ref()
            .and_then(resolve::bucket_secret_name)
            .and_then(|sn| m.secrets.get(&(ns.clone(), sn.to_string())).cloned());
        (bucket, secret)
    })
}

/// Runs until every Synchronization and Switchover has finished (while plans or
/// LiveSynchronizations that are not suspended exist, until SIGINT or SIGTERM). Returns true
/// when every Synchronization succeeded and none diverged, no LiveSynchronization failed or
/// was confirmed divergent, and every Switchover completed.
pub async fn run(mut m: Manifests) -> Result<bool, StandaloneError> {
    // A Switchover's input first: refused, nothing has started.
    let mut switchovers = switchover::check(&m)?;
    let runs = Runs::new();
    // Databases first: an unreachable ensemble shows before any copy starts.
    probe_databases(&m).await;
    let live = crate::continuous::Registry::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !m.live.is_empty() || !m.plans.is_empty() {
        tokio::spawn(async move {
            crate::serve::shutdown::termination().await;
            let _ = stop_tx.send(true);
        });
    }
    loop {
        let now = Timestamp::now();
        drive_live(&mut m, &live, &switchovers, now)?;
        // A stream started in this pass is taken over in it.
        switchovers.drive(&mut m, &live, &stop_rx).await;
        // Plans create children first, so a due slot starts in this same pass.
        drive_plans(&mut m, &runs, now);
        drive_syncs(&mut m, &runs, now)?;
        let all_done = m.syncs.values().all(sync_ctl::settled) && switchovers.finished();
        let streams = m.live.values().any(|l| !l.spec.suspend);
        if (m.plans.is_empty() && !streams && all_done) || *stop_rx.borrow() {
            break;
        }
        tokio::time::sleep(PASS_INTERVAL).await;
    }
    if switchovers.settle(&mut m, &live).await {
        // The status of what the switchover left: a stream stopped, or the reverse one.
        drive_live(&mut m, &live, &switchovers, Timestamp::now())?;
    }
    if !live.is_empty() {
        live.clear();
        let streamed = m.live.iter().filter(|(_, l)| !l.spec.suspend);
        for ((ns, name), _) in streamed {
            say(
                Kind::LiveSynchronization,
                ns,
                name,
                "stopped; destination data is left as it is",
            );
        }
    }
    Ok(succeeded(&m) && switchovers.succeeded())
}

/// Each Database's Ready condition, as the operator would set it.
async fn probe_databases(m: &Manifests) {
    for ((ns, name), db) in &m.databases {
        let outcome = match resolve::connect_options(db, m.secrets.get(&(ns.clone(), name.clone())))
        {
            Err(e) => Err(Err(e)),
            Ok(o) => db_ctl::probe(
                &o,
                db.spec.zookeeper.as_ref().and_then(|z| z.admin.as_ref()),
            )
            .await
            .map_err(Ok),
        };
        let st = db_ctl::desired(db, outcome, Timestamp::now());
        if let Some(c) = find(&st.conditions, types::READY) {
            say(
                Kind::Database,
                ns,
                name,
                &format!("Ready={} {}: {}", c.status, c.reason, c.message),
            );
        }
    }
}

/// Whether every Synchronization succeeded with equal trees and no LiveSynchronization failed
/// or diverged.
fn succeeded(m: &Manifests) -> bool {
    let live_ok = m.live.values().all(|l| {
        l.status
            .as_ref()
            .is_some_and(|st| st.phase != LivePhase::Failed && st.divergent_nodes.unwrap_or(0) == 0)
    });
    live_ok
        && m.syncs.values().all(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.phase == Phase::Succeeded && st.verification.as_ref().is_none_or(|v| v.equal)
            })
        })
}

/// One pass over the plans: their children deleted and created, their status updated.
fn drive_plans(m: &mut Manifests, runs: &Runs, now: Timestamp) {
    let plan_keys: Vec<(String, String)> = m.plans.keys().cloned().collect();
    for key in &plan_keys {
        let Some(plan) = m.plans.get(key).cloned() else {
            continue;
        };
        let children: Vec<Child> = m
            .syncs
            .values()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(&key.0)
                    && s.labels().get(PLAN_LABEL) == Some(&key.1)
            })
            .map(|s| Child::of(s, now))
            .collect();
        let d = plan_ctl::desired(&plan, &children, now);
        say_notes(Kind::SynchronizationPlan, &key.0, &key.1, &d.notes);
        for name in &d.delete {
            if let Some(s) = m.syncs.remove(&(key.0.clone(), name.clone())) {
                runs.stop(s.metadata.uid.as_deref().unwrap_or_default());
            }
        }
        if let Some((child, slot)) = &d.create {
            let mut s = plan_ctl::child(&plan, child, *slot);
            admit(&mut s.metadata, &key.0);
            m.syncs.entry((key.0.clone(), child.clone())).or_insert(s);
        }
        if let Some(p) = m.plans.get_mut(key) {
            p.status = Some(d.status);
        }
    }
}

/// One pass over the Synchronizations that have not settled: runs started and forgotten,
/// status changes printed.
fn drive_syncs(m: &mut Manifests, runs: &Runs, now: Timestamp) -> Result<(), StandaloneError> {
    let sync_keys: Vec<(String, String)> = m.syncs.keys().cloned().collect();
    for key in &sync_keys {
        let Some(s) = m.syncs.get(key).cloned() else {
            continue;
        };
        if sync_ctl::settled(&s) {
            continue;
        }
        let uid = s.metadata.uid.clone().unwrap_or_default();
        let resolved = resolve_sync(m, &s);
        if let Err(e) = &resolved {
            // Files do not change under us: what is missing now stays missing.
            return Err(StandaloneError::Resolve {
                kind: Kind::Synchronization.as_str(),
                name: key.1.clone(),
                source: e.clone(),
            });
        }
        let d = sync_ctl::desired(&s, || resolved, runs.state(&uid).as_ref(), now);
        say_notes(Kind::Synchronization, &key.0, &key.1, &d.notes);
        match d.action {
            Action::Start(job) => runs.start(&uid, *job),
            Action::Forget => runs.stop(&uid),
            Action::Nothing => {}
        }
        report_sync(key, &s, &d.status);
        if let Some(x) = m.syncs.get_mut(key) {
            x.status = Some(d.status);
        }
    }
    Ok(())
}

/// What changed in a Synchronization's status: a new hold (and how to release it), a new
/// phase.
fn report_sync(
    (ns, name): &(String, String),
    s: &Synchronization,
    new: &crate::api::automation::SynchronizationStatus,
) {
    let old_phase = s.status.as_ref().map(|st| st.phase);
    if let Some(h) = new
        .deletion_guard
        .as_ref()
        .and_then(|g| g.held.as_ref())
        .filter(|_| new.phase == Phase::Held && old_phase != Some(Phase::Held))
    {
        say(
            Kind::Synchronization,
            ns,
            name,
            &format!(
                "deletes held: to release them, add the annotation {}: \"{}\" to this Synchronization's manifest and run again",
                crate::api::automation::RELEASE_DELETIONS_ANNOTATION,
                h.release_token
            ),
        );
    }
    if old_phase != Some(new.phase) {
        say(Kind::Synchronization, ns, name, &phase_line(new));
    }
}

/// One pass over the LiveSynchronizations: start their streams, then print what changed.
fn drive_live(
    m: &mut Manifests,
    live: &crate::continuous::Registry,
    switchovers: &Switchovers,
    now: Timestamp,
) -> Result<(), StandaloneError> {
    use crate::controllers::live_synchronization::{self as live_ctl, LiveAction};
    let keys: Vec<(String, String)> = m.live.keys().cloned().collect();
    for key in keys {
        let Some(l) = m.live.get(&key).cloned() else {
            continue;
        };
        let uid = l.metadata.uid.clone().unwrap_or_default();
        let run = match switchovers.holding(&uid) {
            Some(Some(snap)) => Some((l.metadata.generation, snap)),
            // A switchover stopped it and has not ended: nothing to decide until it has.
            Some(None) => continue,
            None => live.get(&uid),
        };
        let resolve = || resolve::resolve_live(&l, m.lookup(&key.0));
        if run.is_none() {
            // Files do not change under us: what is missing now stays missing.
            if let Err(e) = resolve() {
                return Err(StandaloneError::Resolve {
                    kind: Kind::LiveSynchronization.as_str(),
                    name: key.1.clone(),
                    source: e,
                });
            }
        }
        let mut d = live_ctl::desired(&l, resolve, run.as_ref().map(|(g, s)| (*g, s)), now);
        if let LiveAction::Release { token, deletes } = &d.action {
            let result = live.release(&uid, crate::engine::Allowance::UpTo(*deletes));
            if let Some(note) = live_ctl::released(&mut d.status, token, *deletes, result, now) {
                d.notes.push(note);
            }
        }
        match d.action {
            LiveAction::Start(opts) => live.start(&uid, l.metadata.generation, *opts, None),
            LiveAction::Stop => live.stop(&uid),
            LiveAction::Release { .. } | LiveAction::Nothing => {}
        }
        if let Some(x) = m.live.get_mut(&key) {
            show_live(&key, x, &d.notes, d.status);
        }
    }
    Ok(())
}
