//! Who a page request comes from, and the page shell for them. The session cookie holds
//! the same JWT `/v1/login` gives the CLI (issued by the same handler, checked by the
//! same [`AuthUser::of_session`]); it is HttpOnly, SameSite=Strict, scoped to the
//! dashboard's path, and Secure when the request came over TLS (a terminating proxy
//! says so with `X-Forwarded-Proto: https`). Every state-changing form carries a CSRF
//! token derived from that JWT, which a page of another site can neither read nor
//! guess; a form without the right one is refused with 403.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use maud::{html, Markup};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::shell::{shell, Live, PageError, PATH};
use crate::api::request::AuthUser;
use crate::state::{sha256_hex, App};

/// The session cookie's name.
pub const COOKIE: &str = "gatehouse_session";

/// A signed-in user and the CSRF token their forms must carry.
#[derive(Clone)]
pub struct Session {
    pub user: AuthUser,
    pub csrf: String,
}

impl Session {
    /// Refuses a state-changing request whose form lacks this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if !given.is_empty() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }
}

fn csrf_of(jwt: &str) -> String {
    sha256_hex(&format!("gatehouse dashboard csrf\0{jwt}"))
}

pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, PageError> {
        let jwt = cookie_value(&parts.headers, COOKIE).ok_or(PageError::SignIn)?;
        let user = AuthUser::of_session(app, jwt).await?;
        Ok(Session {
            user,
            csrf: csrf_of(jwt),
        })
    }
}

/// A page for a signed-in user: the shell with navigation, who they are and a
/// sign-out button.
pub fn page(session: &Session, title: &str, body: Markup) -> Markup {
    signed_in(session, title, body, Live::No)
}

/// A [`page`] that shows what is current: when the configuration changes (here, in
/// another tab or through the CLI) the script fetches it again and swaps its content.
/// For pages that only show state, never for one that shows a secret once.
pub fn live_page(session: &Session, title: &str, body: Markup) -> Markup {
    signed_in(session, title, body, Live::Yes)
}

fn signed_in(session: &Session, title: &str, body: Markup, live: Live) -> Markup {
    let nav = html! {
        nav aria-label="Main" {
            a href={ (PATH) "/workspaces" } { "Workspaces" }
            a href={ (PATH) "/hub" } { "Hub" }
            a href={ (PATH) "/team" } { "Team" }
            a href={ (PATH) "/proxies" } { "Proxies" }
            span.who { "Signed in as " strong { (session.user.username) } }
            form.inline method="post" action={ (PATH) "/logout" } {
                (csrf_field(session))
                button.link type="submit" { "Sign out" }
            }
        }
    };
    shell(title, nav, body, live)
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub fn session_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path={PATH}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_only_over_tls() {
        let plain = session_cookie("jwt", 60, false);
        assert_eq!(
            plain,
            "gatehouse_session=jwt; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(session_cookie("jwt", 60, true).ends_with("; Secure"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; gatehouse_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }

    #[test]
    fn a_missing_or_wrong_csrf_token_is_refused() {
        let session = Session {
            user: AuthUser {
                id: "u".into(),
                username: "u".into(),
                admin: false,
            },
            csrf: csrf_of("jwt"),
        };
        assert!(session.check_csrf(&csrf_of("jwt")).is_ok());
        assert!(session.check_csrf("").is_err());
        assert!(session.check_csrf(&csrf_of("other")).is_err());
    }
}
