//! Reading figures off a `/metrics` page (the Prometheus text exposition of the
//! proxy and of the control plane): enough to add up the series of one metric.

use std::time::Duration;

use anyhow::Context;

/// `GET url` and its body, which must come with a 200.
pub async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    http.get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("GET {url}: reading the body"))
}

/// The sum of the series of metric `name` that carry every one of `labels`; `None`
/// when the page has no such series at all (the metric does not exist, or no series
/// matches), which is not the same as a counter at 0.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some((series_labels, value)) = parse_line(line, name) else {
            continue;
        };
        if labels
            .iter()
            .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v))
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// The series of metric `name` added up per value of `label`, in the order the values
/// first appear (a series without the label counts under "").
pub fn sum_by(text: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (labels, value) in text.lines().filter_map(|line| parse_line(line, name)) {
        let key = labels
            .into_iter()
            .find(|(k, _)| k == label)
            .map(|(_, v)| v)
            .unwrap_or_default();
        match sums.iter_mut().find(|(k, _)| *k == key) {
            Some((_, sum)) => *sum += value,
            None => sums.push((key, value)),
        }
    }
    sums
}

/// The labels and value of `line` if it is a sample of metric `name`.
fn parse_line(line: &str, name: &str) -> Option<(Vec<(String, String)>, f64)> {
    let rest = line.strip_prefix(name)?;
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let (labels, end) = parse_labels(inner)?;
            (labels, &inner[end..])
        }
        // Another metric whose name starts with `name` (`x_total` vs `x_total_bytes`).
        None if !rest.starts_with(' ') => return None,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((labels, value))
}

/// `k="v",...}` up to and including the closing brace: the pairs, and where the
/// text after the brace starts. Values may hold escaped quotes and backslashes.
fn parse_labels(text: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut labels = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| c == ',' || c == ' ').is_some() {}
        let (start, c) = chars.next()?;
        if c == '}' {
            return Some((labels, start + 1));
        }
        let mut key = String::from(c);
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP gatehouse_audit_events_shipped_total Audit events the control plane acknowledged
# TYPE gatehouse_audit_events_shipped_total counter
gatehouse_audit_events_shipped_total 1200
gatehouse_audit_events_shipped_total_bytes 7
gatehouse_control_plane_audit_events_received_total{result=\"duplicate\"} 3
gatehouse_control_plane_audit_events_received_total{result=\"stored\"} 1197
gatehouse_tool_calls_total{workspace=\"bench\",server=\"s0\",tool=\"echo\",outcome=\"ok\"} 1000
gatehouse_tool_calls_total{workspace=\"bench\",server=\"-\",tool=\"a \\\"b\\\", c}\",outcome=\"tool_error\"} 5
";

    #[test]
    fn sums_the_series_that_carry_the_labels() {
        assert_eq!(
            sum(PAGE, "gatehouse_audit_events_shipped_total", &[]),
            Some(1200.0)
        );
        assert_eq!(
            sum(
                PAGE,
                "gatehouse_control_plane_audit_events_received_total",
                &[("result", "stored")]
            ),
            Some(1197.0)
        );
        assert_eq!(sum(PAGE, "gatehouse_tool_calls_total", &[]), Some(1005.0));
        assert_eq!(
            sum(
                PAGE,
                "gatehouse_tool_calls_total",
                &[("tool", "a \"b\", c}")]
            ),
            Some(5.0)
        );
    }

    #[test]
    fn sums_per_value_of_a_label() {
        assert_eq!(
            sum_by(PAGE, "gatehouse_tool_calls_total", "outcome"),
            vec![("ok".to_string(), 1000.0), ("tool_error".to_string(), 5.0)]
        );
        assert_eq!(
            sum_by(PAGE, "gatehouse_tool_calls_total", "nope"),
            vec![(String::new(), 1005.0)]
        );
        assert!(sum_by(PAGE, "gatehouse_upstream_errors_total", "kind").is_empty());
    }

    #[test]
    fn a_missing_metric_is_none_not_zero() {
        assert_eq!(sum(PAGE, "gatehouse_audit_events_dropped_total", &[]), None);
        assert_eq!(
            sum(
                PAGE,
                "gatehouse_control_plane_audit_events_received_total",
                &[("result", "lost")]
            ),
            None
        );
    }
}
