//! The decision a [`Draft`] of a LiveSynchronization's status becomes.

use std::time::Duration;

use super::{LiveAction, LiveDecision};
use crate::api::automation::LiveSynchronizationStatus;
use crate::controllers::draft;

pub(super) type Draft = draft::Draft<LiveSynchronizationStatus>;

impl Draft {
    /// The decision: this status and these notes, with what the driver must do.
    pub(super) fn decide(self, action: LiveAction, requeue: Option<Duration>) -> LiveDecision {
        LiveDecision {
            status: self.st,
            action,
            requeue,
            notes: self.notes,
        }
    }
}
