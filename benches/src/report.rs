//! Measurements, their baselines and targets, rendered as a markdown table and as
//! `report.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::harness::RunRecord;

/// Everything one scenario measured and saw, as written to `report.json`.
#[derive(Debug, Serialize)]
pub struct Report<E> {
    pub scenario: &'static str,
    pub unix_time: u64,
    /// What the scenario knows about the machine, the tools and its options.
    pub environment: E,
    pub measurements: Vec<Measurement>,
    /// Every wrk run, warm-ups included.
    pub runs: Vec<RunRecord>,
    /// Errors seen under load and log warnings; each is a bug to look at.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl<E: Serialize> Report<E> {
    /// Prints the table, the problems, the notes and how many targets were met, and
    /// writes `report.json` and `report.md` to `dir`.
    pub fn publish(&self, dir: &Path, wrk_log: &Path) -> anyhow::Result<()> {
        self.publish_saying(dir, &format!("wrk output: {}", wrk_log.display()))
    }

    /// [`Report::publish`] for a scenario without a wrk log: `where_else` says where
    /// its other output is.
    pub fn publish_saying(&self, dir: &Path, where_else: &str) -> anyhow::Result<()> {
        let table = table(&self.measurements);
        println!();
        println!("{table}");
        if self.problems.is_empty() {
            println!("No problems: every answer was the one the scenario expects, and no log had a warning.");
        } else {
            println!("PROBLEMS ({}):", self.problems.len());
            for p in &self.problems {
                println!("- {p}");
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        let m = &self.measurements;
        let failed = m.iter().filter(|x| x.pass == Some(false)).count();
        let checked = m.iter().filter(|x| x.pass.is_some()).count();
        let noisy = m.iter().filter(|x| x.noisy).count();
        println!(
            "targets: {} of {checked} met; {noisy} measurement(s) taken while other processes were busy",
            checked - failed
        );
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), &table)?;
        println!("wrote {} ({where_else})", path.display());
        Ok(())
    }
}

/// A goal a measurement is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// value >= baseline value
    NotBelowBaseline,
    /// value <= baseline value
    NotAboveBaseline,
    /// value <= this number, in the measurement's unit
    Ceiling(f64),
    /// value == baseline value (counts that must agree)
    EqualToBaseline,
    /// value / baseline value >= this ratio
    RatioAtLeast(f64),
    /// value / baseline value <= this ratio
    RatioAtMost(f64),
    /// value <= baseline value + this margin, in the measurement's unit
    AtMostAboveBaseline(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::NotBelowBaseline => ">= baseline".into(),
            Target::NotAboveBaseline => "<= baseline".into(),
            Target::Ceiling(limit) => format!("<= {} {unit}", fmt_value(limit, unit)),
            Target::EqualToBaseline => "= baseline".into(),
            Target::RatioAtLeast(ratio) => format!(">= {ratio:.2}x baseline"),
            Target::RatioAtMost(ratio) => format!("<= {ratio:.2}x baseline"),
            Target::AtMostAboveBaseline(margin) => {
                format!("<= baseline + {} {unit}", fmt_value(margin, unit))
            }
        }
    }
}

/// One figure of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline_name: Option<String>,
    pub baseline_value: Option<f64>,
    /// value / baseline value.
    pub ratio: Option<f64>,
    pub target: Option<String>,
    /// `None` when the measurement has no target.
    pub pass: Option<bool>,
    /// How it was measured, in a few words.
    pub note: Option<String>,
    /// Its run (or its baseline's) shared the CPU with other processes.
    pub noisy: bool,
}

impl Measurement {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Measurement {
        Measurement {
            name: name.into(),
            value,
            unit: unit.to_string(),
            baseline_name: None,
            baseline_value: None,
            ratio: None,
            target: None,
            pass: None,
            note: None,
            noisy: false,
        }
    }

    /// Compares against another measurement (ratio = self / baseline).
    pub fn vs(mut self, baseline: &Measurement) -> Measurement {
        self.baseline_name = Some(baseline.name.clone());
        self.baseline_value = Some(baseline.value);
        self.ratio = (baseline.value != 0.0).then(|| self.value / baseline.value);
        self.noisy |= baseline.noisy;
        self
    }

    /// [`vs`](Self::vs) `baseline` when there is one (a baseline whose tool was
    /// missing is `None`).
    pub fn vs_if(self, baseline: Option<&Measurement>) -> Measurement {
        match baseline {
            Some(base) => self.vs(base),
            None => self,
        }
    }

