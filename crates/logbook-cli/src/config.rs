//! Command-line arguments, `LOGBOOK_*` environment variables and the optional TOML configuration file.
//! Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::PathBuf;

/// Logbook: a self-hosted event log and audit log service.
#[derive(Parser, Debug)]
#[command(name = "logbook", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Log filter, e.g. `info` or `logbook=debug`.
    #[arg(long, env = "LOGBOOK_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(
        long,
        env = "LOGBOOK_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a client command finds the server.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Base URL of the Logbook server.
    #[arg(long, env = "LOGBOOK_URL", default_value = "http://127.0.0.1:7171")]
    pub url: String,
    /// API key (the admin key for tenant and key management).
    #[arg(long, env = "LOGBOOK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server on the embedded store.
    Serve(ServeArgs),
    /// Send events from a JSONL file (or `-` for standard input), in batches.
    Ingest(IngestArgs),
    /// List events, newest first, as a table on a terminal or JSON when piped.
    Query(QueryArgs),
    /// Export every matching event as JSON lines or CSV, streamed to standard output or a file.
    Export(ExportArgs),
    /// Manage tenants (admin key).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage a tenant's API keys (admin key, or the tenant's admin-scoped key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Fill a tenant with realistic chatbot-platform activity, to see Logbook with real-looking data.
    Demo(DemoArgs),
    /// Rebuild the search index from the write-ahead log and verify every event's hash (server stopped).
    Reindex(ReindexArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory of the embedded store.
    #[arg(long, env = "LOGBOOK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "LOGBOOK_LISTEN")]
    pub listen: Option<String>,
    /// Deployment admin key. If unset, the first start on an empty data directory generates one and prints it.
    #[arg(long, env = "LOGBOOK_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Size (MiB) at which a write-ahead log segment is sealed and a new one started; sealed segments are
    /// compacted into per-tenant block files in the background. Default 40.
    #[arg(long, env = "LOGBOOK_SEGMENT_MIB", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub segment_mib: Option<u64>,
    /// Memory (MiB) for decompressed events kept for reads. Default 32.
    #[arg(long, env = "LOGBOOK_CACHE_MIB")]
    pub cache_mib: Option<usize>,
    /// zstd level (1-19) of the block files that sealed segments are compacted into. Default: 1 (3 for the
    /// blocks written before the store has trained its dictionary). Higher levels take less disk for more
    /// of the compactor's CPU, which ingest shares: at 1M demo events, level 6 stored ~10 bytes per event
    /// less than level 1 and took ~1.3x its compaction time (BENCHMARKS.md).
    #[arg(long, env = "LOGBOOK_BLOCK_LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub block_level: Option<i32>,
    /// Optional TOML configuration file (keys: data_dir, listen, admin_key, max_body_bytes, body_timeout_secs,
    /// entity_catalog, segment_mib, cache_mib, block_level, [limits]).
    #[arg(long, env = "LOGBOOK_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The TOML configuration file. Flags and environment variables take precedence.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub admin_key: Option<String>,
    pub max_body_bytes: Option<usize>,
    /// Seconds a client may take to send a request body (default 60); slower bodies are answered 408.
    pub body_timeout_secs: Option<u64>,
    #[serde(default)]
    pub limits: Option<logbook_core::Limits>,
    /// JSON file of entity types (`{"entity_types": [{"name", "description"}], "actions": [...]}`); default:
    /// the chatbot-platform catalog shipped with Logbook.
    pub entity_catalog: Option<PathBuf>,
    /// See `logbook serve --segment-mib`.
    pub segment_mib: Option<u64>,
    /// See `logbook serve --cache-mib`.
    pub cache_mib: Option<usize>,
    /// See `logbook serve --block-level`.
    pub block_level: Option<i32>,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// JSONL file of events, or `-` for standard input.
    pub file: PathBuf,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Target tenant (needed with the admin key).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Jsonl,
    Csv,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// The parameters that choose events, shared by `query` and `export`.
#[derive(Args, Debug)]
pub struct Selection {
    /// Query in the q= syntax, e.g. `action:DELETED entity.type:card -actor.id:system "renamed"`.
    pub q: Option<String>,
    /// Only events created at or after this time (RFC 3339, epoch ms, or relative like 1h, 7d, now-15m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events created before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub asc: bool,
    /// Extra filter parameters as `key=value`, e.g. `--filter bot_id=bot_1 --filter 'filter[seq][gt]=10'`.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Tenant to read; with the admin key, leave it out to read every tenant.
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Write to this file instead of standard output (written as FILE.partial and renamed when complete).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Most events to show (follows cursors past 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Output format; default: table on a terminal, JSON otherwise.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Tenant id: a-z, 0-9, `_`, `-`.
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        tenant: String,
        /// Comma-separated scopes: ingest, read, admin.
        #[arg(long, value_delimiter = ',', default_value = "ingest,read")]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a tenant's keys (without secrets).
    List {
        tenant: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a key.
    Revoke {
        tenant: String,
        key_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Tenant to fill (created if missing).
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    /// Number of events.
    #[arg(long, default_value_t = 5000)]
    pub events: usize,
    /// Spread the events over this many past days.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Random seed, for reproducible data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Data directory of the embedded store.
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./logbook-data")]
    pub data_dir: PathBuf,
}

pub fn init_logging(global: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
