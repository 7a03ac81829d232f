//! The Event every controller publishes: one per transition, never with credentials. Drivers
//! (the operator, standalone mode) turn it into a Kubernetes Event or a log line.

use crate::api::conditions::Reason;

/// An Event to publish: one per transition, never with credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
}

impl Note {
    /// A Normal Event: something users may like to know.
    pub fn normal(reason: Reason, message: impl Into<String>) -> Note {
        Note {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    /// A Warning Event: something users must hear about.
    pub fn warning(reason: Reason, message: impl Into<String>) -> Note {
        Note {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}
