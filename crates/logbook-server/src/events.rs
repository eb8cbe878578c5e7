//! `/v1/events`: ingest (`POST`), list (`GET`) and get (`GET /{id}`). Events are immutable: other methods
//! answer 405.

use crate::auth::{Ingest, Read, Scoped};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use logbook_core::cursor::{Cursor, ALL_TENANTS};
use logbook_core::event::{Event, NewEvent};
use logbook_core::filter::query_string::{Format, Order, RawQuery as QueryPairs};
use logbook_core::time::{now_millis, Millis};
use logbook_store::{
    AppendRequest, HistogramRequest, IdempotencyKey, Position, RawEvent, TenantPosition,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;

/// `{"events": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// One event of a request body, with where it was.
struct InputEvent<'a> {
    text: &'a str,
    line: Option<usize>,
}

fn is_jsonl(headers: &HeaderMap) -> Result<bool, ApiError> {
    match crate::extract::media_type(headers).as_str() {
        "application/json" | "" => Ok(false),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonl" | "application/ndjson" => Ok(true),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type `{other}` is not accepted; send application/json or application/x-ndjson"),
        )),
    }
}

/// A JSON syntax error; `line` is the JSONL line the text came from (serde's own line is then always 1).
fn json_syntax_error(error: serde_json::Error, line: Option<usize>) -> ApiError {
    let message = format!("the request body is not valid JSON: {error}");
    let details = json!({"line": line.unwrap_or(error.line()), "column": error.column()});
    ApiError::bad_request("invalid_json", message).with_details(details)
}

/// Splits a body into its events' JSON texts.
fn split_body<'a>(body: &'a str, jsonl: bool) -> Result<Vec<InputEvent<'a>>, ApiError> {
    if jsonl {
        return Ok(body
            .split('\n')
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| InputEvent {
                text: line.trim_end_matches('\r'),
                line: Some(index + 1),
            })
            .collect());
    }
    match body.trim_start().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|e| json_syntax_error(e, None))?;
            Ok(items.into_iter().map(|raw| InputEvent { text: raw.get(), line: None }).collect())
        }
        Some(b'{') => match serde_json::from_str::<Envelope>(body) {
            Ok(envelope) => Ok(envelope.events.into_iter().map(|raw| InputEvent { text: raw.get(), line: None }).collect()),
            Err(_) => {
                // Not an envelope: a single event. Check the syntax once for a precise error.
                let _: &RawValue = serde_json::from_str(body).map_err(|e| json_syntax_error(e, None))?;
                Ok(vec![InputEvent { text: body.trim(), line: None }])
            }
        },
        Some(_) => Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be an event object, an array of events, {\"events\": [...]}, or JSON lines",
        )),
        None => Err(ApiError::bad_request("invalid_event", "the request body is empty; send at least one event")),
    }
}

