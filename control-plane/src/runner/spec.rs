//! What the runner hosts: one [`HostedSpec`] per stdio server, rebuilt by the
//! control plane from its store every time it publishes a config ([`HostedSet`]), and
//! the rules an install's command, arguments and environment must follow.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use gatehouse_config::Secret;

/// The transport name a hosted stdio server has in the store and the API.
pub const STDIO: &str = "stdio";

/// Which hosted server: a workspace slug and a server slug, both checked slugs, so
/// each is safe as a path component of the server's working directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostedKey {
    pub workspace: String,
    pub server: String,
}

impl fmt::Display for HostedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.server)
    }
}

/// How to start one hosted server. Two specs that differ in anything (a secret's
/// value included) are two configurations: the running process is replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct HostedSpec {
    pub key: HostedKey,
    pub command: String,
    pub args: Vec<String>,
    /// The server's plain values, then its secrets (a secret wins over a value of
    /// the same name). Only ever handed to the process's environment.
    pub env: BTreeMap<String, Secret>,
}

impl HostedSpec {
    /// The secret values a line the process wrote could leak, longest first, so
    /// that redaction replaces a secret before any shorter one inside it.
    pub fn secret_values(&self, secret_names: &[String]) -> Vec<String> {
        let mut values: Vec<String> = secret_names
            .iter()
            .filter_map(|n| self.env.get(n))
            .map(|s| s.expose().to_owned())
            .filter(|v| v.len() >= 4)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
    }
}

/// Every stdio server of every workspace, with the names of each one's secrets
/// (what its logged output is redacted of); the runner hosts the enabled ones.
pub type HostedSet = BTreeMap<HostedKey, Arc<Hosted>>;

/// One entry of a [`HostedSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct Hosted {
    pub spec: HostedSpec,
    /// Names in `spec.env` that came from the server's secrets.
    pub secret_names: Vec<String>,
    /// A disabled server is not run, but keeps its directory.
    pub enabled: bool,
}

/// Why an install's command, arguments or environment were refused (the API
/// answers 400 with this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command must not be empty")]
    EmptyCommand,
    #[error("command {0:?} must not start with `-`")]
    DashCommand(String),
    #[error("{what} must not contain a NUL byte")]
    Nul { what: String },
    #[error("at most {max} arguments are accepted, got {got}")]
    TooManyArgs { max: usize, got: usize },
    #[error("environment variable name {0:?} must match ^[A-Za-z_][A-Za-z0-9_]*$")]
    EnvName(String),
}

const MAX_ARGS: usize = 256;

/// Checks a stdio server's command line and environment as the API receives them.
pub fn check_command(
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), CommandError> {
    if command.trim().is_empty() {
        return Err(CommandError::EmptyCommand);
    }
    if command.starts_with('-') {
        return Err(CommandError::DashCommand(command.to_owned()));
    }
    if command.contains('\0') {
        return Err(CommandError::Nul {
            what: "command".into(),
        });
    }
    if args.len() > MAX_ARGS {
        return Err(CommandError::TooManyArgs {
            max: MAX_ARGS,
            got: args.len(),
        });
    }
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(CommandError::Nul {
            what: format!("argument {}", i + 1),
        });
    }
    for (name, value) in env {
        if !is_env_name(name) {
            return Err(CommandError::EnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(CommandError::Nul {
                what: format!("the value of {name}"),
            });
        }
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces every occurrence of the `secrets` (longest first, see
/// [`HostedSpec::secret_values`]) in `line` with `<redacted>`.
pub fn redact(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
    }
    out
}

/// A hosted server's command line as a shell would show it: arguments with spaces
/// or quotes are quoted.
pub fn command_line(command: &str, args: &[String]) -> String {
    std::iter::once(command)
        .chain(args.iter().map(String::as_str))
        .map(|word| {
            if !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
            {
                word.to_owned()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_checked() {
        let env = BTreeMap::from([("API_KEY".to_owned(), "x".to_owned())]);
        assert_eq!(check_command("npx", &["-y".into()], &env), Ok(()));
        assert_eq!(
            check_command(" ", &[], &env),
            Err(CommandError::EmptyCommand)
        );
        assert_eq!(
            check_command("--evil", &[], &env),
            Err(CommandError::DashCommand("--evil".into()))
        );
        assert_eq!(
            check_command("npx", &["a\0b".into()], &env)
                .unwrap_err()
                .to_string(),
            "argument 1 must not contain a NUL byte"
        );
        let bad = BTreeMap::from([("1X".to_owned(), "x".to_owned())]);
        assert_eq!(
            check_command("npx", &[], &bad),
            Err(CommandError::EnvName("1X".into()))
        );
    }

    #[test]
    fn redaction_replaces_longest_secrets_first() {
        let spec = HostedSpec {
            key: HostedKey {
                workspace: "w".into(),
                server: "s".into(),
            },
            command: "x".into(),
            args: vec![],
            env: BTreeMap::from([
                ("A".to_owned(), Secret::new("abcd")),
                ("B".to_owned(), Secret::new("abcdefgh")),
                ("PLAIN".to_owned(), Secret::new("visible")),
            ]),
        };
        let secrets = spec.secret_values(&["A".into(), "B".into()]);
        assert_eq!(
            redact("key=abcdefgh other=abcd plain=visible", &secrets),
            "key=<redacted> other=<redacted> plain=visible"
        );
    }
}
