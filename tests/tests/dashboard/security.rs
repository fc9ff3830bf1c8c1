//! What the dashboard refuses or defuses: forms without the session's CSRF token,
//! another user's workspace (the same 404 page as one that does not exist), markup in
//! names and audit fields (shown as text, never run), and the session cookie's flags.
//! No page or asset carries a secret value, a token, or a token's hash. A session
//! signed out is refused even to someone holding a copy of its cookie.

use gatehouse_tests::config::random_base62;
use gatehouse_tests::deployment::{token_in, Deployment};
use sha2::{Digest, Sha256};

use crate::browser::{sign_in, Browser};

/// A slug nobody created.
const NOWHERE: &str = "no-such-ws";

/// Text that runs if a page ever inserts it as markup.
const INJECTED: &str =
    "<script>window.__injected=1</script><img src=x onerror=window.__injected=2>";

fn value_after(text: &str, label: &str) -> anyhow::Result<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {label:?} line in:\n{text}"))
}

async fn injected_ran(browser: &Browser) -> anyhow::Result<bool> {
    let answer = browser
        .client()
        .execute("return typeof window.__injected !== 'undefined';", vec![])
        .await?;
    Ok(answer != serde_json::Value::Bool(false))
}

/// POSTs a dashboard form with `cookie` as the session, outside the browser.
async fn post_form(
    url: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let answer = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .post(url)
        .header("cookie", format!("gatehouse_session={cookie}"))
        .form(form)
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

async fn session_cookie(browser: &Browser) -> anyhow::Result<fantoccini::cookies::Cookie<'static>> {
    Ok(browser
        .client()
        .get_named_cookie("gatehouse_session")
        .await?)
}

