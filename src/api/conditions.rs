//! Condition types and reasons: one closed set, shared by Conditions, Events and the `reason`
//! label of metrics, so none of them can grow without bound.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub mod types {
    /// The summary: is the object doing its job.
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const SOURCE_REACHABLE: &str = "SourceReachable";
    pub const DESTINATION_REACHABLE: &str = "DestinationReachable";
    /// Both tree hashes are equal.
    pub const VERIFIED: &str = "Verified";
    /// A Synchronization finished (as on a Job).
    pub const COMPLETE: &str = "Complete";
    pub const FAILED: &str = "Failed";
    /// A LiveSynchronization is applying watch events (not re-walking, not retrying).
    pub const STREAMING: &str = "Streaming";
    /// Nothing is pending and the lag is within the objective.
    pub const CAUGHT_UP: &str = "CaughtUp";
    /// The last lag-aware verification found both trees equal.
    pub const IN_SYNC: &str = "InSync";
    /// True while the deletion guard holds deletes for a person to release.
    pub const DELETION_GUARD: &str = "DeletionGuard";
    /// A delayed stream keeps its delay (False: the record bound cut it short).
    pub const DELAYED_APPLY: &str = "DelayedApply";
    /// True while a stream leaves source nodes out because the destination cannot take them
    /// (their write would be longer than its jute.maxbuffer).
    pub const NODES_TOO_LARGE: &str = "NodesTooLarge";
}

pub use resiliency_core::Reason;

/// A condition's status. The serialized [`Condition`] keeps the string k8s-openapi gives it;
/// code reads and writes this, converting at the edge ([`ConditionStatus::of`], [`as_str`]).
///
/// [`as_str`]: ConditionStatus::as_str
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    /// Not judged yet, e.g. InSync before the first verification.
    Unknown,
}

impl ConditionStatus {
    /// The status as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// The status of a stored condition; anything but "True" or "False" reads as Unknown, as
    /// the API conventions ask.
    pub fn of(c: &Condition) -> Self {
        match c.status.as_str() {
            "True" => ConditionStatus::True,
            "False" => ConditionStatus::False,
            _ => ConditionStatus::Unknown,
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// A condition to set: the status, reason and message; times and generation are filled in by
/// [`set_condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
}

impl Desired {
    /// `status` is a [`ConditionStatus`] or a bool (True or False).
    pub fn new(
        type_: &'static str,
        status: impl Into<ConditionStatus>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
        }
    }

    /// A condition not judged yet, e.g. InSync before the first verification.
    pub fn unknown(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Desired::new(type_, ConditionStatus::Unknown, reason, message)
    }
}

/// Longest condition message we write, in bytes. The API server allows 32 KiB; ours are short,
/// but a cause chain may not be, and a status is read by people.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Sets a condition in the list keyed by type. `lastTransitionTime` moves only when the status
/// flips, so users can tell how long something has been broken.
pub fn set_condition(
    list: &mut Vec<Condition>,
    want: Desired,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = want.status.as_str().to_string();
    let message = crate::text::truncate(&want.message, MAX_MESSAGE_BYTES);
    match list.iter_mut().find(|c| c.type_ == want.type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = want.reason.as_str().to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => list.push(Condition {
            type_: want.type_.to_string(),
            status,
            reason: want.reason.as_str().to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(list: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    list.iter().find(|c| c.type_ == type_)
}

/// True when the condition is present with status True.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    find(list, type_).is_some_and(|c| ConditionStatus::of(c) == ConditionStatus::True)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            Desired::new(types::READY, false, Reason::Unreachable, "a"),
            Some(1),
            t(10),
        );
        set_condition(
            &mut list,
            Desired::new(types::READY, false, Reason::AuthFailed, "b"),
            Some(2),
            t(20),
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, Time(t(10)));
        assert_eq!(list[0].reason, "AuthFailed");
        assert_eq!(list[0].observed_generation, Some(2));
        set_condition(
            &mut list,
            Desired::new(types::READY, true, Reason::Connected, "ok"),
            Some(2),
            t(30),
        );
        assert_eq!(list[0].last_transition_time, Time(t(30)));
        assert!(is_true(&list, types::READY));
    }

    #[test]
    fn statuses_read_back_as_written() {
        for s in [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ] {
            let mut list = Vec::new();
            set_condition(
                &mut list,
                Desired::new(types::READY, s, Reason::Pending, ""),
                None,
                t(1),
            );
            assert_eq!(list[0].status, s.as_str());
            assert_eq!(ConditionStatus::of(&list[0]), s);
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            Desired::new(types::READY, false, Reason::CopyFailed, "é".repeat(2000)),
            None,
            t(1),
        );
        assert!(list[0].message.len() <= MAX_MESSAGE_BYTES);
    }
}
