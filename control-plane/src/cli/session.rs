//! Who the CLI is and where it talks: the resolved API URL, the stored login and
//! active workspace ([`Context`]), and the commands that change them (`login`,
//! `logout`, `whoami`) plus `user create`.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::api::{decode, normalize_api_url, ApiClient, DEFAULT_API};
use super::error::CliError;
use super::prompt::{ask_line, ask_secret};
use super::resources::{LoginAnswer, User, UserCreated};
use crate::cli_config::{config_path, CliConfig};

/// Everything a client command needs besides its own arguments.
pub struct Context {
    pub config_path: PathBuf,
    pub config: CliConfig,
    /// The control plane for this invocation: `--api` / `GATEHOUSE_API`, else the
    /// stored one, else [`DEFAULT_API`]; normalised.
    pub api: String,
    pub json: bool,
}

impl Context {
    /// `repair` tolerates a corrupt state file (login rewrites it anyway).
    pub fn load(api_flag: Option<&str>, json: bool, repair: bool) -> Result<Self, CliError> {
        let config_path = config_path();
        let config = match CliConfig::load(&config_path) {
            Ok(config) => config,
            Err(_) if repair => CliConfig::default(),
            Err(err) => return Err(CliError::Local(err)),
        };
        let api = match api_flag.filter(|a| !a.trim().is_empty()) {
            Some(flag) => normalize_api_url(flag)?,
            None => match &config.api {
                Some(stored) => normalize_api_url(stored)?,
                None => DEFAULT_API.to_owned(),
            },
        };
        Ok(Self {
            config_path,
            config,
            api,
            json,
        })
    }

    /// A client without credentials (login).
    pub fn anonymous(&self) -> Result<ApiClient, CliError> {
        ApiClient::new(&self.api, None)
    }

    /// A client carrying the stored session token. The token is only sent to the
    /// control plane it was issued by.
    pub fn client(&self) -> Result<ApiClient, CliError> {
        let token = self
            .config
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or(CliError::NotLoggedIn)?;
        if let Some(stored) = &self.config.api {
            let stored = normalize_api_url(stored).unwrap_or_else(|_| stored.clone());
            if stored != self.api {
                return Err(CliError::LoggedInElsewhere {
                    api: self.api.clone(),
                    stored,
                });
            }
        }
        ApiClient::new(&self.api, Some(token))
    }

    /// The workspace a command targets: the explicit one, else the active one.
    pub fn workspace(&self, explicit: Option<String>) -> Result<String, CliError> {
        explicit
            .or_else(|| self.config.active_workspace.clone())
            .ok_or_else(|| {
                CliError::usage(
                    "no active workspace: pass --workspace or run gatehouse workspace use SLUG",
                )
            })
    }

    pub fn save(&self) -> Result<(), CliError> {
        self.config.save(&self.config_path).map_err(CliError::Local)
    }

    /// Saves after the server already changed something: the command's output
    /// (possibly a one-time token) must still be printed, so a failure only warns.
    pub fn save_or_warn(&self) {
        if let Err(err) = self.save() {
            eprintln!("warning: {}", err.report().trim_start_matches("error: "));
        }
    }

    /// `--json`: the answer pretty-printed; otherwise the text rendering.
    pub fn output(
        &self,
        answer: &Value,
        text: impl FnOnce() -> Result<String, CliError>,
    ) -> Result<String, CliError> {
        if self.json {
            Ok(pretty_json(answer))
        } else {
            text()
        }
    }
}

pub fn pretty_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

pub async fn login(
    ctx: &mut Context,
    username: Option<String>,
    credential: Option<String>,
) -> Result<String, CliError> {
    let username = match username {
        Some(name) => name,
        None => ask_line("Username: ")?,
    };
    if username.trim().is_empty() {
        return Err(CliError::usage("username must not be empty"));
    }
    let credential = match credential {
        Some(credential) => credential,
        None => ask_secret("Credential: ")?,
    };
    if credential.is_empty() {
        return Err(CliError::usage("credential must not be empty"));
    }

    let mut answer = ctx
        .anonymous()?
        .post(
            &["v1", "login"],
            &json!({"username": username.trim(), "credential": credential}),
        )
        .await?;
    let login: LoginAnswer = decode(&answer, "login")?;
    let username = login
        .user
        .as_ref()
        .map(|u| u.username.clone())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| username.trim().to_owned());

    ctx.config.record_login(&ctx.api, &login.token, &username);
    ctx.save()?;

    // The session token belongs in the 0600 state file, not in a terminal or CI log.
    if let Some(object) = answer.as_object_mut() {
        object.remove("token");
    }
    let api = ctx.api.clone();
    ctx.output(&answer, || {
        Ok(format!("Logged in as {username} at {api}.\n"))
    })
}

