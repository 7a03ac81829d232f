//! Which end of a copy something concerns: in errors, metric labels and status.

/// The source or the destination of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    /// Lowercase, as in messages ("source ensemble ...") and the `side` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom a session is opened for: one side of a copy, or a Database being checked (which is no
/// side until a copy names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Side(Side),
    Database,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Side(s) => s.as_str(),
            Role::Database => "database",
        }
    }

    /// The side, when the session is for one.
    pub const fn side(self) -> Option<Side> {
        match self {
            Role::Side(s) => Some(s),
            Role::Database => None,
        }
    }
}

impl From<Side> for Role {
    fn from(s: Side) -> Role {
        Role::Side(s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
