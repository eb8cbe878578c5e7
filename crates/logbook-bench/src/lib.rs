//! Helpers shared by the two benchmark binaries: `logbook-bench` (Logbook alone) and `logbook-compare`
//! (Logbook, PostgreSQL and SQLite side by side).

use anyhow::Result;
use std::path::Path;

/// Total size of the files under `path`, recursively (0 if it does not exist).
pub fn directory_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                directory_bytes(&path)
            } else {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// The value at `fraction` (0 to 1) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

/// One ingest request to `POST /v1/events`; anything but 201 is an error.
pub async fn post_events(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    content_type: &str,
    body: String,
) -> Result<()> {
    let response = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "ingest failed: {}",
        response.text().await?
    );
    Ok(())
}
