//! Tenants and API keys: `/v1/tenants` (deployment admin) and `/v1/tenants/{tenant}/keys` (deployment admin,
//! or a key with the `admin` scope of that tenant).

use crate::auth::{Admin, Scoped};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use logbook_core::event::validate_tenant_id;
use logbook_store::Scope;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

fn require_deployment_admin(caller: &Scoped<Admin>) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "managing tenants needs the deployment admin key",
        ))
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::internal())
}

/// `POST /v1/tenants`
#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = logbook_store::Tenant), (status = 400, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_deployment_admin(&caller)?;
    validate_tenant_id(&body.id).map_err(|message| {
        ApiError::bad_request("invalid_request", message).with_details(json!({"field": "id"}))
    })?;
    let name = body.name.unwrap_or_else(|| body.id.clone());
    if name.is_empty() || name.chars().count() > 200 {
        return Err(
            ApiError::bad_request("invalid_request", "`name` must be 1 to 200 characters")
                .with_details(json!({"field": "name"})),
        );
    }
    let store = state.store.clone();
    let tenant = blocking(move || store.create_tenant(&body.id, &name)).await??;
    Ok((StatusCode::CREATED, Json(json!(tenant))))
}

/// `GET /v1/tenants`
#[utoipa::path(get, path = "/v1/tenants", tag = "admin", responses((status = 200, body = crate::openapi::TenantList), (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
) -> ApiResult<Json<Value>> {
    require_deployment_admin(&caller)?;
    Ok(Json(json!({"items": state.store.list_tenants()})))
}

/// `GET /v1/tenants/{tenant}`
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "admin", params(("tenant" = String, Path)),
    responses((status = 200, body = logbook_store::Tenant), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Some(&tenant))?;
    state
        .store
        .get_tenant(&tenant)
        .map(|t| Json(json!(t)))
        .ok_or_else(|| ApiError::not_found(format!("tenant `{tenant}` does not exist")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    name: Option<String>,
    scopes: Vec<String>,
}

/// `POST /v1/tenants/{tenant}/keys`
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "admin", params(("tenant" = String, Path)), request_body = CreateKey,
    responses((status = 201, body = crate::openapi::CreatedKeyBody), (status = 400, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant(Some(&tenant))?;
    let mut scopes = Vec::new();
    for name in &body.scopes {
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("unknown scope `{name}`; scopes are ingest, read and admin"),
            )
            .with_details(json!({"field": "scopes"}))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`scopes` must list at least one of ingest, read, admin",
        )
        .with_details(json!({"field": "scopes"})));
    }
    let name = body.name.unwrap_or_else(|| "unnamed".into());
    if name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`name` must be at most 200 characters",
        ));
    }
    let store = state.store.clone();
    let created = blocking(move || store.create_key(&tenant, &name, &scopes)).await??;
    let mut body = json!(created.key);
    body["key"] = json!(created.key_secret);
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /v1/tenants/{tenant}/keys`
#[utoipa::path(get, path = "/v1/tenants/{tenant}/keys", tag = "admin", params(("tenant" = String, Path)),
    responses((status = 200, body = crate::openapi::KeyList), (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Some(&tenant))?;
    if state.store.get_tenant(&tenant).is_none() {
        return Err(ApiError::not_found(format!(
            "tenant `{tenant}` does not exist"
        )));
    }
    let store = state.store.clone();
    let keys = blocking(move || store.list_keys(&tenant)).await??;
    Ok(Json(json!({"items": keys})))
}

/// `DELETE /v1/tenants/{tenant}/keys/{id}`
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{id}", tag = "admin", params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    Path((tenant, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Some(&tenant))?;
    let store = state.store.clone();
    blocking(move || store.revoke_key(&tenant, &key_id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateViewerToken {
    /// Lifetime in seconds, 60 to 86400 (default 3600).
    #[serde(default)]
    ttl_seconds: Option<i64>,
    /// Filters the viewer can never remove, as query parameters of `GET /v1/events`, e.g. `actor=u_42` or
    /// `bot_id=bot_1&type=conversation.*`... (`q=` included). Empty: the whole tenant.
    #[serde(default)]
    filter: Option<String>,
}

/// `POST /v1/tenants/{tenant}/viewer-tokens`
#[utoipa::path(post, path = "/v1/tenants/{tenant}/viewer-tokens", tag = "admin", params(("tenant" = String, Path)),
    request_body = CreateViewerToken,
    responses((status = 201, body = crate::openapi::ViewerTokenBody), (status = 400, body = crate::openapi::ErrorBody),
              (status = 403, body = crate::openapi::ErrorBody)))]
pub async fn create_viewer_token(
    State(state): State<AppState>,
    caller: Scoped<Admin>,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<CreateViewerToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant(Some(&tenant))?;
    if state.store.get_tenant(&tenant).is_none() {
        return Err(ApiError::not_found(format!(
            "tenant `{tenant}` does not exist"
        )));
    }
    let ttl_seconds = body.ttl_seconds.unwrap_or(3600);
    if !(60..=86_400).contains(&ttl_seconds) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`ttl_seconds` must be from 60 to 86400",
        )
        .with_details(json!({"field": "ttl_seconds"})));
    }
    let filter = body.filter.unwrap_or_default();
    let now = logbook_core::time::now_millis();
    let pairs = logbook_core::filter::query_string::RawQuery::parse(&filter);
    let parsed = pairs.to_list_query(now).map_err(|error| {
        let error = ApiError::from(error);
        ApiError {
            message: format!("`filter`: {}", error.message),
            ..error
        }
    })?;
    let only_filters = parsed.since.is_none()
        && parsed.until.is_none()
        && parsed.tenant.is_none()
        && parsed.format.is_none()
        && ["limit", "take", "order", "cursor"]
            .iter()
            .all(|name| pairs.get(name).is_none());
    if !only_filters {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "`filter` takes filter parameters only (like actor=u_42&bot_id=bot_1 or q=...), not paging, time window, format or tenant",
        ));
    }
    let expires_at = now + ttl_seconds * 1000;
    let claims = crate::viewer::ViewerClaims {
        tenant: tenant.clone(),
        filter: filter.clone(),
        expires_at,
        nonce: rand_nonce(),
    };
    let token = crate::viewer::issue(&state.viewer_secret, &claims);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "tenant": tenant,
            "filter": filter,
            "expires_at": logbook_core::time::format_millis(expires_at),
            "url": format!("/#viewer_token={token}"),
        })),
    ))
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
