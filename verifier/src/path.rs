//! ZooKeeper path validation and root-relative path arithmetic.

use thiserror::Error;

/// Why a path is not acceptable as a root path.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PathError {
    #[error("{field}: {path:?} must be an absolute path starting with '/'")]
    NotAbsolute { field: &'static str, path: String },
    #[error("{field}: {path:?} must not end with '/'")]
    TrailingSlash { field: &'static str, path: String },
    #[error("{field}: {path:?} has an empty path component ('//')")]
    EmptyComponent { field: &'static str, path: String },
    #[error("{field}: {path:?} has a relative component ('.' or '..'), which ZooKeeper rejects")]
    RelativeComponent { field: &'static str, path: String },
    #[error("{field}: {path:?} contains character {ch:?}, which ZooKeeper rejects in paths")]
    InvalidCharacter {
        field: &'static str,
        path: String,
        ch: char,
    },
    #[error("{field}: {path:?} is ZooKeeper's own /zookeeper tree, which is never replicated")]
    Reserved { field: &'static str, path: String },
}

/// Checks a root path the way ZooKeeper's `PathUtils.validatePath` does, and refuses
/// `/zookeeper` (quotas and config: server-owned, never copied). `field` names the flag or
/// manifest field in the error.
pub fn validate_root(field: &'static str, path: &str) -> Result<(), PathError> {
    let err_path = || path.to_string();
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute {
            field,
            path: err_path(),
        });
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash {
            field,
            path: err_path(),
        });
    }
    for component in path[1..].split('/') {
        if component.is_empty() {
            return Err(PathError::EmptyComponent {
                field,
                path: err_path(),
            });
        }
        if component == "." || component == ".." {
            return Err(PathError::RelativeComponent {
                field,
                path: err_path(),
            });
        }
    }
    if let Some(ch) = path.chars().find(|c| invalid_char(*c)) {
        return Err(PathError::InvalidCharacter {
            field,
            path: err_path(),
            ch,
        });
    }
    if is_reserved(path) {
        return Err(PathError::Reserved {
            field,
            path: err_path(),
        });
    }
    Ok(())
}

// ZooKeeper checks UTF-16 code units, so characters beyond U+FFFF (emoji), which Java
// stores as surrogates, are refused too.
fn invalid_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..)
}

/// True for `/zookeeper` and everything below it.
pub fn is_reserved(path: &str) -> bool {
    let under =
        |top: &str| path == top || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'));
    // The server's own tree, and the copiers' writer claims (resiliency-operator's engine).
    under("/zookeeper") || under(RESERVED_CLAIMS)
}

/// Where copiers register their claims on an ensemble: never copied, compared or backed up.
pub const RESERVED_CLAIMS: &str = "/.resiliency-operator";

/// Absolute path of `rel` (empty for the root itself, else starting with '/') under `root`.
pub fn join(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_string()
    } else if root == "/" {
        rel.to_string()
    } else {
        let mut s = String::with_capacity(root.len() + rel.len());
        s.push_str(root);
        s.push_str(rel);
        s
    }
}

/// Relative path of a child called `name` of the node at relative path `parent`.
pub fn child(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    s.push('/');
    s.push_str(name);
    s
}

/// Parent of an absolute path (`None` for "/").
pub fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

/// Whether `path` is `root` or under it.
pub fn is_within(root: &str, path: &str) -> bool {
    root == "/" && path.starts_with('/')
        || path == root
        || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// Whether one root contains the other (the same server must not copy into itself).
pub fn overlaps(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        outer == "/" || inner == outer || inner.starts_with(&format!("{outer}/"))
    };
    within(a, b) || within(b, a)
}

/// Ordering of relative paths that visits a parent before its children and siblings by name:
/// compare bytes with '/' ranked below every other byte.
pub fn tree_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0u8 } else { c };
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b.iter()) {
        match key(*x).cmp(&key(*y)) {
            std::cmp::Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_roots() {
        for p in ["/", "/app", "/kafka/brokers", "/ünïcödé/名前"] {
            assert_eq!(validate_root("rootPath", p), Ok(()), "{p}");
        }
    }

    #[test]
    fn rejects_bad_roots_naming_the_field() {
        let cases = [
            ("app", "must be an absolute path"),
            ("/app/", "must not end with '/'"),
            ("/a//b", "empty path component"),
            ("/a/../b", "relative component"),
            ("/a\u{1}b", "contains character"),
            ("/crab-🦀", "contains character"),
            ("/zookeeper", "never replicated"),
            ("/zookeeper/quota", "never replicated"),
        ];
        for (p, msg) in cases {
            let err = validate_root("--root-path", p).expect_err(p).to_string();
            assert!(err.starts_with("--root-path: "), "{err}");
            assert!(err.contains(msg), "{p}: {err}");
        }
        assert_eq!(validate_root("x", "/zookeeperish"), Ok(()));
    }

    #[test]
    fn joins_and_splits() {
        assert_eq!(join("/", ""), "/");
        assert_eq!(join("/", "/a"), "/a");
        assert_eq!(join("/app", ""), "/app");
        assert_eq!(join("/app", "/a/b"), "/app/a/b");
        assert_eq!(child("", "a"), "/a");
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
    }

    #[test]
    fn overlap() {
        assert!(overlaps("/a", "/a/b"));
        assert!(overlaps("/a/b", "/a"));
        assert!(overlaps("/", "/x"));
        assert!(!overlaps("/a", "/ab"));
        assert!(!overlaps("/a", "/b"));
    }

    #[test]
    fn tree_order_puts_children_right_after_parents() {
        let mut v = vec!["/a-c", "/a/b", "", "/a", "/b", "/a/b/c"];
        v.sort_by(|a, b| tree_order(a, b));
        assert_eq!(v, vec!["", "/a", "/a/b", "/a/b/c", "/a-c", "/b"]);
    }
}
