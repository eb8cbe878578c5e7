//! Storage for Logbook: the [`EventStore`] trait every engine implements, and the embedded engine.
//!
//! The embedded engine ([`EmbeddedStore`]) keeps a data directory:
//!
//! ```text
//! <data dir>/
//!   LOCK               held (flock) by the process that has the directory open
//!   catalog.sqlite     tenants, API keys (hashed), settings          — see [`catalog`]
//!   wal/00000007.wal   the write-ahead log, zstd-compressed events    — see [`wal`]
//!   wal/00000008.wal   ...
//!   blocks/00000001.blk  sealed WAL segments rewritten per tenant     — see [`compact`]
//! ```
//!
//! The log is the source of truth; the search index ([`index`]) lives in memory and is rebuilt from the log
//! when the store opens. A PostgreSQL engine (planned) implements the same trait.

pub mod catalog;
pub mod codec;
pub mod columns;
pub mod compact;
pub mod engine;
pub mod error;
pub mod index;
pub mod io;
pub mod ordinals;
pub mod piece;
pub mod time_order;
pub mod wal;

pub use catalog::{ApiKey, CreatedKey, Principal, Scope, Tenant};
pub use engine::{EmbeddedStore, StoreOptions};
pub use error::{Result, StoreError};

use logbook_core::event::{Event, NewEvent};
use logbook_core::filter::query_string::{ListQuery, Order};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the API returns for each ingested event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    pub id: String,
    pub seq: u64,
    pub hash: String,
}

/// A request-level idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// Who may replay it: the tenant of the key, or `*admin` for the admin key.
    pub scope: String,
    pub key: String,
    /// Digest of the request body; a replay with a different body is refused.
    pub fingerprint: String,
}

/// One ingest request: validated events with their target tenants, all-or-nothing.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub events: Vec<(String, NewEvent)>,
    pub idempotency: Option<IdempotencyKey>,
}

/// The receipts of an append, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub receipts: Vec<Receipt>,
    /// The request-level idempotency key was seen before; nothing new was stored.
    pub replayed: bool,
}

/// A position in listing order: the last event of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub created_at: i64,
    pub seq: u64,
}

/// A stored event as the API's JSON text (the engine keeps events in that form, so listings copy bytes
/// instead of parsing and serializing again). It shares its record's text rather than copying its line.
#[derive(Debug, Clone)]
pub struct RawEvent {
    text: Arc<String>,
    start: u32,
    end: u32,
    pub position: Position,
}

impl RawEvent {
    /// The event at bytes `start..end` of a record's text; `None` unless that range is within the text and on
    /// character boundaries.
    pub fn new(
        text: Arc<String>,
        (start, end): (u32, u32),
        position: Position,
    ) -> Option<RawEvent> {
        text.get(start as usize..end as usize)?;
        Some(RawEvent {
            text,
            start,
            end,
            position,
        })
    }

    /// The event's JSON.
    pub fn json(&self) -> &str {
        &self.text[self.start as usize..self.end as usize]
    }

    pub fn parse(&self) -> serde_json::Result<Event> {
        serde_json::from_str(self.json())
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<RawEvent>,
    /// Where the next page starts, if there is one.
    pub next: Option<Position>,
}

/// A position in the all-tenants listing, whose order is `(created_at, tenant, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPosition {
    pub created_at: i64,
    pub tenant: String,
    pub seq: u64,
}

/// One page of the all-tenants listing.
#[derive(Debug, Clone)]
pub struct CrossTenantPage {
    /// Each event with its tenant, in the listing's order.
    pub items: Vec<(String, RawEvent)>,
    pub next: Option<TenantPosition>,
}

/// Where one tenant's listing resumes, given the all-tenants position `after`: at the same instant, tenants
/// that sort before `after.tenant` come before it in ascending order and after it in descending order.
pub(crate) fn tenant_resume(tenant: &str, after: &TenantPosition, order: Order) -> Position {
    use std::cmp::Ordering;
    let at = after.created_at;
    match (tenant.cmp(after.tenant.as_str()), order) {
        (Ordering::Equal, _) => Position {
            created_at: at,
            seq: after.seq,
        },
        // Already listed: everything at `at` and before.
        (Ordering::Less, Order::Asc) => Position {
            created_at: at,
            seq: u64::MAX,
        },
        // Not listed yet: everything at `at` and after.
        (Ordering::Greater, Order::Asc) => Position {
            created_at: at.saturating_sub(1),
            seq: u64::MAX,
        },
        // Not listed yet: everything at `at` and before.
        (Ordering::Less, Order::Desc) => Position {
            created_at: at.saturating_add(1),
            seq: 0,
        },
        // Already listed: everything at `at` and after.
        (Ordering::Greater, Order::Desc) => Position {
            created_at: at,
            seq: 0,
        },
    }
}

