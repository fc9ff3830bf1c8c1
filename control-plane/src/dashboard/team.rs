//! The Team tab: the signed-in user's team (members with status and dates), invite by
//! email (the join code shown once, as no mail is sent), remove, accept an invitation
//! to someone else's team, and the packages of the user's namespace with their
//! visibility.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::session::{csrf_field, live_page, page, Session};
use super::shell::{copyable, PageResult, PATH};
use crate::api::packages;
use crate::api::request::Body;
use crate::api::teams::{self, Accept, Invite};
use crate::dates::format_minute;
use crate::state::App;

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn date(v: &Value, key: &str) -> String {
    v[key]
        .as_i64()
        .map(format_minute)
        .unwrap_or_else(|| "-".into())
}

pub async fn show(State(app): State<Arc<App>>, session: Session) -> PageResult<Markup> {
    let Json(team) = teams::list(State(app.clone()), session.user.clone()).await?;
    let Json(mine) = packages::mine(State(app), session.user.clone()).await?;
    let members = team["members"].as_array().cloned().unwrap_or_default();
    let packages = mine["packages"].as_array().cloned().unwrap_or_default();
    let owner = text(&team, "owner");
    let body = html! {
        h1 { "Team " small { "(@" (owner) ")" } }
        p.hint { "Members see your workspaces and can install your team packages." }
        @if members.is_empty() {
            p { "No one invited yet." }
        } @else {
            div.scroll { table.team {
                thead { tr { th scope="col" { "Email" } th scope="col" { "User" } th scope="col" { "Status" } th scope="col" { "Invited" } th scope="col" { "Joined" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for m in &members {
                    tr {
                        td { (text(m, "email")) }
                        td { (text(m, "username")) }
                        td { span class={ "status " (text(m, "status")) } { (text(m, "status")) } }
                        td { (date(m, "invited_at")) }
                        td { (date(m, "joined_at")) }
                        td {
                            form.inline method="post" action={ (PATH) "/team/remove" } {
                                (csrf_field(&session))
                                input type="hidden" name="who" value=(text(m, "email"));
                                button.danger type="submit" aria-label={ "Remove " (text(m, "email")) } { "Remove" }
                            }
                        }
                    }
                } }
            } }
        }
        section aria-labelledby="invite" {
            h2 #invite { "Invite a team member" }
            form method="post" action={ (PATH) "/team/invite" } {
                (csrf_field(&session))
                label for="inv-email" { "Email" }
                input #inv-email name="email" type="email" required placeholder="alice@acme.com";
                button type="submit" { "Invite" }
            }
        }
        section aria-labelledby="accept" {
            h2 #accept { "Join a team" }
            form method="post" action={ (PATH) "/team/accept" } autocomplete="off" {
                (csrf_field(&session))
                label for="acc-code" { "Invitation code" }
                input #acc-code name="code" required placeholder="inv_…";
                button type="submit" { "Accept invitation" }
            }
        }
        section aria-labelledby="packages" {
            h2 #packages { "Packages of @" (owner) }
            @if packages.is_empty() {
                p { "None published yet (" code { "gatehouse skill publish" } ")." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Package" } th scope="col" { "Type" } th scope="col" { "Version" } th scope="col" { "Visibility" } th scope="col" { "Description" } } }
                    tbody { @for p in &packages {
                        tr { td { code { (text(p, "package")) } } td { (text(p, "type")) } td { (text(p, "version")) } td { (text(p, "visibility")) } td { (text(p, "description")) } }
                    } }
                } }
            }
        }
    };
    Ok(live_page(&session, "Team", body))
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

/// Invites and shows the join code, once (there is no mail transport to send it).
pub async fn invite(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<InviteForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let (_, Json(invited)) = teams::invite(
        State(app),
        session.user.clone(),
        Body(Invite { email: form.email }),
    )
    .await?;
    let email = text(&invited["invitation"], "email");
    let body = html! {
        h1 { "Invitation created." }
        p { "Send " strong { (email) } " this code (shown once; no email is sent). They sign in as the user with that email and accept it on their Team tab, or run the command." }
        div.once role="status" {
            (copyable("invite-code", "Invitation code", text(&invited, "code")))
            (copyable("join-command", "Command", text(&invited, "join_command")))
        }
        p { a.button href={ (PATH) "/team" } { "Back to the team" } }
    };
    Ok(page(&session, "Invitation created", body))
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn accept(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<AcceptForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let Json(joined) = teams::accept(
        State(app),
        session.user.clone(),
        Body(Accept { code: form.code }),
    )
    .await?;
    let body = html! {
        h1 { "Welcome to @" (text(&joined, "owner")) "." }
        p { "Its workspaces are now in your list, and its team packages can be installed." }
        p { a.button href={ (PATH) "/workspaces" } { "Workspaces" } }
    };
    Ok(page(&session, "Joined", body))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    who: String,
}

pub async fn remove(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<RemoveForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done = teams::remove(
        State(app),
        session.user.clone(),
        axum::extract::Path(form.who),
    )
    .await?;
    Ok(Redirect::to(&format!("{PATH}/team")).into_response())
}
