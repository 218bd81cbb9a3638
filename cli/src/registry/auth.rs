//! Registry credentials: from the environment, else from the Docker config file.
//!
//! 1. `GLINT_REGISTRY_USERNAME` and `GLINT_REGISTRY_PASSWORD` (both set) apply to every registry.
//! 2. Otherwise `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`: the entry of `auths`
//!    whose key names the registry (`host:port`, optionally with `https://` or `http://` and a
//!    path, as `docker login` writes them), with `auth` = base64 of `user:password`, or
//!    `username` and `password` fields, or `identitytoken` (sent as a bearer token).
//! 3. Otherwise anonymous access. Credential helpers (`credsStore`, `credHelpers`) are not run.
//!
//! Passwords never appear in errors or logs.

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the Docker config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the JSON docker writes.
    #[error("{} is not a Docker config file", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where the JSON is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("the `auth` entry for {registry} in {} is not base64 of `user:password`", path.display())]
    BadAuth {
        /// The file.
        path: PathBuf,
        /// The `auths` key.
        registry: String,
    },
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The credentials for `registry` (`host[:port]`).
pub fn credentials(registry: &str) -> Result<RegistryAuth, CredentialsError> {
    if let (Ok(user), Ok(password)) =
        (std::env::var("GLINT_REGISTRY_USERNAME"), std::env::var("GLINT_REGISTRY_PASSWORD"))
    {
        return Ok(RegistryAuth::Basic(user, password));
    }
    match docker_config_path() {
        Some(path) => from_docker_config(&path, registry),
        None => Ok(RegistryAuth::Anonymous),
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The `auths` key without scheme and path: `https://host:5000/v1/` -> `host:5000`.
fn normalise(key: &str) -> &str {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Reads credentials for `registry` from a Docker config file; a missing file means anonymous.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<RegistryAuth, CredentialsError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(source) => return Err(CredentialsError::Read { path: path.to_path_buf(), source }),
    };
    let config: DockerConfig =
        serde_json::from_slice(&text).map_err(|source| CredentialsError::Json { path: path.to_path_buf(), source })?;
    let Some((key, entry)) = config.auths.iter().find(|(k, _)| normalise(k) == registry) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || CredentialsError::BadAuth { path: path.to_path_buf(), registry: key.clone() };
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    if let Some(token) = &entry.identitytoken {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    Ok(RegistryAuth::Anonymous)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn docker_config_entries_are_found_and_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {"https://127.0.0.1:5000/v1/": {"auth": "YWxpY2U6czNjcjN0OndpdGgtY29sb24="},
                          "other:1": {"username": "bob", "password": "pw"},
                          "bad:2": {"auth": "!!"}}, "credsStore": "desktop"}"#,
        )
        .unwrap();
        match from_docker_config(&path, "127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cr3t:with-colon")),
            _ => panic!("expected basic auth"),
        }
        assert!(matches!(from_docker_config(&path, "other:1").unwrap(), RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(matches!(from_docker_config(&path, "unknown:3").unwrap(), RegistryAuth::Anonymous));
        let e = from_docker_config(&path, "bad:2").unwrap_err();
        assert!(matches!(e, CredentialsError::BadAuth { .. }));
        assert!(!e.to_string().contains("!!"));
        assert!(matches!(from_docker_config(&dir.path().join("none.json"), "x").unwrap(), RegistryAuth::Anonymous));
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(from_docker_config(&path, "x"), Err(CredentialsError::Json { .. })));
    }
}
