//! The control plane's shared state ([`App`]): the store, the keys, CLI login
//! sessions, the registry of proxies, and the latest published snapshot that
//! proxies watch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gatehouse_config::{
    Limits, McpServer, Secret, ServerLimits, SessionKey, Snapshot, ToolPolicy, Workspace,
    WorkspaceToken,
};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::crypto::{random_key, random_token, write_private, MasterKey};
use crate::metrics::ControlPlaneMetrics;
use crate::outbound::AskServers;
use crate::proxies::ProxyRegistry;
use crate::runner::{Hosted, HostedKey, HostedSet, RunnerLink, STDIO};
use crate::store::leases::Lease;
use crate::store::{now, Database, Store, UserRow};

/// How long a CLI login lasts.
pub const LOGIN_TTL_SECS: i64 = 12 * 3600;

/// One published config snapshot, serialised once for every proxy.
pub struct Published {
    pub version: i64,
    pub json: String,
}

pub struct App {
    pub store: Store,
    pub master: MasterKey,
    pub sessions: UserSessions,
    /// Base URL of the gateway, for the URLs printed to users.
    pub gateway_url: String,
    session_keys: Vec<SessionKey>,
    proxy_token_sha256: [u8; 32],
    pub snapshots: watch::Sender<Arc<Published>>,
    pub proxies: ProxyRegistry,
    /// Served at `/metrics`; counts from this process's start.
    pub metrics: ControlPlaneMetrics,
    /// Which MCP servers this control plane connects to itself (`--ask-servers`).
    pub ask_servers: AskServers,
    /// Where proxies reach this control plane's runner (hosted stdio servers).
    pub runner: RunnerLink,
    /// What the runner hosts, republished with every snapshot.
    pub hosted: watch::Sender<Arc<HostedSet>>,
    /// What every proxy enforces of its own (`gatehouse serve` flags): the share of
    /// each budget it takes (`--proxy-share`), its connection cap and client
    /// timeouts. Every control plane of a store must be given the same.
    pub proxy_limits: Limits,
}

/// What the first start created, for `gatehouse up` to print and use.
pub struct Bootstrap {
    pub admin: UserRow,
    /// The admin's credential, when this start created it.
    pub admin_credential: Option<String>,
    pub proxy_token: String,
    /// The file the proxy token was read from or written to; `None` when it came
    /// from `GATEHOUSE_PROXY_TOKEN`.
    pub proxy_token_file: Option<std::path::PathBuf>,
}

