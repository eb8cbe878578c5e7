//! Logbook's HTTP API: one [`router`] used by `logbook serve` and by the tests (through
//! `tower::ServiceExt::oneshot`, without a socket).
//!
//! Routes (the contract is `shared/API.md`; the OpenAPI description is served at `/openapi.json`):
//! `POST/GET /v1/events`, `GET /v1/events/histogram`, `GET /v1/events/export`, `GET /v1/events/{id}`, `POST/GET /v1/tenants`, `GET /v1/tenants/{tenant}`,
//! `GET /v1/entity-types`, `POST /v1/tenants/{tenant}/viewer-tokens`, `POST/GET /v1/tenants/{tenant}/keys`, `DELETE /v1/tenants/{tenant}/keys/{id}`, `GET /healthz`,
//! `GET /metrics`, `GET /openapi.json`.
//! Blocking storage work (reads, catalog writes) runs on the blocking pool (`spawn_blocking`); appends are queued
//! to the store's writer with `EventStore::submit` and awaited, so no thread waits for a group commit.

pub mod admin;
pub mod auth;
pub mod csv;
pub mod error;
pub mod events;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod viewer;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use logbook_core::event::Limits;
use logbook_store::EventStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The entity catalog served at `/v1/entity-types`.
    pub catalog: logbook_core::demo::Catalog,
    /// How long a client may take to send a request body, start to end; slower bodies are answered 408.
    pub body_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_body_bytes: 64 << 20,
            catalog: logbook_core::demo::Catalog::builtin(),
            body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn EventStore>,
    pub config: Arc<ServerConfig>,
    pub cursor_secret: Arc<Vec<u8>>,
    /// Signs viewer tokens (derived from the deployment secret).
    pub viewer_secret: Arc<Vec<u8>>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(store: Arc<dyn EventStore>, config: ServerConfig) -> AppState {
        let cursor_secret = Arc::new(store.cursor_secret());
        let viewer_secret = Arc::new(viewer::derive_secret(&cursor_secret));
        AppState {
            store,
            config: Arc::new(config),
            cursor_secret,
            viewer_secret,
            metrics: metrics_handle(),
        }
    }
}

/// The process-wide Prometheus recorder (installed once; tests build many routers).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (by an embedding program); keep ours readable anyway.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("logbook_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("logbook_http_request_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route(
            "/v1/events",
            post(events::ingest)
                .get(events::list_events)
                .fallback(events::immutable),
        )
        .route("/v1/events/histogram", get(events::histogram))
        .route("/v1/events/export", get(events::export_events))
        .route(
            "/v1/events/{id}",
            get(events::get_event).fallback(events::immutable),
        )
        .route(
            "/v1/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route("/v1/tenants/{tenant}", get(admin::get_tenant))
        .route(
            "/v1/tenants/{tenant}/viewer-tokens",
            post(admin::create_viewer_token),
        )
        .route(
            "/v1/tenants/{tenant}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/v1/tenants/{tenant}/keys/{id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route("/v1/entity-types", get(ops::entity_types))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/", get(ops::index))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(track))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
