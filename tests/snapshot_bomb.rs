//! Forged snapshots that decompress to far more than they weigh (zstd bombs): refused with an
//! error naming what is wrong, and with bounded memory. A test binary of its own, with one
//! test, because peak memory (VmHWM) is per process: its growth is read around each refusal.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use resiliency_operator::backup::{
    self, format, Backend, BackupError, Limits, Location, Manifest, RestoreOptions, Selector,
};
use verifier::{ConnectOptions, Node};

const MIB: u64 = 1 << 20;
/// What any refusal below may cost, at most: far below what the bombs decompress to.
const MAX_GROWTH: u64 = 64 * MIB;

/// A line of /proc/self/status in bytes (`VmHWM`: peak resident memory; `VmRSS`: now).
fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Resets the peak to the current resident size (Linux's clear_refs "5"), so each case is
/// measured on its own; where that is not allowed, the peak so far is the baseline.
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status("VmHWM")
}

/// The raw record stream through zstd straight into `<dir>/<name>/nodes.zst`, never whole
/// in memory, with a manifest that matches the object (size and blake3) and says `nodes`,
/// `data_bytes` and `largest`, as a forger who controls the bucket would write it.
struct Forge {
    enc: zstd::stream::write::Encoder<'static, std::fs::File>,
    path: std::path::PathBuf,
    manifest: std::path::PathBuf,
    name: String,
}

impl Forge {
    fn new(dir: &std::path::Path, name: &str) -> Forge {
        let snap = dir.join(name);
        std::fs::create_dir_all(&snap).unwrap();
        let path = snap.join(format::NODES);
        let mut enc =
            zstd::stream::write::Encoder::new(std::fs::File::create(&path).unwrap(), 3).unwrap();
        enc.write_all(format::MAGIC).unwrap();
        Forge {
            enc,
            path,
            manifest: snap.join(format::MANIFEST),
            name: name.into(),
        }
    }

    /// A record of `node` at `rel` whose data is `len` zero bytes, fed in 1 MiB pieces.
    fn zeros(&mut self, rel: &str, len: u64) {
        let mut head = Vec::new();
        format::encode_record(&mut head, rel, &Node::persistent(Vec::new()));
        // The record with empty data, split where the data goes: tag, path, kind, TTL, then
        // the data length and the data, then the rest.
        let at = 1 + 4 + rel.len() + 1 + 8;
        self.enc.write_all(&head[..at]).unwrap();
        self.enc.write_all(&(len as u32).to_le_bytes()).unwrap();
        let chunk = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB);
            self.enc.write_all(&chunk[..n as usize]).unwrap();
            left -= n;
        }
        self.enc.write_all(&head[at + 4..]).unwrap();
    }

    fn record(&mut self, rel: &str, node: &Node) {
        let mut raw = Vec::new();
        format::encode_record(&mut raw, rel, node);
        self.enc.write_all(&raw).unwrap();
    }

    /// Closes the stream (a trailer the refusals never reach) and writes the manifest.
    fn finish(self, nodes: u64, data_bytes: u64, largest: u64) -> Manifest {
        let mut enc = self.enc;
        let mut trailer = Vec::new();
        format::encode_trailer(&mut trailer, nodes, &[0; 32]);
        enc.write_all(&trailer).unwrap();
        enc.finish().unwrap();
        let object = std::fs::read(&self.path).unwrap();
        let m = Manifest {
            name: self.name.clone(),
            created_at: "2026-01-01T00:00:00Z".into(),
            root_path: "/bomb".into(),
            nodes,
            data_bytes,
            max_data_bytes: largest,
            root_hash: "0".repeat(64),
            object_bytes: object.len() as u64,
            object_blake3: blake3::hash(&object).to_hex().to_string(),
            ..Manifest::empty()
        };
        std::fs::write(&self.manifest, serde_json::to_vec(&m).unwrap()).unwrap();
        m
    }
}

/// Runs `f`, returning its result and how much the peak resident memory grew.
async fn measured<T>(what: &str, f: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = reset_peak();
    let out = f.await;
    let grew = status("VmHWM").saturating_sub(before);
    println!(
        "{what}: peak resident memory grew {:.1} MiB (from {:.1} MiB)",
        grew as f64 / MIB as f64,
        before as f64 / MIB as f64
    );
    (out, grew)
}

fn corrupt_what(e: &BackupError) -> &str {
    match e {
        BackupError::Corrupt { what, .. } => what,
        other => panic!("not refused as corrupt: {other}"),
    }
}

