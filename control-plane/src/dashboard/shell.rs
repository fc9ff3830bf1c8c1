//! The page shell every dashboard page shares, values shown with a copy button, and
//! the error pages ([`PageError`]) an API error becomes. It knows nothing of who is
//! signed in (`session` adds that).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};

use crate::api::error::ApiError;

/// Where the dashboard lives on the admin API's listener.
pub const PATH: &str = "/dashboard";

/// Whether a page refreshes its content by itself when the configuration changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Yes,
    No,
}

/// A whole page: `nav` goes in the top bar, `body` in `main`.
pub fn shell(title: &str, nav: Markup, body: Markup, live: Live) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gatehouse" }
                link rel="stylesheet" href={ (PATH) "/assets/dashboard.css" };
                script src={ (PATH) "/assets/dashboard.js" } defer {}
            }
            body data-live=[(live == Live::Yes).then_some(PATH)] {
                header.top {
                    a.brand href={ (PATH) "/workspaces" } { "Gatehouse" }
                    (nav)
                }
                main { (body) }
            }
        }
    }
}

/// A page for nobody in particular (sign in, errors before sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    shell(title, html! {}, body, Live::No)
}

/// A value to copy: read-only text with a button that copies it (the script adds the
/// behaviour; without it the text can still be selected).
pub fn copyable(id: &str, label: &str, value: &str) -> Markup {
    html! {
        div.copy {
            label for=(id) { (label) }
            div.copy-row {
                input id=(id) value=(value) readonly;
                button type="button" data-copy=(id) { "Copy" }
            }
        }
    }
}

/// A block of text to copy (the editor config).
pub fn copyable_block(id: &str, label: &str, value: &str) -> Markup {
    html! {
        div.copy {
            span.label { (label) }
            pre id=(id) tabindex="0" { (value) }
            button type="button" data-copy=(id) { "Copy" }
        }
    }
}

/// Why a dashboard request did not get its page.
#[derive(Debug)]
pub enum PageError {
    /// No session, or an expired one: go and sign in.
    SignIn,
    /// A state-changing form without this session's CSRF token.
    Csrf,
    /// What the API said, shown as the API said it.
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized(_) => PageError::SignIn,
            e => PageError::Api(e),
        }
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError::Api(e.into())
    }
}

pub type PageResult<T> = Result<T, PageError>;

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    error_page_with(status, title, message, &[])
}

fn error_page_with(
    status: StatusCode,
    title: &str,
    message: &str,
    problems: &[gatehouse_config::Problem],
) -> Response {
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        @if !problems.is_empty() {
            ul.problems { @for p in problems { li { code { (p.path) } ": " (p.message) } } }
        }
        p { a href={ (PATH) "/workspaces" } { "Back to workspaces" } }
    };
    (status, bare(title, body)).into_response()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to(&format!("{PATH}/login")).into_response(),
            PageError::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form was not sent from a Gatehouse dashboard page (missing or wrong CSRF token). Reload the page and try again.",
            ),
            PageError::Api(e) => {
                let (status, title) = match &e {
                    ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
                    ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
                    ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
                    ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Error"),
                    ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
                    _ => (StatusCode::BAD_REQUEST, "Cannot do that"),
                };
                if let ApiError::Internal(inner) = &e {
                    tracing::error!("dashboard: internal error: {inner:#}");
                }
                let problems = match &e {
                    ApiError::Invalid { problems, .. } => problems.as_slice(),
                    _ => &[],
                };
                error_page_with(status, title, &e.to_string(), problems)
            }
        }
    }
}

pub async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no dashboard page here.",
    )
}
