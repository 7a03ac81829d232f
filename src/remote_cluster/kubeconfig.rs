//! A KubernetesCluster's kubeconfig: found in its Secret, parsed (its text never quoted), and
//! checked so it can neither run commands, nor read the operator's files, nor (unless the
//! operator allows it) send its credentials where TLS does not protect them.

use kube::config::{Kubeconfig, KubeconfigError};

use crate::api::assets::KubernetesCluster;
use crate::resolve::{ResolveError, SecretData};

/// Secret keys a kubeconfig is looked for under, in order (`value` is Cluster API's).
pub const KUBECONFIG_KEYS: [&str; 4] = ["kubeconfig", "value", "config", "kubeconfig.yaml"];

/// The kubeconfig of a KubernetesCluster, from the Secret its spec names (`secret`, if found).
pub fn kubeconfig_for(
    cluster: &KubernetesCluster,
    secret: Option<&SecretData>,
    policy: KubeconfigPolicy,
) -> Result<Kubeconfig, ResolveError> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let secret_name = &cluster.spec.secret_name;
    if secret_name.is_empty() {
        return Err(ResolveError::InvalidSpec {
            field: "spec.secretName".into(),
            message: "must name the Secret holding the kubeconfig".into(),
        });
    }
    let data = secret.ok_or_else(|| ResolveError::SecretNotFound {
        namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
        name: secret_name.clone(),
        needed_by: format!("KubernetesCluster {name} needs it for its kubeconfig"),
    })?;
    kubeconfig_from_secret(secret_name, data, policy)
}

