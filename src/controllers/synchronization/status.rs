//! The status a decision builds, with the Events it publishes: each step of
//! [`super::desired`] writes its conditions and notes here, stamped with one generation and `now`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{Action, Decision, Note};
use crate::api::automation::{Synchronization, SynchronizationStatus};
use crate::api::conditions::{set_condition, ConditionStatus, Desired, Reason};

pub(super) struct Draft {
    pub st: SynchronizationStatus,
    pub notes: Vec<Note>,
    pub now: Timestamp,
    generation: Option<i64>,
}

impl Draft {
    /// The status as stored, now observed at the object's generation.
    pub fn new(sync: &Synchronization, now: Timestamp) -> Draft {
        let generation = sync.metadata.generation;
        let mut st = sync.status.clone().unwrap_or_default();
        st.observed_generation = generation;
        Draft {
            st,
            notes: Vec::new(),
            now,
            generation,
        }
    }

    /// Sets a condition (its transition time moves only when its status flips).
    pub fn set(&mut self, want: Desired) {
        set_condition(&mut self.st.conditions, want, self.generation, self.now);
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
    pub fn decide(self, action: Action, requeue: Option<Duration>) -> Decision {
        Decision {
            status: self.st,
            action,
            requeue,
            notes: self.notes,
        }
    }
}
