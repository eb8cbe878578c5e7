//! Authentication and authorization as extractors: a handler that needs the `read` scope takes a
//! [`Scoped<Read>`], so a route cannot forget its check.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use logbook_store::{Principal, Scope};
use std::marker::PhantomData;

/// A scope a route requires.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

pub struct Read;
pub struct Ingest;
pub struct Admin;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// An authenticated caller holding scope `S` (the deployment admin holds every scope; a tenant key with
/// `admin` holds every scope of its tenant).
pub struct Scoped<S: RequiredScope> {
    pub principal: Principal,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope> Scoped<S> {
    /// The tenant this caller acts on: its own for a tenant key; for the admin key the `requested` one, which
    /// is then required. A tenant key naming another tenant is refused.
    pub fn tenant(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match &self.principal {
            Principal::Admin => requested.map(str::to_string).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "the admin key must name the tenant, with `tenant=<id>`",
                )
            }),
            Principal::Tenant { tenant, .. } | Principal::Viewer { tenant, .. } => {
                match requested {
                    Some(other) if other != tenant => Err(ApiError::forbidden(format!(
                        "this key belongs to tenant `{tenant}` and cannot access `{other}`"
                    ))),
                    _ => Ok(tenant.clone()),
                }
            }
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::Admin)
    }

    /// The scope under which request-level idempotency keys are remembered.
    pub fn idempotency_scope(&self) -> String {
        match &self.principal {
            Principal::Admin => "*admin".into(),
            Principal::Tenant { tenant, .. } | Principal::Viewer { tenant, .. } => tenant.clone(),
        }
    }

    /// The filter every read of this caller is confined to: a viewer token's pinned filter, else everything.
    pub fn pinned_filter(
        &self,
        now: logbook_core::time::Millis,
    ) -> Result<logbook_core::Filter, ApiError> {
        match &self.principal {
            Principal::Viewer { filter, .. } => {
                Ok(logbook_core::filter::query_string::RawQuery::parse(filter)
                    .to_list_query(now)?
                    .filter)
            }
            _ => Ok(logbook_core::Filter::All),
        }
    }
}

/// Resolves the bearer token of a request.
pub fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header_value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing API key: send `Authorization: Bearer <api key>`")
    })?;
    let text = header_value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <api key>`")
        })?
        .trim();
    if token.starts_with(crate::viewer::PREFIX) {
        let claims = crate::viewer::verify(
            &state.viewer_secret,
            token,
            logbook_core::time::now_millis(),
        )
        .map_err(ApiError::unauthorized)?;
        return Ok(Principal::Viewer {
            tenant: claims.tenant,
            filter: claims.filter,
        });
    }
    state
        .store
        .authenticate(token)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))
}

impl<S: RequiredScope> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state)?;
        let allowed = match &principal {
            Principal::Admin => true,
            Principal::Viewer { .. } => S::SCOPE == Scope::Read,
            Principal::Tenant { scopes, .. } => {
                scopes.contains(&S::SCOPE) || scopes.contains(&Scope::Admin)
            }
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "this API key lacks the `{}` scope",
                S::SCOPE.as_str()
            )));
        }
        Ok(Scoped {
            principal,
            _scope: PhantomData,
        })
    }
}