/// Reads and checks the kubeconfig in a KubernetesCluster's Secret.
///
/// Refused, because the operator would act on them with its own privileges: `exec` and
/// `auth-provider` (they run programs in the operator's container) and every file reference
/// (`certificate-authority`, `client-certificate`, `client-key`, `tokenFile`), which would read
/// the operator's files, its own ServiceAccount token among them, and send them to whatever
/// server the kubeconfig names. Embedded data (`*-data`, `token`) is what a Secret is for.
/// Refused too unless `policy` allows them: what turns TLS down (see [`check_cluster`]).
pub fn kubeconfig_from_secret(
    secret_name: &str,
    data: &SecretData,
    policy: KubeconfigPolicy,
) -> Result<Kubeconfig, ResolveError> {
    let invalid = |message: String| ResolveError::SecretInvalid {
        name: secret_name.to_string(),
        message,
    };
    let (key, raw) = KUBECONFIG_KEYS
        .iter()
        .find_map(|k| data.get(*k).map(|v| (k.to_string(), v)))
        .or_else(|| match data.iter().collect::<Vec<_>>().as_slice() {
            [(k, v)] => Some((k.to_string(), *v)),
            _ => None,
        })
        .ok_or_else(|| {
            invalid(format!(
                "has no kubeconfig: put it under the key kubeconfig (found keys: {})",
                data.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
    let text =
        std::str::from_utf8(raw).map_err(|_| invalid(format!("key {key} is not UTF-8 text")))?;
    let kc = Kubeconfig::from_yaml(text).map_err(|e| {
        invalid(format!(
            "key {key} is not a kubeconfig: {}",
            parse_error(&e)
        ))
    })?;
    check(&kc, policy).map_err(|m| invalid(format!("key {key}: {m}")))?;
    Ok(kc)
}

/// Where a kubeconfig that does not parse is wrong, and what is wrong there, without a byte
/// of it. Displayed, kube's error quotes the lines around the error (serde-saphyr renders a
/// snippet by default) and serde's the offending value; next to a syntax error in a kubeconfig
/// there is often a token or a key, and this message goes to status, Events and logs.
fn parse_error(e: &KubeconfigError) -> String {
    match e {
        KubeconfigError::Parse(e) => {
            let e = e.without_snippet();
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            format!("{at}{}", yaml_problem(e))
        }
        // Merging the documents of a multi-document kubeconfig: fixed texts.
        KubeconfigError::KindMismatch | KubeconfigError::ApiVersionMismatch => e.to_string(),
        _ => "cannot be read as a kubeconfig".into(),
    }
}

/// What is wrong, from a closed set of texts: only what the code names (the type expected, a
/// field of kube's kubeconfig), never what the input holds.
fn yaml_problem(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    match e.without_snippet() {
        E::AliasError { error, .. } => yaml_problem(error),
        E::Eof { .. } => "the YAML ends too early".into(),
        E::InvalidUtf8Input => "not UTF-8".into(),
        E::SerdeInvalidType { expected, .. } | E::SerdeInvalidValue { expected, .. } => {
            format!("a value of the wrong kind (expected {expected})")
        }
        E::SerdeInvalidLength { expected, .. } => {
            format!("a list of the wrong length (expected {expected})")
        }
        E::SerdeMissingField { field, .. } => format!("field {field} is missing"),
        E::SerdeUnknownField { .. } => "a field a kubeconfig does not have".into(),
        E::DuplicateMappingKey { .. } => "a key appears twice in one mapping".into(),
        E::Unexpected { expected, .. } => format!("expected {expected}"),
        E::UnknownAnchor { .. } => "an alias names no anchor".into(),
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            "too large or too deeply nested to read".into()
        }
        // The parser's own messages may quote characters of the input.
        _ => "a YAML syntax error".into(),
    }
}

/// The context a kubeconfig uses: its current-context, or its only one.
fn context_name(kc: &Kubeconfig) -> Result<String, String> {
    if let Some(c) = kc.current_context.as_ref().filter(|c| !c.is_empty()) {
        return if kc.contexts.iter().any(|n| &n.name == c) {
            Ok(c.clone())
        } else {
            Err(format!("current-context {c:?} names no context"))
        };
    }
    match kc.contexts.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err("has no contexts".into()),
        _ => Err("has several contexts and no current-context".into()),
    }
}

/// The flag (and its environment variable) that lets a kubeconfig turn TLS down.
pub const ALLOW_INSECURE_FLAG: &str =
    "--allow-insecure-kubeconfigs (RESILIENCY_ALLOW_INSECURE_KUBECONFIGS=true)";

/// What a kubeconfig may ask of the operator beyond embedded credentials over verified TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigPolicy {
    /// Accept `insecure-skip-tls-verify: true`, a plain `http://` server and `tls-server-name`
    /// (see [`ALLOW_INSECURE_FLAG`]); a test cluster may need them.
    pub allow_insecure: bool,
}

/// The checks, each refusal naming the field as a path into the kubeconfig
/// (`clusters[0].cluster.server`), as the KubernetesCluster's condition shows it.
fn check(kc: &Kubeconfig, policy: KubeconfigPolicy) -> Result<(), String> {
    let name = context_name(kc)?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| format!("context {name:?} is empty"))?;
    let (i, cluster) = kc
        .clusters
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == ctx.cluster)
        .and_then(|(i, c)| c.cluster.as_ref().map(|c| (i, c)))
        .ok_or_else(|| {
            format!(
                "context {name:?} names cluster {:?}, which is not there",
                ctx.cluster
            )
        })?;
    check_cluster(cluster, &format!("clusters[{i}].cluster"), policy)?;
    let Some(user) = ctx.user.as_ref() else {
        return Ok(());
    };
    let (i, auth) = kc
        .auth_infos
        .iter()
        .enumerate()
        .find(|(_, a)| &a.name == user)
        .and_then(|(i, a)| a.auth_info.as_ref().map(|a| (i, a)))
        .ok_or_else(|| format!("context {name:?} names user {user:?}, which is not there"))?;
    check_user(auth, &format!("users[{i}].user"))
}

/// The cluster's server is reached over TLS the operator verifies: https, and neither
/// `insecure-skip-tls-verify` nor `tls-server-name` unless `policy` allows them. Otherwise the
/// operator sends the kubeconfig's credentials to whoever answers, or to a server whose
/// certificate names another host.
fn check_cluster(
    cluster: &kube::config::Cluster,
    at: &str,
    policy: KubeconfigPolicy,
) -> Result<(), String> {
    let unless_allowed = |field: &str, what: &str, fix: &str| {
        if policy.allow_insecure {
            Ok(())
        } else {
            Err(format!(
                "{at}.{field} {what}: {fix} (or start the operator with {ALLOW_INSECURE_FLAG})"
            ))
        }
    };
    let server = cluster.server.as_deref().unwrap_or_default();
    let scheme = server
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https") => {}
        Some("http") => unless_allowed(
            "server",
            &format!("is {server:?}, plain HTTP"),
            "the credentials would cross the network unencrypted to a server nobody verified; \
             use https://",
        )?,
        _ => {
            return Err(format!(
                "{at}.server must be an https:// URL, got {server:?}"
            ))
        }
    }
    if cluster.certificate_authority.is_some() {
        return Err(format!(
            "{at}.certificate-authority is not allowed: it names a file; embed it as \
             certificate-authority-data"
        ));
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        unless_allowed(
            "insecure-skip-tls-verify",
            "is true",
            "the operator would send the credentials to whatever server answers, unverified; \
             remove it and embed the server's CA as certificate-authority-data",
        )?;
    }
    if cluster.tls_server_name.is_some() {
        unless_allowed(
            "tls-server-name",
            "is set",
            "the operator would accept a certificate issued for another name than the \
             server's; remove it and name the server as its certificate does",
        )?;
    }
    Ok(())
}

