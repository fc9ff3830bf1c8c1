//! `gatehouse logout` ends the session on the control plane, not only in the CLI's
//! state file: the JWT it held is refused from then on (a copy of the file is worth
//! nothing), the user's other sessions go on, and a control plane that cannot be told
//! is named while the CLI still forgets the session.

use gatehouse_tests::control_plane::Cli;
use reqwest::Method;

#[tokio::test]
async fn logout_revokes_the_session_it_held_and_no_other() -> anyhow::Result<()> {
    let mut cp = crate::fixture::control_plane().await?;
    let api = cp.api_url();
    let laptop = Cli::admin_of(&cp).await?;
    let desktop = Cli::admin_of(&cp).await?;
    let (held, other) = (laptop.session_token()?, desktop.session_token()?);
    assert_ne!(held, other, "two logins are two sessions");
    let whoami = |token: String| {
        let cp = &cp;
        async move {
            cp.request(Method::GET, "/v1/whoami", Some(&token), None)
                .await
        }
    };
    assert_eq!(whoami(held.clone()).await?.status, 200);

    assert_eq!(
        laptop.ok(&["logout"]).await?,
        format!("Logged out of {api}.\n")
    );
    let refused = whoami(held.clone()).await?;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("signed out"), "{}", refused.body);
    assert_eq!(whoami(other.clone()).await?.status, 200);
    assert_eq!(laptop.ok(&["logout"]).await?, "Not logged in.\n");

    // The control plane gone: the CLI forgets the session all the same, and says the
    // session itself lives on until it expires.
    cp.kill();
    let out = desktop.ok(&["logout"]).await?;
    assert!(
        out.starts_with(&format!(
            "Logged out of {api} here, but the control plane was not told ("
        )) && out.ends_with("the session stays valid until it expires.\n"),
        "{out}"
    );
    assert!(desktop.session_token().is_err(), "the session was kept");
    Ok(())
}
