//! Measurements, their baselines and targets, rendered as a markdown table and as
//! `report.json`.

use std::fmt::Write as _;

use serde::Serialize;

/// A goal a measurement is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// value >= baseline value
    NotBelowBaseline,
    /// value <= baseline value
    NotAboveBaseline,
    /// value <= this number, in the measurement's unit
    Ceiling(f64),
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::NotBelowBaseline => ">= baseline".into(),
            Target::NotAboveBaseline => "<= baseline".into(),
            Target::Ceiling(limit) => format!("<= {} {unit}", fmt_num(limit)),
        }
    }
}

/// One figure of the report.
#[derive(Debug, Clone, Serialize)]
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
        };
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Measurement {
        self.note = Some(note.into());
        self
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
            (Some(n), Some(v)) => format!("{n} = {}", fmt_num(v)),
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
            fmt_num(m.value),
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
}