/// What to count: buckets of `interval_ms` from `start` (inclusive, aligned down to the interval) to `end`
/// (exclusive), optionally split by the values of one field.
#[derive(Debug, Clone)]
pub struct HistogramRequest {
    pub interval_ms: i64,
    pub start: i64,
    pub end: i64,
    pub group_by: Option<logbook_core::Field>,
    /// Most groups reported by name; the rest are counted as "other".
    pub top: usize,
}

/// Event counts per time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Group names, most frequent first; a last `"other"` holds every matching event outside the named groups
    /// (including events without the field). Empty without `group_by`.
    pub groups: Vec<String>,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub count: u64,
    /// Counts aligned with [`Histogram::groups`]. An event with several values (a metadata array) counts in
    /// each of its groups.
    pub groups: Vec<u64>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub events: u64,
    pub tenants: u64,
    pub wal_bytes: u64,
    /// Bytes of the block files compacted WAL segments were rewritten as.
    pub block_bytes: u64,
    /// Why the store no longer accepts writes (a failed fsync), until it is reopened; `None` when healthy.
    pub write_failure: Option<String>,
}

/// What `/healthz` reports: counters kept in memory, read without I/O (the full [`StoreStats`] lists and
/// measures the data files).
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub events: u64,
    pub tenants: u64,
    /// As in [`StoreStats::write_failure`].
    pub write_failure: Option<String>,
}

/// An append in progress: resolves once the request's events are durable and visible to reads (or failed).
pub struct PendingAppend(tokio::sync::oneshot::Receiver<AppendReply>);

/// What a store answers an append with: the outcome, and the request's events once the store is done with
/// them. The waiting caller frees those: it is usually the thread that parsed them, and an allocator frees
/// its own thread's memory more cheaply than another's (the engine's indexer thread spent most of its time
/// freeing the events of others).
pub type AppendReply = (Result<AppendOutcome>, Vec<Event>);

impl PendingAppend {
    pub fn new(receiver: tokio::sync::oneshot::Receiver<AppendReply>) -> PendingAppend {
        PendingAppend(receiver)
    }

    /// Waits without blocking a thread (for async callers).
    pub async fn wait(self) -> Result<AppendOutcome> {
        let (outcome, spent) = self.0.await.map_err(|_| StoreError::ShuttingDown)?;
        drop(spent);
        outcome
    }

    /// Blocks the calling thread (not for use inside an async runtime).
    pub fn wait_blocking(self) -> Result<AppendOutcome> {
        let (outcome, spent) = self
            .0
            .blocking_recv()
            .map_err(|_| StoreError::ShuttingDown)?;
        drop(spent);
        outcome
    }
}

/// A storage engine: events, tenants and keys. Methods block unless they return a future-like handle; async
/// callers use `spawn_blocking` for the blocking ones.
pub trait EventStore: Send + Sync + 'static {
    /// Queues a request's events for a durable append and returns at once; never blocks on I/O.
    fn submit(&self, request: AppendRequest) -> Result<PendingAppend>;
    /// Durably appends a request's events; returns only once they are durable and visible to reads.
    fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        self.submit(request)?.wait_blocking()
    }
    /// One event of `tenant` by id.
    fn get(&self, tenant: &str, id: &str) -> Result<Option<Event>>;
    /// A page of `tenant`'s events matching `query`, strictly after `after` in the query's order.
    fn list(&self, tenant: &str, query: &ListQuery, after: Option<Position>) -> Result<Page>;
    /// A page of every tenant's events matching `query` (the deployment admin's view), in
    /// `(created_at, tenant, seq)` order, strictly after `after`. [`tenant_resume`] gives where each tenant's
    /// own listing continues.
    fn list_all(
        &self,
        query: &ListQuery,
        after: Option<&TenantPosition>,
    ) -> Result<CrossTenantPage>;
    /// Counts of `tenant`'s events matching `query` (its filters, `since` and `until`) per time bucket.
    fn histogram(
        &self,
        tenant: &str,
        query: &ListQuery,
        request: &HistogramRequest,
    ) -> Result<Histogram>;
    fn stats(&self) -> StoreStats;
    /// The counters `/healthz` reports; never blocks on I/O, so it may be called on an async worker.
    fn health(&self) -> Health;

    fn authenticate(&self, token: &str) -> Option<Principal>;
    /// The secret that signs cursors; stable for the deployment.
    fn cursor_secret(&self) -> Vec<u8>;
    fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant>;
    fn get_tenant(&self, id: &str) -> Option<Tenant>;
    fn list_tenants(&self) -> Vec<Tenant>;
    fn create_key(&self, tenant: &str, name: &str, scopes: &[Scope]) -> Result<CreatedKey>;
    fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>>;
    fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<()>;
    /// Finishes pending writes and makes everything durable; later appends fail.
    fn shutdown(&self) -> Result<()>;
}
