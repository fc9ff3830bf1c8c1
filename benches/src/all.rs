//! The `all` scenario: every load scenario in turn with its defaults, each as its own
//! `gatehouse-bench` process (a scenario that fails or panics does not stop the others,
//! and each starts from a clean process), then one report of all their measurements.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::report::{Measurement, Report};

/// One scenario `all` runs.
struct Step {
    /// Its subcommand.
    command: &'static str,
    /// The `--out` it is given, under `all`'s own.
    out: &'static str,
    /// Where it writes its `report.json`, under `all`'s `--out`.
    report: &'static str,
}

/// The scenarios, in the order they run. A scenario this binary does not have (yet) is
/// skipped with a note. A new scenario gets a line here.
const STEPS: &[Step] = &[
    Step {
        command: "data-plane",
        out: "data-plane",
        report: "data-plane/report.json",
    },
    Step {
        command: "audit",
        out: "",
        report: "audit/report.json",
    },
    Step {
        command: "revocation",
        out: "",
        report: "revocation/report.json",
    },
    Step {
        command: "sse-vs-streamable",
        out: "",
        report: "sse-vs-streamable/report.json",
    },
    Step {
        command: "sessions",
        out: "",
        report: "sessions/report.json",
    },
    Step {
        command: "instructions",
        out: "",
        report: "instructions/report.json",
    },
    Step {
        command: "eras",
        out: "",
        report: "eras/report.json",
    },
    Step {
        command: "scale-out",
        out: "",
        report: "scale-out/report.json",
    },
    Step {
        command: "overload",
        out: "",
        report: "overload/report.json",
    },
    Step {
        command: "faults",
        out: "",
        report: "faults/report.json",
    },
    Step {
        command: "hosted",
        out: "",
        report: "hosted/report.json",
    },
];

#[derive(Debug, Serialize)]
struct Environment {
    steps: Vec<StepOutcome>,
}

#[derive(Debug, Serialize)]
struct StepOutcome {
    command: &'static str,
    /// `ok`, `failed (<exit status>)`, `skipped: ...`.
    outcome: String,
    seconds: f64,
    report: Option<String>,
    measurements: usize,
}

/// Runs every step `subcommands` contains with `exe`, then prints and writes the
/// combined report to `<out>/report.json`. Fails (after writing it) if a step failed.
pub fn run(exe: &Path, out: &Path, subcommands: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let mut report = Report {
        scenario: "all",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: Environment { steps: Vec::new() },
        measurements: Vec::new(),
        runs: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let mut failed = Vec::new();
    for step in STEPS {
        if !subcommands.iter().any(|s| s == step.command) {
            let note = format!("{}: not a subcommand of this build, skipped", step.command);
            eprintln!("all: {note}");
            report.notes.push(note);
            report.environment.steps.push(StepOutcome {
                command: step.command,
                outcome: "skipped: not in this build".into(),
                seconds: 0.0,
                report: None,
                measurements: 0,
            });
            continue;
        }
        let step_out = out.join(step.out);
        let report_path = out.join(step.report);
        // A report left by an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(&report_path);
        eprintln!(
            "\n=== all: {} (--out {}) ===",
            step.command,
            step_out.display()
        );
        let started = Instant::now();
        let status = Command::new(exe)
            .arg("--out")
            .arg(&step_out)
            .arg(step.command)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {} {}", exe.display(), step.command))?;
        let seconds = started.elapsed().as_secs_f64();
        let mut outcome = if status.success() {
            "ok".to_string()
        } else {
            failed.push(step.command);
            report.problems.push(format!(
                "{} failed ({status}): its output is above; its figures, if any, are below",
                step.command
            ));
            format!("failed ({status})")
        };
        let mut count = 0;
        match read_step(step.command, &report_path) {
            Ok(Some(part)) => {
                count = part.measurements.len();
                report.measurements.extend(part.measurements);
                report.problems.extend(part.problems);
                report.notes.extend(part.notes);
            }
            Ok(None) => {
                if status.success() {
                    report.problems.push(format!(
                        "{} succeeded but wrote no {}",
                        step.command,
                        report_path.display()
                    ));
                }
            }
            Err(e) => {
                outcome = format!("{outcome}; report unreadable");
                report.problems.push(format!("{}: {e:#}", step.command));
            }
        }
        report.environment.steps.push(StepOutcome {
            command: step.command,
            outcome,
            seconds,
            report: report_path
                .is_file()
                .then(|| report_path.display().to_string()),
            measurements: count,
        });
    }
    report.notes.push(
        "each scenario's wrk runs, environment and files are in its own report.json (environment.steps)"
            .into(),
    );
    eprintln!("\n=== all: combined report ===");
    report.publish_saying(&out, "each scenario's own report: environment.steps")?;
    if !failed.is_empty() {
        bail!("scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// What `all` takes from one scenario's report, names prefixed with the scenario.
struct Part {
    measurements: Vec<Measurement>,
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Reads `path` (a scenario's `report.json`); `None` if it was not written.
fn read_step(command: &str, path: &Path) -> anyhow::Result<Option<Part>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut measurements = Vec::new();
    let mut unreadable = Vec::new();
    for m in json
        .get("measurements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // One odd row (a NaN is written as null) should not hide the others.
        match serde_json::from_value::<Measurement>(m.clone()) {
            Ok(mut m) => {
                m.name = format!("[{command}] {}", m.name);
                measurements.push(m);
            }
            Err(e) => unreadable.push(format!(
                "[{command}] a measurement of {} is unreadable ({e}): {m}",
                path.display()
            )),
        }
    }
    let strings = |key: &str| -> Vec<String> {
        json.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| format!("[{command}] {s}"))
            .collect()
    };
    Ok(Some(Part {
        measurements,
        problems: strings("problems").into_iter().chain(unreadable).collect(),
        notes: strings("notes"),
    }))
}
