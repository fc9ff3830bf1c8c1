//! CPU time of a process (all its threads) from `/proc/<pid>/stat`: `utime + stime`,
//! in clock ticks, converted with the kernel's tick rate.

use std::time::Duration;

use anyhow::Context;

/// Converts ticks to time; the tick rate is read once from `getconf CLK_TCK`.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    ticks_per_second: u64,
}

impl CpuClock {
    pub fn detect() -> CpuClock {
        let ticks_per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100);
        CpuClock { ticks_per_second }
    }

    /// CPU time used so far by every process in `pids`.
    pub fn used(&self, pids: &[u32]) -> anyhow::Result<Duration> {
        let mut ticks = 0;
        for &pid in pids {
            ticks += ticks_of(pid)?;
        }
        Ok(self.ticks(ticks))
    }

    /// The resolution of one reading.
    pub fn tick(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.ticks_per_second as f64)
    }

    /// CPU time of the children this process has waited for (`cutime + cstime`):
    /// how a finished wrk's CPU time is read.
    pub fn reaped_children(&self) -> anyhow::Result<Duration> {
        let fields = stat_fields(std::process::id())?;
        Ok(self.ticks(fields[0] + fields[1]))
    }

    /// CPU time of the whole machine so far, all cores, from `/proc/stat`.
    pub fn machine(&self) -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().next().context("/proc/stat is empty")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        Ok(MachineCpu {
            busy: self.ticks(at(0) + at(1) + at(2) + at(5) + at(6)),
            steal: self.ticks(at(7)),
        })
    }

    fn ticks(&self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64)
    }
}

/// Machine-wide CPU time, summed over cores.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    /// Time some process (or the kernel on its behalf) ran.
    pub busy: Duration,
    /// Time the hypervisor gave this machine's vCPUs to someone else.
    pub steal: Duration,
}

/// `cutime`, `cstime` of `pid`.
fn stat_fields(pid: u32) -> anyhow::Result<[u64; 2]> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(13)
        .take(2)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    match fields[..] {
        [cutime, cstime] => Ok([cutime, cstime]),
        _ => anyhow::bail!("{path}: too few fields"),
    }
}

fn ticks_of(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(3) ppid(4) ... utime(14) stime(15) -> indexes 11 and 12 here.
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("{path}: too few fields"))?
            .parse()
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Direct children of `parent` (e.g. nginx's workers), from `/proc/*/stat`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let clock = CpuClock::detect();
        let before = clock.used(&[std::process::id()]).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = clock.used(&[std::process::id()]).unwrap();
        assert!(after >= before);
    }
}