#[tokio::test]
async fn forged_foreign_and_hostile_requests_are_refused_or_shown_as_text() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    let dash = format!("{api}/dashboard");
    let first = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            "http://127.0.0.1:9/mcp",
            "--name",
            "github",
            "--workspace",
            "engineering",
            "--header",
            "Authorization: Bearer {{secrets.GITHUB_TOKEN}}",
        ])
        .await?;
    let secret = format!("ghp_{}", random_base62(36));
    d.admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            &secret,
            "--workspace",
            "engineering",
        ])
        .await?;
    let created = d
        .admin
        .ok(&["user", "create", "bob", "--email", "bob@example.com"])
        .await?;
    let bob_credential = value_after(&created, "Credential: ")?;

    let admin = Browser::start("admin").await?;
    sign_in(&admin, &api, "admin", d.cp.admin_credential()).await?;

    // The session cookie: HttpOnly, SameSite=Strict, not Secure over plain HTTP...
    let cookie = session_cookie(&admin).await?;
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict"),
        "{cookie}"
    );
    assert_ne!(cookie.secure(), Some(true), "{cookie}");
    assert!(cookie.path() == Some("/dashboard"), "{cookie}");
    // ...and Secure when a TLS-terminating proxy says the request came over HTTPS.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for (proto, secure) in [("https", true), ("http", false)] {
        // The sign-in form comes with its own token and a cookie to pair it with.
        let form = http
            .get(format!("{dash}/login"))
            .header("x-forwarded-proto", proto)
            .send()
            .await?;
        let pairing = form.headers()["set-cookie"].to_str()?.to_owned();
        assert!(pairing.contains("; HttpOnly; SameSite=Strict"), "{pairing}");
        assert_eq!(pairing.ends_with("; Secure"), secure, "{proto}: {pairing}");
        let pairing = pairing.split(';').next().unwrap_or_default().to_owned();
        let html = form.text().await?;
        let token = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| anyhow::anyhow!("no csrf field in the sign-in form:\n{html}"))?
            .to_owned();
        let credential = d.cp.admin_credential();
        let fields = [("username", "admin"), ("credential", credential)];
        // Without the pair (a form posted from another site), signing in is refused.
        for (cookie, csrf) in [
            ("", token.as_str()),
            (pairing.as_str(), ""),
            (pairing.as_str(), "lgn_x"),
        ] {
            let refused = http
                .post(format!("{dash}/login"))
                .header("cookie", cookie)
                .form(&[fields[0], fields[1], ("csrf", csrf)])
                .send()
                .await?;
            assert_eq!(refused.status(), 403, "cookie {cookie:?}, csrf {csrf:?}");
            assert!(!refused.headers().contains_key("set-cookie"));
        }
        let answer = http
            .post(format!("{dash}/login"))
            .header("x-forwarded-proto", proto)
            .header("cookie", &pairing)
            .form(&[fields[0], fields[1], ("csrf", token.as_str())])
            .send()
            .await?;
        assert_eq!(answer.status(), 303);
        let set = answer.headers()["set-cookie"].to_str()?.to_owned();
        assert!(set.starts_with("gatehouse_session="), "{set}");
        assert!(set.contains("; HttpOnly; SameSite=Strict"), "{set}");
        assert_eq!(set.ends_with("; Secure"), secure, "{proto}: {set}");
    }

    // A form without the CSRF token is refused, in the browser and outside it, and
    // changes nothing.
    admin
        .client()
        .execute(
            "document.querySelector(\"form[action$='/workspaces'] input[name=csrf]\").remove();",
            vec![],
        )
        .await?;
    admin.fill("#ws-name", "Forged").await?;
    admin.click("form[action$='/workspaces'] button").await?;
    admin.find_text("main h1", "Refused").await?;
    admin.screenshot("csrf-refused").await?;
    let session = cookie.value().to_owned();
    for form in [
        vec![("name", "Forged")],
        vec![("name", "Forged"), ("csrf", "0123")],
    ] {
        let (status, body) = post_form(&format!("{dash}/workspaces"), &session, &form).await?;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    let revoke = post_form(
        &format!("{dash}/workspaces/engineering/tokens/revoke"),
        &session,
        &[("id", "whatever")],
    )
    .await?;
    assert_eq!(revoke.0, 403);
    let listed = d.admin.ok(&["workspace", "list"]).await?;
    assert!(!listed.contains("forged"), "{listed}");

    // Markup in a workspace name and in an audit field is shown as text, never run.
    admin.goto(&format!("{dash}/workspaces")).await?;
    admin.fill("#ws-name", &format!("Ops {INJECTED}")).await?;
    admin.fill("#ws-slug", "ops").await?;
    admin.click("form[action$='/workspaces'] button").await?;
    admin.find_text("main p strong", "<script>").await?;
    admin.goto(&format!("{dash}/workspaces/ops")).await?;
    admin.find_text("main h1", INJECTED).await?;
    admin.fill("#tok-name", INJECTED).await?;
    admin.click("form[action$='/tokens'] button").await?;
    admin.find_text("main h1", "Token created.").await?;
    admin.goto(&format!("{dash}/workspaces")).await?;
    admin.find_text("td", INJECTED).await?;
    admin.goto(&format!("{dash}/workspaces/ops/audit")).await?;
    admin.find_text("table.audit td", "<script>").await?;
    assert!(!injected_ran(&admin).await?, "injected markup ran");
    admin.screenshot("markup-as-text").await?;

    // Delete asks first, in the seeds' words, then the workspace and its tokens go.
    let ops_token = d
        .admin
        .ok(&["workspace", "token", "create", "ops", "--name", "ci"])
        .await?;
    let ops_token = token_in(&ops_token)?;
    admin.goto(&format!("{dash}/workspaces/ops")).await?;
    admin.click("nav.sub a[href$='/delete']").await?;
    admin
        .find_text("p.warning", "This will revoke all 3 tokens.")
        .await?;
    admin.screenshot("delete-confirm").await?;
    admin.click("form[action$='/ops/delete'] button").await?;
    admin.find_text("main h1", "Workspaces").await?;
    assert!(!admin.text("main table").await?.contains("ops"));
    let listed = d.admin.ok(&["workspace", "list"]).await?;
    assert!(!listed.contains("ops"), "{listed}");
    d.synced().await?;
    let refused = gatehouse_tests::RawClient::new(d.proxy.ws_url("ops"), Some(&ops_token))
        .send_initialize()
        .await?;
    assert_eq!(refused.status, 401, "{}", refused.text());

    // No page or asset holds the secret, a token or a token's hash.
    let hash = hex::encode(Sha256::digest(first.as_bytes()));
    for page in [
        "/workspaces",
        "/workspaces/engineering",
        "/workspaces/engineering/audit",
        "/assets/dashboard.css",
        "/assets/dashboard.js",
    ] {
        admin.goto(&format!("{dash}{page}")).await?;
        let source = admin.source().await?;
        for (what, needle) in [
            ("secret", &secret),
            ("token", &first),
            ("token hash", &hash),
        ] {
            assert!(!source.contains(needle.as_str()), "{page} shows the {what}");
        }
    }

    // Bob, signed in in his own browser, gets the same 404 page for the admin's
    // workspace as for one that does not exist, and cannot act on it either.
    let bob = Browser::start("bob").await?;
    sign_in(&bob, &api, "bob", &bob_credential).await?;
    assert!(!bob.text("main").await?.contains("engineering"));
    let mut seen = Vec::new();
    for slug in ["engineering", NOWHERE] {
        bob.goto(&format!("{dash}/workspaces/{slug}")).await?;
        bob.find_text("main h1", "Not found").await?;
        assert_eq!(bob.title().await?, "Not found · Gatehouse");
        seen.push(bob.text("main").await?.replace(slug, "<slug>"));
    }
    assert_eq!(seen[0], seen[1]);
    bob.screenshot("not-found").await?;
    let bob_session = session_cookie(&bob).await?.value().to_owned();
    bob.goto(&format!("{dash}/workspaces")).await?;
    let bob_csrf = bob
        .find("input[name=csrf]")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    for (path, form) in [
        ("/workspaces/engineering/tokens/revoke", vec![("id", "x")]),
        ("/workspaces/engineering/delete", vec![]),
        (
            "/workspaces/engineering/secrets",
            vec![
                ("server", "github"),
                ("name", "GITHUB_TOKEN"),
                ("value", "stolen"),
            ],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &bob_csrf));
        let (status, body) = post_form(&format!("{dash}{path}"), &bob_session, &form).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let still = d
        .admin
        .ok(&["workspace", "token", "list", "engineering"])
        .await?;
    assert!(still.contains("active"), "{still}");

    // Signing out ends the browser's session...
    assert_eq!(page_status(&dash, &bob_session).await?, 200);
    bob.click("header form button").await?;
    bob.find_text("main h1", "Sign in").await?;
    bob.goto(&format!("{dash}/workspaces")).await?;
    bob.find_text("main h1", "Sign in").await?;
    bob.close().await?;
    // ...and the session itself: a copy of the cookie taken before is refused, by the
    // dashboard and as the API's bearer token, though its JWT has not expired.
    assert_eq!(page_status(&dash, &bob_session).await?, 303);
    let whoami =
        d.cp.request(reqwest::Method::GET, "/v1/whoami", Some(&bob_session), None)
            .await?;
    assert_eq!(whoami.status, 401, "{}", whoami.body);
    assert!(whoami.body.contains("signed out"), "{}", whoami.body);
    // Only that session: the admin's goes on.
    assert_eq!(page_status(&dash, cookie.value()).await?, 200);
    admin.close().await
}

/// The status of the workspace list for session `cookie` (303: sent to sign in).
async fn page_status(dash: &str, cookie: &str) -> anyhow::Result<u16> {
    let answer = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{dash}/workspaces"))
        .header("cookie", format!("gatehouse_session={cookie}"))
        .send()
        .await?;
    Ok(answer.status().as_u16())
}
