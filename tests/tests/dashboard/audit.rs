//! Workspace Audit with more entries than the API returns at once (its
//! `MAX_AUDIT_PAGE`, 10,000): the API's cursor walk and the dashboard's Older/Newer
//! links both reach every entry, newest first from the top, oldest last.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_config::audit::{AuditBatch, CallAction, CallEvent, CallOutcome};
use gatehouse_tests::deployment::Deployment;
use reqwest::Method;
use serde_json::Value;

use crate::browser::{sign_in, Browser};

/// The API's ceiling for one request (`api::workspaces::MAX_AUDIT_PAGE`).
const MAX_AUDIT_PAGE: usize = 10_000;
/// More calls than one API request returns.
const CALLS: usize = MAX_AUDIT_PAGE + 120;
/// Rows on a dashboard page.
const PAGE_SIZE: usize = 50;

fn call(i: usize, base_ms: i64) -> CallEvent {
    let target = match i {
        0 => "github__oldest".to_owned(),
        i if i == CALLS - 1 => "github__newest".to_owned(),
        i => format!("github__call_{i}"),
    };
    CallEvent {
        id: format!("ce_{:032x}", rand::random::<u128>()),
        // Two calls a millisecond (the id orders those), but the first and the last
        // have theirs alone.
        time_ms: match i {
            0 => base_ms - 1,
            i if i == CALLS - 1 => base_ms + CALLS as i64,
            i => base_ms + (i / 2) as i64,
        },
        workspace: "eng".into(),
        token_id: "tok_x".into(),
        token_name: "ci".into(),
        action: CallAction::ToolCall,
        server: "github".into(),
        target,
        outcome: CallOutcome::Ok,
        latency_us: 1_000,
        request_id: i.to_string(),
        transport: "streamable_http".into(),
    }
}

/// Every entry of the audit API for the admin, page by page along `next_cursor`.
async fn walk(d: &Deployment, jwt: &str, order: &str) -> anyhow::Result<(Vec<Value>, usize)> {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/v1/workspaces/eng/audit?order={order}&limit={MAX_AUDIT_PAGE}&cursor={cursor}"
        );
        let answer = d.cp.request(Method::GET, &path, Some(jwt), None).await?;
        anyhow::ensure!(answer.status == 200, "{path}: {}", answer.body);
        let body = answer.json()?;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        pages += 1;
        anyhow::ensure!(events.len() <= MAX_AUDIT_PAGE);
        all.extend(events);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        anyhow::ensure!(pages < 10, "the walk does not end");
    }
    Ok((all, pages))
}

/// The `href` of the link marked `rel` on a page, unescaped.
fn link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\""))?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}

