//! The shipped alert rules in a real Prometheus server (Debian's `prometheus` package) scraping
//! a live stream: a destination changed behind the stream's back fires ResiliencySyncDiverged,
//! and mending it resolves the alert.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use zookeeper_client::Client;

const ALERT: &str = "ResiliencySyncDiverged";
/// Long enough for Prometheus to start, scrape and evaluate a few times on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second with `deploy/alerts/resiliency-rules.yaml` loaded. Only
    /// the rules' `for:` holds are cut to one second (promtool's unit tests cover the holds);
    /// every expression is the shipped one.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/alerts/resiliency-rules.yaml"),
        )
        .unwrap();
        let short: String = rules
            .lines()
            .map(|l| match l.split_once("for: ") {
                Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 1s\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        assert_ne!(short, rules, "the rules hold nothing for a while any more?");
        std::fs::write(dir.path().join("rules.yaml"), short).unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: resiliency\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect(
                "prometheus not found: run scripts/install-deps.sh (Debian package prometheus)",
            );
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let text = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// The state ("pending", "firing") of `ALERT` for the stream `name`, None when inactive.
    async fn alert_state(&self, name: &str) -> Option<String> {
        let data = self.api("/api/v1/alerts").await?;
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == ALERT && a["labels"]["name"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// The value of `resiliency_verify_divergent_nodes` for `name` in Prometheus' view.
    async fn divergent(&self, name: &str) -> Option<f64> {
        let data = self
            .api("/api/v1/query?query=resiliency_verify_divergent_nodes")
            .await?;
        data["result"]
            .as_array()?
            .iter()
            .find(|s| s["metric"]["name"] == name)?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Waits until `what` holds, polling every half second.
    async fn wait_for(&self, what: &str, mut ok: impl AsyncFnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !ok(self).await {
            assert!(Instant::now() < deadline, "Prometheus never showed {what}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn set(c: &Client, path: &str, data: &[u8]) {
    c.set_data(path, data, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_divergence_alert_fires_in_prometheus_and_resolves_after_the_repair() {
    let (src, dst) = shared_pair();
    let root = unique_root("prometheus");
    let zs = client(src).await;
    build_tree(&zs, &root, 20, 10, 8).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let name = "prom-test";
    // No --repair: the divergence stays until a person mends it.
    let _stream = tokio::process::Command::new(env!("CARGO_BIN_EXE_resiliency-operator"))
        .args([
            "sync",
            "--continuous",
            "--progress",
            "0",
            "--root-path",
            &root,
        ])
        .args(["--verify-interval", "0.5"])
        .args(["--listen", &metrics_addr, "--name", name])
        .args(["--source", &src.connect_string()])
        .args(["--destination", &dst.connect_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let o = sync_opts(src, &root, dst, &root);
    converges(&o).await;
    let prom = Prometheus::start(&metrics_addr);
    prom.wait_for("the stream in sync", async |p| {
        p.divergent(name).await == Some(0.0)
    })
    .await;
    assert_eq!(prom.alert_state(name).await, None);

    // Changed on the destination behind the stream's back.
    let zd = client(dst).await;
    let victim = format!("{root}/n0003");
    let (good, _) = zs.get_data(&victim).await.unwrap();
    set(&zd, &victim, b"changed behind the stream").await;
    prom.wait_for("the alert firing", async |p| {
        p.alert_state(name).await.as_deref() == Some("firing")
    })
    .await;
    assert_eq!(prom.divergent(name).await, Some(1.0));
    assert!(!verify(&o).await.equal);

    // Mended by hand: the next verification finds the trees equal and the alert resolves.
    set(&zd, &victim, &good).await;
    prom.wait_for("the alert resolved", async |p| {
        p.divergent(name).await == Some(0.0) && p.alert_state(name).await.is_none()
    })
    .await;
    let r = verify(&o).await;
    assert!(r.equal, "{}", r.render());
    assert_eq!((r.source_nodes, r.destination_nodes), (21, 21));
}
