//! The `hot-paths` report: reads what `cargo bench --bench hot_paths` left in
//! `<target>/criterion` and holds each hot path to its budget.

use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::report::{self, Measurement, Target};

/// Every benchmark of `benches/hot_paths.rs` (criterion id), and its budget in ns.
pub const BENCHES: &[(&str, Option<f64>)] = &[
    ("envelope/seal", None),
    ("envelope/open", None),
    ("envelope/seal_open", Some(2_000.0)),
    ("auth/lookup_1000_tokens", Some(200.0)),
    ("auth/unknown_token", None),
    ("jsonrpc/parse_route_splice_300b", None),
    ("sse/split_3_events_2_chunks", None),
    ("catalog/build_10x50", None),
];

pub fn run(criterion_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut m = Vec::new();
    let mut missing = Vec::new();
    for (id, budget) in BENCHES {
        let path = criterion_dir.join(id).join("new").join("estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            missing.push(id.to_string());
            continue;
        };
        let estimates: Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let median = estimates
            .pointer("/median/point_estimate")
            .and_then(Value::as_f64)
            .with_context(|| format!("{}: no median", path.display()))?;
        let (value, unit) = if median >= 10_000.0 {
            (median / 1e3, "us")
        } else {
            (median, "ns")
        };
        let measurement = Measurement::new(format!("{id} (median)"), value, unit);
        m.push(match budget {
            Some(ns) => {
                measurement.target(Target::Ceiling(if unit == "us" { ns / 1e3 } else { *ns }))
            }
            None => measurement,
        });
    }
    if m.is_empty() {
        anyhow::bail!(
            "no criterion results under {}: run cargo bench -p gatehouse-bench --bench hot_paths first",
            criterion_dir.display()
        );
    }
    let table = report::table(&m);
    println!("{table}");
    if !missing.is_empty() {
        println!("not run: {}", missing.join(", "));
    }
    std::fs::create_dir_all(out)?;
    let path = out.join("hot_paths.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&m)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
