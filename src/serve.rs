//! What every long-running mode shares, whatever it drives: `/metrics` and the probes on one
//! port ([`http`]), and the signal that asks it to stop ([`shutdown`]). Used by the operator,
//! the CLI's continuous sync and standalone mode.

pub mod http;
pub mod shutdown;
