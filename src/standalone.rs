//! Standalone mode: the same manifests (Secrets included) read from files, driven through the
//! same resolver and decisions as the operator, without Kubernetes. Each status change is
//! printed. Plans fire on schedule; without plans the command ends when every
//! Synchronization has finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::Value;
use thiserror::Error;

use crate::api::assets::{Bucket, Database};
use crate::api::automation::{
    LivePhase, LiveSynchronization, LiveSynchronizationStatus, Phase, Synchronization,
    SynchronizationPlan,
};
use crate::api::conditions::{find, types};
use crate::controllers::synchronization::{self as sync_ctl, Action};
use crate::controllers::synchronization_plan::{self as plan_ctl, Child, PLAN_LABEL};
use crate::controllers::{database as db_ctl, synchronization::Note};
use crate::resolve::{self, ResolveError, SecretData};
use crate::runs::Runs;

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
}

/// Everything read from the files, keyed by (namespace, name).
#[derive(Default)]
pub struct Manifests {
    pub secrets: BTreeMap<(String, String), SecretData>,
    pub databases: BTreeMap<(String, String), Database>,
    pub syncs: BTreeMap<(String, String), Synchronization>,
    pub plans: BTreeMap<(String, String), SynchronizationPlan>,
    pub live: BTreeMap<(String, String), LiveSynchronization>,
    pub buckets: BTreeMap<(String, String), Bucket>,
}

fn yaml_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            yaml_files(&p, out)?;
        }
    } else if path
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        || path.is_file() && out.is_empty()
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Reads every document of every YAML file under `paths`. Kinds that are not ours (and not
/// Secrets) are ignored; a document of ours that does not parse is an error naming the file.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, StandaloneError> {
    let mut m = Manifests::default();
    let mut files = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(StandaloneError::Manifest {
                path: p.display().to_string(),
                message: "no such file or directory".into(),
            });
        }
        yaml_files(p, &mut files).map_err(|e| StandaloneError::Manifest {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
    }
    let mut generated = 0u32;
    for f in files {
        let bad = |message: String| StandaloneError::Manifest {
            path: f.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&f).map_err(|e| bad(e.to_string()))?;
        for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let doc: Value = serde::Deserialize::deserialize(de)
                .map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let parse_err = |e: serde_json::Error| bad(format!("document {} ({kind}): {e}", i + 1));
            match kind.as_str() {
                "Secret" => {
                    let s: Secret = serde_json::from_value(doc).map_err(parse_err)?;
                    m.secrets.insert(
                        (ns, s.metadata.name.clone().unwrap_or_default()),
                        resolve::secret_data(&s),
                    );
                }
                "Database" => {
                    let mut d: Database = serde_json::from_value(doc).map_err(parse_err)?;
                    d.metadata.namespace = Some(ns.clone());
                    m.databases
                        .insert((ns, d.metadata.name.clone().unwrap_or_default()), d);
                }
                "Synchronization" => {
                    let mut s: Synchronization = serde_json::from_value(doc).map_err(parse_err)?;
                    if s.metadata.name.is_none() {
                        // generateName, as the API server would do it.
                        generated += 1;
                        let base = s
                            .metadata
                            .generate_name
                            .clone()
                            .unwrap_or_else(|| "synchronization-".into());
                        s.metadata.name = Some(format!("{base}{generated:05}"));
                    }
                    admit(&mut s, &ns);
                    m.syncs
                        .insert((ns, s.metadata.name.clone().unwrap_or_default()), s);
                }
                "Bucket" => {
                    let mut b: Bucket = serde_json::from_value(doc).map_err(parse_err)?;
                    b.metadata.namespace = Some(ns.clone());
                    m.buckets
                        .insert((ns, b.metadata.name.clone().unwrap_or_default()), b);
                }
                "LiveSynchronization" => {
                    let mut l: LiveSynchronization =
                        serde_json::from_value(doc).map_err(parse_err)?;
                    let name = l.metadata.name.clone().unwrap_or_default();
                    l.metadata.namespace = Some(ns.clone());
                    l.metadata.uid = Some(format!("{ns}/{name}"));
                    l.metadata.generation = Some(1);
                    m.live.insert((ns, name), l);
                }
                "SynchronizationPlan" => {
                    let mut p: SynchronizationPlan =
                        serde_json::from_value(doc).map_err(parse_err)?;
                    p.metadata.namespace = Some(ns.clone());
                    p.metadata.generation = Some(1);
                    p.metadata.creation_timestamp = Some(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
                    );
                    m.plans
                        .insert((ns, p.metadata.name.clone().unwrap_or_default()), p);
                }
                _ => {}
            }
        }
    }
    Ok(m)
}

