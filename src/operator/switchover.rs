//! Switchover controller glue: read the LiveSynchronization (and, for a run about to start,
//! the other Switchovers and the Databases), decide, start the run in the background, and
//! write what it reports to the status every second until it ends.
//!
//! It runs in the synchronization controller's process, under its Lease, because the run
//! takes over a stream of that process's live registry. No finalizer: a Switchover deleted
//! mid-run lets the run finish (a half-done switchover is worse), and only its status goes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::Api;
use tracing::Instrument;

use super::apply::{self, Error, FIELD_MANAGER};
use super::shared::{drive, HasShared};
use super::synchronization::read_endpoints;
use super::Shared;
use crate::api::automation::{LiveSynchronization, Switchover, SwitchoverPhase};
use crate::continuous::{Registry, Snapshot};
use crate::controllers::note::Note;
use crate::controllers::switchover::reverse::{
    not_the_reverse, reverse_marks, reverse_name, reverse_spec,
};
use crate::controllers::switchover::{self as decide, Observed, SwitchoverAction};
use crate::resolve;
use crate::switchover::{self, Progress, Report, Stream, SwitchoverOptions};

pub const NAME: &str = "switchover";

/// One run of this process.
struct Run {
    progress: Progress,
    task: tokio::task::JoinHandle<()>,
    /// The keys of [`decide::run_notes`] already published as Events.
    published: HashSet<usize>,
}

/// The switchovers this process runs, by Switchover UID. Owned by the supervisor with the
/// streams: losing the Lease aborts them (the next leader reports them Interrupted).
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<HashMap<String, Run>>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, uid: &str) -> Option<Report> {
        self.lock().get(uid).map(|r| r.progress.report())
    }

    fn running(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// The notes not published yet, now marked published.
    fn unpublished(&self, uid: &str, notes: Vec<(usize, Note)>) -> Vec<Note> {
        let mut runs = self.lock();
        let Some(run) = runs.get_mut(uid) else {
            return Vec::new();
        };
        notes
            .into_iter()
            .filter(|(k, _)| run.published.insert(*k))
            .map(|(_, n)| n)
            .collect()
    }

    fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Aborts every run (this replica is no longer the leader, or is shutting down).
    pub fn clear(&self) {
        for (_, run) in self.lock().drain() {
            run.task.abort();
        }
    }
}

pub struct Ctx {
    pub shared: Shared,
    /// The streams of this process: a switchover takes one over.
    pub live: Registry,
    pub runs: Runs,
}

