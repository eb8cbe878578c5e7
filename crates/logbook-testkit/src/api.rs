use serde_json::{json, Value};

/// Creates tenant `tenant` on the server at `base` with the deployment `admin_key`, then a key of that tenant
/// with `scopes`, and returns the key's secret. Panics with the server's answer on any failure.
pub async fn tenant_key(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
    tenant: &str,
    scopes: &[&str],
) -> String {
    let created = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(admin_key)
        .json(&json!({"id": tenant}))
        .send()
        .await
        .expect("the server answers");
    let status = created.status();
    assert!(
        status == 201 || status == 409,
        "creating tenant {tenant}: {status} {}",
        created.text().await.unwrap_or_default()
    );
    let key: Value = http
        .post(format!("{base}/v1/tenants/{tenant}/keys"))
        .bearer_auth(admin_key)
        .json(&json!({"scopes": scopes}))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer");
    key["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {key}"))
        .to_string()
}