/// Forgets the session here and, first, has the control plane revoke it, so a copy of
/// the state file is worth nothing either. A control plane that cannot be told does
/// not keep the user logged in: the session is forgotten and the output says it
/// stays valid until it expires.
pub async fn logout(ctx: &mut Context) -> Result<String, CliError> {
    let revoked = match ctx.config.token.as_deref().filter(|t| !t.is_empty()) {
        None => Ok(()),
        Some(_) => match ctx.client() {
            Ok(client) => match client.post(&["v1", "logout"], &json!({})).await {
                // Expired or revoked already: nothing left to revoke.
                Ok(_) | Err(CliError::Api { status: 401, .. }) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        },
    };
    let was_logged_in = ctx.config.token.take().is_some();
    if was_logged_in {
        ctx.save()?;
    }
    let answer = json!({"logged_out": was_logged_in, "revoked": was_logged_in && revoked.is_ok()});
    let api = ctx.config.api.clone().unwrap_or_else(|| ctx.api.clone());
    ctx.output(&answer, || {
        Ok(match (was_logged_in, &revoked) {
            (false, _) => "Not logged in.\n".to_owned(),
            (true, Ok(())) => format!("Logged out of {api}.\n"),
            (true, Err(e)) => format!(
                "Logged out of {api} here, but the control plane was not told ({e}): \
                 the session stays valid until it expires.\n"
            ),
        })
    })
}

pub async fn whoami(ctx: &Context) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "whoami"]).await?;
    let user: User = decode(&answer, "whoami")?;
    ctx.output(&answer, || Ok(whoami_text(&user, &ctx.api)))
}

fn whoami_text(user: &User, api: &str) -> String {
    let mut line = user.username.clone();
    if !user.email.is_empty() {
        line += &format!(" <{}>", user.email);
    }
    if user.admin {
        line += " (admin)";
    }
    format!("{line} at {api}\n")
}

pub async fn create_user(
    ctx: &Context,
    name: String,
    email: String,
    admin: bool,
) -> Result<String, CliError> {
    let answer = ctx
        .client()?
        .post(
            &["v1", "users"],
            &json!({"username": name, "email": email, "admin": admin}),
        )
        .await?;
    let created: UserCreated = decode(&answer, "user create")?;
    ctx.output(&answer, || Ok(user_created_text(&created, &name, &ctx.api)))
}

fn user_created_text(created: &UserCreated, name: &str, api: &str) -> String {
    let username = if created.user.username.is_empty() {
        name
    } else {
        &created.user.username
    };
    format!(
        "User {username} created.\n\
         Credential: {} (shown once — save this)\n\
         They log in with: gatehouse login --api {api} --username {username}\n",
        created.credential
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(config: CliConfig, api: &str) -> Context {
        Context {
            config_path: PathBuf::from("/nonexistent/cli.json"),
            config,
            api: api.to_owned(),
            json: false,
        }
    }

    #[test]
    fn no_token_means_not_logged_in() {
        let ctx = context(CliConfig::default(), DEFAULT_API);
        assert!(matches!(ctx.client(), Err(CliError::NotLoggedIn)));
    }

    #[test]
    fn token_is_not_sent_to_another_control_plane() {
        let config = CliConfig {
            api: Some("http://127.0.0.1:7070/".into()),
            token: Some("jwt".into()),
            ..CliConfig::default()
        };
        assert!(context(config.clone(), "http://127.0.0.1:7070")
            .client()
            .is_ok());
        let err = context(config, "http://other:7070").client().err().unwrap();
        assert_eq!(err.exit_code(), 4);
        assert_eq!(
            err.to_string(),
            "not logged in to http://other:7070 (the stored login is for http://127.0.0.1:7070): run `gatehouse login --api http://other:7070`"
        );
    }

    #[test]
    fn workspace_defaults_to_the_active_one() {
        let mut config = CliConfig::default();
        let ctx = context(config.clone(), DEFAULT_API);
        let err = ctx.workspace(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no active workspace: pass --workspace or run gatehouse workspace use SLUG"
        );
        assert_eq!(err.exit_code(), 1);
        config.active_workspace = Some("personal".into());
        let ctx = context(config, DEFAULT_API);
        assert_eq!(ctx.workspace(None).unwrap(), "personal");
        assert_eq!(ctx.workspace(Some("eng".into())).unwrap(), "eng");
    }

    #[test]
    fn json_mode_prints_the_answer() {
        let mut ctx = context(CliConfig::default(), DEFAULT_API);
        ctx.json = true;
        let out = ctx.output(&json!({"a": 1}), || Ok("text".into())).unwrap();
        assert_eq!(out, "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn whoami_and_user_create_texts() {
        let user = User {
            username: "alice".into(),
            email: "alice@acme.com".into(),
            admin: true,
        };
        assert_eq!(
            whoami_text(&user, "http://h"),
            "alice <alice@acme.com> (admin) at http://h\n"
        );
        let created = UserCreated {
            user,
            credential: "cred-123".into(),
        };
        assert_eq!(
            user_created_text(&created, "alice", "http://h"),
            "User alice created.\n\
             Credential: cred-123 (shown once — save this)\n\
             They log in with: gatehouse login --api http://h --username alice\n"
        );
    }
}