impl HasShared for Ctx {
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

pub async fn reconcile(sw: Arc<Switchover>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = apply::key(&*sw, "Switchover")?;
    let uid = sw.metadata.uid.clone().unwrap_or_default();
    let client = &ctx.shared.client;
    let api = Api::<Switchover>::namespaced(client.clone(), &ns);
    let report = ctx.runs.report(&uid);
    let stored = sw.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if report.is_none() && stored.is_finished() {
        return Ok(Action::await_change());
    }

    // Read.
    let ls_name = &sw.spec.live_synchronization_name;
    let ls = Api::<LiveSynchronization>::namespaced(client.clone(), &ns)
        .get_opt(ls_name)
        .await
        .map_err(Error::api("reading", "LiveSynchronization", &ns, ls_name))?;
    let may_start = report.is_none() && stored == SwitchoverPhase::Pending;
    let blocking = if may_start {
        let all = api.list(&ListParams::default()).await.map_err(Error::api(
            "listing",
            "Switchover",
            &ns,
            &name,
        ))?;
        decide::blocking(&sw, &all.items, |u| ctx.runs.running(u))
    } else {
        None
    };
    let endpoints = match &ls {
        Some(l) if may_start && !l.spec.suspend => {
            read_endpoints(&ctx.shared, &ns, &l.spec.config).await?
        }
        _ => Default::default(),
    };

    // Desired.
    let seen = Observed {
        live: ls.as_ref(),
        blocking: blocking.as_deref(),
        run: report.as_ref(),
    };
    let d = decide::desired(
        &sw,
        seen,
        |l| {
            resolve::resolve_switchover(&sw, l, |n| {
                endpoints.get(n).cloned().unwrap_or(Ok((None, None)))
            })
        },
        Timestamp::now(),
    );

    // Apply.
    let mode = sw.spec.mode_name();
    match d.action {
        SwitchoverAction::Start(opts) => {
            if let Some(l) = &ls {
                ctx.start(&sw, l, *opts);
            }
        }
        SwitchoverAction::Fail { reason, .. } => {
            tracing::warn!(namespace = %ns, name = %name, %reason, "switchover refused");
            crate::metrics::switchover_ended(&ns, ls_name, mode, false, None);
        }
        SwitchoverAction::Nothing => {}
    }

    // Status, then the Events of what it says.
    apply::status(&api, &*sw, sw.status.as_ref(), &d.status).await?;
    let events = &ctx.shared.events;
    events.publish_all(&*sw, "Switchover", &d.notes).await;
    if let Some(r) = &report {
        let notes = ctx.runs.unpublished(&uid, decide::run_notes(r));
        events.publish_all(&*sw, "Switchover", &notes).await;
        // The stored status shows the end: the run can go.
        if r.outcome.is_some() && stored.is_finished() {
            ctx.runs.forget(&uid);
        }
    }
    Ok(match d.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

impl Ctx {
    /// Starts the run in the background; its end is recorded in the metrics there.
    fn start(&self, sw: &Switchover, ls: &LiveSynchronization, opts: SwitchoverOptions) {
        let uid = sw.metadata.uid.clone().unwrap_or_default();
        let ns = sw.metadata.namespace.clone().unwrap_or_default();
        let name = sw.metadata.name.clone().unwrap_or_default();
        let stream = LiveStream {
            api: Api::namespaced(self.shared.client.clone(), &ns),
            live: self.live.clone(),
            ls: ls.clone(),
            uid: ls.metadata.uid.clone().unwrap_or_default(),
            switchover: name.clone(),
            reverse: reverse_name(sw, ls),
            cache: std::sync::Mutex::default(),
        };
        let progress = Progress::new(opts.mode, Timestamp::now());
        let p = progress.clone();
        let mode = sw.spec.mode_name();
        let ls_name = sw.spec.live_synchronization_name.clone();
        let span = tracing::info_span!("switchover", namespace = %ns, name = %name, livesynchronization = %ls_name, mode);
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let r = switchover::run(&opts, &stream, &p).await;
                // Whatever happened, the spec now says whether the stream runs.
                stream.live.keep_stopped(&stream.uid, false);
                let seconds = match &r {
                    Ok(o) => o.rto.as_secs_f64(),
                    Err(_) => started.elapsed().as_secs_f64(),
                };
                crate::metrics::switchover_ended(&ns, &ls_name, mode, r.is_ok(), Some(seconds));
                match &r {
                    Ok(_) => tracing::info!(seconds, "switchover complete"),
                    Err(f) => {
                        tracing::warn!(step = %f.step, reason = %f.reason, rolled_back = f.rolled_back, "switchover failed: {}", f.message)
                    }
                }
            }
            .instrument(span),
        );
        let run = Run {
            progress,
            task,
            published: HashSet::new(),
        };
        self.runs.lock().insert(uid, run);
    }
}

/// The LiveSynchronization's stream as the run sees it: its snapshot from the registry, and
/// stopped, resumed and reversed through the API (so the spec says what runs).
struct LiveStream {
    api: Api<LiveSynchronization>,
    live: Registry,
    /// The LiveSynchronization as read when the run started.
    ls: LiveSynchronization,
    /// Its UID: the key of its stream in the registry.
    uid: String,
    switchover: String,
    reverse: String,
    /// The stream's ACL caches, kept when it stops: handed to the reverse stream.
    cache: std::sync::Mutex<Option<verifier::VerifyCache>>,
}

impl LiveStream {
    fn ls_name(&self) -> &str {
        self.ls.metadata.name.as_deref().unwrap_or_default()
    }

