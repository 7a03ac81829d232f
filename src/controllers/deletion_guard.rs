//! The deletion guard as the controllers show it: the status block, the `DeletionGuard`
//! condition, and the release a person makes with an annotation. Pure, shared by the
//! Synchronization and LiveSynchronization decisions.
//!
//! A release token names the object and the exact number of deletes it lets through, so it
//! is checked without any state: `<deletes>-<hash>`, the hash over the object's namespace,
//! name, UID and that number. A hold that grows gets a new token; a token is applied once
//! (the status keeps the last one used).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::automation::{DeletionGuardStatus, HeldDeletes, RELEASE_DELETIONS_ANNOTATION};
use crate::api::conditions::{types, Desired, Reason};
use crate::engine::{Held, HoldReason};

/// Hex digits of the hash a token shows: enough that a token cannot be guessed or mistaken for
/// another object's, short enough to type.
const TOKEN_HASH_DIGITS: usize = 10;

/// The token that releases `deletes` held deletes of the object `meta` describes.
pub fn token(meta: &ObjectMeta, deletes: u64) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(&deletes.to_le_bytes());
    let hex = h.finalize().to_hex();
    format!("{deletes}-{}", &hex[..TOKEN_HASH_DIGITS])
}

/// The release a person asked for with the annotation: the token and how many deletes it
/// covers. `None` without one, for a token of another object or a forged count, and for a
/// token already applied.
pub fn requested_release(
    meta: &ObjectMeta,
    status: Option<&DeletionGuardStatus>,
) -> Option<(String, u64)> {
    let value = meta
        .annotations
        .as_ref()?
        .get(RELEASE_DELETIONS_ANNOTATION)?
        .trim();
    let deletes: u64 = value.split_once('-')?.0.parse().ok()?;
    if token(meta, deletes) != value {
        return None;
    }
    // A token works once per hold: a later hold of the same count takes it again.
    let used = status.is_some_and(|s| {
        s.last_released_token.as_deref() == Some(value)
            && s.held.as_ref().is_none_or(|h| {
                s.last_released_time
                    .as_ref()
                    .is_some_and(|released| h.since.0 <= released.0)
            })
    });
    if used {
        return None;
    }
    Some((value.to_string(), deletes))
}

/// The status block for `held`, with the token and the `kubectl` command that releases it.
/// `kind` is the resource's kubectl name (`synchronization`, `livesynchronization`).
pub fn held_status(meta: &ObjectMeta, kind: &str, held: &Held, since: Timestamp) -> HeldDeletes {
    let release_token = token(meta, held.deletes);
    let release_command = format!(
        "kubectl annotate --overwrite {kind} {} -n {} {RELEASE_DELETIONS_ANNOTATION}={release_token}",
        meta.name.as_deref().unwrap_or_default(),
        meta.namespace.as_deref().unwrap_or_default(),
    );
    HeldDeletes {
        reason: reason(held).as_str().to_string(),
        deletes: held.deletes,
        destination_nodes: held.destination_nodes,
        source_nodes: held.source_nodes,
        percent: held.percent_text(),
        sample_paths: held.sample.clone(),
        since: Time(since),
        release_token,
        release_command,
    }
}

pub fn reason(held: &Held) -> Reason {
    match held.reason {
        HoldReason::MassDeletion => Reason::MassDeletionHeld,
        HoldReason::SourceEmpty => Reason::SourceEmptyHeld,
    }
}

/// What a person reads: the numbers, and how to release them.
pub fn message(held: &Held, status: &HeldDeletes) -> String {
    format!(
        "{}; nothing of them was deleted. If the source really lost these nodes on purpose, release them: {}",
        held.describe(),
        status.release_command
    )
}

/// The `DeletionGuard` condition.
pub fn condition(held: Option<(&Held, &HeldDeletes)>) -> Desired {
    match held {
        Some((h, st)) => Desired::new(types::DELETION_GUARD, true, reason(h), message(h, st)),
        None => Desired::new(
            types::DELETION_GUARD,
            false,
            Reason::NoDeletesHeld,
            "no deletes are held",
        ),
    }
}

