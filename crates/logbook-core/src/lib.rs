//! Logbook's domain model, shared by the storage engines, the HTTP server and the CLI.
//!
//! Everything here is pure: no I/O, no clocks except where a caller passes `now`. The crate owns
//! - [`event`]: the event as stored and returned, and validation of client input into it;
//! - [`diff`]: the field-level delta between an audit event's `before` and `after` snapshots;
//! - [`canonical`]: the canonical JSON form (RFC 8785) and the SHA-256 `hash` of every event;
//! - [`filter`]: one filter AST, its parsers (query string, `q=` text syntax) and its evaluator;
//! - [`cursor`]: the opaque, tamper-checked pagination cursor (sealed by [`signed`]);
//! - [`json`]: strict JSON input (duplicate keys refused);
//! - [`time`]: the accepted time forms (RFC 3339, epoch milliseconds, relative times);
//! - [`demo`]: a generator of realistic chatbot-platform activity, for `logbook demo` and benchmarks.

pub mod canonical;
pub mod cursor;
pub mod demo;
pub mod diff;
pub mod error;
pub mod event;
pub mod filter;
pub mod json;
pub mod signed;
pub mod time;

pub use error::{Error, Result};
pub use event::{Event, Limits};
pub use filter::{Field, Filter, Op};
