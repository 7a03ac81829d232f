//! Switchover documents: each checked before anything starts, with the operator's decisions
//! and resolver, then run once against the stream of its LiveSynchronization from the same
//! files, after that stream has caught up ([`crate::local_switchover`], shared with the CLI).
//!
//! The stream is taken out of the registry and handed to the run as a [`Local`]; when the run
//! ends it goes back (rolled back, it streams on) or stays stopped, as the operator's
//! `spec.suspend: true` would keep it. A reverse stream joins the registry as the
//! LiveSynchronization the operator would have created, so it is reported like any other.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::load::admit;
use super::say::{say, show_live, Kind};
use super::{Manifests, StandaloneError};
use crate::api::automation::{LiveSynchronization, Switchover};
use crate::continuous::{ContinuousOptions, Registry, Snapshot};
use crate::controllers::live_synchronization as live_ctl;
use crate::controllers::switchover::reverse::{reverse_marks, reverse_name, reverse_spec};
use crate::controllers::switchover::{self as sw_ctl, Observed, SwitchoverAction};
use crate::local_switchover::{report_json, switch_over, Ended};
use crate::resolve;
use crate::switchover::local::Local;
use crate::switchover::{FenceMode, Stream, SwitchoverOptions};

type Key = (String, String);

/// The Switchovers of the files and where each is.
#[derive(Default)]
pub(super) struct Switchovers {
    items: BTreeMap<Key, Entry>,
}

struct Entry {
    sw: Switchover,
    opts: SwitchoverOptions,
    /// Its LiveSynchronization (namespace, name), the key and generation of its stream in the
    /// registry, and the settings it runs with.
    live: Key,
    live_uid: String,
    live_generation: Option<i64>,
    stream: ContinuousOptions,
    /// With `reverse: true`: the LiveSynchronization of the reverse stream, and who it is in
    /// its writer claim.
    reverse: Option<(LiveSynchronization, String)>,
    state: State,
}

enum State {
    /// Its stream has not started yet.
    Pending,
    /// The run has the stream.
    Running {
        local: Arc<Local>,
        task: tokio::task::JoinHandle<Ended>,
    },
    Done {
        ok: bool,
    },
}