/// The status after a decision: the hold now (kept with its `since` while it lasts), the last
/// release carried over.
pub fn status(
    meta: &ObjectMeta,
    kind: &str,
    old: Option<&DeletionGuardStatus>,
    held: Option<&Held>,
    now: Timestamp,
) -> DeletionGuardStatus {
    let since = old.and_then(|o| o.held.as_ref()).map_or(now, |h| h.since.0);
    DeletionGuardStatus {
        held: held.map(|h| held_status(meta, kind, h, since)),
        last_released_token: old.and_then(|o| o.last_released_token.clone()),
        last_released_time: old.and_then(|o| o.last_released_time.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::conditions::ConditionStatus;
    use std::collections::BTreeMap;

    fn meta(annotation: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("kafka".into()),
            namespace: Some("prod".into()),
            uid: Some("u-1".into()),
            annotations: annotation.map(|a| {
                BTreeMap::from([(RELEASE_DELETIONS_ANNOTATION.to_string(), a.to_string())])
            }),
            ..ObjectMeta::default()
        }
    }

    fn held(deletes: u64) -> Held {
        Held {
            reason: HoldReason::MassDeletion,
            deletes,
            destination_nodes: 2001,
            source_nodes: 1,
            max_deletes: 100,
            max_delete_percent: 10.0,
            sample: vec!["/app/a".into()],
        }
    }

    #[test]
    fn a_token_names_the_object_and_the_count() {
        let t = token(&meta(None), 2000);
        assert!(t.starts_with("2000-"), "{t}");
        assert_eq!(t, token(&meta(None), 2000));
        assert_ne!(t, token(&meta(None), 2001));
        let mut other = meta(None);
        other.uid = Some("u-2".into());
        assert_ne!(
            t,
            token(&other, 2000),
            "a recreated object needs a new token"
        );
    }

    #[test]
    fn only_a_genuine_unused_token_releases() {
        let t = token(&meta(None), 2000);
        assert_eq!(
            requested_release(&meta(Some(&t)), None),
            Some((t.clone(), 2000))
        );
        assert_eq!(requested_release(&meta(None), None), None);
        // A count typed by hand does not match the hash.
        let forged = format!("999999-{}", t.split_once('-').unwrap().1);
        assert_eq!(requested_release(&meta(Some(&forged)), None), None);
        assert_eq!(requested_release(&meta(Some("yes")), None), None);
        let used = DeletionGuardStatus {
            last_released_token: Some(t.clone()),
            ..DeletionGuardStatus::default()
        };
        assert_eq!(requested_release(&meta(Some(&t)), Some(&used)), None);
        // A new hold of the same count, after that release: the same token works again.
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let later = Timestamp::from_second(1_800_000_600).unwrap();
        let again = DeletionGuardStatus {
            last_released_token: Some(t.clone()),
            last_released_time: Some(Time(now)),
            held: Some(held_status(
                &meta(None),
                "synchronization",
                &held(2000),
                later,
            )),
        };
        assert_eq!(
            requested_release(&meta(Some(&t)), Some(&again)),
            Some((t.clone(), 2000))
        );
        // ...but not for the hold it already released.
        let same = DeletionGuardStatus {
            held: Some(held_status(
                &meta(None),
                "synchronization",
                &held(2000),
                now,
            )),
            ..again
        };
        assert_eq!(requested_release(&meta(Some(&t)), Some(&same)), None);
    }

    #[test]
    fn the_status_says_how_to_release() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let st = status(
            &meta(None),
            "livesynchronization",
            None,
            Some(&held(2000)),
            now,
        );
        let h = st.held.as_ref().unwrap();
        assert_eq!(h.reason, "MassDeletionHeld");
        assert_eq!(h.percent, "99.9%");
        assert_eq!(
            h.release_command,
            format!("kubectl annotate --overwrite livesynchronization kafka -n prod automation.astronetes.io/release-deletions={}", h.release_token)
        );
        // The hold keeps its start while it grows.
        let later = Timestamp::from_second(1_800_000_060).unwrap();
        let st2 = status(
            &meta(None),
            "livesynchronization",
            Some(&st),
            Some(&held(2001)),
            later,
        );
        assert_eq!(st2.held.as_ref().unwrap().since, Time(now));
        assert_ne!(st2.held.as_ref().unwrap().release_token, h.release_token);
        let c = condition(Some((&held(2000), h)));
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.reason, Reason::MassDeletionHeld);
        assert!(c.message.contains("2000 of 2001"), "{}", c.message);
        assert!(c.message.contains("kubectl annotate"), "{}", c.message);
        assert_eq!(condition(None).status, ConditionStatus::False);
    }
}