    /// Marks the measurement as taken while other processes were busy.
    pub fn noisy(mut self, noisy: bool) -> Measurement {
        self.noisy |= noisy;
        self
    }

    /// Holds the measurement to `target`; a baseline target needs [`Measurement::vs`] first.
    pub fn target(mut self, target: Target) -> Measurement {
        self.target = Some(target.describe(&self.unit));
        self.pass = match target {
            Target::NotBelowBaseline => self.baseline_value.map(|b| self.value >= b),
            Target::NotAboveBaseline => self.baseline_value.map(|b| self.value <= b),
            Target::Ceiling(limit) => Some(self.value <= limit),
            Target::EqualToBaseline => self.baseline_value.map(|b| self.value == b),
            Target::RatioAtLeast(ratio) => self.ratio.map(|r| r >= ratio),
            Target::RatioAtMost(ratio) => self.ratio.map(|r| r <= ratio),
            Target::AtMostAboveBaseline(margin) => {
                self.baseline_value.map(|b| self.value <= b + margin)
            }
        };
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Measurement {
        self.note = Some(note.into());
        self
    }
}

/// Units of things counted one by one, shown without decimals.
const COUNT_UNITS: &[&str] = &[
    "calls",
    "events",
    "sessions",
    "keep-alives",
    "errors",
    "lines",
];

/// A value in `unit`: counts as whole numbers, the rest as [`fmt_num`] does.
fn fmt_value(v: f64, unit: &str) -> String {
    if COUNT_UNITS.contains(&unit) {
        format!("{v:.0}")
    } else {
        fmt_num(v)
    }
}

/// Numbers as a reader wants them: few digits, no exponent.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown table of `measurements`.
pub fn table(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    out.push_str("| Measurement | Value | Unit | Baseline | Ratio | Target | Result |\n");
    out.push_str("|---|---:|---|---|---:|---|---|\n");
    for m in measurements {
        let baseline = match (&m.baseline_name, m.baseline_value) {
            (Some(n), Some(v)) => format!("{n} = {}", fmt_value(v, &m.unit)),
            _ => String::new(),
        };
        let ratio = m.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default();
        let result = match (m.pass, m.noisy) {
            (Some(true), false) => "PASS",
            (Some(false), false) => "FAIL",
            (Some(true), true) => "PASS (noisy)",
            (Some(false), true) => "FAIL (noisy)",
            (None, true) => "(noisy)",
            (None, false) => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            fmt_value(m.value, &m.unit),
            m.unit,
            baseline,
            ratio,
            m.target.as_deref().unwrap_or(""),
            result
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_against_baselines_and_limits() {
        let nginx = Measurement::new("nginx rps", 100.0, "req/s");
        let fast = Measurement::new("gh rps", 120.0, "req/s")
            .vs(&nginx)
            .target(Target::NotBelowBaseline);
        assert_eq!(fast.pass, Some(true));
        assert_eq!(fast.ratio, Some(1.2));
        let cpu = Measurement::new("cpu", 31.0, "us").target(Target::Ceiling(30.0));
        assert_eq!(cpu.pass, Some(false));
        assert_eq!(cpu.target.as_deref(), Some("<= 30.00 us"));
        let t = table(&[fast, cpu]);
        assert!(t.contains(
            "| gh rps | 120.0 | req/s | nginx rps = 100.0 | 1.20x | >= baseline | PASS |"
        ));
    }

    #[test]
    fn ratio_and_equality_targets() {
        let off = Measurement::new("off rps", 1000.0, "req/s");
        let on = Measurement::new("on rps", 949.0, "req/s")
            .vs(&off)
            .target(Target::RatioAtLeast(0.95));
        assert_eq!(on.pass, Some(false));
        assert_eq!(on.target.as_deref(), Some(">= 0.95x baseline"));
        let shipped = Measurement::new("shipped", 5.0, "events");
        let stored = Measurement::new("stored", 5.0, "events")
            .vs(&shipped)
            .target(Target::EqualToBaseline);
        assert_eq!(stored.pass, Some(true));
        let dropped = Measurement::new("dropped", 0.0, "events").target(Target::Ceiling(0.0));
        assert_eq!(dropped.pass, Some(true));
        let t = table(&[stored, dropped]);
        assert!(t.contains("| stored | 5 | events | shipped = 5 | 1.00x | = baseline | PASS |"));
        assert!(t.contains("| dropped | 0 | events |  |  | <= 0 events | PASS |"));
    }
}
