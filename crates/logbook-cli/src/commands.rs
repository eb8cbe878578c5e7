//! The subcommands.

use crate::client::Client;
use crate::config::{
    Cli, Command, DemoArgs, ExportArgs, ExportFormat, FileConfig, IngestArgs, KeysCommand,
    OutputFormat, QueryArgs, ReindexArgs, Selection, ServeArgs, TenantsCommand,
};
use crate::output;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use logbook_core::demo::DemoGenerator;
use logbook_core::time::now_millis;
use logbook_server::{AppState, ServerConfig};
use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Ingest(args) => ingest(args).await,
        Command::Query(args) => query(args).await,
        Command::Export(args) => export(args).await,
        Command::Tenants(command) => tenants(command).await,
        Command::Keys(command) => keys(command).await,
        Command::Demo(args) => demo(args).await,
        Command::Reindex(args) => reindex(args).await,
    }
}

fn progress_bar(length: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} events ({per_sec})")
                .expect("valid template"),
        ),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./logbook-data"));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:7171".into());
    let admin_key = args.admin_key.or(file.admin_key);
    let mut config = ServerConfig::default();
    if let Some(limits) = file.limits {
        config.limits = limits;
    }
    if let Some(max_body_bytes) = file.max_body_bytes {
        config.max_body_bytes = max_body_bytes;
    }
    if let Some(seconds) = file.body_timeout_secs {
        config.body_timeout = std::time::Duration::from_secs(seconds.max(1));
    }
    if let Some(path) = &file.entity_catalog {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the entity catalog {}", path.display()))?;
        config.catalog = logbook_core::demo::Catalog::from_json(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", path.display()))?;
    }

    let mut options = StoreOptions::new(data_dir.clone());
    if let Some(mib) = args.segment_mib.or(file.segment_mib) {
        anyhow::ensure!(
            (1..=1024).contains(&mib),
            "segment_mib must be between 1 and 1024, not {mib}"
        );
        options.segment_bytes = mib << 20;
    }
    if let Some(mib) = args.cache_mib.or(file.cache_mib) {
        options.cache_bytes = mib << 20;
    }
    if let Some(level) = args.block_level.or(file.block_level) {
        anyhow::ensure!(
            (1..=19).contains(&level),
            "block_level must be between 1 and 19, not {level}"
        );
        options.compaction_level = level;
        options.dictionary_level = level;
    }
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(options))
        .await?
        .with_context(|| format!("failed to open the data directory {}", data_dir.display()))?;
    if let Some(generated) = store.ensure_admin_key(admin_key.as_deref())? {
        eprintln!("\nGenerated the deployment admin key. It is shown only this once; store it safely:\n\n    {generated}\n");
    }
    let store: Arc<dyn EventStore> = Arc::new(store);
    let state = AppState::new(store.clone(), config);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("failed to listen on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, data_dir = %data_dir.display(), "logbook is serving");
    logbook_server::serve(listener, state, shutdown_signal())
        .await
        .context("the server failed")?;
    tracing::info!("stopped accepting; flushing the write-ahead log");
    tokio::task::spawn_blocking(move || store.shutdown()).await??;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

async fn post_batch(client: &Client, tenant: &Option<String>, lines: &[String]) -> Result<()> {
    let path = match tenant {
        Some(tenant) => format!("/v1/events?tenant={tenant}"),
        None => "/v1/events".into(),
    };
    let body = lines.join("\n");
    client
        .send(
            client
                .request(Method::POST, &path)
                .header("content-type", "application/x-ndjson")
                .body(body),
        )
        .await?;
    Ok(())
}

async fn ingest(args: IngestArgs) -> Result<()> {
    if args.batch_size == 0 || args.batch_size > 10_000 {
        bail!("--batch-size must be between 1 and 10000");
    }
    let client = Client::new(&args.remote)?;
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("failed to open {}", args.file.display()))?,
        ))
    };
    let total = if args.file.as_os_str() == "-" {
        None
    } else {
        let file = std::fs::File::open(&args.file)?;
        Some(
            std::io::BufReader::new(file)
                .lines()
                .map_while(|line| line.ok())
                .filter(|line| !line.trim().is_empty())
                .count() as u64,
        )
    };
    let progress = progress_bar(total);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(args.batch_size);
    let mut sent = 0u64;
    let mut first_line_of_batch = 1usize;
    for (number, line) in reader.lines().enumerate() {
        let line = line.context("failed to read input")?;
        if line.trim().is_empty() {
            continue;
        }
        if batch.is_empty() {
            first_line_of_batch = number + 1;
        }
        batch.push(line);
        if batch.len() == args.batch_size {
            post_batch(&client, &args.tenant, &batch).await.with_context(|| format!("batch starting at input line {first_line_of_batch} was rejected; nothing of it was stored"))?;
            sent += batch.len() as u64;
            progress.inc(batch.len() as u64);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        post_batch(&client, &args.tenant, &batch).await.with_context(|| format!("batch starting at input line {first_line_of_batch} was rejected; nothing of it was stored"))?;
        sent += batch.len() as u64;
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "ingested {sent} events in {seconds:.2}s ({:.0} events/s)",
        sent as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// The query parameters of a selection.
fn selection_pairs(selection: &Selection) -> Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(q) = &selection.q {
        pairs.push(("q".into(), q.clone()));
    }
    for (name, value) in [
        ("since", &selection.since),
        ("until", &selection.until),
        ("tenant", &selection.tenant),
    ] {
        if let Some(value) = value {
            pairs.push((name.into(), value.clone()));
        }
    }
    if selection.asc {
        pairs.push(("order".into(), "asc".into()));
    }
    for filter in &selection.filters {
        let (name, value) = filter
            .split_once('=')
            .with_context(|| format!("--filter `{filter}` must be KEY=VALUE"))?;
        pairs.push((name.into(), value.into()));
    }
    Ok(pairs)
}

/// Streams `GET /v1/events/export` to standard output or a file, counting events on a spinner.
async fn export(args: ExportArgs) -> Result<()> {
    let client = Client::new(&args.remote)?;
    let mut pairs = selection_pairs(&args.selection)?;
    let csv = args.format == ExportFormat::Csv;
    pairs.push(("format".into(), if csv { "csv" } else { "jsonl" }.into()));
    let mut response = client
        .send_streaming(
            client
                .request(Method::GET, "/v1/events/export")
                .query(&pairs),
        )
        .await?;
    let partial = args.output.as_ref().map(|path| {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    let mut out: Box<dyn Write> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = progress_bar(None);
    // Lines: events for JSONL; for CSV, rows plus the header (a CSV cell may hold a line break, so the
    // count is of line ends outside quotes).
    let mut lines = 0u64;
    let mut in_quotes = false;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                drop(out);
                bail!(
                    "the export was cut off after {} events: {error}; nothing is complete{}",
                    lines.saturating_sub(u64::from(csv)),
                    partial
                        .as_ref()
                        .map(|path| format!(" (the part received is in {})", path.display()))
                        .unwrap_or_default()
                );
            }
        };
        for &byte in chunk.iter() {
            match byte {
                b'"' if csv => in_quotes = !in_quotes,
                b'\n' if !in_quotes => lines += 1,
                _ => {}
            }
        }
        progress.set_position(lines.saturating_sub(u64::from(csv)));
        out.write_all(&chunk)
            .context("failed to write the export")?;
    }
    out.flush().context("failed to write the export")?;
    drop(out);
    progress.finish_and_clear();
    let events = lines.saturating_sub(u64::from(csv));
    if let (Some(partial), Some(path)) = (&partial, &args.output) {
        std::fs::rename(partial, path).with_context(|| {
            format!(
                "failed to rename {} to {}",
                partial.display(),
                path.display()
            )
        })?;
        eprintln!("exported {events} events to {}", path.display());
    } else if std::io::stderr().is_terminal() {
        eprintln!("exported {events} events");
    }
    Ok(())
}

