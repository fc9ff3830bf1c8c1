//! `gatehouse serve --database` with a database it cannot use: the start fails at
//! once, naming the server (never the password) or the URL it cannot read.

use std::process::Stdio;

use gatehouse_tests::control_plane::{free_addr, gatehouse_binary};
use gatehouse_tests::{within, TempDir, STEP_TIMEOUT};

/// Runs `gatehouse serve --database URL` (or with `GATEHOUSE_DATABASE_URL`) and
/// returns its exit code and stderr; it must exit by itself.
async fn serve_with(url: &str, by_env: bool) -> anyhow::Result<(Option<i32>, String)> {
    let data = TempDir::new("bad-db")?;
    let mut command = tokio::process::Command::new(gatehouse_binary()?);
    command
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--listen", &free_addr()?.to_string()])
        .env_remove("GATEHOUSE_DATA_DIR")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if by_env {
        command.env("GATEHOUSE_DATABASE_URL", url);
    } else {
        command.args(["--database", url]);
    }
    let out = within("gatehouse serve gives up", STEP_TIMEOUT, command.output()).await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_naming_the_server_not_the_password(
) -> anyhow::Result<()> {
    let closed = free_addr()?;
    for by_env in [false, true] {
        let url = format!("postgres://gatehouse:s3cret-pw@{closed}/gatehouse");
        let (code, stderr) = serve_with(&url, by_env).await?;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: opening the store at postgres://gatehouse:***@{closed}/gatehouse: \
                 cannot connect to the PostgreSQL database at {closed}/gatehouse: "
            )),
            "{stderr}"
        );
        assert!(
            !stderr.contains("s3cret-pw"),
            "the password was printed: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_database_url_of_another_engine_is_refused_by_name() -> anyhow::Result<()> {
    let (code, stderr) = serve_with("mysql://root:s3cret-pw@127.0.0.1/gatehouse", false).await?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: unsupported database URL \"mysql://root:***@127.0.0.1/gatehouse\": \
             expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite://PATH"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password was printed: {stderr}"
    );
    Ok(())
}