/// The SKILL column of a page's table, in order.
fn targets(html: &str) -> Vec<String> {
    html.split("<td><code>")
        .skip(1)
        .filter_map(|cell| cell.split("</code>").next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_audit_entry_is_reached_past_the_api_ceiling() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    d.admin.ok(&["workspace", "create", "Eng"]).await?;
    let base_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64 + 5_000;
    let calls: Vec<CallEvent> = (0..CALLS).map(|i| call(i, base_ms)).collect();
    for part in calls.chunks(5_000) {
        let batch = serde_json::to_value(AuditBatch {
            proxy_id: "px_test".into(),
            events: part.to_vec(),
        })?;
        let answer =
            d.cp.request(
                Method::POST,
                "/v1/proxy/audit",
                Some(d.cp.proxy_token()),
                Some(&batch),
            )
            .await?;
        anyhow::ensure!(answer.status == 200, "{}", answer.body);
    }

    // The API: both orders reach every entry once, in pages of at most 10,000.
    let jwt = d.admin.session_token()?;
    let (newest_first, pages) = walk(&d, &jwt, "desc").await?;
    assert_eq!(pages, 2);
    let admin_events = newest_first.len() - CALLS;
    assert!(
        admin_events >= 1,
        "no workspace_create among {}",
        newest_first.len()
    );
    let ids: HashSet<&str> = newest_first
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids.len(), newest_first.len(), "an entry came twice");
    assert!(calls.iter().all(|c| ids.contains(c.id.as_str())));
    assert_eq!(newest_first[0]["target"], "github__newest");
    let (oldest_first, _) = walk(&d, &jwt, "asc").await?;
    assert_eq!(oldest_first[0]["action"], "workspace_create");
    let mut reversed = oldest_first.clone();
    reversed.reverse();
    assert_eq!(reversed, newest_first);

    // The CLI: a page of the server's default size, oldest first, and how to go on
    // (the SKILL column is the last but one: ACTION holds no spaces here).
    let skill_of = |e: &Value| match e["target"].as_str() {
        Some("") | None => "-".to_owned(),
        Some(t) => t.to_owned(),
    };
    let first = d.admin.ok(&["workspace", "audit", "eng"]).await?;
    let rows: Vec<&str> = first
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("More events"))
        .collect();
    assert_eq!(rows.len(), 1_000);
    let last = rows[999]
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap_or_default();
    assert_eq!(last, skill_of(&oldest_first[999]));
    let more = first
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("More events: run it again with --after "))
        .and_then(|l| l.split(' ').next())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no way on after the first page:\n{}",
                &first[first.len().saturating_sub(300)..]
            )
        })?;
    let second = d
        .admin
        .ok(&["workspace", "audit", "eng", "--after", more])
        .await?;
    let next = second
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().rev().nth(1));
    assert_eq!(next, Some(skill_of(&oldest_first[1_000]).as_str()));
    for bad in ["order=sideways", "cursor=nonsense"] {
        let answer =
            d.cp.request(
                Method::GET,
                &format!("/v1/workspaces/eng/audit?{bad}"),
                Some(&jwt),
                None,
            )
            .await?;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }

    // The dashboard: the newest call on top, Older and back.
    let browser = Browser::start("audit").await?;
    sign_in(&browser, &api, "admin", d.cp.admin_credential()).await?;
    let dash = format!("{api}/dashboard/workspaces/eng/audit");
    browser.goto(&format!("{dash}?action=tool_call")).await?;
    browser
        .find_text("table.audit tbody tr:first-child", "github__newest")
        .await?;
    browser.find_text("nav.pages", "Page 1 · 50 events").await?;
    browser.screenshot("audit-deep").await?;
    browser.click("nav.pages a[rel=next]").await?;
    browser.find_text("nav.pages", "Page 2 · 50 events").await?;
    // The 51st newest call, or the 52nd: the two share a millisecond, ordered by id.
    let second = browser.text("table.audit tbody tr:first-child").await?;
    assert!(
        [CALLS - 1 - PAGE_SIZE, CALLS - 2 - PAGE_SIZE]
            .iter()
            .any(|i| second.contains(&format!("github__call_{i} tool_call"))),
        "{second}"
    );
    browser.click("nav.pages a[rel=prev]").await?;
    browser
        .find_text("table.audit tbody tr:first-child", "github__newest")
        .await?;
    assert_eq!(
        browser
            .client()
            .find_all(fantoccini::Locator::Css("nav.pages a[rel=prev]"))
            .await?
            .len(),
        0
    );

    // Following Older from the top, page after page, reaches the very first call.
    let cookie = browser
        .client()
        .get_named_cookie("gatehouse_session")
        .await?
        .value()
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut next = Some(format!("{dash}?action=tool_call"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next {
        let html = http
            .get(&url)
            .header("cookie", format!("gatehouse_session={cookie}"))
            .send()
            .await?
            .text()
            .await?;
        let rows = targets(&html);
        assert!(
            rows.len() <= PAGE_SIZE && !rows.is_empty(),
            "{url}: {} rows",
            rows.len()
        );
        seen.extend(rows);
        pages += 1;
        next = link(&html, "next").map(|href| format!("{api}{href}"));
    }
    assert_eq!(pages, CALLS.div_ceil(PAGE_SIZE));
    assert_eq!(seen.len(), CALLS);
    assert_eq!(seen.first().map(String::as_str), Some("github__newest"));
    assert_eq!(seen.last().map(String::as_str), Some("github__oldest"));
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), CALLS);
    browser.close().await
}
