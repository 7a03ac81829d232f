//! Watch events into the dirty set: a node event marks its path, a session event may end the
//! epoch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use verifier::Side;
use zookeeper_client::{EventType, SessionState};

use super::{left_out, Epoch, LiveState, Observer, Pending, CREATED_OR_DELETED, DATA_CHANGED};
use crate::engine::SyncOptions;

/// [`on_event`], telling the observer about node events and a lost source connection.
pub(super) fn on_watch_event(
    o: &SyncOptions,
    ev: zookeeper_client::WatchedEvent,
    dirty: &mut BTreeMap<String, Pending>,
    overflowed: &mut bool,
    max_pending: usize,
    disconnected: &mut bool,
    observer: &Arc<dyn Observer>,
) -> Option<Epoch> {
    let was_disconnected = *disconnected;
    let is_node = ev.event_type != EventType::Session;
    let end = on_event(
        o,
        (ev.event_type, ev.session_state, ev.path),
        dirty,
        overflowed,
        max_pending,
        disconnected,
    );
    if is_node {
        observer.watch_event();
    } else if *disconnected && !was_disconnected {
        // Changes made meanwhile are unseen: not caught up until a re-walk after reconnecting.
        let why = "source connection lost; reconnecting";
        observer.reachable(Side::Source, false, why);
        observer.caught_up(false);
        observer.state(LiveState::Retrying, why);
    }
    end
}

/// Records one watch event. Returns how the epoch ends when the session says so.
fn on_event(
    o: &SyncOptions,
    ev: (EventType, SessionState, String),
    dirty: &mut BTreeMap<String, Pending>,
    overflowed: &mut bool,
    max_pending: usize,
    disconnected: &mut bool,
) -> Option<Epoch> {
    let (event_type, session_state, path) = ev;
    match event_type {
        EventType::Session => match session_state {
            SessionState::Disconnected => {
                *disconnected = true;
                None
            }
            // Events during the gap may be lost (ZOOKEEPER-4698): a full sync closes it.
            SessionState::SyncConnected if *disconnected => Some(Epoch::Restart(
                "source reconnected: events may have been lost, running a full sync".into(),
            )),
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => None,
            other => Some(Epoch::Restart(format!("source session {other:?}"))),
        },
        // /zookeeper is the server's own (quotas, config): never copied from the source, never
        // written on the destination.
        _ if left_out(o, &path) => None,
        _ => {
            if dirty.len() >= max_pending && !dirty.contains_key(&path) {
                *overflowed = true;
            } else {
                let bit = if event_type == EventType::NodeDataChanged {
                    DATA_CHANGED
                } else {
                    CREATED_OR_DELETED
                };
                dirty
                    .entry(path)
                    .or_insert_with(|| Pending {
                        since: Instant::now(),
                        kinds: 0,
                    })
                    .kinds |= bit;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_mark_paths_and_a_reconnect_ends_the_epoch() {
        let o = SyncOptions::new(
            verifier::ConnectOptions::new("a:1"),
            "/",
            verifier::ConnectOptions::new("b:1"),
            "/",
        );
        let mut dirty = BTreeMap::new();
        let (mut over, mut disc) = (false, false);
        let node = |p: &str| {
            (
                EventType::NodeDataChanged,
                SessionState::SyncConnected,
                p.to_string(),
            )
        };
        assert!(on_event(&o, node("/a"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(on_event(&o, node("/a"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(on_event(&o, node("/b"), &mut dirty, &mut over, 2, &mut disc).is_none());
        // The server's own tree is never streamed.
        assert!(on_event(
            &o,
            node("/zookeeper/quota/x"),
            &mut dirty,
            &mut over,
            2,
            &mut disc
        )
        .is_none());
        assert_eq!(dirty.len(), 2);
        assert!(!over);
        // Over the bound: a full sync instead of an ever-growing set.
        assert!(on_event(&o, node("/c"), &mut dirty, &mut over, 2, &mut disc).is_none());
        assert!(over);
        let session = |s| (EventType::Session, s, String::new());
        assert!(on_event(
            &o,
            session(SessionState::Disconnected),
            &mut dirty,
            &mut over,
            2,
            &mut disc
        )
        .is_none());
        assert!(matches!(
            on_event(
                &o,
                session(SessionState::SyncConnected),
                &mut dirty,
                &mut over,
                2,
                &mut disc
            ),
            Some(Epoch::Restart(_))
        ));
        assert!(matches!(
            on_event(
                &o,
                session(SessionState::Expired),
                &mut dirty,
                &mut over,
                2,
                &mut disc
            ),
            Some(Epoch::Restart(_))
        ));
    }
}
