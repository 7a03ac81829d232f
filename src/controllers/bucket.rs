//! Bucket: can snapshots be listed with its credentials. Pure decision; the glue is in
//! [`crate::operator::bucket`].

use k8s_openapi::jiff::Timestamp;

use crate::api::assets::{AssetStatus, Bucket};
use crate::api::conditions::{set_condition, types, Desired, Reason};
use crate::backup::BackupError;
use crate::resolve::ResolveError;

/// The reason a failed probe gets: refused credentials apart from an unreachable store.
pub fn probe_reason(e: &BackupError) -> Reason {
    match e {
        BackupError::Store {
            source:
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ..
        } => Reason::AuthFailed,
        BackupError::Invalid { .. } | BackupError::Path(_) => Reason::InvalidSpec,
        _ => Reason::Unreachable,
    }
}

/// The status a Bucket should have, from resolving it (Secret, spec) and probing it.
pub fn desired(
    bucket: &Bucket,
    outcome: Result<Result<String, (Reason, String)>, ResolveError>,
    now: Timestamp,
) -> AssetStatus {
    let mut st = bucket.status.clone().unwrap_or_default();
    st.observed_generation = bucket.metadata.generation;
    let want = match outcome {
        Ok(Ok(location)) => Desired::new(
            types::READY,
            true,
            Reason::Connected,
            format!("{location} answers with these credentials"),
        ),
        Ok(Err((reason, message))) => Desired::new(types::READY, false, reason, message),
        Err(e) => Desired::new(types::READY, false, e.reason(), e.to_string()),
    };
    set_condition(&mut st.conditions, want, bucket.metadata.generation, now);
    st
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::conditions::{find, ConditionStatus};

    fn bucket() -> Bucket {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "assets.astronetes.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "b", "namespace": "ns", "generation": 3},
            "spec": {"awsS3": {"name": "x", "region": "eu-west-1", "secretName": "s3"}}
        }))
        .unwrap()
    }

    #[test]
    fn ready_carries_the_reason() {
        let t = Timestamp::UNIX_EPOCH;
        let st = desired(&bucket(), Ok(Ok("s3://x".into())), t);
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::True, "Connected")
        );
        assert_eq!(st.observed_generation, Some(3));
        let st = desired(
            &bucket(),
            Ok(Err((Reason::AuthFailed, "s3://x: list: denied".into()))),
            t,
        );
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(
            (ConditionStatus::of(c), c.reason.as_str()),
            (ConditionStatus::False, "AuthFailed")
        );
        let missing = ResolveError::SecretNotFound {
            namespace: "ns".into(),
            name: "s3".into(),
            needed_by: "Bucket b needs it for its credentials".into(),
        };
        let st = desired(&bucket(), Err(missing), t);
        let c = find(&st.conditions, types::READY).unwrap();
        assert_eq!(c.reason, "SecretNotFound");
        assert!(c.message.contains("Secret s3"), "{}", c.message);
    }
}
