//! A Switchover's settings: its LiveSynchronization's copy settings, the mode, fence, reverse
//! and timeout.

use super::copy::holder;
use super::{duration, invalid, resolve_live, Found, ResolveError};
use crate::api::automation::{FenceSpec, LiveSynchronization, Switchover, SwitchoverMode};
use crate::switchover::{FenceMode, Mode, SwitchoverOptions};

/// The timeout, naming `spec.timeout` when it is not a duration above zero.
pub fn switchover_timeout(sw: &Switchover) -> Result<std::time::Duration, ResolveError> {
    let t = duration("spec.timeout", &sw.spec.timeout)?;
    if t.is_zero() {
        return Err(invalid(
            "spec.timeout",
            "must be above 0s: a planned switchover waits this long for the stream to catch up",
        ));
    }
    Ok(t)
}

/// Engine settings of a Switchover of `ls`: the stream's copy settings (as the
/// LiveSynchronization resolves them, each error naming its field) and the Switchover's own.
pub fn resolve_switchover(
    sw: &Switchover,
    ls: &LiveSynchronization,
    lookup: impl Fn(&str) -> Found,
) -> Result<SwitchoverOptions, ResolveError> {
    let timeout = switchover_timeout(sw)?;
    let live = resolve_live(ls, lookup)?;
    Ok(SwitchoverOptions {
        sync: live.live.sync,
        mode: match sw.spec.mode {
            SwitchoverMode::Planned => Mode::Planned,
            SwitchoverMode::Unplanned => Mode::Unplanned,
        },
        fence: match sw.spec.fence {
            FenceSpec::None => FenceMode::None,
            FenceSpec::Acl => FenceMode::Acl,
        },
        reverse: sw.spec.reverse,
        timeout,
        holder: holder("Switchover", &sw.metadata),
    })
}