async fn query(args: QueryArgs) -> Result<()> {
    let client = Client::new(&args.remote)?;
    let pairs = selection_pairs(&args.selection)?;
    let format = args.format.unwrap_or(if output::stdout_is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let mut events: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut has_more = false;
    while events.len() < args.limit {
        let mut page_pairs = pairs.clone();
        page_pairs.push((
            "limit".into(),
            (args.limit - events.len()).min(1000).to_string(),
        ));
        if let Some(cursor) = &cursor {
            page_pairs.push(("cursor".into(), cursor.clone()));
        }
        let page = client
            .json(client.request(Method::GET, "/v1/events").query(&page_pairs))
            .await?;
        events.extend(page["items"].as_array().cloned().unwrap_or_default());
        has_more = page["has_more"].as_bool().unwrap_or(false);
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let mut stdout = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            writeln!(stdout, "{}", output::events_table(&events))?;
            writeln!(
                stdout,
                "{} events{}",
                events.len(),
                if has_more {
                    " (more available: raise --limit)"
                } else {
                    ""
                }
            )?;
        }
        OutputFormat::Json => writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(
                &json!({"items": events, "has_more": has_more, "next_cursor": cursor})
            )?
        )?,
        OutputFormat::Jsonl => {
            for event in &events {
                writeln!(stdout, "{event}")?;
            }
        }
        OutputFormat::Csv => {
            let parsed: Vec<logbook_core::Event> = events
                .iter()
                .map(|e| serde_json::from_value(e.clone()))
                .collect::<Result<_, _>>()?;
            write!(stdout, "{}", logbook_server::csv::render(&parsed))?;
        }
    }
    Ok(())
}

async fn tenants(command: TenantsCommand) -> Result<()> {
    match command {
        TenantsCommand::Create { id, name, remote } => {
            let client = Client::new(&remote)?;
            let body = json!({"id": id, "name": name.unwrap_or_else(|| id.clone())});
            let tenant = client
                .json(client.request(Method::POST, "/v1/tenants").json(&body))
                .await?;
            output::print_items(&tenant, &["id", "name", "created_at"]);
        }
        TenantsCommand::List { remote } => {
            let client = Client::new(&remote)?;
            let tenants = client
                .json(client.request(Method::GET, "/v1/tenants"))
                .await?;
            output::print_items(&tenants, &["id", "name", "created_at"]);
        }
    }
    Ok(())
}

async fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
            remote,
        } => {
            let client = Client::new(&remote)?;
            let body = json!({"name": name.unwrap_or_else(|| "cli".into()), "scopes": scopes});
            let key = client
                .json(
                    client
                        .request(Method::POST, &format!("/v1/tenants/{tenant}/keys"))
                        .json(&body),
                )
                .await?;
            output::print_items(&key, &["id", "tenant", "name", "scopes", "key"]);
            if output::stdout_is_terminal() {
                eprintln!("The key secret is shown only now; store it safely.");
            }
        }
        KeysCommand::List { tenant, remote } => {
            let client = Client::new(&remote)?;
            let keys = client
                .json(client.request(Method::GET, &format!("/v1/tenants/{tenant}/keys")))
                .await?;
            output::print_items(&keys, &["id", "name", "scopes", "created_at", "revoked_at"]);
        }
        KeysCommand::Revoke {
            tenant,
            key_id,
            remote,
        } => {
            let client = Client::new(&remote)?;
            client
                .send(client.request(
                    Method::DELETE,
                    &format!("/v1/tenants/{tenant}/keys/{key_id}"),
                ))
                .await?;
            eprintln!("revoked {key_id}");
        }
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let client = Client::new(&args.remote)?;
    let create = client
        .request(Method::POST, "/v1/tenants")
        .json(&json!({"id": args.tenant, "name": "Demo chatbot workspace"}));
    match client.send(create).await {
        Ok(_) => eprintln!("created tenant `{}`", args.tenant),
        Err(error) if error.to_string().contains("already exists") => {
            eprintln!("adding to existing tenant `{}`", args.tenant)
        }
        Err(error) => {
            return Err(error.context(
                "creating the demo tenant needs the admin key (--api-key or LOGBOOK_API_KEY)",
            ))
        }
    }
    let mut generator = DemoGenerator::new(args.seed);
    let end = now_millis();
    let span = i64::from(args.days.max(1)) * 86_400_000;
    let start = end - span;
    let step = span / args.events.max(1) as i64;
    let progress = progress_bar(Some(args.events as u64));
    let mut batch = Vec::with_capacity(1000);
    for index in 0..args.events {
        batch.push(generator.event(start + index as i64 * step).to_string());
        if batch.len() == 1000 || index + 1 == args.events {
            post_batch(&client, &Some(args.tenant.clone()), &batch).await?;
            progress.inc(batch.len() as u64);
            batch.clear();
        }
    }
    progress.finish_and_clear();
    let key = client
        .json(
            client
                .request(Method::POST, &format!("/v1/tenants/{}/keys", args.tenant))
                .json(&json!({"name": "demo", "scopes": ["ingest", "read"]})),
        )
        .await?;
    let secret = key["key"].as_str().unwrap_or_default();
    println!(
        "Ingested {} demo events into tenant `{}` over the last {} days.",
        args.events, args.tenant, args.days
    );
    println!("A read+ingest key for it (shown once): {secret}\n");
    println!("Try:\n  LOGBOOK_API_KEY={secret} logbook query 'action:DELETED' --since 24h");
    println!(
        "  curl -H 'Authorization: Bearer {secret}' '{}/v1/events?limit=5&type=integration.error'",
        args.remote.url
    );
    Ok(())
}

async fn reindex(args: ReindexArgs) -> Result<()> {
    let data_dir = args.data_dir.clone();
    let started = Instant::now();
    let (events, rebuilt_seconds, mismatched) =
        tokio::task::spawn_blocking(move || -> Result<(u64, f64, Vec<String>)> {
            let mut options = StoreOptions::new(&data_dir);
            options.rebuild_index = true;
            let store = EmbeddedStore::open(options)
                .with_context(|| format!("failed to open {}", data_dir.display()))?;
            let rebuilt_seconds = started.elapsed().as_secs_f64();
            let progress = progress_bar(Some(store.stats().events));
            let mut count = 0u64;
            let mut mismatched = Vec::new();
            store.for_each_event(|event| {
                count += 1;
                progress.inc(1);
                if event.compute_hash() != event.hash {
                    mismatched.push(event.id.clone());
                }
            })?;
            progress.finish_and_clear();
            store.shutdown()?;
            Ok((count, rebuilt_seconds, mismatched))
        })
        .await??;
    eprintln!("rebuilt the index from the log: {events} events in {rebuilt_seconds:.2}s");
    eprintln!(
        "verified every event's hash in {:.2}s",
        started.elapsed().as_secs_f64() - rebuilt_seconds
    );
    if !mismatched.is_empty() {
        bail!(
            "{} events do not match their hash (first: {})",
            mismatched.len(),
            mismatched[0]
        );
    }
    eprintln!("every event matches its hash");
    Ok(())
}
