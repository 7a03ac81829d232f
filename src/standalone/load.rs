//! Reading the manifests: every YAML document of every file, admitted as the API server would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::StandaloneError;
use crate::api::assets::{Bucket, Database};
use crate::api::automation::{
    LiveSynchronization, Switchover, Synchronization, SynchronizationPlan,
};
use crate::resolve::{self, Found, SecretData};

/// Everything read from the files, keyed by (namespace, name).
#[derive(Default)]
pub struct Manifests {
    pub secrets: BTreeMap<(String, String), SecretData>,
    pub databases: BTreeMap<(String, String), Database>,
    pub syncs: BTreeMap<(String, String), Synchronization>,
    pub plans: BTreeMap<(String, String), SynchronizationPlan>,
    pub live: BTreeMap<(String, String), LiveSynchronization>,
    pub buckets: BTreeMap<(String, String), Bucket>,
    pub switchovers: BTreeMap<(String, String), Switchover>,
    /// Names handed out for `generateName` so far.
    generated: u32,
}

/// The namespace of a document that names none.
const DEFAULT_NAMESPACE: &str = "default";

/// Reads every document of every YAML file under `paths`. Kinds that are not ours (and not
/// Secrets) are ignored; a document of ours that does not parse is an error naming the file.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, StandaloneError> {
    let mut m = Manifests::default();
    for f in files(paths)? {
        m.load_file(&f)?;
    }
    Ok(m)
}

/// The files under `paths`, each directory's in name order.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, StandaloneError> {
    let mut files = Vec::new();
    for p in paths {
        if !p.exists() {
            return Err(StandaloneError::Manifest {
                path: p.display().to_string(),
                message: "no such file or directory".into(),
            });
        }
        yaml_files(p, &mut files).map_err(|e| StandaloneError::Manifest {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(files)
}

fn yaml_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            yaml_files(&p, out)?;
        }
    } else if path
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        || path.is_file() && out.is_empty()
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

impl Manifests {
    fn load_file(&mut self, f: &Path) -> Result<(), StandaloneError> {
        let bad = |message: String| StandaloneError::Manifest {
            path: f.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(f).map_err(|e| bad(e.to_string()))?;
        for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let doc: Value = serde::Deserialize::deserialize(de)
                .map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            self.add(&kind, doc)
                .map_err(|e| bad(format!("document {} ({kind}): {e}", i + 1)))?;
        }
        Ok(())
    }

    /// One document of `kind`; other kinds are not ours.
    fn add(&mut self, kind: &str, doc: Value) -> Result<(), serde_json::Error> {
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        match kind {
            "Secret" => {
                let s: Secret = serde_json::from_value(doc)?;
                self.secrets.insert(
                    (ns, s.metadata.name.clone().unwrap_or_default()),
                    resolve::secret_data(&s),
                );
            }
            "Database" => {
                let mut d: Database = serde_json::from_value(doc)?;
                d.metadata.namespace = Some(ns.clone());
                self.databases
                    .insert((ns, d.metadata.name.clone().unwrap_or_default()), d);
            }
            "Synchronization" => self.add_sync(ns, serde_json::from_value(doc)?),
            "Bucket" => {
                let mut b: Bucket = serde_json::from_value(doc)?;
                b.metadata.namespace = Some(ns.clone());
                self.buckets
                    .insert((ns, b.metadata.name.clone().unwrap_or_default()), b);
            }
            "LiveSynchronization" => {
                let mut l: LiveSynchronization = serde_json::from_value(doc)?;
                admit(&mut l.metadata, &ns);
                self.live
                    .insert((ns, l.metadata.name.clone().unwrap_or_default()), l);
            }
            "Switchover" => {
                let mut sw: Switchover = serde_json::from_value(doc)?;
                admit(&mut sw.metadata, &ns);
                sw.metadata.creation_timestamp = Some(Time(Timestamp::now()));
                self.switchovers
                    .insert((ns, sw.metadata.name.clone().unwrap_or_default()), sw);
            }
            "SynchronizationPlan" => {
                let mut p: SynchronizationPlan = serde_json::from_value(doc)?;
                p.metadata.namespace = Some(ns.clone());
                p.metadata.generation = Some(1);
                p.metadata.creation_timestamp = Some(Time(Timestamp::now()));
                self.plans
                    .insert((ns, p.metadata.name.clone().unwrap_or_default()), p);
            }
            _ => {}
        }
        Ok(())
    }

    /// The Database `name` of namespace `ns` and the Secret of the same name, for
    /// [`crate::resolve`].
    pub fn lookup<'a>(&'a self, ns: &'a str) -> impl Fn(&str) -> Found + 'a {
        move |name| {
            let key = (ns.to_string(), name.to_string());
            Ok((
                self.databases.get(&key).cloned(),
                self.secrets.get(&key).cloned(),
            ))
        }
    }

    fn add_sync(&mut self, ns: String, mut s: Synchronization) {
        if s.metadata.name.is_none() {
            // generateName, as the API server would do it.
            self.generated += 1;
            let base = s
                .metadata
                .generate_name
                .clone()
                .unwrap_or_else(|| "synchronization-".into());
            s.metadata.name = Some(format!("{base}{:05}", self.generated));
        }
        admit(&mut s.metadata, &ns);
        self.syncs
            .insert((ns, s.metadata.name.clone().unwrap_or_default()), s);
    }
}

/// What the API server fills in on create: namespace, a UID (unique per kind, namespace and
/// name here, which is all the registries need) and the first generation.
pub(super) fn admit(meta: &mut ObjectMeta, ns: &str) {
    meta.namespace = Some(ns.to_string());
    meta.uid = Some(format!("{ns}/{}", meta.name.clone().unwrap_or_default()));
    meta.generation = Some(1);
}
