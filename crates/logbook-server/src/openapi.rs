//! The OpenAPI 3.1 description, served at `/openapi.json`.

use axum::Json;
use serde_json::Value;

pub async fn openapi_json() -> Json<Value> {
    Json(
        serde_json::json!({"openapi": "3.1.0", "info": {"title": "Logbook", "version": env!("CARGO_PKG_VERSION")}, "paths": {}}),
    )
}
