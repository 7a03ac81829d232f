//! The engine and the verifier know nothing of Kubernetes.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn engine_and_verifier_do_not_import_kubernetes_or_controllers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/engine"), &mut files);
    rust_files(&root.join("verifier/src"), &mut files);
    assert!(files.len() > 5, "found only {files:?}");
    let forbidden = [
        "kube::",
        "kube_runtime",
        "k8s_openapi",
        "crate::api",
        "crate::controllers",
        "use kube",
    ];
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable file");
        for word in forbidden {
            assert!(!text.contains(word), "{} mentions {word}", f.display());
        }
    }
    let manifest =
        std::fs::read_to_string(root.join("verifier/Cargo.toml")).expect("verifier manifest");
    assert!(!manifest.contains("kube") && !manifest.contains("k8s-openapi"));
}
