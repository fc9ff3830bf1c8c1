//! `gatehouse team ...`: your team is your namespace (@you). Members may install
//! your team packages; removing one also removes the installs of your team
//! packages they made, so access ends with membership.

use serde_json::json;

use super::api::decode;
use super::args::TeamCommand;
use super::error::CliError;
use super::render;
use super::resources::{InvitationCreated, MemberRemoved, Team, TeamJoined};
use super::session::Context;

pub async fn run(ctx: &Context, command: TeamCommand) -> Result<String, CliError> {
    match command {
        TeamCommand::Invite { email } => invite(ctx, email).await,
        TeamCommand::List => list(ctx).await,
        TeamCommand::Accept { code } => accept(ctx, code).await,
        TeamCommand::Remove { member } => remove(ctx, member).await,
    }
}

/// A light check so a typo'd argument (a username, a flag) is caught before an
/// invitation is created for it; the control plane has the last word.
fn check_email(email: &str) -> Result<(), CliError> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid email {email:?}: expected e.g. alice@acme.com"
        )))
    }
}

async fn invite(ctx: &Context, email: String) -> Result<String, CliError> {
    let email = email.trim().to_owned();
    check_email(&email)?;
    let answer = ctx
        .client()?
        .post(&["v1", "team", "invitations"], &json!({"email": email}))
        .await?;
    let created: InvitationCreated = decode(&answer, "team invite")?;
    ctx.output(&answer, || Ok(render::invitation_created(&created, &email)))
}

async fn list(ctx: &Context) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "team"]).await?;
    let team: Team = decode(&answer, "team list")?;
    ctx.output(&answer, || Ok(render::team_members(&team, &own_name(ctx))))
}

async fn accept(ctx: &Context, code: String) -> Result<String, CliError> {
    let code = code.trim().to_owned();
    if code.is_empty() {
        return Err(CliError::usage("the join code must not be empty"));
    }
    let answer = ctx
        .client()?
        .post(&["v1", "team", "accept"], &json!({"code": code}))
        .await?;
    let joined: TeamJoined = decode(&answer, "team accept")?;
    ctx.output(&answer, || Ok(render::team_joined(&joined.owner)))
}

async fn remove(ctx: &Context, member: String) -> Result<String, CliError> {
    let member = member.trim().to_owned();
    if member.is_empty() {
        return Err(CliError::usage("name the member: an email or a username"));
    }
    let answer = ctx
        .client()?
        .delete(&["v1", "team", "members", &member])
        .await?;
    let removed: MemberRemoved = decode(&answer, "team remove")?;
    ctx.output(&answer, || {
        Ok(render::member_removed(&removed, &member, &own_name(ctx)))
    })
}

/// The team is the logged-in user's namespace.
fn own_name(ctx: &Context) -> String {
    ctx.config.username.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_get_a_light_check() {
        assert!(check_email("alice@acme.com").is_ok());
        assert!(check_email("a.b+c@sub.acme.co").is_ok());
        assert!(check_email("bob@localhost").is_ok());
        for bad in ["alice", "@acme.com", "alice@", "a lice@acme.com", ""] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }
}
