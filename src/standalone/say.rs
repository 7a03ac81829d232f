//! What standalone mode prints: one timestamped line per status change of a resource (and
//! per step of a switchover).

use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{
    LiveSynchronization, LiveSynchronizationStatus, SynchronizationStatus,
};
use crate::api::conditions::find;
use crate::controllers::synchronization::Note;

/// The kind of resource a line is about.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Database,
    Synchronization,
    SynchronizationPlan,
    LiveSynchronization,
    Switchover,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Database => "database",
            Kind::Synchronization => "synchronization",
            Kind::SynchronizationPlan => "synchronizationplan",
            Kind::LiveSynchronization => "livesynchronization",
            Kind::Switchover => "switchover",
        }
    }
}

pub(super) fn say(kind: Kind, ns: &str, name: &str, text: &str) {
    println!(
        "{} {}/{ns}/{name}: {text}",
        Timestamp::now().strftime("%H:%M:%S"),
        kind.as_str()
    );
}

pub(super) fn say_notes(kind: Kind, ns: &str, name: &str, notes: &[Note]) {
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

/// A Synchronization's new phase, with its verification and snapshot when it has them.
pub(super) fn phase_line(st: &SynchronizationStatus) -> String {
    let mut line = format!("phase {:?}", st.phase);
    if let Some(v) = &st.verification {
        line.push_str(&format!(
            " | verified: {} (source {} nodes, destination {} nodes, {} divergent, root hash {})",
            if v.equal { "EQUAL" } else { "DIVERGED" },
            v.source_nodes,
            v.destination_nodes,
            v.divergent_nodes,
            verifier::short_hash(&v.source_root_hash)
        ));
    }
    if let Some(snap) = &st.snapshot {
        line.push_str(&format!(
            " | snapshot {} ({} nodes, {} bytes compressed, root hash {}) at {}",
            snap.name,
            snap.nodes,
            snap.size_bytes,
            verifier::short_hash(&snap.root_hash),
            snap.location
        ));
    }
    line
}

/// Lines for what changed between two statuses: phase, condition flips, a new verification.
pub(super) fn live_changes(
    old: &LiveSynchronizationStatus,
    new: &LiveSynchronizationStatus,
) -> Vec<String> {
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

/// Prints a LiveSynchronization's notes and what changed in its status, which it then has.
pub(super) fn show_live(
    (ns, name): &(String, String),
    l: &mut LiveSynchronization,
    notes: &[Note],
    status: LiveSynchronizationStatus,
) {
    say_notes(Kind::LiveSynchronization, ns, name, notes);
    let old = l.status.clone().unwrap_or_default();
    for line in live_changes(&old, &status) {
        say(Kind::LiveSynchronization, ns, name, &line);
    }
    l.status = Some(status);
}
