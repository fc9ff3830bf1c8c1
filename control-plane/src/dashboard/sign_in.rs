//! Signing in (the same users and credentials as `gatehouse login`, checked by the
//! API's own login handler) and signing out, which revokes the session's JWT in the
//! store. The sign-in form is CSRF-protected too, by a token paired with a
//! short-lived cookie (there is no session yet to bind to).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::session::{cookie_value, over_tls, session_cookie, CsrfOnly, Session, COOKIE};
use super::shell::{bare, PageError, PATH};
use crate::api::error::ApiError;
use crate::api::request::Body;
use crate::api::users::{self, Login};
use crate::crypto::random_token;
use crate::state::App;

/// The cookie that pairs a sign-in form with the browser it was sent to: a form
/// posted from another site lacks it, so nobody can sign a visitor in to their own
/// account behind their back.
const LOGIN_COOKIE: &str = "gatehouse_login";

/// The sign-in page with a fresh form token, and its cookie.
fn sign_in_page(status: StatusCode, problem: Option<&str>, headers: &HeaderMap) -> Response {
    let token = random_token("lgn_");
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path={PATH}/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    );
    let page = bare("Sign in", sign_in_form(problem, &token));
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn login_page(headers: HeaderMap) -> Response {
    sign_in_page(StatusCode::OK, None, &headers)
}

fn sign_in_form(problem: Option<&str>, token: &str) -> maud::Markup {
    html! {
        h1 { "Sign in to Gatehouse" }
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        form method="post" action={ (PATH) "/login" } {
            input type="hidden" name="csrf" value=(token);
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
    csrf: String,
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
    let paired = cookie_value(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && bool::from(c.as_bytes().ct_eq(form.csrf.as_bytes())));
    if !paired {
        return PageError::Csrf.into_response();
    }
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
            return sign_in_page(status, Some(&e.to_string()), &headers);
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

/// Signs out: the cookie is cleared in this browser, and its JWT is revoked in the
/// store, so a copy of the cookie taken before is refused by every control plane.
pub async fn logout(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    session.check_csrf(&form.csrf)?;
    if let Some(jwt) = cookie_value(&headers, COOKIE) {
        app.sign_out(jwt).await?;
    }
    Ok((
        [(
            header::SET_COOKIE,
            session_cookie("", 0, over_tls(&headers)),
        )],
        Redirect::to(&format!("{PATH}/login")),
    )
        .into_response())
}
