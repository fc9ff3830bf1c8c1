//! Reading samples out of a Prometheus text exposition, to check that the numbers a
//! proxy or the control plane reports match what a test did.

/// The value of the sample of `name` whose labels are exactly `labels` (in any
/// order); `None` when there is no such sample.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(exposition, name)
        .find(|(found, _)| found.len() == labels.len() && has_labels(found, labels))
        .map(|(_, value)| value)
}

/// The sum of every sample of `name` whose labels include `labels`.
pub fn sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(exposition, name)
        .filter(|(found, _)| has_labels(found, labels))
        .map(|(_, value)| value)
        .sum()
}

/// Every sample of `name`: its labels and value.
fn samples<'a>(
    exposition: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            (metric == name).then(|| Some((labels, value.parse().ok()?)))?
        })
}

fn has_labels(found: &[(String, String)], wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
}

/// `a="x",b="y"` -> pairs (values unescaped).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total Things\n# TYPE x_total counter\n\
        x_total{a=\"1\",b=\"two words\"} 3\nx_total{a=\"2\",b=\"q\\\"uote\"} 4\nup 1\n";

    #[test]
    fn samples_are_found_by_exact_labels() {
        assert_eq!(
            sample(TEXT, "x_total", &[("b", "two words"), ("a", "1")]),
            Some(3.0)
        );
        assert_eq!(
            sample(TEXT, "x_total", &[("a", "2"), ("b", "q\"uote")]),
            Some(4.0)
        );
        assert_eq!(sample(TEXT, "x_total", &[("a", "1")]), None);
        assert_eq!(sample(TEXT, "up", &[]), Some(1.0));
        assert_eq!(sum(TEXT, "x_total", &[]), 7.0);
        assert_eq!(sum(TEXT, "x_total", &[("a", "2")]), 4.0);
    }
}