impl App {
    /// Opens the store (`database`; the master key, proxy token and admin credential
    /// files are in `data_dir`), creating keys and the bootstrap admin on the
    /// database's first start, and publishes the current snapshot. `runner_url` is
    /// where proxies reach this control plane's runner.
    pub async fn open(
        data_dir: &Path,
        database: &Database,
        gateway_url: String,
        runner_url: String,
    ) -> anyhow::Result<(App, Bootstrap)> {
        let store = Store::connect(database).await?;
        let master = MasterKey::load_or_create(data_dir)?;
        // Replicas starting together on one database: one at a time from here until
        // the catalog is loaded, so each row below is created once.
        let start = store.hold(Lease::Start).await?;

        let session_keys: Vec<SessionKey> = match store.setting("session_keys").await? {
            Some(sealed) => {
                let plain = master.open(&sealed, "settings/session_keys").map_err(|e| {
                    anyhow::anyhow!(
                        "the store at {database} was sealed with another master key ({e}): \
                         every control plane of one database needs the same key \
                         (GATEHOUSE_MASTER_KEY, or master.key in the data directory)"
                    )
                })?;
                serde_json::from_slice(&plain)?
            }
            None => {
                let keys = vec![SessionKey {
                    id: "k1".into(),
                    key: Secret::new(random_key()),
                }];
                store
                    .put_setting(
                        "session_keys",
                        master.seal(&serde_json::to_vec(&keys)?, "settings/session_keys"),
                    )
                    .await?;
                keys
            }
        };
        let jwt_key = match store.setting("jwt_key").await? {
            Some(sealed) => master.open(&sealed, "settings/jwt_key")?,
            None => {
                let key = random_key().into_bytes();
                store
                    .put_setting("jwt_key", master.seal(&key, "settings/jwt_key"))
                    .await?;
                key
            }
        };

        let runner_token = match store.setting("runner_token").await? {
            Some(sealed) => String::from_utf8(master.open(&sealed, "settings/runner_token")?)?,
            None => {
                let token = random_token("grn_");
                store
                    .put_setting(
                        "runner_token",
                        master.seal(token.as_bytes(), "settings/runner_token"),
                    )
                    .await?;
                token
            }
        };
        // Proxies apply a snapshot only when its version is new: a runner that moved
        // (another port after a restart) takes a new version when a hosted server
        // is configured, or proxies would keep calling the old address.
        let runner_moved = match store.setting("runner_url").await? {
            Some(sealed) => master.open(&sealed, "settings/runner_url")? != runner_url.as_bytes(),
            None => true,
        };
        if runner_moved {
            let sealed = master.seal(runner_url.as_bytes(), "settings/runner_url");
            if store.hosts_servers().await? {
                store.put_published_setting("runner_url", sealed).await?;
            } else {
                store.put_setting("runner_url", sealed).await?;
            }
        }

        let (proxy_token, proxy_token_file) = match std::env::var("GATEHOUSE_PROXY_TOKEN") {
            Ok(t) if !t.trim().is_empty() => (t.trim().to_string(), None),
            _ => {
                let path = data_dir.join("proxy.token");
                let token = match std::fs::read_to_string(&path) {
                    Ok(t) => t.trim().to_string(),
                    Err(_) => {
                        let t = random_token("gpx_");
                        write_private(&path, t.as_bytes())?;
                        t
                    }
                };
                (token, Some(path))
            }
        };

        let (admin, admin_credential) = match store.user_by_name("admin").await? {
            Some(admin) => (admin, None),
            None if store.count_users().await? == 0 => {
                let credential = random_token("ghu_");
                let admin = store
                    .insert_user(
                        "admin",
                        "admin@localhost",
                        true,
                        &sha256_hex(&credential),
                        "gatehouse",
                    )
                    .await?;
                write_private(&data_dir.join("admin.credential"), credential.as_bytes())?;
                (admin, Some(credential))
            }
            None => anyhow::bail!("the store has users but no `admin`"),
        };

        let (snapshots, _) = watch::channel(Arc::new(Published {
            version: 0,
            json: String::new(),
        }));
        let app = App {
            store,
            master,
            sessions: UserSessions::new(&jwt_key),
            gateway_url,
            session_keys,
            proxy_token_sha256: Sha256::digest(proxy_token.as_bytes()).into(),
            snapshots,
            proxies: ProxyRegistry::default(),
            metrics: ControlPlaneMetrics::new(),
            ask_servers: AskServers::default(),
            runner: RunnerLink {
                url: runner_url,
                token: runner_token,
            },
            hosted: watch::channel(Arc::new(HostedSet::new())).0,
            proxy_limits: Limits::default(),
        };
        crate::hub::load_catalog(&app.store).await?;
        start.release().await?;
        app.publish().await?;
        Ok((
            app,
            Bootstrap {
                admin,
                admin_credential,
                proxy_token,
                proxy_token_file,
            },
        ))
    }