/// Credentials are embedded: nothing the operator would run or read with its own privileges.
fn check_user(auth: &kube::config::AuthInfo, at: &str) -> Result<(), String> {
    let refuse = |field: &str, fix: &str| Err(format!("{at}.{field} is not allowed: {fix}"));
    if auth.exec.is_some() {
        return refuse(
            "exec",
            "it would run a program in the operator; use a token or client certificate",
        );
    }
    if auth.auth_provider.is_some() {
        return refuse("auth-provider", "use a token or client certificate");
    }
    if auth.token_file.is_some() {
        return refuse("tokenFile", "it names a file; embed the token as token");
    }
    if auth.client_certificate.is_some() || auth.client_key.is_some() {
        return refuse(
            "client-certificate/client-key",
            "they name files; embed them as client-certificate-data and client-key-data",
        );
    }
    Ok(())
}

/// The namespace a kubeconfig's context sets, if any.
pub fn namespace(kc: &Kubeconfig) -> Option<String> {
    let name = context_name(kc).ok()?;
    kc.contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .namespace
        .clone()
}

/// The server URL a (checked) kubeconfig talks to.
pub fn server(kc: &Kubeconfig) -> Option<String> {
    let name = context_name(kc).ok()?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?;
    kc.clusters
        .iter()
        .find(|c| c.name == ctx.cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::conditions::Reason;

    const STRICT: KubeconfigPolicy = KubeconfigPolicy {
        allow_insecure: false,
    };

    fn kubeconfig(user: &str, cluster_extra: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: east
  cluster:
    server: https://east.example:6443
{cluster_extra}
contexts:
- name: east
  context: {{cluster: east, user: backup}}
current-context: east
users:
- name: backup
  user:
{user}
"
        )
    }

    fn data(k: &str, v: &str) -> SecretData {
        [(k.to_string(), v.as_bytes().to_vec())]
            .into_iter()
            .collect()
    }

    #[test]
    fn embedded_credentials_pass_and_name_the_server() {
        let text = kubeconfig("    token: abc", "    certificate-authority-data: Zm9v");
        let kc = kubeconfig_from_secret("east", &data("kubeconfig", &text), STRICT).unwrap();
        assert_eq!(server(&kc).as_deref(), Some("https://east.example:6443"));
        // Cluster API's key, and any single key.
        assert!(kubeconfig_from_secret("east", &data("value", &text), STRICT).is_ok());
        assert!(kubeconfig_from_secret("east", &data("east.yaml", &text), STRICT).is_ok());
    }

    #[test]
    fn programs_and_files_are_refused_by_field() {
        let cases = [
            (
                "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}",
                "",
                "exec",
            ),
            ("    auth-provider: {name: gcp}", "", "auth-provider"),
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
                "",
                "tokenFile",
            ),
            (
                "    client-certificate: /etc/cert.pem\n    client-key: /etc/key.pem",
                "",
                "client-certificate",
            ),
            (
                "    token: abc",
                "    certificate-authority: /etc/ca.pem",
                "certificate-authority",
            ),
        ];
        for (user, cluster, field) in cases {
            let e = kubeconfig_from_secret(
                "east",
                &data("kubeconfig", &kubeconfig(user, cluster)),
                STRICT,
            )
            .unwrap_err();
            let m = e.to_string();
            assert!(m.starts_with("Secret east: key kubeconfig: "), "{m}");
            assert!(m.contains(field), "{field}: {m}");
            assert_eq!(e.reason(), Reason::SecretInvalid);
        }
    }

    #[test]
    fn what_turns_tls_down_is_refused_by_field_unless_the_operator_allows_it() {
        let cases = [
            (
                "    certificate-authority-data: Zm9v\n    insecure-skip-tls-verify: true",
                "https://east.example:6443",
                "clusters[0].cluster.insecure-skip-tls-verify is true: ",
            ),
            (
                "    certificate-authority-data: Zm9v",
                "http://east.example:6443",
                "clusters[0].cluster.server is \"http://east.example:6443\", plain HTTP: ",
            ),
            (
                "    certificate-authority-data: Zm9v\n    tls-server-name: kubernetes.default",
                "https://10.0.0.1:6443",
                "clusters[0].cluster.tls-server-name is set: ",
            ),
        ];
        let allow = KubeconfigPolicy {
            allow_insecure: true,
        };
        for (cluster, url, refusal) in cases {
            // The second cluster is the one the context uses: the path says which.
            let text = kubeconfig("    token: abc", cluster)
                .replace("https://east.example:6443", url)
                .replace(
                    "clusters:\n",
                    "clusters:\n- name: other\n  cluster: {server: https://other:6443}\n",
                );
            let secret = data("kubeconfig", &text);
            let e = kubeconfig_from_secret("east", &secret, STRICT).unwrap_err();
            let m = e.to_string();
            let refusal = refusal.replace("clusters[0]", "clusters[1]");
            assert!(
                m.starts_with(&format!("Secret east: key kubeconfig: {refusal}")),
                "{m}"
            );
            assert!(
                m.ends_with(&format!(
                    "(or start the operator with {ALLOW_INSECURE_FLAG})"
                )),
                "{m}"
            );
            assert_eq!(e.reason(), Reason::SecretInvalid);
            let kc = kubeconfig_from_secret("east", &secret, allow).unwrap();
            assert_eq!(server(&kc).as_deref(), Some(url));
        }
        // insecure-skip-tls-verify: false asks for nothing.
        let text = kubeconfig("    token: abc", "    insecure-skip-tls-verify: false");
        assert!(kubeconfig_from_secret("east", &data("kubeconfig", &text), STRICT).is_ok());
        // Files and programs stay refused whatever the policy.
        let text = kubeconfig("    tokenFile: /var/run/token", "");
        let m = kubeconfig_from_secret("east", &data("kubeconfig", &text), allow)
            .unwrap_err()
            .to_string();
        assert!(m.contains("users[0].user.tokenFile is not allowed"), "{m}");
    }

    #[test]
    fn a_kubeconfig_that_does_not_parse_is_described_without_its_text() {
        // A syntax error next to a token, a token where a list belongs, a duplicated key with
        // a secret for a name, bad indentation under a key: each message says where and what
        // is wrong, never the text around it.
        let cases = [
            (
                "apiVersion: v1\nkind: Config\nusers:\n- name: b\n  user:\n    token: SECRET-TOKEN-xyz\n    x: [SECRET-TOKEN-xyz\n",
                "line 7",
            ),
            (
                "apiVersion: v1\nusers:\n- name: b\n  user:\n    token: \"SECRET-TOKEN-xyz\n",
                "line ",
            ),
            ("apiVersion: v1\nusers: SECRET-TOKEN-xyz\n", "line 2"),
            (
                "apiVersion: v1\nclusters:\n- name: e\n  cluster:\n    server: https://e\n     SECRET-TOKEN-xyz: 1\n",
                "line ",
            ),
            ("SECRET-TOKEN-xyz: 1\nSECRET-TOKEN-xyz: 2\n", "line 2"),
            ("users:\n- name: b\n  user:\n    token: SECRET-TOKEN-xyz\n\t- x\n", "line "),
        ];
        for (text, at) in cases {
            let e = kubeconfig_from_secret("east", &data("kubeconfig", text), STRICT).unwrap_err();
            let m = e.to_string();
            assert!(!m.contains("SECRET-TOKEN") && !m.contains("xyz"), "{m}");
            assert!(
                m.starts_with("Secret east: key kubeconfig is not a kubeconfig: "),
                "{m}"
            );
            assert!(m.contains(at) && m.contains("column"), "{at}: {m}");
            assert_eq!(e.reason(), Reason::SecretInvalid);
        }
    }

    #[test]
    fn a_missing_or_broken_kubeconfig_says_what_is_wrong() {
        let two: SecretData = [("a".into(), b"x".to_vec()), ("b".into(), b"y".to_vec())]
            .into_iter()
            .collect();
        let m = kubeconfig_from_secret("east", &two, STRICT)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("put it under the key kubeconfig") && m.contains("a, b"),
            "{m}"
        );
        let m = kubeconfig_from_secret("east", &data("kubeconfig", "clusters: 3"), STRICT)
            .unwrap_err()
            .to_string();
        assert!(m.contains("is not a kubeconfig"), "{m}");
        let no_ctx = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n";
        let m = kubeconfig_from_secret("east", &data("kubeconfig", no_ctx), STRICT)
            .unwrap_err()
            .to_string();
        assert!(m.contains("has no contexts"), "{m}");
        let bad_server =
            kubeconfig("    token: abc", "").replace("https://east.example:6443", "east:6443");
        let m = kubeconfig_from_secret("east", &data("kubeconfig", &bad_server), STRICT)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("clusters[0].cluster.server must be an https:// URL, got \"east:6443\""),
            "{m}"
        );
    }
}
