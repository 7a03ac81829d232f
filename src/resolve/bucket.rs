//! Where a Bucket keeps snapshots, with the credentials of its Secret.

use super::{invalid, ResolveError, SecretData};
use crate::api::assets::Bucket;
use crate::backup::{store, Backend, Location};

/// Looks a Bucket up by name, with the Secret its spec names.
pub type BucketLookup<'a> = &'a dyn Fn(&str) -> (Option<Bucket>, Option<SecretData>);

/// The Secret a Bucket names, if any (local directories need none).
pub fn bucket_secret_name(b: &Bucket) -> Option<&str> {
    match (&b.spec.aws_s3, &b.spec.gcp_cloud_storage) {
        (Some(s3), _) => Some(s3.secret_name.as_str()),
        (None, Some(g)) => Some(g.secret_name.as_str()),
        (None, None) => None,
    }
}

fn secret_value(data: &SecretData, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| data.get(*k))
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Where a Bucket keeps snapshots under `prefix`, with the credentials of its Secret.
pub fn bucket_location(
    bucket: &Bucket,
    secret: Option<&SecretData>,
    prefix: &str,
) -> Result<Location, ResolveError> {
    let name = bucket.metadata.name.clone().unwrap_or_default();
    let namespace = bucket.metadata.namespace.clone().unwrap_or_default();
    let need_secret = |secret_name: &str| {
        secret.ok_or_else(|| ResolveError::SecretNotFound {
            namespace: namespace.clone(),
            name: secret_name.to_string(),
            needed_by: format!("Bucket {name} needs it for its credentials"),
        })
    };
    let backend = match (
        &bucket.spec.aws_s3,
        &bucket.spec.gcp_cloud_storage,
        &bucket.spec.local,
    ) {
        (Some(s3), _, _) => {
            let data = need_secret(&s3.secret_name)?;
            let key = |keys: &[&str]| {
                secret_value(data, keys).ok_or_else(|| ResolveError::SecretInvalid {
                    name: s3.secret_name.clone(),
                    message: format!("has no {} key", keys[0]),
                })
            };
            Backend::S3(store::S3 {
                bucket: s3.name.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                access_key_id: key(&["AWS_ACCESS_KEY_ID", "accessKeyId"])?,
                secret_access_key: key(&["AWS_SECRET_ACCESS_KEY", "secretAccessKey"])?,
                session_token: secret_value(data, &["AWS_SESSION_TOKEN", "sessionToken"]),
            })
        }
        (None, Some(g), _) => {
            let data = need_secret(&g.secret_name)?;
            let key = secret_value(data, &["credentials.json", "serviceAccountKey", "key.json"])
                .ok_or_else(|| ResolveError::SecretInvalid {
                    name: g.secret_name.clone(),
                    message: "has no credentials.json key (the service account key)".into(),
                })?;
            Backend::Gcs(store::Gcs {
                bucket: g.name.clone(),
                service_account_key: key,
                endpoint: g.endpoint.clone(),
            })
        }
        (None, None, Some(l)) => {
            if !l.path.starts_with('/') {
                return Err(invalid("spec.local.path", "must be an absolute path"));
            }
            Backend::Local(l.path.clone().into())
        }
        (None, None, None) => {
            return Err(ResolveError::InvalidSpec {
                field: format!("Bucket {name}: spec"),
                message: "names no storage: set awsS3, gcpCloudStorage or local".into(),
            })
        }
    };
    Ok(Location::new(backend, prefix))
}

/// The Bucket `name` in `namespace`, at `prefix`.
pub(super) fn bucket(
    namespace: &str,
    name: &str,
    prefix: &str,
    lookup: BucketLookup<'_>,
) -> Result<Location, ResolveError> {
    let (b, secret) = lookup(name);
    let b = b.ok_or_else(|| ResolveError::BucketNotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })?;
    bucket_location(&b, secret.as_ref(), prefix)
}
