//! Asking the user: prompts go to stderr (stdout stays clean for `--json`), secrets
//! are read without echo on a terminal, and confirmations refuse to guess when
//! nobody is there to answer.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::Context;

use super::error::CliError;

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks for one line of text; surrounding whitespace is dropped.
pub fn ask_line(label: &str) -> Result<String, CliError> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{label}");
    let _ = stderr.flush();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read from stdin")?;
    if read == 0 {
        return Err(CliError::usage(format!(
            "no answer to {:?}: stdin is closed",
            label.trim_end_matches([':', ' '])
        )));
    }
    Ok(line.trim().to_owned())
}

/// Asks for a secret: without echo on a terminal, otherwise the first line of stdin
/// (so `echo "$TOKEN" | gatehouse secrets set ...` works).
pub fn ask_secret(label: &str) -> Result<String, CliError> {
    if stdin_is_terminal() {
        let value = rpassword::prompt_password(label).context("cannot read from the terminal")?;
        return Ok(value);
    }
    let mut input = String::new();
    std::io::stdin()
        .lock()
        .read_to_string(&mut input)
        .context("cannot read from stdin")?;
    Ok(first_line(&input).to_owned())
}

/// The first line without its line ending.
fn first_line(input: &str) -> &str {
    input.lines().next().unwrap_or("")
}

/// `question` then `Confirm? [y/N] `; only an explicit yes counts. Without a
/// terminal on stdin there is no one to ask, so the caller's `refusal` is returned.
pub fn confirm(question: &str, refusal: impl FnOnce() -> CliError) -> Result<(), CliError> {
    if !stdin_is_terminal() {
        return Err(refusal());
    }
    eprintln!("{question}");
    let answer = ask_line("Confirm? [y/N] ").unwrap_or_default();
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(CliError::Declined)
    }
}

pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_explicit_yes_confirms() {
        for yes in ["y", "Y", "yes", " YES \n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "n", "no", "yep", "sure", "\n"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn piped_secrets_use_the_first_line() {
        assert_eq!(first_line("ghp_abc\n"), "ghp_abc");
        assert_eq!(first_line("ghp_abc\r\nignored\n"), "ghp_abc");
        assert_eq!(first_line(""), "");
    }
}
