//! The `logbook` binary as a user runs it: a TOML-configured server, then tenants, keys, ingest, query (every
//! format), demo, and the exit codes that scripts rely on.

mod support;

use serde_json::Value;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use support::{free_port, wait_for_port};

const ADMIN: &str = "cli-test-admin";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("logbook.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nadmin_key = \"{ADMIN}\"\n[limits]\nmax_batch_events = 500\n", dir.path().join("data").display()),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("LOGBOOK_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for_port(port);
    Server {
        child,
        url,
        _dir: dir,
    }
}

fn logbook(server_url: &str, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(args)
        .env("LOGBOOK_URL", server_url)
        .env("LOGBOOK_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_output(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn a_session_with_the_cli() {
    let server = start();
    let url = server.url.as_str();
    let tenant = json_output(&logbook(
        url,
        ADMIN,
        &["tenants", "create", "acme", "--name", "Acme Inc"],
        None,
    ));
    assert_eq!(tenant["id"], "acme");
    let tenants = json_output(&logbook(url, ADMIN, &["tenants", "list"], None));
    assert_eq!(tenants["items"][0]["name"], "Acme Inc");
    let key = json_output(&logbook(
        url,
        ADMIN,
        &["keys", "create", "acme", "--scopes", "ingest,read"],
        None,
    ));
    let secret = key["key"].as_str().unwrap().to_string();

    // Ingest from stdin in batches of 3 (1100 lines would exceed the server's 500-event limit in one request).
    let lines: String = (0..1100)
        .map(|i| {
            format!(
                "{{\"type\":\"cli.{}\",\"metadata\":{{\"i\":{i}}}}}\n",
                i % 2
            )
        })
        .collect();
    let ingest = logbook(
        url,
        &secret,
        &["ingest", "-", "--batch-size", "400"],
        Some(&lines),
    );
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    assert!(String::from_utf8_lossy(&ingest.stderr).contains("ingested 1100 events"));

    // Query: JSON when piped, following cursors past one page; JSONL and CSV on request.
    let all = json_output(&logbook(
        url,
        &secret,
        &["query", "type:cli.1", "--limit", "2000"],
        None,
    ));
    assert_eq!(all["items"].as_array().unwrap().len(), 550);
    assert_eq!(all["has_more"], false);
    let jsonl = logbook(
        url,
        &secret,
        &[
            "query", "--limit", "5", "--format", "jsonl", "--filter", "meta.i=7",
        ],
        None,
    );
    let text = String::from_utf8(jsonl.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(text.lines().next().unwrap()).unwrap()["metadata"]["i"],
        7
    );
    let csv = logbook(
        url,
        &secret,
        &["query", "--limit", "3", "--format", "csv", "--asc"],
        None,
    );
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("id,seq,tenant,type"));
    assert_eq!(csv.lines().count(), 4);
    let table = logbook(
        url,
        &secret,
        &["query", "--limit", "2", "--format", "table"],
        None,
    );
    assert!(String::from_utf8_lossy(&table.stdout).contains("created_at"));

    // A rejected batch names its line; the exit code is 1.
    let bad = logbook(
        url,
        &secret,
        &["ingest", "-"],
        Some("{\"type\":\"ok\"}\n{\"outcome\":\"maybe\",\"type\":\"x\"}\n"),
    );
    assert_eq!(bad.status.code(), Some(1));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("line 2") && message.contains("outcome"),
        "{message}"
    );

    // Demo fills a tenant and prints a working key.
    let demo = logbook(
        url,
        ADMIN,
        &["demo", "--tenant", "demo", "--events", "300", "--days", "2"],
        None,
    );
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let demo_out = String::from_utf8_lossy(&demo.stdout);
    let demo_key = demo_out
        .split("(shown once): ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let demo_events = json_output(&logbook(
        url,
        &demo_key,
        &["query", "--limit", "1000"],
        None,
    ));
    assert_eq!(demo_events["items"].as_array().unwrap().len(), 300);

    // Keys: list without secrets, revoke, then the key no longer works (exit code 1).
    let listed = logbook(url, ADMIN, &["keys", "list", "acme"], None);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&secret));
    let revoke = logbook(
        url,
        ADMIN,
        &["keys", "revoke", "acme", key["id"].as_str().unwrap()],
        None,
    );
    assert!(revoke.status.success());
    assert_eq!(
        logbook(url, &secret, &["query"], None).status.code(),
        Some(1)
    );
}

