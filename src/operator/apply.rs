//! The writes every reconciler shares: status by server-side apply (only when it changed),
//! Events from decision notes, and the error type with its bounded `reason` label.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::controllers::synchronization::Note;
use crate::text::truncate;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "resiliency-operator";

/// The API server refuses an Event whose note is longer than 1 KiB.
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// A reconcile that could not finish; the controller retries it with a growing backoff.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{step} {kind} {namespace}/{name}: {source}")]
    Api {
        /// What was being done, e.g. "reading", "patching the status of".
        step: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0} has no name or namespace")]
    Unnamed(&'static str),
}

impl Error {
    pub fn api(
        step: &'static str,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        move |source| Error::Api {
            step,
            kind,
            namespace,
            name,
            source: Box::new(source),
        }
    }

    /// A bounded label for metrics and the Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Api { source, .. } => match &**source {
                kube::Error::Api(s) => match s.code {
                    401 | 403 => "Forbidden",
                    404 => "NotFound",
                    409 => "Conflict",
                    422 => "Invalid",
                    429 => "Throttled",
                    _ => "ApiError",
                },
                _ => "ApiUnavailable",
            },
            Error::Unnamed(_) => "InvalidObject",
        }
    }
}

/// True for a 404 from the API server.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True for a 409 from the API server.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Namespace and name of a namespaced object.
pub fn key<K: Resource>(obj: &K, kind: &'static str) -> Result<(String, String), Error> {
    match (obj.meta().namespace.clone(), obj.meta().name.clone()) {
        (Some(ns), Some(name)) => Ok((ns, name)),
        _ => Err(Error::Unnamed(kind)),
    }
}

/// Writes `status` with server-side apply when it differs from `old`. Returns whether it wrote.
/// Writing only on change keeps a reconcile from triggering itself through its own watch.
pub async fn status<K, S>(api: &Api<K>, obj: &K, old: Option<&S>, new: &S) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(false);
    }
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::api(
        "patching the status of",
        static_kind::<K>(),
        &namespace,
        &name,
    ))?;
    Ok(true)
}

/// `K::kind` as a static str for error context (our kinds are few and fixed).
pub fn static_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Database" => "Database",
        "Synchronization" => "Synchronization",
        "SynchronizationPlan" => "SynchronizationPlan",
        "LiveSynchronization" => "LiveSynchronization",
        "Switchover" => "Switchover",
        _ => "object",
    }
}

/// Publishes Events for one object. Events are best effort: a failure is logged, never fails
/// the reconcile (the status already says the same).
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// `controller` is the Deployment-style name, e.g. resiliency-operator-database-controller.
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Events {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: controller.to_string(),
                    instance,
                },
            ),
        }
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, action: &str, note: &Note) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.as_str().to_string(),
            note: Some(truncate(&note.message, EVENT_NOTE_MAX_BYTES)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(
                object = %obj.meta().name.as_deref().unwrap_or_default(),
                reason = %note.reason,
                error = %e,
                "could not publish an Event"
            );
        }
    }

    pub async fn publish_all<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        action: &str,
        notes: &[Note],
    ) {
        for n in notes {
            self.publish(obj, action, n).await;
        }
    }
}

/// The Event for a Ready transition between two condition lists (status or reason changed),
/// so a periodic check publishes one per transition, not one per check.
pub fn ready_transition(
    old: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<crate::controllers::synchronization::Note> {
    use crate::api::conditions::{find, types, ConditionStatus, Reason};
    let new = find(new, types::READY)?;
    let old = old.and_then(|o| find(o, types::READY));
    if old.is_some_and(|o| o.status == new.status && o.reason == new.reason) {
        return None;
    }
    Some(crate::controllers::synchronization::Note {
        warning: ConditionStatus::of(new) != ConditionStatus::True,
        reason: Reason::parse(&new.reason).unwrap_or(Reason::Unreachable),
        message: new.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_bounded_reasons() {
        let status = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        let e = Error::api("reading", "Database", "ns", "db")(status(403));
        assert_eq!(e.reason(), "Forbidden");
        assert!(e.to_string().starts_with("reading Database ns/db"));
        assert_eq!(
            Error::api("reading", "Database", "ns", "db")(status(500)).reason(),
            "ApiError"
        );
    }
}