fn restore_opts(dir: &std::path::Path, name: &str) -> RestoreOptions {
    RestoreOptions::new(
        Location::new(Backend::Local(dir.to_path_buf()), ""),
        Selector::Name(name.into()),
        // Never dialled: every bomb is refused before the restore connects.
        ConnectOptions::new("127.0.0.1:9"),
        "/restored",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_bombs_are_refused_naming_the_limit_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::new(Backend::Local(dir.path().to_path_buf()), "");

    // 1. One record declaring and decompressing to 256 MiB of data, its manifest saying so:
    // a few kilobytes in the bucket.
    let mut f = Forge::new(dir.path(), "one-huge-record");
    f.zeros("", 256 * MIB);
    let huge = f.finish(1, 256 * MIB, 256 * MIB);
    assert!(huge.object_bytes < 64 * 1024, "{} bytes", huge.object_bytes);
    println!(
        "bomb 1: {} compressed bytes declaring {} MiB",
        huge.object_bytes, 256
    );
    let (r, grew) = measured(
        "check of a 256 MiB record",
        backup::check(&location, &huge, Limits::default()),
    )
    .await;
    let e = r.unwrap_err();
    let what = corrupt_what(&e);
    assert!(
        what.contains("node data at \"\" of 268435456 bytes is over the limit of 1048575")
            && what.contains("jute.maxbuffer"),
        "{e}"
    );
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");
    // A restore refuses it before it downloads anything: the manifest says the node does not
    // fit the destination.
    let (r, grew) = measured(
        "restore of a 256 MiB record",
        backup::restore(&restore_opts(dir.path(), &huge.name)),
    )
    .await;
    let e = r.unwrap_err();
    assert!(matches!(e, BackupError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("jute.maxbuffer of 1048575"), "{e}");
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");
    // A manifest that keeps quiet about its largest node (as a legacy one does): the decode
    // refuses the record at its length.
    let quiet = Manifest {
        max_data_bytes: 0,
        ..huge.clone()
    };
    std::fs::write(
        dir.path().join(&quiet.name).join(format::MANIFEST),
        serde_json::to_vec(&quiet).unwrap(),
    )
    .unwrap();
    let (r, grew) = measured(
        "restore of a 256 MiB record, manifest silent",
        backup::restore(&restore_opts(dir.path(), &quiet.name)),
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        corrupt_what(&e).contains("of 268435456 bytes is over the limit of 1048575"),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was written"), "{e}");
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");

    // 2. Records each within jute.maxbuffer, 256 MiB in all, under a manifest declaring 1 KiB
    // of data: refused at the record that crosses it.
    let mut f = Forge::new(dir.path(), "understated");
    f.zeros("", 0);
    for i in 0..256 {
        f.zeros(&format!("/n{i:03}"), MIB - 1);
    }
    let understated = f.finish(257, 1024, 1024);
    let (r, grew) = measured(
        "check of 256 MiB under a manifest of 1 KiB",
        backup::check(&location, &understated, Limits::default()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        corrupt_what(&e).contains("over the manifest's largest node of 1024 bytes"),
        "{e}"
    );
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");
    let silent = Manifest {
        max_data_bytes: 0,
        ..understated.clone()
    };
    let (r, grew) = measured(
        "check of 256 MiB under a manifest of 1 KiB, largest node unsaid",
        backup::check(&location, &silent, Limits::default()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        corrupt_what(&e).contains("hold 1048575 data bytes, past the manifest's 1024"),
        "{e}"
    );
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");

    // 3. The same 256 MiB, declared in full: it all streams through the decode (one record at
    // a time), and the forged root hash is what gives it away.
    let declared = Manifest {
        data_bytes: 256 * (MIB - 1),
        max_data_bytes: MIB - 1,
        ..understated.clone()
    };
    let (r, grew) = measured(
        "check of 256 MiB declared in full",
        backup::check(&location, &declared, Limits::default()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(corrupt_what(&e).contains("trailer checksum"), "{e}");
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");

    // 4. A chain of nested nodes as deep as the path limit allows, then one level deeper.
    let mut f = Forge::new(dir.path(), "deep");
    let mut rel = String::new();
    f.record("", &Node::persistent(Vec::new()));
    let mut n = 1;
    while rel.len() + 2 <= format::MAX_PATH {
        rel.push_str("/d");
        f.record(&rel, &Node::persistent(Vec::new()));
        n += 1;
    }
    rel.push_str("/d");
    f.record(&rel, &Node::persistent(Vec::new()));
    let deep = f.finish(n + 1, 0, 0);
    let (r, grew) = measured(
        "check of a chain 2048 deep",
        backup::check(&location, &deep, Limits::default()),
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        corrupt_what(&e).contains("a path of 4098 bytes is over the limit of 4096"),
        "{e}"
    );
    assert!(grew < MAX_GROWTH, "grew {grew} bytes");
}