    /// Resumes an existing reverse stream (a failback resumes the original), keeping its
    /// destination fenced or not as this switchover left it.
    async fn resume_fenced(&self, name: &str, fenced: bool) -> Result<(), String> {
        // The stream now copies onto the old primary, which may hold writes made after the
        // split: its next full sync reports them first, unless this switchover fenced it
        // and proved it equal.
        let spec = serde_json::json!({"suspend": false, "fenceDestination": fenced, "compareBeforeSync": !fenced});
        self.patch_spec(name, spec)
            .await
            .map_err(|e| format!("resuming LiveSynchronization {name}: {e}"))
    }

    async fn suspend(&self, name: &str, suspend: bool) -> Result<(), String> {
        self.patch_spec(name, serde_json::json!({ "suspend": suspend }))
            .await
            .map_err(|e| {
                format!("setting spec.suspend: {suspend} on LiveSynchronization {name}: {e}")
            })
    }

    /// A merge patch of the LiveSynchronization's spec, as this controller's field manager.
    async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": spec });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.api
            .patch(name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

impl Stream for LiveStream {
    fn snapshot(&self) -> Option<Snapshot> {
        self.live.get(&self.uid).map(|(_, s)| s)
    }

    fn verify_cache(&self) -> Option<verifier::VerifyCache> {
        self.live.verify_cache(&self.uid)
    }

    /// Stops the stream here first (kept stopped, so no reconcile starts it again), then
    /// records it in the spec; a spec that cannot be written lets the stream start again.
    async fn stop(&self) -> Result<(), String> {
        if let Some(c) = self.live.verify_cache(&self.uid) {
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        }
        self.live.keep_stopped(&self.uid, true);
        self.live.stop_and_wait(&self.uid).await;
        if let Err(e) = self.suspend(self.ls_name(), true).await {
            self.live.keep_stopped(&self.uid, false);
            return Err(e);
        }
        Ok(())
    }

    async fn resume(&self) -> Result<(), String> {
        self.live.keep_stopped(&self.uid, false);
        self.suspend(self.ls_name(), false).await
    }

    /// Creates the reverse LiveSynchronization, or resumes it when it exists and copies the
    /// reverse way (a failback resumes the original).
    async fn start_reverse(&self, keep_fenced: Option<String>) -> Result<String, String> {
        let name = self.reverse.clone();
        if let Some(c) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // What the switchover read (and the fence wrote) is read again only where changed.
            self.live.hand_over_cache(c.reversed());
        }
        let mut spec = reverse_spec(&self.ls.spec);
        // The old primary was fenced: the reverse stream keeps it so while it is a replica.
        // Fenced and then proven equal (a planned switchover reaches this only so), it cannot
        // hold writes the new primary lacks, so there is nothing to compare first.
        spec.fence_destination = keep_fenced.is_some();
        spec.compare_before_sync = keep_fenced.is_none();
        let existing = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| format!("reading LiveSynchronization {name}: {e}"))?;
        if let Some(existing) = existing {
            if let Some(why) = not_the_reverse(&existing, &spec.config) {
                return Err(why);
            }
            self.resume_fenced(&name, spec.fence_destination).await?;
            return Ok(name);
        }
        let mut reverse = LiveSynchronization::new(&name, spec);
        let (labels, annotations) = reverse_marks(self.ls_name(), &self.switchover);
        reverse.metadata.labels = Some(labels);
        reverse.metadata.annotations = Some(annotations);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.api
            .create(&pp, &reverse)
            .await
            .map_err(|e| format!("creating LiveSynchronization {name}: {e}"))?;
        Ok(name)
    }
}

/// The controller, until `stop` resolves.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controllers = ctx
        .shared
        .within()
        .iter()
        .map(|w| {
            Controller::new(
                w.api::<Switchover>(),
                watcher::Config::default().any_semantic(),
            )
        })
        .collect();
    drive(NAME, controllers, reconcile, ctx.clone(), stop).await;
}
