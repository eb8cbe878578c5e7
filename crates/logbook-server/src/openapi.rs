//! The OpenAPI 3.1 description, generated from the handlers' annotations and served at `/openapi.json`.

use crate::admin::{CreateKey, CreateTenant, CreateViewerToken};
use axum::Json;
use logbook_core::diff::{DiffEntry, DiffOp};
use logbook_core::event::{Actor, Changes, Entity, Event, Outcome};
use logbook_store::{ApiKey, Receipt, Scope, Tenant};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error": {...}}`, the body of every non-2xx response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code: invalid_event, invalid_filter, invalid_json, invalid_cursor, invalid_request,
    /// payload_too_large, unauthorized, forbidden, not_found, conflict, method_not_allowed,
    /// unsupported_media_type, insufficient_storage, unavailable, internal.
    pub code: String,
    /// A sentence saying what was wrong and what was expected.
    pub message: String,
    /// Where: `index` and `line` of the bad event of a batch, `field`, ...
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// Receipts of an ingest, in input order.
#[derive(Serialize, ToSchema)]
pub struct IngestResponse {
    pub items: Vec<Receipt>,
}

/// One page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<Event>,
    /// Pass as `cursor` with the same other parameters for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// An event as sent: every field of [`Event`] except the server-assigned ones (id, seq, received_at, hash,
/// changes.diff). `type` is required unless `action` and `entity.type` are given; `actor` may be a string.
#[derive(Serialize, ToSchema)]
pub struct EventInput {
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// RFC 3339, epoch milliseconds, or relative (now-5m); defaults to the receive time.
    pub created_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub actor: Option<serde_json::Value>,
    pub action: Option<String>,
    pub entity: Option<Entity>,
    #[schema(value_type = Option<Object>)]
    pub resources: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    pub outcome: Option<Outcome>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `{"before": {...}, "after": {...}}`; the server computes `diff`.
    #[schema(value_type = Option<Object>)]
    pub changes: Option<serde_json::Value>,
    /// Per-event idempotency key: a repeat within 24 h returns the original receipt.
    pub idempotency_key: Option<String>,
    /// Target tenant (admin key only).
    pub tenant: Option<String>,
}

/// Event counts per time bucket.
#[derive(Serialize, ToSchema)]
pub struct HistogramBody {
    pub interval: String,
    pub interval_ms: i64,
    /// The window as requested; the first bucket starts at `since` aligned down to the interval (UTC), the
    /// last ends at or after the exclusive `until`.
    pub since: String,
    pub until: String,
    pub group_by: Option<String>,
    /// Group names, most frequent first, then "other" (every matching event outside the named groups).
    pub groups: Vec<String>,
    pub total: u64,
    pub buckets: Vec<HistogramBucket>,
}

#[derive(Serialize, ToSchema)]
pub struct HistogramBucket {
    pub start: String,
    pub count: u64,
    /// Count per group name (with `group_by`), for the groups with events in this bucket: a group of `groups`
    /// that is not listed counted zero.
    #[schema(value_type = Option<Object>)]
    pub groups: Option<serde_json::Value>,
}

/// The entity catalog.
#[derive(Serialize, ToSchema)]
pub struct EntityTypesBody {
    /// Known entity types with descriptions (events with other types are accepted too).
    pub items: Vec<logbook_core::demo::EntityType>,
    /// Known actions (custom ones are accepted too).
    pub actions: Vec<String>,
    /// Example event types.
    pub event_types: Vec<String>,
    /// Known resource keys.
    pub resource_keys: Vec<String>,
}

/// A viewer token and the URL that opens the dashboard signed in with it.
#[derive(Serialize, ToSchema)]
pub struct ViewerTokenBody {
    /// `lbv_...`: send as `Authorization: Bearer`; read-only, confined to `filter`, until `expires_at`.
    pub token: String,
    pub tenant: String,
    pub filter: String,
    pub expires_at: String,
    /// Relative URL of the dashboard, signed in with this token (the token is in the fragment, never sent in
    /// a request line).
    pub url: String,
}

/// A list of tenants or keys.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<Tenant>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<ApiKey>,
}

/// A created key: the only response that carries its secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret, `lbk_...`, shown only here.
    #[serde(rename = "key")]
    pub secret: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Logbook", description = "Self-hosted event log and audit log service. Times are RFC 3339 UTC with \
        milliseconds on output; on input RFC 3339, epoch milliseconds or relative (now-15m, 1h, 7d)."),
    paths(
        crate::events::ingest,
        crate::events::list_events,
        crate::events::get_event,
        crate::events::histogram,
        crate::events::export_events,
        crate::admin::create_tenant,
        crate::admin::list_tenants,
        crate::admin::get_tenant,
        crate::admin::create_key,
        crate::admin::create_viewer_token,
        crate::admin::list_keys,
        crate::admin::revoke_key,
        crate::ops::entity_types,
        crate::ops::healthz,
        crate::ops::metrics,
    ),
    components(schemas(Event, Actor, Entity, Changes, Outcome, DiffEntry, DiffOp, Receipt, Tenant, ApiKey, Scope,
        ErrorBody, ErrorDetail, IngestResponse, EventPage, HistogramBody, HistogramBucket, EntityTypesBody, EventInput, TenantList, KeyList, CreatedKeyBody,
        CreateTenant, CreateKey, CreateViewerToken, ViewerTokenBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "events", description = "Ingest and query events"), (name = "admin", description = "Tenants and API keys"),
         (name = "operations", description = "Health and metrics"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