/// What the API server fills in on create: namespace, a UID (unique per namespace and name
/// here, which is all the run registry needs) and the first generation.
fn admit(s: &mut Synchronization, ns: &str) {
    s.metadata.namespace = Some(ns.to_string());
    s.metadata.uid = Some(format!(
        "{ns}/{}",
        s.metadata.name.clone().unwrap_or_default()
    ));
    s.metadata.generation = Some(1);
}

/// Engine settings of a sync from the loaded Databases and Secrets.
pub fn resolve_sync(m: &Manifests, s: &Synchronization) -> Result<crate::runs::Job, ResolveError> {
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    resolve::resolve_job(
        s,
        |name| {
            let key = (ns.clone(), name.to_string());
            Ok((m.databases.get(&key).cloned(), m.secrets.get(&key).cloned()))
        },
        &|name| {
            let bucket = m.buckets.get(&(ns.clone(), name.to_string())).cloned();
            let secret = bucket
                .as_ref()
                .and_then(resolve::bucket_secret_name)
                .and_then(|sn| m.secrets.get(&(ns.clone(), sn.to_string())).cloned());
            (bucket, secret)
        },
    )
}

fn say(kind: &str, ns: &str, name: &str, text: &str) {
    println!(
        "{} {kind}/{ns}/{name}: {text}",
        Timestamp::now().strftime("%H:%M:%S")
    );
}

fn say_notes(kind: &str, ns: &str, name: &str, notes: &[Note]) {
    for n in notes {
        say(
            kind,
            ns,
            name,
            &format!(
                "{}{}: {}",
                if n.warning { "WARNING " } else { "" },
                n.reason,
                n.message
            ),
        );
    }
}

/// Runs until every Synchronization has finished (while plans or LiveSynchronizations exist,
/// until SIGINT or SIGTERM). Returns true when every Synchronization succeeded and none
/// diverged, and no LiveSynchronization failed or was confirmed divergent.
pub async fn run(mut m: Manifests) -> Result<bool, StandaloneError> {
    let runs = Runs::new();
    // Databases first: an unreachable ensemble shows before any copy starts.
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
                "database",
                ns,
                name,
                &format!("Ready={} {}: {}", c.status, c.reason, c.message),
            );
        }
    }
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
        drive_live(&mut m, &live, now)?;
        // Plans create children first, so a due slot starts in this same pass.
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
            say_notes("synchronizationplan", &key.0, &key.1, &d.notes);
            for name in &d.delete {
                if let Some(s) = m.syncs.remove(&(key.0.clone(), name.clone())) {
                    runs.stop(s.metadata.uid.as_deref().unwrap_or_default());
                }
            }
            if let Some((child, slot)) = &d.create {
                let mut s = plan_ctl::child(&plan, child, *slot);
                admit(&mut s, &key.0);
                m.syncs.entry((key.0.clone(), child.clone())).or_insert(s);
            }
            if let Some(p) = m.plans.get_mut(key) {
                p.status = Some(d.status);
            }
        }
        let sync_keys: Vec<(String, String)> = m.syncs.keys().cloned().collect();
        for key in &sync_keys {
            let Some(s) = m.syncs.get(key).cloned() else {
                continue;
            };
            if sync_ctl::settled(&s) {
                continue;
            }
            let uid = s.metadata.uid.clone().unwrap_or_default();
            let resolved = resolve_sync(&m, &s);
            if let Err(e) = &resolved {
                // Files do not change under us: what is missing now stays missing.
                return Err(StandaloneError::Resolve {
                    kind: "synchronization",
                    name: key.1.clone(),
                    source: e.clone(),
                });
            }
            let d = sync_ctl::desired(&s, || resolved, runs.state(&uid).as_ref(), now);
            let old_phase = s.status.as_ref().map(|st| st.phase);
            say_notes("synchronization", &key.0, &key.1, &d.notes);
            match d.action {
                Action::Start(job) => runs.start(&uid, *job),
                Action::Forget => runs.stop(&uid),
                Action::Nothing => {}
            }
            if let Some(h) = d
                .status
                .deletion_guard
                .as_ref()
                .and_then(|g| g.held.as_ref())
                .filter(|_| d.status.phase == Phase::Held && old_phase != Some(Phase::Held))
            {
                say(
                    "synchronization",
                    &key.0,
                    &key.1,
                    &format!(
                        "deletes held: to release them, add the annotation {}: \"{}\" to this Synchronization's manifest and run again",
                        crate::api::automation::RELEASE_DELETIONS_ANNOTATION,
                        h.release_token
                    ),
                );
            }
            if old_phase != Some(d.status.phase) {
                let mut line = format!("phase {:?}", d.status.phase);
                if let Some(v) = &d.status.verification {
                    line.push_str(&format!(
                        " | verified: {} (source {} nodes, destination {} nodes, {} divergent, root hash {})",
                        if v.equal { "EQUAL" } else { "DIVERGED" },
                        v.source_nodes,
                        v.destination_nodes,
                        v.divergent_nodes,
                        verifier::short_hash(&v.source_root_hash)
                    ));
                }
                if let Some(snap) = &d.status.snapshot {
                    line.push_str(&format!(
                        " | snapshot {} ({} nodes, {} bytes compressed, root hash {}) at {}",
                        snap.name,
                        snap.nodes,
                        snap.size_bytes,
                        verifier::short_hash(&snap.root_hash),
                        snap.location
                    ));
                }
                say("synchronization", &key.0, &key.1, &line);
            }
            if let Some(x) = m.syncs.get_mut(key) {
                x.status = Some(d.status);
            }
        }
        let all_done = m.syncs.values().all(sync_ctl::settled);
        if (m.plans.is_empty() && m.live.is_empty() && all_done) || *stop_rx.borrow() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !live.is_empty() {
        live.clear();
        for (ns, name) in m.live.keys() {
            say(
                "livesynchronization",
                ns,
                name,
                "stopped; destination data is left as it is",
            );
        }
    }
    let live_ok = m.live.values().all(|l| {
        l.status
            .as_ref()
            .is_some_and(|st| st.phase != LivePhase::Failed && st.divergent_nodes.unwrap_or(0) == 0)
    });
    Ok(live_ok
        && m.syncs.values().all(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.phase == Phase::Succeeded && st.verification.as_ref().is_none_or(|v| v.equal)
            })
        }))
}

