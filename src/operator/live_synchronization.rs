//! LiveSynchronization controller glue: read the Databases and Secrets when a stream must
//! start, decide, start or stop the stream, and write what it reports to the status.
//!
//! It runs in the synchronization controller's process, under its Lease: one leader streams.
//! A finalizer is held while the resource exists, because a stream always runs for it;
//! deleting stops the stream and leaves the destination data as it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::Api;

use super::apply::{self, Error};
use super::shared::{drive, stores, HasShared};
use super::synchronization::{
    finalize, read_endpoints, uses, wake_users_on_endpoint_changes, RUN_POLL,
};
use super::Shared;
use crate::api::automation::{LiveSynchronization, LiveSynchronizationStatus};
use crate::api::conditions::Reason;
use crate::continuous::{Registry, Snapshot};
use crate::controllers::live_synchronization::{self as decide, LiveAction};
use crate::controllers::synchronization::Note;
use crate::engine::Allowance;
use crate::metrics::compat::{Exported, LIVE_KEY};
use crate::metrics::LiveMetrics;
use crate::resolve;

pub const NAME: &str = "livesynchronization";

pub struct Ctx {
    pub shared: Shared,
    pub live: Registry,
    /// When each object's status was last written, for [`decide::status_due`].
    written: Mutex<HashMap<String, Instant>>,
}

impl HasShared for Ctx {
    fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl Ctx {
    pub fn new(shared: Shared, live: Registry) -> Ctx {
        Ctx {
            shared,
            live,
            written: Mutex::default(),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn reconcile(ls: Arc<LiveSynchronization>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = apply::key(&*ls, "LiveSynchronization")?;
    let uid = ls.metadata.uid.clone().unwrap_or_default();
    let api = Api::<LiveSynchronization>::namespaced(ctx.shared.client.clone(), &ns);
    let stop = || {
        let was_running = ctx.live.get(&uid).is_some();
        ctx.live.stop(&uid);
        ctx.written().remove(&uid);
        was_running
    };
    let stopped = Note {
        warning: false,
        reason: Reason::Interrupted,
        message: "deleted: the stream was stopped; destination data is left as it is".into(),
    };
    // A stream always runs for a LiveSynchronization: the finalizer is always wanted.
    if let Some(action) = finalize(&api, &*ls, &ctx.shared.events, true, stop, stopped).await? {
        return Ok(action);
    }

    let run = ctx.live.get(&uid);
    let endpoints = if must_resolve(&ls, run.as_ref()) {
        read_endpoints(&ctx.shared, &ns, &ls.spec.config).await?
    } else {
        Default::default()
    };
    let now = Timestamp::now();
    let mut d = decide::desired(
        &ls,
        || {
            resolve::resolve_live(&ls, |n| {
                endpoints.get(n).cloned().unwrap_or(Ok((None, None)))
            })
        },
        run.as_ref().map(|(g, s)| (*g, s)),
        now,
    );
    if let LiveAction::Release { token, deletes } = &d.action {
        let result = ctx.live.release(&uid, Allowance::UpTo(*deletes));
        if let Some(note) = decide::released(&mut d.status, token, *deletes, result, now) {
            d.notes.push(note);
        }
    }

    write_status(&ctx, &api, &ls, &uid, &d.status).await?;
    ctx.shared
        .events
        .publish_all(&*ls, "Stream", &d.notes)
        .await;
    match d.action {
        LiveAction::Start(opts) => {
            let m = Arc::new(LiveMetrics::new(&ns, &name, decide::max_lag(&ls)));
            ctx.live.start(&uid, ls.metadata.generation, *opts, Some(m));
        }
        LiveAction::Stop => ctx.live.stop(&uid),
        LiveAction::Release { .. } | LiveAction::Nothing => {}
    }
    Ok(match d.requeue {
        Some(after) if ctx.live.get(&uid).is_none() => Action::requeue(after),
        // The stream reports nothing to the API server: look at it on a clock.
        _ if ctx.live.get(&uid).is_some() => Action::requeue(RUN_POLL),
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Whether the Databases must be read: no stream yet, the spec changed under it, or it failed.
fn must_resolve(ls: &LiveSynchronization, run: Option<&(Option<i64>, Snapshot)>) -> bool {
    match run {
        None => true,
        Some((g, snap)) => *g != ls.metadata.generation || snap.failed.is_some(),
    }
}

/// Writes `status` when [`decide::status_due`] says so, and remembers when it did.
async fn write_status(
    ctx: &Ctx,
    api: &Api<LiveSynchronization>,
    ls: &LiveSynchronization,
    uid: &str,
    status: &LiveSynchronizationStatus,
) -> Result<(), Error> {
    let since = ctx.written().get(uid).map(|t| t.elapsed());
    if decide::status_due(ls.status.as_ref(), status, since)
        && apply::status(api, ls, ls.status.as_ref(), status).await?
    {
        ctx.written().insert(uid.to_string(), Instant::now());
    }
    Ok(())
}

/// The LiveSynchronizations in `ns` that use the Database `db`.
pub fn users_of(
    store: &Store<LiveSynchronization>,
    ns: &str,
    db: &str,
) -> Vec<ObjectRef<LiveSynchronization>> {
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| uses(&s.spec.config, db))
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

/// The controller, until `stop` resolves; every stream it started is stopped when it ends.
pub async fn run(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controllers: Vec<_> = ctx
        .shared
        .within()
        .iter()
        .map(|w| {
            let c = Controller::new(
                w.api::<LiveSynchronization>(),
                watcher::Config::default().any_semantic(),
            );
            wake_users_on_endpoint_changes(c, w, users_of)
        })
        .collect();
    ctx.shared
        .process
        .exports
        .register_live(stores(&controllers));
    let _exported = Exported::new(ctx.shared.process.exports.clone(), LIVE_KEY);
    drive(NAME, controllers, reconcile, ctx.clone(), stop).await;
    ctx.live.clear();
}
