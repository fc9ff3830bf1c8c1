//! Signing in (the same users and credentials as `gatehouse login`, checked by the
//! API's own login handler) and signing out.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::html;
use serde::Deserialize;

use super::session::{over_tls, session_cookie, CsrfOnly, Session};
use super::shell::{bare, PageError, PATH};
use crate::api::error::ApiError;
use crate::api::request::Body;
use crate::api::users::{self, Login};
use crate::state::App;

pub async fn login_page() -> Response {
    bare("Sign in", sign_in_form(None)).into_response()
}

fn sign_in_form(problem: Option<&str>) -> maud::Markup {
    html! {
        h1 { "Sign in to Gatehouse" }
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        form method="post" action={ (PATH) "/login" } {
            label for="username" { "Username" }
            input #username name="username" autocomplete="username" required autofocus;
            label for="credential" { "Credential" }
            input #credential name="credential" type="password" autocomplete="current-password" required;
            p.hint { "The same credential as " code { "gatehouse login" } "." }
            button type="submit" { "Sign in" }
        }
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    username: String,
    #[serde(default)]
    credential: String,
}

pub async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let answer = users::login(
        State(app),
        Body(Login {
            username: form.username,
            credential: form.credential,
        }),
    )
    .await;
    let Json(answer) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let status = match &e {
                ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            let page = bare("Sign in", sign_in_form(Some(&e.to_string())));
            return (status, page).into_response();
        }
    };
    let token = answer["token"].as_str().unwrap_or_default();
    let max_age = answer["expires_at"].as_i64().unwrap_or(0) - crate::store::now();
    (
        [(
            header::SET_COOKIE,
            session_cookie(token, max_age.max(0), over_tls(&headers)),
        )],
        Redirect::to(&format!("{PATH}/workspaces")),
    )
        .into_response()
}

pub async fn logout(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    Ok((
        [(
            header::SET_COOKIE,
            session_cookie("", 0, over_tls(&headers)),
        )],
        Redirect::to(&format!("{PATH}/login")),
    )
        .into_response())
}