#[test]
fn export_streams_every_event_to_standard_output_or_a_file() {
    let server = start();
    let url = server.url.as_str();
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        json_output(&logbook(url, ADMIN, &["tenants", "create", tenant], None));
        let key = json_output(&logbook(
            url,
            ADMIN,
            &["keys", "create", tenant, "--scopes", "ingest,read"],
            None,
        ));
        keys.push(key["key"].as_str().unwrap().to_string());
    }
    // 2,500 events (three of the export's internal pages); a description with a comma, a quote and a line
    // break, so CSV rows hold quoted line breaks.
    let lines: String = (0..2500)
        .map(|i| {
            format!(
                "{{\"type\":\"cli.{}\",\"description\":\"row {i}, \\\"quoted\\\"\\nsecond line\"}}\n",
                i % 2
            )
        })
        .collect();
    let ingest = logbook(
        url,
        &keys[0],
        &["ingest", "-", "--batch-size", "500"],
        Some(&lines),
    );
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    logbook(
        url,
        &keys[1],
        &["ingest", "-"],
        Some("{\"type\":\"globex.only\"}\n"),
    );

    // JSON lines to standard output, oldest first, every event once.
    let jsonl = logbook(url, &keys[0], &["export", "--asc"], None);
    assert!(
        jsonl.status.success(),
        "{}",
        String::from_utf8_lossy(&jsonl.stderr)
    );
    let seqs: Vec<u64> = String::from_utf8(jsonl.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=2500).collect::<Vec<u64>>());
    let odd = logbook(url, &keys[0], &["export", "type:cli.1"], None);
    assert_eq!(String::from_utf8(odd.stdout).unwrap().lines().count(), 1250);

    // CSV to a file: one header row, quoted line breaks kept; written whole, no partial file left.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.csv");
    let csv = logbook(
        url,
        &keys[0],
        &[
            "export",
            "--format",
            "csv",
            "--asc",
            "--output",
            path.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        csv.status.success(),
        "{}",
        String::from_utf8_lossy(&csv.stderr)
    );
    assert!(String::from_utf8_lossy(&csv.stderr).contains("exported 2500 events"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap().get(1), Some("seq"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2500);
    assert_eq!(rows[2499].get(1), Some("2500"));
    assert_eq!(rows[0].get(14), Some("row 0, \"quoted\"\nsecond line"));
    assert!(!dir.path().join("acme.csv.partial").exists());

    // The admin key without --tenant exports every tenant; a tenant key sees only its own.
    let every = logbook(url, ADMIN, &["export"], None);
    assert_eq!(
        String::from_utf8(every.stdout).unwrap().lines().count(),
        2501
    );
    let theirs = logbook(url, &keys[1], &["export"], None);
    assert_eq!(String::from_utf8(theirs.stdout).unwrap().lines().count(), 1);

    // A parameter an export does not take: the server's message, exit code 1.
    let refused = logbook(url, &keys[0], &["export", "--filter", "limit=5"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`limit` does not apply"));
}

#[test]
fn exit_codes_for_usage_errors_and_unreachable_servers() {
    let usage = logbook(
        "http://127.0.0.1:9",
        "k",
        &["query", "--no-such-flag"],
        None,
    );
    assert_eq!(usage.status.code(), Some(2));
    let unreachable = logbook("http://127.0.0.1:9", "k", &["query"], None);
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&unreachable.stderr)
    );
    let help = logbook("http://127.0.0.1:9", "k", &["ingest", "--help"], None);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--batch-size"));
}

#[test]
fn the_server_runs_without_transparent_huge_pages() {
    // mimalloc asks for huge pages on its arenas; `logbook` turns them off for its process (its peak RSS was
    // ~90 MB lower at 1M events without them). The kernel reports the process's setting in its status.
    let server = start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))
        .expect("the kernel reports THP_enabled (Linux 5.0 or later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[test]
fn block_levels_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_logbook"))
            .arg("serve")
            .args(args)
            .env("LOGBOOK_DATA_DIR", dir.path().join("data"))
            .env("LOGBOOK_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap()
    };
    let flag = serve(&["--block-level", "0"]);
    assert_eq!(flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&flag.stderr).contains("--block-level"));
    let config = dir.path().join("logbook.toml");
    std::fs::write(&config, "block_level = 30\n").unwrap();
    let file = serve(&["--config", config.to_str().unwrap()]);
    assert_eq!(file.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&file.stderr)
            .contains("block_level must be between 1 and 19, not 30"),
        "{}",
        String::from_utf8_lossy(&file.stderr)
    );
}
