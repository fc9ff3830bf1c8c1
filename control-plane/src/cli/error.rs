//! What can go wrong in a CLI command, and the exit code each failure maps to.

use std::process::ExitCode;

/// A failed command. Each variant is printed as `error: <message>` on stderr and
/// exits with the code a script can branch on (see [`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or a value in it is wrong (exit 1).
    #[error("{0}")]
    Usage(String),
    /// The user answered "no" to a confirmation prompt; nothing was changed (exit 1).
    #[error("Aborted.")]
    Declined,
    /// The control plane answered with an error status (exit 2, or 4 for 401).
    /// `problems` are the itemised reasons of a validation failure ("version: ...").
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        problems: Vec<String>,
    },
    /// The control plane refused an action the seeds print as `✗ 403: message`
    /// (e.g. installing a team package without being a member); exit 2.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    /// No HTTP answer at all: refused, timed out, DNS, TLS (exit 3).
    #[error("cannot reach the control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// No stored credential (exit 4).
    #[error("not logged in: run `gatehouse login`")]
    NotLoggedIn,
    /// The stored credential is for another control plane than the one asked for
    /// (exit 4); it is not sent there.
    #[error("not logged in to {api} (the stored login is for {stored}): run `gatehouse login --api {api}`")]
    LoggedInElsewhere { api: String, stored: String },
    /// A local failure: the config file, the terminal, a malformed answer (exit 1).
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    /// An API error (other than 401, which means "log in again") as a refusal
    /// printed `✗ STATUS: message`.
    pub fn into_refusal(self) -> Self {
        match self {
            CliError::Api {
                status, message, ..
            } if status != 401 => CliError::Refused { status, message },
            other => other,
        }
    }

    /// 0 ok, 1 usage or declined, 2 API error, 3 control plane unreachable,
    /// 4 not logged in (no credential, or the control plane rejected it).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Declined | CliError::Local(_) => 1,
            CliError::Api { status: 401, .. } => 4,
            CliError::Api { .. } | CliError::Refused { .. } => 2,
            CliError::Unreachable { .. } => 3,
            CliError::NotLoggedIn | CliError::LoggedInElsewhere { .. } => 4,
        }
    }

    /// What the user sees on stderr. "Aborted." is a statement, not an error.
    pub fn report(&self) -> String {
        match self {
            CliError::Declined => self.to_string(),
            CliError::Refused { .. } => format!("✗ {self}"),
            CliError::Local(err) => format!("error: {err:#}"),
            CliError::Api {
                message, problems, ..
            } if !problems.is_empty() => {
                let mut text = format!("error: {message}");
                for problem in problems {
                    text += &format!("\n  - {problem}");
                }
                text
            }
            _ => format!("error: {self}"),
        }
    }
}

impl From<CliError> for ExitCode {
    fn from(err: CliError) -> Self {
        ExitCode::from(err.exit_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> CliError {
        CliError::Api {
            status,
            code: "x".into(),
            message: "m".into(),
            problems: vec![],
        }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(CliError::usage("bad").exit_code(), 1);
        assert_eq!(CliError::Declined.exit_code(), 1);
        assert_eq!(api(404).exit_code(), 2);
        assert_eq!(api(409).exit_code(), 2);
        assert_eq!(api(500).exit_code(), 2);
        assert_eq!(api(401).exit_code(), 4);
        assert_eq!(CliError::NotLoggedIn.exit_code(), 4);
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:7070".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 3);
        assert_eq!(
            unreachable.report(),
            "error: cannot reach the control plane at http://127.0.0.1:7070: connection refused"
        );
    }

    #[test]
    fn reports_show_the_servers_message() {
        let expired = CliError::Api {
            status: 401,
            code: "unauthorized".into(),
            message: "credential expired: run `gatehouse login`".into(),
            problems: vec![],
        };
        assert_eq!(
            expired.report(),
            "error: credential expired: run `gatehouse login`"
        );
        assert_eq!(CliError::Declined.report(), "Aborted.");
        assert_eq!(
            CliError::NotLoggedIn.report(),
            "error: not logged in: run `gatehouse login`"
        );
    }

    #[test]
    fn refusals_print_like_the_seed_and_exit_2() {
        let forbidden = CliError::Api {
            status: 403,
            code: "forbidden".into(),
            message: "You are not a member of @acme".into(),
            problems: vec![],
        }
        .into_refusal();
        assert_eq!(forbidden.report(), "✗ 403: You are not a member of @acme");
        assert_eq!(forbidden.exit_code(), 2);
        // An expired login stays "log in again", exit 4.
        let expired = api(401).into_refusal();
        assert!(matches!(expired, CliError::Api { status: 401, .. }));
        assert_eq!(expired.exit_code(), 4);
    }

    #[test]
    fn validation_problems_are_listed_one_per_line() {
        let invalid = CliError::Api {
            status: 400,
            code: "invalid_request".into(),
            message: "invalid manifest".into(),
            problems: vec![
                "version: must be semver".into(),
                "tools[0].name: required".into(),
            ],
        };
        assert_eq!(
            invalid.report(),
            "error: invalid manifest\n  - version: must be semver\n  - tools[0].name: required"
        );
        assert_eq!(invalid.exit_code(), 2);
    }
}
