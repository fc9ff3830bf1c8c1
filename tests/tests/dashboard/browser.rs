//! A real headless Chromium, driven over WebDriver by Debian's `chromedriver`: one
//! driver process and one fresh profile per [`Browser`], so two browsers share no
//! cookies. A missing browser or driver fails the test (`scripts/prereqs.sh --tests`
//! installs them); it is never skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use gatehouse_tests::control_plane::free_addr;
use gatehouse_tests::{wait_until, within, TempDir, STEP_TIMEOUT};
use serde_json::{json, Value};

/// How long a page may take to show what a step waits for.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn executable(env: &str, names: &[&str]) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "none of {names:?} is on PATH (nor is {env} set): run `scripts/prereqs.sh --tests`, \
                 which installs Debian's chromium and chromium-driver"
            )
        })
}

/// Where screenshots go: `$GATEHOUSE_SCREENSHOTS`, else `<target dir>/dashboard-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GATEHOUSE_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    // The test binary is <target>/<profile>/deps/dashboard-<hash>.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("dashboard-screenshots")
}

pub struct Browser {
    client: Client,
    label: String,
    driver: tokio::process::Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session through it.
    pub async fn start(label: &str) -> anyhow::Result<Browser> {
        let driver_bin = executable("CHROMEDRIVER", &["chromedriver"])?;
        let chromium = executable("CHROMIUM", &["chromium", "chromium-browser"])?;
        let port = free_addr()?.port();
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            // Its own process group, which Chromium joins, so that dropping the
            // browser (a failed test) ends them all; see `Drop`.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::builder().no_proxy().build()?;
        wait_until(
            "chromedriver answers /status ready",
            STEP_TIMEOUT,
            || async {
                match http.get(&status).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                }
            },
        )
        .await?;
        let profile = TempDir::new(&format!("chromium-{label}"))?;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=1280,1000", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let client = within(
            "a Chromium session",
            STEP_TIMEOUT,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await?
        .context("chromedriver refused a session")?;
        Ok(Browser {
            client,
            label: label.to_owned(),
            driver,
            _profile: profile,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        within(
            &format!("{css:?} on the page"),
            PAGE_TIMEOUT,
            self.client.wait().forever().for_element(Locator::Css(css)),
        )
        .await?
        .with_context(|| format!("finding {css:?}"))
    }

    /// Waits until some element matching `css` has text containing `needle`.
    pub async fn find_text(&self, css: &str, needle: &str) -> anyhow::Result<Element> {
        self.find_texts(css, &[needle]).await
    }

    /// Waits until some element matching `css` has text containing every one of
    /// `needles` (a table row that names a token and says it is revoked).
    pub async fn find_texts(&self, css: &str, needles: &[&str]) -> anyhow::Result<Element> {
        let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
        loop {
            for element in self.client.find_all(Locator::Css(css)).await? {
                if element
                    .text()
                    .await
                    .is_ok_and(|t| needles.iter().all(|n| t.contains(n)))
                {
                    return Ok(element);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self.source().await.unwrap_or_default();
                anyhow::bail!("no {css:?} says {needles:?} after {PAGE_TIMEOUT:?}; page:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// The `value` of a form field.
    pub async fn value(&self, css: &str) -> anyhow::Result<String> {
        self.find(css)
            .await?
            .prop("value")
            .await?
            .with_context(|| format!("{css:?} has no value"))
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.client.source().await?)
    }

    pub async fn title(&self) -> anyhow::Result<String> {
        Ok(self.client.title().await?)
    }

    /// Saves a PNG of the window as `<screenshot dir>/<label>-<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-{name}.png", self.label));
        std::fs::write(&path, self.client.screenshot().await?)?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Ends the WebDriver session (Chromium quits), then the driver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        let _ = self.driver.kill().await;
        Ok(())
    }
}

impl Drop for Browser {
    /// A browser dropped without [`Browser::close`] (a test that failed half-way)
    /// would leave Chromium running after its driver is killed: end the driver's
    /// whole process group instead.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Signs in on the dashboard at `api` (the control plane's URL) and waits for the
/// workspace list.
pub async fn sign_in(
    browser: &Browser,
    api: &str,
    username: &str,
    credential: &str,
) -> anyhow::Result<()> {
    browser.goto(&format!("{api}/dashboard")).await?;
    browser.fill("#username", username).await?;
    browser.fill("#credential", credential).await?;
    browser.click("form button[type=submit]").await?;
    browser.find_text("main h1", "Workspaces").await?;
    Ok(())
}
