//! A small HTTP client for the CLI's remote commands.

use crate::config::Remote;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// The server could not be reached (exit code 3).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach the Logbook server at {}", self.0)
    }
}

impl std::error::Error for Unreachable {}

pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(remote: &Remote) -> Result<Client> {
        let http = reqwest::Client::builder()
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Client {
            http,
            base: remote.url.trim_end_matches('/').to_string(),
            api_key: remote.api_key.clone(),
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{}", self.base, path));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends and returns the response if it is a success, or an error carrying the API's error message.
    pub async fn send_streaming(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let response = builder.send().await.map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                anyhow!(Unreachable(self.base.clone()))
            } else {
                anyhow!(error).context("request failed")
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .text()
            .await
            .context("failed to read the response")?;
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|value| {
                let error = value.get("error")?;
                Some(format!(
                    "{} ({}){}",
                    error.get("message")?.as_str()?,
                    error.get("code")?.as_str()?,
                    error
                        .get("details")
                        .map(|d| format!(" {d}"))
                        .unwrap_or_default()
                ))
            })
            .unwrap_or(body);
        Err(anyhow!("the server answered {status}: {message}"))
    }

    /// Sends and returns the body, or an error carrying the API's error message.
    pub async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String)> {
        let response = self.send_streaming(builder).await?;
        let status = response.status();
        let body = response
            .text()
            .await
            .context("failed to read the response")?;
        Ok((status, body))
    }

    pub async fn json(&self, builder: reqwest::RequestBuilder) -> Result<Value> {
        let (_, body) = self.send(builder).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).context("the server answered with invalid JSON")
    }
}
