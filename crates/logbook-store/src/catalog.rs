//! The catalog: tenants, API keys and deployment settings, in SQLite (`catalog.sqlite` in the data directory).
//!
//! Keys are stored only as SHA-256 hashes; the secret is returned once, when the key is created. The whole key
//! table is cached in memory (it is small), so authenticating a request costs one hash and one map lookup.
//! Writes use `synchronous=FULL`, so a created tenant or revoked key survives a crash once acknowledged.
//!
//! Tables: `settings(name, value)` — `format_version`, `admin_key_hash`, `cursor_secret`;
//! `tenants(id, name, created_at)`; `api_keys(id, tenant, name, key_hash, scopes, created_at, revoked_at)`.

use crate::error::{Result, StoreError};
use logbook_core::time::{format_millis, now_millis};
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

pub const CATALOG_FORMAT_VERSION: &str = "1";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

impl Scope {
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "ingest" => Some(Scope::Ingest),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// A tenant, as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// An API key without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The result of creating a key: the only time the secret is visible.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub key_secret: String,
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Admin,
    Tenant {
        tenant: String,
        key_id: String,
        scopes: Vec<Scope>,
    },
    /// A short-lived, read-only viewer token, verified by the server (the catalog never returns this):
    /// reads of `tenant` only, always ANDed with the pinned `filter` (a query string of filters; may be empty).
    Viewer {
        tenant: String,
        filter: String,
    },
}

