//! Object storage locations: parse a storage URL once, derive table URLs from it.

use std::collections::HashMap;
use std::path::Path;

use url::Url;

use crate::error::{Error, Result};

/// Where the Delta tables live, and how to reach the store.
///
/// Accepted URLs: `file:///abs/path` (or a plain path, made absolute), `s3://bucket/prefix`,
/// `gs://bucket/prefix`, `az://container/prefix` (also `abfs[s]://`), and `memory://` for tests.
/// `options` are object_store / deltalake storage options such as `AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`,
/// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...
#[derive(Clone)]
pub struct StorageLocation {
    root: Url,
    options: HashMap<String, String>,
}

impl std::fmt::Debug for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Options may hold secrets: print their keys only.
        let mut keys: Vec<_> = self.options.keys().collect();
        keys.sort();
        f.debug_struct("StorageLocation")
            .field("root", &self.root.as_str())
            .field("option_keys", &keys)
            .finish()
    }
}

impl StorageLocation {
    /// Parses a storage URL (or a local path) with its options.
    pub fn parse(url_or_path: &str, options: HashMap<String, String>) -> Result<Self> {
        let root = if url_or_path.contains("://") {
            Url::parse(url_or_path)
                .map_err(|e| Error::Config(format!("storage url {url_or_path:?}: {e}")))?
        } else {
            let path = Path::new(url_or_path);
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                context: format!("creating data directory {}", path.display()),
                source,
            })?;
            let abs = std::path::absolute(path).map_err(|source| Error::Io {
                context: format!("resolving data directory {}", path.display()),
                source,
            })?;
            Url::from_directory_path(&abs).map_err(|()| {
                Error::Config(format!("{} is not a usable directory", abs.display()))
            })?
        };
        match root.scheme() {
            "file" | "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "memory" => {}
            other => {
                return Err(Error::Config(format!(
                    "unsupported storage url scheme {other:?}: use file://, s3://, gs://, az:// or a local path"
                )))
            }
        }
        if root.scheme() == "file" {
            let path = root
                .to_file_path()
                .map_err(|()| Error::Config(format!("{root} is not a local path")))?;
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                context: format!("creating storage directory {}", path.display()),
                source,
            })?;
        }
        let mut root = root;
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        Ok(Self { root, options })
    }

    /// The root URL, always ending in `/`.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Storage options passed to deltalake / object_store.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// True for the local filesystem.
    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// `<root>/tenants/<tenant>/<dataset>`.
    pub fn table_url(&self, tenant: &str, dataset: &str) -> Result<Url> {
        validate_tenant(tenant)?;
        let url = self
            .root
            .join(&format!("tenants/{tenant}/{dataset}"))
            .map_err(|e| Error::Config(format!("table url for tenant {tenant}: {e}")))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| Error::Config(format!("{url} is not a local path")))?;
            std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                context: format!("creating table directory {}", path.display()),
                source,
            })?;
        }
        Ok(url)
    }
}

impl StorageLocation {
    /// The tenants that have a directory under `<root>/tenants/`, sorted. Names that are not
    /// valid tenant ids are skipped.
    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        let url = self
            .root
            .join("tenants/")
            .map_err(|e| Error::Config(format!("tenants url under {}: {e}", self.root)))?;
        let mut tenants: Vec<String> = if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| Error::Config(format!("{url} is not a local path")))?;
            match std::fs::read_dir(&path) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("listing tenants in {}", path.display()),
                        source,
                    })
                }
            }
        } else {
            let table = deltalake::DeltaTable::try_from_url_with_storage_options(
                url.clone(),
                self.options.clone(),
            )
            .await
            .map_err(|e| Error::delta(&url, e))?;
            let listing = table
                .object_store()
                .list_with_delimiter(None)
                .await
                .map_err(|e| Error::Config(format!("listing tenants in {url}: {e}")))?;
            listing
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()
        };
        tenants.retain(|t| validate_tenant(t).is_ok());
        tenants.sort();
        Ok(tenants)
    }
}

/// Checks a tenant id: 1-64 characters from `[A-Za-z0-9_-]`.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTenant(tenant.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let loc = StorageLocation::parse(dir.path().to_str().unwrap(), HashMap::new()).unwrap();
        assert!(loc.is_local());
        assert!(loc.root().as_str().ends_with('/'));
        let t = loc.table_url("default", "spans").unwrap();
        assert!(t.as_str().ends_with("/tenants/default/spans"), "{t}");
        assert!(t.to_file_path().unwrap().is_dir());

        let s3 = StorageLocation::parse("s3://bucket/prefix", HashMap::new()).unwrap();
        assert_eq!(
            s3.table_url("acme", "spans").unwrap().as_str(),
            "s3://bucket/prefix/tenants/acme/spans"
        );
        assert!(StorageLocation::parse("ftp://x/y", HashMap::new()).is_err());
    }

    #[test]
    fn tenant_rules() {
        assert!(validate_tenant("default").is_ok());
        assert!(validate_tenant("a-b_C9").is_ok());
        assert!(validate_tenant("").is_err());
        assert!(validate_tenant("../etc").is_err());
        assert!(validate_tenant(&"x".repeat(65)).is_err());
    }
}
