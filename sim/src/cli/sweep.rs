//! A sweep over a range of seeds on every core: reports come out in seed order as seeds finish
//! (one JSON line per seed with `--json`, the failures as they are found), a progress bar on a
//! terminal, and a summary at the end.

use super::{failure_lines, out, SimArgs};
use crate::world::{self, Report};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a sweep adds up as seeds finish.
#[derive(Debug, Default)]
pub struct Tally {
    /// Seeds done.
    pub seeds: u64,
    /// Seeds that broke at least one property.
    pub failed: u64,
    /// Seeds that broke each property.
    pub by_property: BTreeMap<String, u64>,
    /// The seed that took longest: (seed, wall seconds, events).
    pub slowest: Option<(u64, f64, u64)>,
    /// Injected faults per kind, summed.
    pub faults: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one finished seed that took `secs` of wall time.
    pub fn add(&mut self, r: &Report, secs: f64) {
        self.seeds += 1;
        if !r.ok {
            self.failed += 1;
            let props: std::collections::BTreeSet<&str> = r.violations.iter().map(|v| v.property.as_str()).collect();
            for p in props {
                *self.by_property.entry(p.to_string()).or_insert(0) += 1;
            }
        }
        if self.slowest.is_none_or(|(_, s, _)| secs > s) {
            self.slowest = Some((r.seed, secs, r.events));
        }
        for (k, v) in &r.faults {
            *self.faults.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// The summary lines: totals and speed, failures by property, the slowest seed, fault counts.
    pub fn summary(&self, elapsed: f64, jobs: u64) -> Vec<String> {
        let total: u64 = self.faults.values().sum();
        let mut lines = vec![format!(
            "{} seeds: {} passed, {} failed in {elapsed:.1} s ({:.0} seeds/min on {jobs} threads, {total} faults injected)",
            self.seeds,
            self.seeds - self.failed,
            self.failed,
            self.seeds as f64 / elapsed.max(1e-9) * 60.0
        )];
        if !self.by_property.is_empty() {
            let by: Vec<String> = self.by_property.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(format!("  failures by property (seeds): {}", by.join(" ")));
        }
        if let Some((seed, secs, events)) = self.slowest {
            lines.push(format!("  slowest seed: {seed} ({secs:.2} s, {events} events)"));
        }
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(format!("  faults: {}", if faults.is_empty() { "none".to_string() } else { faults.join(" ") }));
        lines
    }
}

/// A progress bar on a terminal (seeds done, failures so far, seeds per second, time left);
/// nothing otherwise.
fn progress(args: &SimArgs, n: u64) -> Option<indicatif::ProgressBar> {
    if args.json || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} seeds, {msg}, {rate} seeds/s, {eta} left")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}", s.per_sec());
        });
    bar.set_style(style);
    bar.set_message("0 failed");
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Runs seeds `a..b` on `--jobs` threads; returns the exit code (0 all passed, 1 a failure).
pub fn run_range(args: &SimArgs, a: u64, b: u64) -> i32 {
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64)).clamp(1, b - a);
    let next = AtomicU64::new(a);
    let started = Instant::now();
    let bar = progress(args, b - a);
    let mut tally = Tally::default();
    let (tx, rx) = std::sync::mpsc::channel::<(Report, f64)>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                // Never past `b` (a range may end at u64::MAX).
                while let Ok(seed) = next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| (s < b).then_some(s + 1)) {
                    let t = Instant::now();
                    let report = world::run(args.config(seed)).report;
                    if tx.send((report, t.elapsed().as_secs_f64())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Reports in seed order: those that finish early wait for the seeds before them.
        let mut waiting: BTreeMap<u64, (Report, f64)> = BTreeMap::new();
        let mut due = a;
        for (report, secs) in rx {
            waiting.insert(report.seed, (report, secs));
            while let Some((report, secs)) = waiting.remove(&due) {
                due += 1;
                tally.add(&report, secs);
                if args.json {
                    out!("{}", serde_json::to_string(&report).unwrap_or_default());
                }
                if !report.ok {
                    let lines = failure_lines(args, &report).join("\n");
                    match &bar {
                        Some(bar) => bar.suspend(|| eprintln!("{lines}")),
                        None => eprintln!("{lines}"),
                    }
                }
                if let Some(bar) = &bar {
                    bar.set_position(tally.seeds);
                    bar.set_message(format!("{} failed", tally.failed));
                }
            }
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = tally.summary(started.elapsed().as_secs_f64(), jobs);
    for line in summary {
        if args.json {
            eprintln!("{line}");
        } else {
            out!("{line}");
        }
    }
    let _ = std::io::stdout().flush();
    if tally.failed == 0 {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::SimConfig;

    #[test]
    fn a_tally_counts_failures_by_property_the_slowest_seed_and_faults() {
        let mut ok = world::run(SimConfig { seed: 1, duration_ms: 2_000, ..SimConfig::default() }).report;
        ok.faults = BTreeMap::from([("crash".to_string(), 2)]);
        let mut bad = ok.clone();
        bad.seed = 2;
        bad.ok = false;
        bad.violations =
            vec![crate::Violation::new("S1", "x".into()), crate::Violation::new("S1", "y".into()), crate::Violation::new("L1", "z".into())];
        let mut t = Tally::default();
        t.add(&ok, 0.5);
        t.add(&bad, 0.7);
        assert_eq!((t.seeds, t.failed), (2, 1));
        assert_eq!(t.by_property, BTreeMap::from([("L1".to_string(), 1), ("S1".to_string(), 1)]));
        assert_eq!(t.slowest.map(|s| s.0), Some(2));
        assert_eq!(t.faults["crash"], 4);
        let lines = t.summary(1.0, 2);
        assert!(lines[0].starts_with("2 seeds: 1 passed, 1 failed"), "{lines:?}");
        assert!(lines.iter().any(|l| l == "  failures by property (seeds): L1=1 S1=1"), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("  slowest seed: 2 (0.70 s,")), "{lines:?}");
        assert!(lines.iter().any(|l| l == "  faults: crash=4"), "{lines:?}");
    }
}