/// The key of a resource's stream in the registry (as `load` admits them).
fn uid(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

/// Checks every Switchover as the operator would before it starts one (its
/// LiveSynchronization in the files and not suspended, its timeout, the settings resolved),
/// plus what only the files can get wrong: two Switchovers of one stream, a reverse stream
/// named like a LiveSynchronization of the files. The first refusal is the error; nothing
/// has started yet.
pub(super) fn check(m: &Manifests) -> Result<Switchovers, StandaloneError> {
    let mut items = BTreeMap::new();
    let mut by_stream: BTreeMap<Key, String> = BTreeMap::new();
    for ((ns, name), sw) in &m.switchovers {
        let refused = |message: String| StandaloneError::Refused {
            kind: Kind::Switchover.as_str(),
            name: name.clone(),
            message,
        };
        let live_key = (ns.clone(), sw.spec.live_synchronization_name.clone());
        let ls = m.live.get(&live_key);
        let seen = Observed {
            live: ls,
            blocking: None,
            run: None,
        };
        let d = sw_ctl::desired(
            sw,
            seen,
            |l| resolve::resolve_switchover(sw, l, m.lookup(ns)),
            Timestamp::now(),
        );
        let (opts, ls) = match (d.action, ls) {
            (SwitchoverAction::Start(o), Some(ls)) => (*o, ls),
            (SwitchoverAction::Fail { message, .. }, _) => return Err(refused(message)),
            _ => return Err(refused("it cannot start (no stream to switch over)".into())),
        };
        if let Some(other) = by_stream.insert(live_key.clone(), name.clone()) {
            return Err(refused(format!(
                "spec.liveSynchronizationName: Switchover {other} names LiveSynchronization {} too: standalone mode runs one Switchover per LiveSynchronization",
                live_key.1
            )));
        }
        let stream =
            resolve::resolve_live(ls, m.lookup(ns)).map_err(|e| StandaloneError::Resolve {
                kind: Kind::LiveSynchronization.as_str(),
                name: live_key.1.clone(),
                source: e,
            })?;
        let reverse = match sw.spec.reverse {
            false => None,
            true => {
                let r = reverse_of(sw, ls, opts.fence == FenceMode::Acl);
                let r_name = r.metadata.name.clone().unwrap_or_default();
                if m.live.contains_key(&(ns.clone(), r_name.clone())) {
                    return Err(refused(format!(
                        "spec.reverseName: LiveSynchronization {r_name} is in the files, but this switchover starts the reverse stream itself: name another one in spec.reverseName, or leave {r_name} out"
                    )));
                }
                let holder = resolve::resolve_live(&r, m.lookup(ns))
                    .map_err(|e| {
                        refused(format!(
                            "spec.reverse: the reverse LiveSynchronization {r_name}: {e}"
                        ))
                    })?
                    .live
                    .sync
                    .holder;
                Some((r, holder))
            }
        };
        items.insert(
            (ns.clone(), name.clone()),
            Entry {
                sw: sw.clone(),
                opts,
                live: live_key,
                live_uid: uid(&ls.metadata),
                live_generation: ls.metadata.generation,
                stream,
                reverse,
                state: State::Pending,
            },
        );
    }
    Ok(Switchovers { items })
}

/// The reverse LiveSynchronization, as the operator creates it: Databases and roots
/// swapped, keeping a fenced old primary fenced.
fn reverse_of(sw: &Switchover, ls: &LiveSynchronization, fenced: bool) -> LiveSynchronization {
    let mut spec = reverse_spec(&ls.spec);
    spec.fence_destination = fenced;
    let mut r = LiveSynchronization::new(&reverse_name(sw, ls), spec);
    let (labels, annotations) = reverse_marks(
        ls.metadata.name.as_deref().unwrap_or_default(),
        sw.metadata.name.as_deref().unwrap_or_default(),
    );
    r.metadata.labels = Some(labels);
    r.metadata.annotations = Some(annotations);
    admit(
        &mut r.metadata,
        ls.metadata.namespace.as_deref().unwrap_or_default(),
    );
    r
}

impl Switchovers {
    /// Whether a run holds the stream of the LiveSynchronization `uid`: then its snapshot,
    /// `None` while the run has it stopped.
    pub(super) fn holding(&self, uid: &str) -> Option<Option<Snapshot>> {
        self.items.values().find_map(|e| match &e.state {
            State::Running { local, .. } if e.live_uid == uid => Some(local.snapshot()),
            _ => None,
        })
    }

    /// Every Switchover has ended.
    pub(super) fn finished(&self) -> bool {
        self.items
            .values()
            .all(|e| matches!(e.state, State::Done { .. }))
    }

    /// Every Switchover completed.
    pub(super) fn succeeded(&self) -> bool {
        self.items
            .values()
            .all(|e| matches!(e.state, State::Done { ok: true }))
    }

    /// One pass: a Switchover whose stream has started takes it over; one whose run ended
    /// gives it back (or keeps it stopped) and starts its reverse stream.
    pub(super) async fn drive(
        &mut self,
        m: &mut Manifests,
        live: &Registry,
        stop: &watch::Receiver<bool>,
    ) {
        for (key, e) in &mut self.items {
            match &e.state {
                State::Pending => e.take_over(key, live, stop.clone()),
                State::Running { task, .. } if task.is_finished() => e.end(key, m, live).await,
                State::Running { .. } | State::Done { .. } => {}
            }
        }
    }

    /// On SIGINT or SIGTERM: a run still waiting for its stream ends unbegun, one that has
    /// begun is let finish (a half-done switchover is worse than a late exit). True when one
    /// ended here.
    pub(super) async fn settle(&mut self, m: &mut Manifests, live: &Registry) -> bool {
        let mut ended = false;
        for (key, e) in &mut self.items {
            match e.state {
                State::Pending => {
                    say(
                        Kind::Switchover,
                        &key.0,
                        &key.1,
                        "not run: stopped before its stream started",
                    );
                    e.state = State::Done { ok: false };
                }
                State::Running { .. } => {
                    say(
                        Kind::Switchover,
                        &key.0,
                        &key.1,
                        "stopping: a switchover that has begun ends first",
                    );
                    e.end(key, m, live).await;
                    ended = true;
                }
                State::Done { .. } => {}
            }
        }
        ended
    }
}

impl Entry {
    /// Takes the stream out of the registry, once started there, and starts the run on it.
    fn take_over(&mut self, (ns, name): &Key, live: &Registry, stop: watch::Receiver<bool>) {
        let Some((_, running)) = live.take(&self.live_uid) else {
            return;
        };
        // No pass may start it again while the run has it (stopped, say).
        live.keep_stopped(&self.live_uid, true);
        let holder = self
            .reverse
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        let local = Arc::new(Local::new(self.stream.clone(), running, &holder));
        let (opts, l) = (self.opts.clone(), local.clone());
        let (ns, name, stream) = (ns.clone(), name.clone(), self.live.1.clone());
        let mode = self.sw.spec.mode_name();
        let task = tokio::spawn(async move {
            let say_line = |line: &str| say(Kind::Switchover, &ns, &name, line);
            let ended = switch_over(&opts, &l, &say_line, stop).await;
            say_line(&format!("report {}", report_json(&ended.report)));
            crate::metrics::switchover_ended(
                &ns,
                &stream,
                mode,
                ended.result.is_ok(),
                Some(ended.seconds),
            );
            ended
        });
        self.state = State::Running { local, task };
    }

    /// The run ended (or is awaited to): the stream goes back to the registry when it runs
    /// (never stopped, or resumed by the rollback), else stays stopped as `spec.suspend:
    /// true`; the reverse stream joins the registry with its LiveSynchronization.
    async fn end(&mut self, (ns, name): &Key, m: &mut Manifests, live: &Registry) {
        let State::Running { local, task } = std::mem::replace(&mut self.state, State::Pending)
        else {
            return;
        };
        let ok = task.await.is_ok_and(|e| e.result.is_ok());
        live.keep_stopped(&self.live_uid, false);
        if let Some(running) = local.take_running() {
            live.adopt(&self.live_uid, self.live_generation, running);
        } else if let Some(l) = m.live.get_mut(&self.live) {
            l.spec.suspend = true;
            let why = if ok {
                format!("stopped for good by switchover {name}: its destination is the primary now (as spec.suspend: true)")
            } else {
                format!("stopped by switchover {name}, which failed without resuming it (as spec.suspend: true)")
            };
            say(Kind::LiveSynchronization, ns, &self.live.1, &why);
        }
        if ok {
            say(Kind::Switchover, ns, name, &self.rerun_warning());
        }
        if let (Some(running), Some((mut r, _))) = (local.take_reverse(), self.reverse.clone()) {
            let key = (ns.clone(), r.metadata.name.clone().unwrap_or_default());
            live.adopt(&uid(&r.metadata), r.metadata.generation, running);
            say(
                Kind::LiveSynchronization,
                ns,
                &key.1,
                &format!("started by switchover {name}: the new primary streams back to the old one until SIGINT or SIGTERM"),
            );
            // Its status as at any start; the stream is the run's (the action is not taken).
            let d = live_ctl::desired(
                &r,
                || resolve::resolve_live(&r, m.lookup(ns)),
                None,
                Timestamp::now(),
            );
            show_live(&key, &mut r, &d.notes, d.status);
            m.live.insert(key, r);
        }
        self.state = State::Done { ok };
    }

    /// The operator writes `spec.suspend: true`; the files are not written, and run again as
    /// they are they would start the old stream again, over the new primary.
    fn rerun_warning(&self) -> String {
        let keep_reverse = match &self.reverse {
            Some((r, _)) => format!(
                " (to keep the reverse stream, add LiveSynchronization {} with the Databases swapped)",
                r.metadata.name.as_deref().unwrap_or_default()
            ),
            None => String::new(),
        };
        format!(
            "WARNING the files still say LiveSynchronization {} streams: before running them again, set spec.suspend: true on it and remove this Switchover{keep_reverse}, or its stream would copy the old primary over the new one",
            self.live.1
        )
    }
}
