//! The admin dashboard in a real headless Chromium (Debian's `chromium`, driven by
//! its `chromedriver` over WebDriver), against a real `gatehouse serve` and
//! `gatehouse-proxy` on free ports, with real MCP servers and clients checking that
//! what a person does on a page takes effect where it matters.
//!
//! Screenshots of each main page land in `<target dir>/dashboard-screenshots`
//! (or `$GATEHOUSE_SCREENSHOTS`); each test prints their paths.

#[path = "dashboard/audit.rs"]
mod audit;
#[path = "dashboard/browser.rs"]
mod browser;
#[path = "dashboard/hub_install.rs"]
mod hub_install;
#[path = "dashboard/security.rs"]
mod security;
#[path = "dashboard/team.rs"]
mod team;
#[path = "dashboard/tools.rs"]
mod tools;
#[path = "dashboard/workspace_flow.rs"]
mod workspace_flow;
