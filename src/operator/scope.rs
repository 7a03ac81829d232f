//! The namespaces the operator watches: every namespace (the cluster-wide install, with
//! ClusterRoles) or a list of them (`--watch-namespaces`, the namespaced install, with Roles
//! only). Every Api a controller uses for a namespaced kind is built through [`Within`], so
//! with a list no request ever goes to a cluster-scoped path.

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use thiserror::Error;

/// Where the operator looks for the objects it reconciles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace: `--watch-namespaces` empty or absent.
    #[default]
    All,
    /// Only these namespaces, deduplicated, in the order given.
    Namespaces(Vec<String>),
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("--watch-namespaces (WATCH_NAMESPACES): item {0} is empty; give namespaces separated by single commas, or nothing for all namespaces")]
    EmptyItem(usize),
    #[error("--watch-namespaces (WATCH_NAMESPACES): {0:?} is not a namespace name (a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)")]
    NotALabel(String),
}

impl Scope {
    /// Parses a comma-separated list: empty (or only blanks) means every namespace; an empty
    /// item or a name that is no DNS-1123 label is refused, naming the flag.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.trim().is_empty() {
            return Ok(Scope::All);
        }
        let mut names: Vec<String> = Vec::new();
        for (i, item) in s.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                return Err(ScopeError::EmptyItem(i + 1));
            }
            if !is_dns1123_label(item) {
                return Err(ScopeError::NotALabel(item.to_string()));
            }
            if !names.iter().any(|n| n == item) {
                names.push(item.to_string());
            }
        }
        Ok(Scope::Namespaces(names))
    }

    /// One [`Within`] per watched namespace, or a single one over all namespaces: a controller
    /// runs one kube Controller for each, since a Controller watches one Api.
    pub fn within(&self, client: &Client) -> Vec<Within> {
        match self {
            Scope::All => vec![Within {
                client: client.clone(),
                namespace: None,
            }],
            Scope::Namespaces(names) => names
                .iter()
                .map(|n| Within {
                    client: client.clone(),
                    namespace: Some(n.clone()),
                })
                .collect(),
        }
    }

    /// The namespaces for logs: "*" for all.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "*".into(),
            Scope::Namespaces(names) => names.join(","),
        }
    }
}

/// One namespace the operator watches, or all of them: where the Apis of one kube Controller
/// (its kind and the kinds that wake it) point.
#[derive(Clone)]
pub struct Within {
    client: Client,
    namespace: Option<String>,
}

impl Within {
    /// The Api of a namespaced kind here: `/namespaces/<ns>/...`, or cluster-wide for all.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The namespace, or None for all of them.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// For messages: "in namespace <ns>" or "in all namespaces".
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "in all namespaces".into(),
        }
    }
}

/// RFC 1123 label, as Kubernetes checks a namespace name.
fn is_dns1123_label(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 63 && s.chars().all(ok_char) && alnum(s.chars().next()) && alnum(s.chars().last())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_all_and_a_list_is_trimmed_and_deduplicated() {
        assert_eq!(Scope::parse(""), Ok(Scope::All));
        assert_eq!(Scope::parse("  "), Ok(Scope::All));
        assert_eq!(
            Scope::parse("ns-a"),
            Ok(Scope::Namespaces(vec!["ns-a".into()]))
        );
        assert_eq!(
            Scope::parse("ns-a, b2 ,ns-a"),
            Ok(Scope::Namespaces(vec!["ns-a".into(), "b2".into()]))
        );
    }

    #[test]
    fn empty_items_and_bad_names_are_refused_naming_the_flag() {
        for (input, want) in [
            ("a,,b", ScopeError::EmptyItem(2)),
            ("a,", ScopeError::EmptyItem(2)),
            (",a", ScopeError::EmptyItem(1)),
            ("Ns-A", ScopeError::NotALabel("Ns-A".into())),
            ("-a", ScopeError::NotALabel("-a".into())),
            ("a-", ScopeError::NotALabel("a-".into())),
            ("a.b", ScopeError::NotALabel("a.b".into())),
            ("a_b", ScopeError::NotALabel("a_b".into())),
        ] {
            let err = Scope::parse(input).unwrap_err();
            assert_eq!(err, want, "{input}");
            assert!(err.to_string().starts_with("--watch-namespaces"), "{err}");
        }
        let long = "a".repeat(64);
        assert_eq!(Scope::parse(&long), Err(ScopeError::NotALabel(long)));
        assert!(Scope::parse(&"a".repeat(63)).is_ok());
    }
}
