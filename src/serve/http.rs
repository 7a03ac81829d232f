//! `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! `/readyz` is 200 once the API server answered and the CRDs are installed, on a standby
//! replica too: standing by is a healthy state, and a Service must not drop a Pod for it.
//! `/healthz` turns 503 when a controller's supervisor has died, so the kubelet restarts us.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::metrics::compat::Exports;

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    broken: AtomicBool,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.broken.load(Ordering::SeqCst)
    }

    pub fn is_alive(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    exports: Arc<Exports>,
}

/// The routes, for a mode that exports no Astronetes names (the CLI's).
pub fn router(health: Arc<Health>, metrics: Option<PrometheusHandle>) -> Router {
    router_with_exports(health, metrics, Arc::default())
}

/// The routes, with the Astronetes names of `exports` after the recorder's metrics.
pub fn router_with_exports(
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    exports: Arc<Exports>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            health,
            metrics,
            exports,
        })
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    let mut body = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    // The Astronetes names, computed from the caches of the controllers this replica leads.
    body.push_str(&s.exports.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a controller stopped\n")
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// How often histograms get their upkeep.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the recorder's upkeep every [`UPKEEP_EVERY`]: histograms need it to stay bounded.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            handle.run_upkeep();
        }
    });
}

/// Binds `addr` (an error names the address) and serves until `shutdown` resolves.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("--listen {addr}: {e}")))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_follow_health_and_metrics_render() {
        let recorder = crate::metrics::builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, crate::metrics::describe);
        let health = Arc::new(Health::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router(health.clone(), Some(handle)),
            async move {
                let _ = rx.await;
            },
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("# TYPE resiliency_build_info gauge"), "{m}");
        health.set_broken();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
