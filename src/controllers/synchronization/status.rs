//! The decision a [`Draft`] of a Synchronization's status becomes.

use std::time::Duration;

use super::{Action, Decision};
use crate::api::automation::SynchronizationStatus;
use crate::controllers::draft;

pub(super) type Draft = draft::Draft<SynchronizationStatus>;

impl Draft {
    /// The decision: this status and these notes, with what the driver must do.
    pub(super) fn decide(self, action: Action, requeue: Option<Duration>) -> Decision {
        Decision {
            status: self.st,
            action,
            requeue,
            notes: self.notes,
        }
    }
}