    pub fn proxy_token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        hash.ct_eq(&self.proxy_token_sha256).into()
    }

    /// Signs the session JWT `token` out on every control plane of the database:
    /// from now on `AuthUser::of_session` refuses it, although it has not expired. A
    /// token that no longer verifies is refused already and needs no row.
    pub async fn sign_out(&self, token: &str) -> Result<(), sqlx::Error> {
        if let Ok(claims) = self.sessions.verify(token) {
            self.store
                .revoke_session(&sha256_hex(token), claims.exp)
                .await?;
        }
        Ok(())
    }

    pub fn gateway_urls(&self, slug: &str) -> (String, String) {
        let base = self.gateway_url.trim_end_matches('/');
        (format!("{base}/ws/{slug}"), format!("{base}/ws/{slug}/sse"))
    }

    /// Rebuilds the snapshot from the store and hands it to every watching proxy.
    /// Concurrent publishes never move proxies backwards: an older version is dropped.
    pub async fn publish(&self) -> anyhow::Result<()> {
        let (snapshot, hosted) = self.build().await?;
        let problems = gatehouse_config::validate(&snapshot);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "refusing to publish an invalid snapshot: {}",
                list.join("; ")
            );
        }
        let published = Arc::new(Published {
            version: snapshot.version as i64,
            json: serde_json::to_string(&snapshot)?,
        });
        let newer = self.snapshots.send_if_modified(|current| {
            // The same version differs only when this process's own settings
            // changed since it was built (`proxy_limits` at start).
            if published.version > current.version
                || (published.version == current.version && published.json != current.json)
            {
                *current = published.clone();
                true
            } else {
                false
            }
        });
        if newer {
            self.hosted.send_if_modified(|current| {
                let changed = **current != hosted;
                if changed {
                    *current = Arc::new(hosted);
                }
                changed
            });
        }
        Ok(())
    }

    /// The snapshot every proxy should serve now, secrets opened.
    pub async fn build_snapshot(&self) -> anyhow::Result<Snapshot> {
        Ok(self.build().await?.0)
    }

    /// The snapshot, and the stdio servers the runner hosts.
    async fn build(&self) -> anyhow::Result<(Snapshot, HostedSet)> {
        let rows = self.store.snapshot_rows().await?;
        let now = now();
        let mut hosted = HostedSet::new();
        let mut workspaces = Vec::with_capacity(rows.workspaces.len());
        for (ws_id, slug, name, limits) in &rows.workspaces {
            let mut servers = Vec::new();
            for s in rows.servers.iter().filter(|s| &s.workspace_id == ws_id) {
                let mut secrets = BTreeMap::new();
                for x in rows.secrets.iter().filter(|x| x.server_id == s.id) {
                    let plain = self
                        .master
                        .open(&x.sealed, &secret_binding(&s.id, &x.name))?;
                    secrets.insert(x.name.clone(), Secret::new(String::from_utf8(plain)?));
                }
                let mut url = s.url.clone();
                let mut headers: BTreeMap<String, String> = serde_json::from_str(&s.headers)?;
                if s.transport == STDIO {
                    // Proxies reach it through the runner like any Streamable HTTP
                    // server; its secrets go to the process, not to them.
                    let key = HostedKey {
                        workspace: slug.clone(),
                        server: s.slug.clone(),
                    };
                    url = self.runner.endpoint(&key);
                    headers = BTreeMap::from([(
                        "Authorization".to_owned(),
                        format!("Bearer {}", self.runner.token),
                    )]);
                    let secrets = std::mem::take(&mut secrets);
                    hosted.insert(key.clone(), Arc::new(hosted_of(s, key, secrets)?));
                }
                let mut server = McpServer {
                    slug: s.slug.clone(),
                    url,
                    transport: serde_json::from_value(serde_json::Value::String(
                        if s.transport == STDIO {
                            "streamable_http".to_owned()
                        } else {
                            s.transport.clone()
                        },
                    ))
                    .unwrap_or_default(),
                    naming: serde_json::from_value(serde_json::Value::String(s.naming.clone()))
                        .unwrap_or_default(),
                    enabled: s.enabled != 0,
                    headers,
                    secrets,
                    policy: serde_json::from_str::<ToolPolicy>(&s.policy)?,
                    call_timeout_ms: McpServer::default_call_timeout_ms(),
                    connect_timeout_ms: McpServer::default_connect_timeout_ms(),
                    first_byte_timeout_ms: None,
                    max_call_ms: McpServer::default_max_call_ms(),
                    max_in_flight: McpServer::default_max_in_flight(),
                    max_queued: McpServer::default_max_queued(),
                    tools: match &s.tools {
                        Some(json) => serde_json::from_str(json)?,
                        None => vec![],
                    },
                    overrides: rows
                        .overrides
                        .iter()
                        .filter(|(server_id, _, _)| *server_id == s.id)
                        .map(|(_, tool, shape)| Ok((tool.clone(), serde_json::from_str(shape)?)))
                        .collect::<anyhow::Result<_>>()?,
                };
                if let Some(limits) = &s.limits {
                    serde_json::from_str::<ServerLimits>(limits)?.apply(&mut server);
                }
                servers.push(server);
            }
            let tokens = rows
                .tokens
                .iter()
                .filter(|t| &t.workspace_id == ws_id)
                // Long-revoked and long-expired tokens need not travel; recent ones do,
                // so proxies can tell "revoked" from "unknown" in their metrics.
                .filter(|t| t.revoked_at.is_none_or(|at| now - at < 86_400))
                .map(|t| {
                    Ok(WorkspaceToken {
                        id: t.id.clone(),
                        name: t.name.clone(),
                        sha256: t.sha256.clone(),
                        expires_at: t.expires_at.map(|e| e.max(0) as u64),
                        revoked: t.revoked_at.is_some(),
                        limits: t.limits.as_deref().map(serde_json::from_str).transpose()?,
                        scope: t.scope.as_deref().map(serde_json::from_str).transpose()?,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            workspaces.push(Workspace {
                slug: slug.clone(),
                name: name.clone(),
                owner: None,
                servers,
                tokens,
                limits: match limits {
                    Some(json) => serde_json::from_str(json)?,
                    None => Default::default(),
                },
            });
        }
        let snapshot = Snapshot {
            version: rows.version as u64,
            session_keys: self.session_keys.clone(),
            allowed_origins: vec![],
            limits: self.proxy_limits.clone(),
            workspaces,
        };
        Ok((snapshot, hosted))
    }
}

/// How the runner starts a stdio server: its command, arguments and plain values,
/// then its secrets as environment variables.
fn hosted_of(
    s: &crate::store::ServerRow,
    key: HostedKey,
    secrets: BTreeMap<String, Secret>,
) -> anyhow::Result<Hosted> {
    let args: Vec<String> = match &s.args {
        Some(json) => serde_json::from_str(json)?,
        None => vec![],
    };
    let plain: BTreeMap<String, String> = match &s.env {
        Some(json) => serde_json::from_str(json)?,
        None => BTreeMap::new(),
    };
    let mut env: BTreeMap<String, Secret> = plain
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    let secret_names: Vec<String> = secrets.keys().cloned().collect();
    env.extend(secrets);
    Ok(Hosted {
        spec: crate::runner::HostedSpec {
            key,
            command: s.command.clone().unwrap_or_default(),
            args,
            env,
        },
        secret_names,
        enabled: s.enabled != 0,
    })
}

/// Where a secret is bound when sealed: it opens only for this server and name.
pub fn secret_binding(server_id: &str, name: &str) -> String {
    format!("secrets/{server_id}/{name}")
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// CLI logins: short-lived HS256 JWTs.
pub struct UserSessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
    /// Random per login, so two logins of one user in the same second are two
    /// sessions, and signing one out leaves the other. Absent from logins issued
    /// before sign-out existed.
    #[serde(default)]
    pub jti: String,
}

impl UserSessions {
    fn new(key: &[u8]) -> Self {
        UserSessions {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    pub fn issue(&self, user: &UserRow) -> (String, i64) {
        let iat = now();
        let claims = Claims {
            sub: user.id.clone(),
            name: user.username.clone(),
            iat,
            exp: iat + LOGIN_TTL_SECS,
            jti: crate::crypto::random_id("ses_"),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail");
        (token, claims.exp)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, CredentialError> {
        let mut validation = Validation::default();
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => CredentialError::Expired,
                _ => CredentialError::Invalid,
            })
    }
}

/// Why [`UserSessions::verify`] refused a login credential; the API answers 401 with
/// this message.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential expired: run `gatehouse login`")]
    Expired,
    #[error("invalid credential: run `gatehouse login`")]
    Invalid,
}
