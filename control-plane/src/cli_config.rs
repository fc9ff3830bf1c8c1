//! The per-user CLI state file: which control plane, the session credential, who is
//! logged in, and the active workspace. It holds a credential, so it is created
//! mode 0600 and re-restricted on every write. The CLI ([`crate::cli`]) reads and
//! writes it; `gatehouse up` ([`crate::server`]) writes it too, to log the CLI in as
//! the bootstrap admin.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Env var that points the CLI at another state file (tests, several identities).
pub const CONFIG_ENV: &str = "GATEHOUSE_CLI_CONFIG";

/// The contents of `cli.json`. Every field is optional: a fresh machine has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CliConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_workspace: Option<String>,
}

/// Where the CLI state lives: `$GATEHOUSE_CLI_CONFIG`, else
/// `<XDG config dir>/gatehouse/cli.json`.
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let base = dirs::config_dir()
        .or_else(|| dirs::home_dir().map(|home| home.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("gatehouse").join("cli.json")
}

/// Records a successful login (used by `gatehouse login` and by `gatehouse up` for
/// the bootstrap admin). The active workspace survives only if the same user logs
/// in again to the same control plane.
pub fn save_login(api: &str, token: &str, username: &str) -> anyhow::Result<()> {
    let path = config_path();
    // A corrupt file must not stop a fresh login from repairing it.
    let mut config = CliConfig::load(&path).unwrap_or_default();
    config.record_login(api, token, username);
    config.save(&path)
}

/// Makes `slug` the active workspace (e.g. `gatehouse up --demo` selecting `demo`).
pub fn save_active_workspace(slug: &str) -> anyhow::Result<()> {
    let path = config_path();
    let mut config = CliConfig::load(&path)?;
    config.active_workspace = Some(slug.to_owned());
    config.save(&path)
}

impl CliConfig {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Self::default()),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid CLI state", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file atomically (temp file + rename), mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut body = serde_json::to_vec_pretty(self).context("cannot encode CLI state")?;
        body.push(b'\n');

        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cli.json".into());
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let written = write_private(&tmp, &body).and_then(|()| {
            fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        restrict(path)
    }

    pub fn record_login(&mut self, api: &str, token: &str, username: &str) {
        let same_identity =
            self.api.as_deref() == Some(api) && self.username.as_deref() == Some(username);
        if !same_identity {
            self.active_workspace = None;
        }
        self.api = Some(api.to_owned());
        self.token = Some(token.to_owned());
        self.username = Some(username.to_owned());
    }
}

fn write_private(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // The mode above only applies to a new file; a leftover temp file keeps its own.
    restrict(path)?;
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = CliConfig::load(&dir.path().join("nope.json")).unwrap();
        assert_eq!(config, CliConfig::default());
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("cli.json");
        let config = CliConfig {
            api: Some("http://127.0.0.1:7070".into()),
            token: Some("jwt".into()),
            username: Some("admin".into()),
            active_workspace: Some("engineering".into()),
        };
        config.save(&path).unwrap();
        assert_eq!(CliConfig::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn every_write_restores_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.json");
        CliConfig::default().save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            CliConfig::default().save(&path).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn file_uses_the_documented_keys_and_omits_missing_ones() {
        let config = CliConfig {
            api: Some("http://h".into()),
            token: None,
            username: Some("alice".into()),
            active_workspace: None,
        };
        let json: serde_json::Value = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"api": "http://h", "username": "alice"})
        );
    }

    #[test]
    fn relogin_keeps_active_workspace_only_for_same_identity() {
        let mut config = CliConfig::default();
        config.record_login("http://h", "t1", "alice");
        config.active_workspace = Some("eng".into());
        config.record_login("http://h", "t2", "alice");
        assert_eq!(config.active_workspace.as_deref(), Some("eng"));
        assert_eq!(config.token.as_deref(), Some("t2"));
        config.record_login("http://h", "t3", "bob");
        assert_eq!(config.active_workspace, None);
        assert_eq!(config.username.as_deref(), Some("bob"));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.json");
        fs::write(&path, "{not json").unwrap();
        let err = CliConfig::load(&path).unwrap_err();
        assert!(format!("{err:#}").contains("cli.json"), "{err:#}");
    }
}