/// `POST /v1/events`: one event, an array, `{"events": [...]}`, or JSON lines; all or nothing.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = Vec<crate::openapi::EventInput>, description = "An event object, an array of events, \
        {\"events\": [...]}, or application/x-ndjson (one event per line)", content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the original receipts for 24 h"),
           ("tenant" = Option<String>, Query, description = "Default tenant of the events (admin key)")),
    responses(
        (status = 201, description = "Every event is durable", body = crate::openapi::IngestResponse),
        (status = 400, description = "Invalid event or JSON; details.index (and details.line) name the first bad event", body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody),
        (status = 408, description = "The body was not received within the server's body timeout", body = crate::openapi::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = crate::openapi::ErrorBody),
        (status = 413, description = "Event, body or batch too large", body = crate::openapi::ErrorBody),
        (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn ingest(
    State(state): State<AppState>,
    caller: Scoped<Ingest>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let started = Instant::now();
    let jsonl = is_jsonl(&headers)?;
    let bytes =
        crate::extract::read_body(body, state.config.max_body_bytes, state.config.body_timeout)
            .await?;
    let text = std::str::from_utf8(&bytes).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the request body is not valid UTF-8 (byte {})",
                error.valid_up_to()
            ),
        )
    })?;
    let raw_events = split_body(text, jsonl)?;
    let limits = &state.config.limits;
    if raw_events.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_event",
            "the request contains no events",
        ));
    }
    if raw_events.len() > limits.max_batch_events {
        return Err(ApiError::payload_too_large(format!(
            "the request has {} events; at most {} are accepted per request",
            raw_events.len(),
            limits.max_batch_events
        )));
    }
    let default_tenant = query
        .as_deref()
        .map(QueryPairs::parse)
        .and_then(|pairs| pairs.get("tenant").map(str::to_string));
    let now = now_millis();
    let mut events = Vec::with_capacity(raw_events.len());
    for (index, raw) in raw_events.iter().enumerate() {
        let locate = |error: ApiError| {
            let mut details = error.details.clone().unwrap_or_else(|| json!({}));
            details["index"] = json!(index);
            if let Some(line) = raw.line {
                details["line"] = json!(line);
            }
            let prefix = match raw.line {
                Some(line) => format!("event {index} (line {line}): "),
                None => format!("event {index}: "),
            };
            ApiError {
                message: format!("{prefix}{}", error.message),
                details: Some(details),
                ..error
            }
        };
        // One pass over the text; only an event it does not accept is parsed again, the ordinary way, for
        // the error.
        let new_event = match NewEvent::from_json_text(raw.text, limits, now) {
            Some(new_event) => new_event,
            None => {
                let value = logbook_core::json::from_str_strict(raw.text)
                    .map_err(|e| locate(json_syntax_error(e, raw.line)))?;
                NewEvent::from_json(value, raw.text.len(), limits, now).map_err(|e| {
                    let error = ApiError::from(e);
                    if error.message.contains("bytes of JSON") {
                        locate(ApiError::payload_too_large(error.message.clone()))
                    } else {
                        locate(error)
                    }
                })?
            }
        };
        let tenant = caller
            .tenant(new_event.tenant.as_deref().or(default_tenant.as_deref()))
            .map_err(locate)?;
        events.push((tenant, new_event));
    }
    let idempotency = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        "the Idempotency-Key header must be 1 to 256 visible characters",
                    )
                })?;
            Some(IdempotencyKey {
                scope: caller.idempotency_scope(),
                key: key.to_string(),
                fingerprint: hex::encode(Sha256::digest(&bytes)),
            })
        }
        None => None,
    };
    let count = events.len() as u64;
    // Queuing never blocks; the handler then awaits the group commit without holding a thread.
    let outcome = state
        .store
        .submit(AppendRequest {
            events,
            idempotency,
        })?
        .wait()
        .await?;
    metrics::histogram!("logbook_ingest_request_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("logbook_ingest_events_total").increment(count);
    let replayed = outcome.replayed;
    // Serialized straight from the receipts (a JSON tree of 1,000 receipts was 1.4% of ingest's CPU).
    let body = crate::openapi::IngestResponse {
        items: outcome.receipts,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /v1/events/{id}`
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "Event id, evt_..."), ("tenant" = Option<String>, Query, description = "Tenant (admin key)")),
    responses((status = 200, body = Event), (status = 404, description = "Absent or another tenant's", body = crate::openapi::ErrorBody)))]
pub async fn get_event(
    State(state): State<AppState>,
    caller: Scoped<Read>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Event>> {
    let requested = query
        .as_deref()
        .map(QueryPairs::parse)
        .and_then(|pairs| pairs.get("tenant").map(str::to_string));
    let tenants = match (&requested, caller.is_admin()) {
        (None, true) => state
            .store
            .list_tenants()
            .into_iter()
            .map(|tenant| tenant.id)
            .collect(),
        _ => vec![caller.tenant(requested.as_deref())?],
    };
    let store = state.store.clone();
    let lookup_id = id.clone();
    let found = tokio::task::spawn_blocking(move || -> logbook_store::Result<Option<Event>> {
        for tenant in tenants {
            if let Some(event) = store.get(&tenant, &lookup_id)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    // A viewer token only sees events matching its pinned filter.
    let pinned = caller.pinned_filter(now_millis())?;
    let found = found.filter(|event| pinned.matches(event));
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))
}

/// `GET /v1/events`
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 50 (alias take)"),
        ("order" = Option<String>, Query, description = "desc (default) or asc, by created_at then seq"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page; repeat the other parameters unchanged"),
        ("since" = Option<String>, Query, description = "Inclusive lower bound on created_at (RFC 3339, epoch ms, relative)"),
        ("until" = Option<String>, Query, description = "Exclusive upper bound on created_at"),
        ("format" = Option<String>, Query, description = "json (default), jsonl or csv; Accept: application/x-ndjson also selects jsonl"),
        ("q" = Option<String>, Query, description = "Text query: field:value terms, -negation, :> :>= :< :<=, prefix*, \"phrases\""),
        ("tenant" = Option<String>, Query, description = "Tenant to read (admin key); without it the admin key lists every tenant, ordered by created_at, tenant, then seq"),
        ("filter[<field>][<op>]" = Option<String>, Query, description = "Structured filter; ops eq ne gt gte lt lte contains not_contains prefix in not_in exists"),
        ("type" = Option<String>, Query, description = "Shorthand equality (also action, actor, entity_type, entity_id, outcome, <key>_id, meta.<path>); commas mean any of")),
    responses((status = 200, body = crate::openapi::EventPage), (status = 400, description = "invalid_filter or invalid_cursor", body = crate::openapi::ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Scoped<Read>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let started = Instant::now();
    let pairs = QueryPairs::parse(query.as_deref().unwrap_or(""));
    let secret = &state.cursor_secret;
    let cursor = match pairs.get("cursor").filter(|text| !text.is_empty()) {
        Some(text) => Some(Cursor::decode(text, secret)?),
        None => None,
    };
    let now: Millis = cursor
        .as_ref()
        .map(|cursor| cursor.now)
        .unwrap_or_else(now_millis);
    let mut list_query = pairs.to_list_query(now)?;
    // The deployment admin without `tenant=` lists every tenant's events.
    let all_tenants = caller.is_admin() && list_query.tenant.is_none();
    let tenant = if all_tenants {
        ALL_TENANTS.to_string()
    } else {
        caller.tenant(list_query.tenant.as_deref())?
    };
    list_query.filter =
        logbook_core::Filter::and(vec![list_query.filter, caller.pinned_filter(now)?]);
    let fingerprint = pairs.fingerprint();
    if let Some(cursor) = &cursor {
        if cursor.tenant != tenant {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "this cursor belongs to another tenant's listing",
            ));
        }
        if cursor.fingerprint != fingerprint || cursor.order() != list_query.order {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "the query parameters changed since this cursor was issued; repeat them unchanged with the cursor",
            ));
        }
    }
    let store = state.store.clone();
    let query_for_store = list_query.clone();
    let (items, next) = if all_tenants {
        let after = cursor.as_ref().map(|cursor| TenantPosition {
            created_at: cursor.created_at,
            tenant: cursor.at_tenant.clone().unwrap_or_default(),
            seq: cursor.seq,
        });
        let page =
            tokio::task::spawn_blocking(move || store.list_all(&query_for_store, after.as_ref()))
                .await
                .map_err(|_| ApiError::internal())??;
        let next = page
            .next
            .map(|next| (next.created_at, Some(next.tenant), next.seq));
        (page.items.into_iter().map(|(_, item)| item).collect(), next)
    } else {
        let after = cursor.as_ref().map(|cursor| Position {
            created_at: cursor.created_at,
            seq: cursor.seq,
        });
        let list_tenant = tenant.clone();
        let page =
            tokio::task::spawn_blocking(move || store.list(&list_tenant, &query_for_store, after))
                .await
                .map_err(|_| ApiError::internal())??;
        let next = page.next.map(|next| (next.created_at, None, next.seq));
        (page.items, next)
    };
    let next_cursor = next.map(|(created_at, at_tenant, seq)| {
        Cursor {
            tenant,
            at_tenant,
            descending: list_query.order == Order::Desc,
            created_at,
            seq,
            now,
            fingerprint,
        }
        .encode(secret)
    });
    let has_more = next_cursor.is_some();
    let format = list_query
        .format
        .unwrap_or_else(|| format_from_accept(&headers));
    metrics::histogram!("logbook_query_seconds").record(started.elapsed().as_secs_f64());
    render_page(format, &items, next_cursor, has_more)
}

/// Events per page an export reads from the store; the stream sends each page as one chunk.
const EXPORT_PAGE: usize = 4096;
/// Pages an export reads ahead of what the connection has taken.
const EXPORT_CHUNKS_AHEAD: usize = 4;

/// `GET /v1/events/export`
#[utoipa::path(get, path = "/v1/events/export", tag = "events",
    params(
        ("format" = Option<String>, Query, description = "jsonl (default) or csv; or Accept: text/csv"),
        ("order" = Option<String>, Query, description = "desc (default) or asc"),
        ("since" = Option<String>, Query, description = "Start, inclusive"),
        ("until" = Option<String>, Query, description = "End, exclusive"),
        ("tenant" = Option<String>, Query, description = "Tenant to export (admin key; without it the admin exports every tenant)"),
        ("q" = Option<String>, Query, description = "Every filter of GET /v1/events applies")),
    responses(
        (status = 200, description = "Every matching event, streamed: one JSON object per line, or CSV with one header row", content_type = "application/x-ndjson"),
        (status = 400, body = crate::openapi::ErrorBody)))]
pub async fn export_events(
    State(state): State<AppState>,
    caller: Scoped<Read>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let pairs = QueryPairs::parse(query.as_deref().unwrap_or(""));
    for name in ["limit", "take", "cursor"] {
        if pairs.get(name).is_some() {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("`{name}` does not apply to an export, which streams every matching event; narrow it with since, until or filters, or page with GET /v1/events"),
            ));
        }
    }
    let now = now_millis();
    let mut list_query = pairs.to_list_query(now)?;
    let format = match list_query.format {
        Some(Format::Jsonl) => Format::Jsonl,
        Some(Format::Csv) => Format::Csv,
        Some(Format::Json) => {
            return Err(ApiError::bad_request(
                "invalid_filter",
                "an export is JSON lines (`format=jsonl`) or CSV (`format=csv`); for JSON pages use GET /v1/events",
            ))
        }
        None if format_from_accept(&headers) == Format::Csv => Format::Csv,
        None => Format::Jsonl,
    };
    let all_tenants = caller.is_admin() && list_query.tenant.is_none();
    let tenant = if all_tenants {
        None
    } else {
        Some(caller.tenant(list_query.tenant.as_deref())?)
    };
    list_query.filter =
        logbook_core::Filter::and(vec![list_query.filter, caller.pinned_filter(now)?]);
    list_query.limit = EXPORT_PAGE;
    let mut pages = ExportPages {
        store: state.store.clone(),
        tenant,
        query: list_query,
        after: None,
        after_all: None,
        done: false,
        format,
        wrote_header: false,
    };
    // The first page is read before answering, so that a store that fails at once is a status code, not a
    // cut-off stream.
    let (first, pages) = tokio::task::spawn_blocking(move || {
        let first = pages.next_chunk();
        (first, pages)
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let first = first?;
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(EXPORT_CHUNKS_AHEAD);
    if let Some(first) = first {
        // Capacity is at least one and the channel is new: this does not wait.
        let _ = sender.try_send(Ok(first));
    }
    if !pages.done {
        let mut pages = pages;
        tokio::task::spawn_blocking(move || {
            while !pages.done {
                let chunk = match pages.next_chunk() {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(error = %error.message, "an export stopped part-way; its connection is cut off");
                        Err(std::io::Error::other("the export stopped part-way"))
                    }
                };
                let failed = chunk.is_err();
                // A closed channel is a client that went away.
                if sender.blocking_send(chunk).is_err() || failed {
                    break;
                }
            }
        });
    }
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/x-ndjson", "jsonl"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"logbook-export.{extension}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The pages of an export, read one at a time and rendered as one chunk each.
struct ExportPages {
    store: std::sync::Arc<dyn logbook_store::EventStore>,
    /// `None`: the deployment admin's export of every tenant.
    tenant: Option<String>,
    query: logbook_core::filter::query_string::ListQuery,
    after: Option<Position>,
    after_all: Option<TenantPosition>,
    done: bool,
    format: Format,
    wrote_header: bool,
}

impl ExportPages {
    /// The next page, rendered; `None` once every event has been sent.
    fn next_chunk(&mut self) -> ApiResult<Option<bytes::Bytes>> {
        if self.done {
            return Ok(None);
        }
        let items = match &self.tenant {
            Some(tenant) => {
                let page = self.store.list(tenant, &self.query, self.after)?;
                self.after = page.next;
                self.done = page.next.is_none();
                page.items
            }
            None => {
                let page = self.store.list_all(&self.query, self.after_all.as_ref())?;
                self.done = page.next.is_none();
                self.after_all = page.next;
                page.items.into_iter().map(|(_, item)| item).collect()
            }
        };
        let chunk = match self.format {
            Format::Csv => {
                let mut rows = String::new();
                crate::csv::render_into(&mut rows, &parse_items(&items)?, !self.wrote_header);
                self.wrote_header = true;
                rows
            }
            _ => json_lines(&items, 0),
        };
        if chunk.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(bytes::Bytes::from(chunk)))
    }
}

fn format_from_accept(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/x-ndjson")
        || accept.contains("application/jsonl")
        || accept.contains("application/ndjson")
    {
        Format::Jsonl
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    }
}

fn render_page(
    format: Format,
    items: &[RawEvent],
    next_cursor: Option<String>,
    has_more: bool,
) -> ApiResult<Response> {
    let trailer = json!({"next_cursor": next_cursor, "has_more": has_more});
    let response = match format {
        Format::Json => {
            // Stored events are already the API's JSON: splice them instead of parsing and serializing.
            let mut body = String::with_capacity(
                64 + items
                    .iter()
                    .map(|item| item.json().len() + 1)
                    .sum::<usize>(),
            );
            body.push_str("{\"items\":[");
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    body.push(',');
                }
                body.push_str(item.json());
            }
            body.push_str("],\"next_cursor\":");
            body.push_str(&trailer["next_cursor"].to_string());
            body.push_str(",\"has_more\":");
            body.push_str(if has_more { "true" } else { "false" });
            body.push('}');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Format::Jsonl => {
            let mut body = json_lines(items, 64);
            body.push_str(&trailer.to_string());
            body.push('\n');
            with_paging_headers(
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response(),
                &next_cursor,
                has_more,
            )
        }
        Format::Csv => {
            let body = crate::csv::render(&parse_items(items)?);
            with_paging_headers(
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
                &next_cursor,
                has_more,
            )
        }
    };
    Ok(response)
}

/// The stored events as JSON lines, with room for `extra` bytes more.
fn json_lines(items: &[RawEvent], extra: usize) -> String {
    let mut lines = String::with_capacity(
        extra
            + items
                .iter()
                .map(|item| item.json().len() + 1)
                .sum::<usize>(),
    );
    for item in items {
        lines.push_str(item.json());
        lines.push('\n');
    }
    lines
}

/// The stored events parsed (for CSV's columns); a stored event that does not parse is the server's fault.
fn parse_items(items: &[RawEvent]) -> ApiResult<Vec<Event>> {
    items
        .iter()
        .map(RawEvent::parse)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            tracing::error!(%error, "a stored event does not parse");
            ApiError::internal()
        })
}

fn with_paging_headers(
    mut response: Response,
    next_cursor: &Option<String>,
    has_more: bool,
) -> Response {
    let headers = response.headers_mut();
    if let Some(cursor) = next_cursor {
        if let Ok(value) = HeaderValue::from_str(cursor) {
            headers.insert("x-next-cursor", value);
        }
    }
    headers.insert(
        "x-has-more",
        HeaderValue::from_static(if has_more { "true" } else { "false" }),
    );
    response
}

/// Any method events do not support.
pub async fn immutable() -> ApiError {
    ApiError::method_not_allowed()
}

/// Most buckets one histogram may have.
const MAX_BUCKETS: i64 = 10_000;

/// `GET /v1/events/histogram`
#[utoipa::path(get, path = "/v1/events/histogram", tag = "events",
    params(
        ("interval" = String, Query, description = "Bucket width: 30s, 1m, 15m, 1h, 1d, 1w ... (at least 1s)"),
        ("group_by" = Option<String>, Query, description = "Split each bucket by the values of a field (type, action, actor.id, entity.type, outcome, resources.<key>, metadata.<path>, ...)"),
        ("top" = Option<u32>, Query, description = "Groups reported by name (1 to 1000, default 10); the rest count as \"other\""),
        ("since" = Option<String>, Query, description = "Start (default: 100 intervals before `until`)"),
        ("until" = Option<String>, Query, description = "End, exclusive (default: now)"),
        ("q" = Option<String>, Query, description = "Every filter of GET /v1/events applies")),
    responses((status = 200, body = crate::openapi::HistogramBody), (status = 400, body = crate::openapi::ErrorBody)))]
pub async fn histogram(
    State(state): State<AppState>,
    caller: Scoped<Read>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let started = Instant::now();
    let all_pairs = QueryPairs::parse(query.as_deref().unwrap_or(""));
    let interval_text = all_pairs.get("interval").unwrap_or("1h").to_string();
    let interval_ms = logbook_core::time::parse_duration(&interval_text)
        .filter(|millis| *millis >= 1000)
        .ok_or_else(|| ApiError::bad_request("invalid_filter", format!("`interval` must be a duration of at least 1s like 1m, 1h or 1d, got `{interval_text}`")))?;
    let group_by = match all_pairs.get("group_by").filter(|name| !name.is_empty()) {
        Some(name) => {
            let field = logbook_core::Field::parse(name)?;
            if matches!(
                field.kind(),
                logbook_core::filter::FieldKind::Time | logbook_core::filter::FieldKind::Seq
            ) || matches!(
                field,
                logbook_core::Field::Id | logbook_core::Field::Description
            ) {
                return Err(ApiError::bad_request("invalid_filter", format!("cannot group by `{name}`; group by a field with few values such as type, action, actor.id, entity.type, outcome, a resource or a metadata path")));
            }
            Some(field)
        }
        None => None,
    };
    let top = match all_pairs.get("top") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=1000).contains(top))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_filter",
                    format!("`top` must be a whole number from 1 to 1000, got `{text}`"),
                )
            })?,
        None => 10,
    };
    // The remaining parameters are the filters of a listing.
    let filter_pairs = QueryPairs::from_pairs(
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .filter(|(name, _)| !matches!(name.as_str(), "interval" | "group_by" | "top"))
            .collect(),
    );
    let now = now_millis();
    let mut list_query = filter_pairs.to_list_query(now)?;
    let tenant = caller.tenant(list_query.tenant.as_deref())?;
    list_query.filter =
        logbook_core::Filter::and(vec![list_query.filter, caller.pinned_filter(now)?]);
    let end = list_query.until.unwrap_or(now + 1);
    let start = list_query.since.unwrap_or(end - 100 * interval_ms);
    if start >= end {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "`since` must be before `until`",
        ));
    }
    if (end - start) / interval_ms > MAX_BUCKETS {
        return Err(ApiError::bad_request("invalid_filter", format!("the window holds more than {MAX_BUCKETS} buckets of {interval_text}; use a larger `interval` or a shorter window")));
    }
    let request = HistogramRequest {
        interval_ms,
        start,
        end,
        group_by: group_by.clone(),
        top,
    };
    let store = state.store.clone();
    let histogram =
        tokio::task::spawn_blocking(move || store.histogram(&tenant, &list_query, &request))
            .await
            .map_err(|_| ApiError::internal())??;
    let total: u64 = histogram.buckets.iter().map(|bucket| bucket.count).sum();
    // Written straight to text: with hourly buckets and hundreds of groups, a JSON tree of the same answer
    // took most of the request's time.
    let head = json!({
        "interval": interval_text,
        "interval_ms": interval_ms,
        "since": logbook_core::time::format_millis(start),
        "until": logbook_core::time::format_millis(end),
        "group_by": group_by.map(|field| field.name()),
        "groups": histogram.groups,
        "total": total,
    })
    .to_string();
    let names: Vec<String> = histogram
        .groups
        .iter()
        .map(|name| Value::String(name.clone()).to_string())
        .collect();
    let mut body = String::with_capacity(
        head.len()
            + histogram.buckets.len() * (48 + names.iter().map(|n| n.len() + 4).sum::<usize>()),
    );
    body.push_str(&head[..head.len() - 1]);
    body.push_str(",\"buckets\":[");
    let mut number = itoa::Buffer::new();
    for (position, bucket) in histogram.buckets.iter().enumerate() {
        if position > 0 {
            body.push(',');
        }
        body.push_str("{\"start\":\"");
        body.push_str(&logbook_core::time::format_millis(bucket.start));
        body.push_str("\",\"count\":");
        body.push_str(number.format(bucket.count));
        if !names.is_empty() {
            // Groups without events in the bucket are left out: with hundreds of groups most cells are zero.
            body.push_str(",\"groups\":{");
            let mut listed = false;
            for (name, count) in names.iter().zip(&bucket.groups) {
                if *count == 0 {
                    continue;
                }
                if listed {
                    body.push(',');
                }
                listed = true;
                body.push_str(name);
                body.push(':');
                body.push_str(number.format(*count));
            }
            body.push('}');
        }
        body.push('}');
    }
    body.push_str("]}");
    metrics::histogram!("logbook_query_seconds").record(started.elapsed().as_secs_f64());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
