//! Why a condition has its status: one closed set, shared by Conditions, Events and the
//! `reason` label of metrics (so none of them can grow without bound). It lives in the core
//! because runs classify their failures with it.

/// Why a condition has its status. PascalCase, stable: users alert on them. The name of each
/// variant is its text.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum Reason {
    Connected,
    Unreachable,
    AuthFailed,
    SecretNotFound,
    SecretInvalid,
    DatabaseNotFound,
    DatabaseNotReady,
    InvalidSpec,
    Pending,
    Running,
    Retrying,
    Succeeded,
    CopyFailed,
    Equal,
    Diverged,
    VerifySkipped,
    VerifyFailed,
    Interrupted,
    Scheduled,
    Suspended,
    ConcurrencyForbidden,
    DeadlineMissed,
    Active,
    Streaming,
    Syncing,
    CaughtUp,
    Behind,
    LagAboveObjective,
    HeartbeatLate,
    NotVerified,
    Undecided,
    BucketNotFound,
    KubernetesClusterNotFound,
    MassDeletionHeld,
    SourceEmptyHeld,
    NoDeletesHeld,
    DeletesReleased,
    WriterConflict,
    ReplicationLoop,
    /// The source is an old primary a switchover fenced: a copy from it is refused.
    SourceFenced,
    Delaying,
    DelayShortened,
    /// Live: source nodes are left out because their write would be longer than the
    /// destination's jute.maxbuffer (NodesTooLarge True).
    NodeTooLarge,
    /// Live: every node fits the destination (NodesTooLarge False).
    NodesFit,
    /// Switchover: the new primary is promoted (Complete).
    Promoted,
    /// Switchover: `fence: acl` could not be applied or lifted.
    FenceRefused,
    /// Switchover: the LiveSynchronization's stream does not run (or failed).
    StreamNotRunning,
    /// Switchover: the stream did not catch up within the timeout.
    CatchUpTimeout,
    /// Switchover: another one is running for the same LiveSynchronization.
    SwitchoverRunning,
    /// Switchover: the LiveSynchronization named does not exist.
    LiveSynchronizationNotFound,
    /// Switchover: a failed planned switchover was undone.
    RolledBack,
    /// Switchover: promoted, but the reverse stream did not start.
    ReverseNotStarted,
    /// LiveSynchronization: before a full sync, the destination held nodes the sync deletes
    /// or overwrites (`compareBeforeSync`).
    DestinationDiverged,
}

impl Reason {
    /// The reason a condition's text names, if it is one of ours.
    pub fn parse(s: &str) -> Option<Reason> {
        s.parse().ok()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn every_reason_reads_back() {
        for r in Reason::VARIANTS {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Reason::parse("Nope"), None);
        assert_eq!(Reason::MassDeletionHeld.as_str(), "MassDeletionHeld");
    }
}
