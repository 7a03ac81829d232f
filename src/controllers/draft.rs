//! The status a decision builds, with the Events it publishes: each step of a controller's
//! `desired` writes its conditions and notes into a [`Draft`], stamped with one generation and
//! `now`; the controller then turns it into its decision.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{LiveSynchronizationStatus, SwitchoverStatus, SynchronizationStatus};
use crate::api::conditions::{set_condition, ConditionStatus, Desired, Reason};
use crate::controllers::note::Note;

/// A status with conditions and an observed generation.
pub trait Observed: Default {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observe(&mut self, generation: Option<i64>);
}

impl Observed for SynchronizationStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observe(&mut self, generation: Option<i64>) {
        self.observed_generation = generation;
    }
}

impl Observed for LiveSynchronizationStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observe(&mut self, generation: Option<i64>) {
        self.observed_generation = generation;
    }
}

impl Observed for SwitchoverStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn observe(&mut self, generation: Option<i64>) {
        self.observed_generation = generation;
    }
}

/// A decision: the status to write, what the driver must do, and the Events to publish.
#[derive(Debug)]
pub struct Decision<S, A> {
    pub status: S,
    pub action: A,
    /// Look again after this long even without a change (None: on a change, or when the
    /// driver next polls a running stream).
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

pub struct Draft<S> {
    pub st: S,
    pub notes: Vec<Note>,
    pub now: Timestamp,
    generation: Option<i64>,
}

impl<S: Observed> Draft<S> {
    /// The status as stored (the default when none is), now observed at `generation`.
    pub fn new(stored: Option<&S>, generation: Option<i64>, now: Timestamp) -> Self
    where
        S: Clone,
    {
        let mut st = stored.cloned().unwrap_or_default();
        st.observe(generation);
        Draft {
            st,
            notes: Vec::new(),
            now,
            generation,
        }
    }

    /// Sets a condition (its transition time moves only when its status flips).
    pub fn set(&mut self, want: Desired) {
        set_condition(self.st.conditions_mut(), want, self.generation, self.now);
    }

    /// Sets the condition `type_` to this status, reason and message.
    pub fn condition(
        &mut self,
        type_: &'static str,
        status: impl Into<ConditionStatus>,
        reason: Reason,
        message: impl Into<String>,
    ) {
        self.set(Desired::new(type_, status, reason, message));
    }

    /// The decision: this status and these notes, with what the driver must do.
    pub fn decide<A>(self, action: A, requeue: Option<Duration>) -> Decision<S, A> {
        Decision {
            status: self.st,
            action,
            requeue,
            notes: self.notes,
        }
    }
}