pub struct Catalog {
    connection: Mutex<Connection>,
    /// key hash → key, for keys that are not revoked.
    active_keys: RwLock<HashMap<String, ApiKey>>,
    tenant_ids: RwLock<HashMap<String, Tenant>>,
    admin_key_hash: RwLock<Option<String>>,
    cursor_secret: Vec<u8>,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    hex::encode(buffer)
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog> {
        let connection = Connection::open(path)?;
        connection.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
                 key_hash TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);",
        )?;
        let setting = |name: &str| -> Result<Option<String>> {
            Ok(connection
                .query_row(
                    "SELECT value FROM settings WHERE name = ?1",
                    [name],
                    |row| row.get(0),
                )
                .optional()?)
        };
        match setting("format_version")? {
            None => {
                connection.execute("INSERT INTO settings VALUES ('format_version', ?1)", [CATALOG_FORMAT_VERSION])?;
            }
            Some(version) if version == CATALOG_FORMAT_VERSION => {}
            Some(version) => {
                return Err(StoreError::Corruption {
                    file: path.to_path_buf(),
                    offset: 0,
                    reason: format!("catalog format version {version} is not supported (expects {CATALOG_FORMAT_VERSION})"),
                })
            }
        }
        let cursor_secret = match setting("cursor_secret")? {
            Some(secret) => secret,
            None => {
                let secret = random_token(32);
                connection.execute(
                    "INSERT INTO settings VALUES ('cursor_secret', ?1)",
                    [&secret],
                )?;
                secret
            }
        };
        let admin_key_hash = setting("admin_key_hash")?;
        let mut tenants = HashMap::new();
        {
            let mut statement = connection.prepare("SELECT id, name, created_at FROM tenants")?;
            let rows = statement.query_map([], |row| {
                Ok(Tenant {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: format_millis(row.get(2)?),
                })
            })?;
            for tenant in rows {
                let tenant = tenant?;
                tenants.insert(tenant.id.clone(), tenant);
            }
        }
        let mut keys = HashMap::new();
        {
            let mut statement = connection
                .prepare("SELECT id, tenant, name, key_hash, scopes, created_at FROM api_keys WHERE revoked_at IS NULL")?;
            let rows = statement.query_map([], |row| {
                let hash: String = row.get(3)?;
                let scopes: String = row.get(4)?;
                Ok((
                    hash,
                    ApiKey {
                        id: row.get(0)?,
                        tenant: row.get(1)?,
                        name: row.get(2)?,
                        scopes: scopes.split(',').filter_map(Scope::parse).collect(),
                        created_at: format_millis(row.get(5)?),
                        revoked_at: None,
                    },
                ))
            })?;
            for row in rows {
                let (hash, key) = row?;
                keys.insert(hash, key);
            }
        }
        Ok(Catalog {
            connection: Mutex::new(connection),
            active_keys: RwLock::new(keys),
            tenant_ids: RwLock::new(tenants),
            admin_key_hash: RwLock::new(admin_key_hash),
            cursor_secret: cursor_secret.into_bytes(),
        })
    }

    /// The secret that signs pagination cursors.
    pub fn cursor_secret(&self) -> &[u8] {
        &self.cursor_secret
    }

    /// Installs the admin key. With `Some(key)` that key becomes the admin key; with `None` the stored one is
    /// kept, or a new one is generated and returned (the only time it is visible).
    pub fn ensure_admin_key(&self, configured: Option<&str>) -> Result<Option<String>> {
        let (hash, generated) = match configured {
            Some(key) => (hash_secret(key), None),
            None => {
                if self.admin_key_hash.read().is_some() {
                    return Ok(None);
                }
                let key = format!("lbk_admin_{}", random_token(24));
                (hash_secret(&key), Some(key))
            }
        };
        self.connection
            .lock()
            .execute("INSERT INTO settings VALUES ('admin_key_hash', ?1) ON CONFLICT(name) DO UPDATE SET value = ?1", [&hash])?;
        *self.admin_key_hash.write() = Some(hash);
        Ok(generated)
    }

    /// Resolves a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = hash_secret(token);
        if self.admin_key_hash.read().as_deref() == Some(hash.as_str()) {
            return Some(Principal::Admin);
        }
        self.active_keys
            .read()
            .get(&hash)
            .map(|key| Principal::Tenant {
                tenant: key.tenant.clone(),
                key_id: key.id.clone(),
                scopes: key.scopes.clone(),
            })
    }

    pub fn tenant_exists(&self, id: &str) -> bool {
        self.tenant_ids.read().contains_key(id)
    }

    pub fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant> {
        let created_at = now_millis();
        let connection = self.connection.lock();
        let inserted = connection.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
            params![id, name, created_at],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant `{id}` already exists"
            )));
        }
        let tenant = Tenant {
            id: id.to_string(),
            name: name.to_string(),
            created_at: format_millis(created_at),
        };
        self.tenant_ids
            .write()
            .insert(id.to_string(), tenant.clone());
        Ok(tenant)
    }

    pub fn list_tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.tenant_ids.read().values().cloned().collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        tenants
    }

    pub fn tenant_count(&self) -> usize {
        self.tenant_ids.read().len()
    }

    pub fn get_tenant(&self, id: &str) -> Option<Tenant> {
        self.tenant_ids.read().get(id).cloned()
    }

    pub fn create_key(&self, tenant: &str, name: &str, scopes: &[Scope]) -> Result<CreatedKey> {
        if !self.tenant_exists(tenant) {
            return Err(StoreError::NotFound(format!(
                "tenant `{tenant}` does not exist"
            )));
        }
        let secret = format!("lbk_{}", random_token(24));
        let hash = hash_secret(&secret);
        let id = format!("key_{}", random_token(8));
        let created_at = now_millis();
        let scope_text: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
        self.connection.lock().execute(
            "INSERT INTO api_keys (id, tenant, name, key_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, tenant, name, hash, scope_text.join(","), created_at],
        )?;
        let key = ApiKey {
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at: format_millis(created_at),
            revoked_at: None,
        };
        self.active_keys.write().insert(hash, key.clone());
        Ok(CreatedKey {
            key,
            key_secret: secret,
        })
    }

    pub fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let connection = self.connection.lock();
        let mut statement = connection.prepare(
            "SELECT id, tenant, name, scopes, created_at, revoked_at FROM api_keys WHERE tenant = ?1 ORDER BY created_at, id",
        )?;
        let rows = statement.query_map([tenant], |row| {
            let scopes: String = row.get(3)?;
            let revoked_at: Option<i64> = row.get(5)?;
            Ok(ApiKey {
                id: row.get(0)?,
                tenant: row.get(1)?,
                name: row.get(2)?,
                scopes: scopes.split(',').filter_map(Scope::parse).collect(),
                created_at: format_millis(row.get(4)?),
                revoked_at: revoked_at.map(format_millis),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes a key of `tenant`; revoking twice is not an error.
    pub fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<()> {
        let connection = self.connection.lock();
        let found: Option<String> = connection
            .query_row(
                "SELECT key_hash FROM api_keys WHERE id = ?1 AND tenant = ?2",
                params![key_id, tenant],
                |row| row.get(0),
            )
            .optional()?;
        let Some(hash) = found else {
            return Err(StoreError::NotFound(format!(
                "key `{key_id}` does not exist in tenant `{tenant}`"
            )));
        };
        connection.execute(
            "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![now_millis(), key_id],
        )?;
        self.active_keys.write().remove(&hash);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authenticate_until_revoked_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let catalog = Catalog::open(&path).unwrap();
        let generated = catalog
            .ensure_admin_key(None)
            .unwrap()
            .expect("first start generates a key");
        assert_eq!(catalog.authenticate(&generated), Some(Principal::Admin));
        catalog.create_tenant("acme", "Acme").unwrap();
        assert!(matches!(
            catalog.create_tenant("acme", "Again"),
            Err(StoreError::Conflict(_))
        ));
        let created = catalog.create_key("acme", "ci", &[Scope::Ingest]).unwrap();
        assert!(
            matches!(catalog.authenticate(&created.key_secret), Some(Principal::Tenant { tenant, .. }) if tenant == "acme")
        );
        drop(catalog);

        let catalog = Catalog::open(&path).unwrap();
        assert_eq!(
            catalog.ensure_admin_key(None).unwrap(),
            None,
            "the stored admin key is kept"
        );
        assert_eq!(catalog.authenticate(&generated), Some(Principal::Admin));
        assert!(catalog.authenticate(&created.key_secret).is_some());
        catalog.revoke_key("acme", &created.key.id).unwrap();
        assert_eq!(catalog.authenticate(&created.key_secret), None);
        assert!(catalog.list_keys("acme").unwrap()[0].revoked_at.is_some());
        assert_eq!(catalog.authenticate("lbk_wrong"), None);
    }
}