/// One pass over the LiveSynchronizations: start their streams, then print what changed.
fn drive_live(
    m: &mut Manifests,
    live: &crate::continuous::Registry,
    now: Timestamp,
) -> Result<(), StandaloneError> {
    use crate::controllers::live_synchronization::{self as live_ctl, LiveAction};
    let keys: Vec<(String, String)> = m.live.keys().cloned().collect();
    for key in keys {
        let Some(l) = m.live.get(&key).cloned() else {
            continue;
        };
        let uid = l.metadata.uid.clone().unwrap_or_default();
        let run = live.get(&uid);
        let resolve = || {
            resolve::resolve_live(&l, |name| {
                let k = (key.0.clone(), name.to_string());
                Ok((m.databases.get(&k).cloned(), m.secrets.get(&k).cloned()))
            })
        };
        if run.is_none() {
            // Files do not change under us: what is missing now stays missing.
            if let Err(e) = resolve() {
                return Err(StandaloneError::Resolve {
                    kind: "livesynchronization",
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
        say_notes("livesynchronization", &key.0, &key.1, &d.notes);
        match d.action {
            LiveAction::Start(opts) => live.start(&uid, l.metadata.generation, *opts, None),
            LiveAction::Stop => live.stop(&uid),
            LiveAction::Release { .. } | LiveAction::Nothing => {}
        }
        let old = l.status.clone().unwrap_or_default();
        for line in live_changes(&old, &d.status) {
            say("livesynchronization", &key.0, &key.1, &line);
        }
        if let Some(x) = m.live.get_mut(&key) {
            x.status = Some(d.status);
        }
    }
    Ok(())
}

/// Lines for what changed between two statuses: phase, condition flips, a new verification.
fn live_changes(old: &LiveSynchronizationStatus, new: &LiveSynchronizationStatus) -> Vec<String> {
    let mut out = Vec::new();
    if old.phase != new.phase {
        out.push(format!("phase {:?}", new.phase));
    }
    for c in &new.conditions {
        let before = find(&old.conditions, &c.type_);
        if before.map(|b| (&b.status, &b.reason)) != Some((&c.status, &c.reason)) {
            out.push(format!(
                "{}={} {}: {}",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    if new.last_verified_time.is_some() && new.last_verified_time != old.last_verified_time {
        out.push(format!(
            "verified: {} divergent, {} undecided, source root hash {}, lag {}",
            new.divergent_nodes.unwrap_or(0),
            new.undecided_nodes.unwrap_or(0),
            new.source_root_hash
                .as_deref()
                .map(verifier::short_hash)
                .unwrap_or("-"),
            new.lag.as_deref().unwrap_or("-")
        ));
    }
    out
}
