//! `ringchat sim` as a user runs it (issue 15): reports that show the drawn rates, every server
//! count in range, one-line errors for bad flags and schedules, replay lines that paste as
//! printed, names without debug text, trace filters, and a line-oriented sweep off a terminal.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ringchat");

fn sim(args: &[&str]) -> Output {
    Command::new(BIN).arg("sim").args(args).output().expect("run ringchat sim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits a printed command line as a POSIX shell would (plain words and single quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            '\\' if !quoted => word.extend(chars.next()),
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Runs a printed replay line as it stands (its program is the binary it was printed by).
fn paste(line: &str) -> Output {
    let words = shell_words(line);
    assert_eq!(words[0], BIN, "the replay line names the program as invoked: {line}");
    Command::new(&words[0]).args(&words[1..]).output().expect("run the replay line")
}

fn replay_lines(stderr: &str) -> Vec<String> {
    stderr.lines().filter_map(|l| l.trim().strip_prefix("replay: ")).map(str::to_string).collect()
}

/// A failing seed's violations as printed (the lines between `FAIL seed` and `replay:`).
fn violations(stderr: &str, seed: u64) -> Vec<String> {
    let head = format!("FAIL seed {seed}:");
    stderr.lines().skip_while(|l| *l != head).skip(1).take_while(|l| !l.trim().starts_with("replay:")).map(str::to_string).collect()
}

/// The `trace` hash of a seed's report line.
fn trace_hash(stdout: &str, seed: u64) -> String {
    let head = format!("seed {seed}: ");
    let line = stdout.lines().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no report line for seed {seed}"));
    line.rsplit(' ').next().unwrap_or_default().to_string()
}

fn one_line_error(o: &Output) -> bool {
    let err = text(&o.stderr);
    err.lines().count() == 1 && err.starts_with("error: ")
}

#[test]
fn out_of_range_flags_and_bad_schedules_are_one_line_errors_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("ringchat-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad_rates = dir.join("bad-rates.json");
    std::fs::write(
        &bad_rates,
        r#"{"rates":{"loss":2.0,"duplicate":0.0,"latency_us":200,"jitter_us":500,"drift_ppm":0},"actions":[],"heal_ms":1000}"#,
    )
    .expect("write");
    let far_heal = dir.join("far-heal.json");
    std::fs::write(&far_heal, r#"{"rates":{"loss":0.0,"duplicate":0.0,"latency_us":200,"jitter_us":500,"drift_ppm":0},"actions":[],"heal_ms":18446744073709551615}"#)
        .expect("write");
    let not_json = dir.join("not-json.json");
    std::fs::write(&not_json, "crash everything").expect("write");
    let (bad_rates, far_heal, not_json) = (bad_rates.display().to_string(), far_heal.display().to_string(), not_json.display().to_string());
    for args in [
        &["--jobs", "0"][..],
        &["--jobs", "257"],
        &["--servers", "0"],
        &["--servers", "25"],
        &["--clients", "257"],
        &["--duration-ms", "1999"],
        &["--duration-ms", "86400001"],
        &["--seeds", "5..5"],
        &["--seeds", "a..b"],
        &["--seed", "-1"],
        &["--seed", "1", "--seeds", "0..2"],
        &["--seeds", "0..2", "--trace"],
        &["--seeds", "0..2", "--trace-kind", "voted"],
        &["--window", "5..2"],
        &["--window", "1..2", "--trace-from-ms", "0"],
        &["--trace-from-ms", "5", "--trace-to-ms", "5"],
        &["--trace-to-ms", "0"],
        &["--trace-server", "n24"],
        &["--trace-server", "not-a-server"],
        &["--trace-kind", "Voted {"],
        &["--plant", "no-such-bug"],
        &["--faults", "some"],
        &["--schedule", "/nonexistent/schedule.json"],
        &["--schedule", &bad_rates],
        &["--schedule", &far_heal],
        &["--schedule", &not_json],
    ] {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(2), "ringchat sim {args:?}: {}", text(&o.stderr));
        assert!(one_line_error(&o), "ringchat sim {args:?} printed {:?}", text(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_server_count_and_duration_in_range_runs() {
    for args in [
        &["--seed", "0", "--servers", "1"][..],
        &["--seed", "0", "--servers", "2"],
        &["--seed", "0", "--servers", "24", "--duration-ms", "12000"],
        &["--seed", "0", "--servers", "1", "--long-life", "--majority-loss", "--power-loss", "--outsider"],
        &["--seed", "3", "--duration-ms", "2000", "--churn", "--disk-loss", "--power-loss", "--careless", "--majority-loss"],
        &["--seeds", "0..4", "--servers", "1", "--jobs", "1"],
        &["--seeds", "0..2", "--servers", "24", "--duration-ms", "12000", "--clients", "0", "--jobs", "256"],
        &["--seeds", "18446744073709551612..18446744073709551615", "--duration-ms", "3000", "--jobs", "4"],
    ] {
        let o = sim(args);
        assert_eq!(o.status.code(), Some(0), "ringchat sim {args:?}:\n{}", text(&o.stderr));
        assert!(o.stderr.is_empty(), "ringchat sim {args:?}: {}", text(&o.stderr));
    }
    // The most clients a run may have: it runs to its report (whatever the checkers find).
    let o = sim(&["--seed", "0", "--clients", "64", "--servers", "1", "--duration-ms", "12000"]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("seed 0: "));
}

#[test]
fn the_report_shows_the_rates_drawn_for_the_seed_in_text_and_json() {
    let out = text(&sim(&["--seed", "7"]).stdout);
    let rates = out.lines().find(|l| l.trim_start().starts_with("rates")).expect("a rates line");
    assert!(out.contains("drop_loss=") && out.contains(" duplicate="), "{out}");
    assert!(!rates.contains("loss 0.0%") && !rates.contains("duplicate 0.0%"), "the rates after heal: {rates}");
    let json = text(&sim(&["--seed", "7", "--json"]).stdout);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON report");
    assert!(v["rates"]["loss"].as_f64().unwrap_or(0.0) > 0.0, "{}", v["rates"]);
    assert!(v["rates"]["duplicate"].as_f64().unwrap_or(0.0) > 0.0, "{}", v["rates"]);
    assert_eq!(
        format!("{:.1}%", v["rates"]["loss"].as_f64().unwrap_or(0.0) * 100.0),
        rates.split("loss ").nth(1).unwrap_or("").split(',').next().unwrap_or("")
    );
}

#[test]
fn each_replay_line_a_failing_run_prints_replays_the_same_failure_when_pasted() {
    // One seed.
    let o = sim(&["--seed", "0", "--plant", "no-holdback"]);
    assert_eq!(o.status.code(), Some(1), "the planted bug went unnoticed");
    let err = text(&o.stderr);
    let lines = replay_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    let again = paste(&lines[0]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(violations(&text(&again.stderr), 0), violations(&err, 0));
    assert_eq!(trace_hash(&text(&again.stdout), 0), trace_hash(&text(&o.stdout), 0));

    // A sweep: every failing seed's line.
    let o = sim(&["--seeds", "0..3", "--plant", "rebind-names", "--duration-ms", "30000", "--unsealed"]);
    let err = text(&o.stderr);
    let lines = replay_lines(&err);
    assert!(!lines.is_empty(), "no seed failed: {err}");
    for line in &lines {
        let seed: u64 = shell_words(line).iter().skip_while(|w| *w != "--seed").nth(1).and_then(|s| s.parse().ok()).expect("a seed");
        let again = paste(line);
        assert_eq!(again.status.code(), Some(1), "{line}");
        assert_eq!(violations(&text(&again.stderr), seed), violations(&err, seed), "{line}");
    }

    // A schedule file, at a path a shell must quote.
    let dir = std::env::temp_dir().join(format!("ringchat sim replay {}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("it's a schedule.json");
    let schedule = r#"{"rates":{"loss":0.05,"duplicate":0.02,"latency_us":500,"jitter_us":2000,"drift_ppm":0},"actions":[[3000,{"Crash":1}],[6000,{"Restart":1}]],"heal_ms":12000}"#;
    std::fs::write(&file, schedule).expect("write the schedule");
    let path = file.display().to_string();
    let o = sim(&["--seed", "1", "--schedule", &path, "--plant", "no-holdback", "--duration-ms", "30000"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let lines = replay_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!lines[0].contains('<'), "a placeholder in {}", lines[0]);
    assert!(shell_words(&lines[0]).contains(&path), "{}", lines[0]);
    let again = paste(&lines[0]);
    assert_eq!(violations(&text(&again.stderr), 1), violations(&err, 1));
    assert_eq!(trace_hash(&text(&again.stdout), 1), trace_hash(&text(&o.stdout), 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_printed_trace_is_byte_identical_between_two_runs() {
    let a = sim(&["--seed", "11", "--trace"]);
    let b = sim(&["--seed", "11", "--trace"]);
    assert!(a.stdout.len() > 10_000);
    assert!(a.stdout == b.stdout, "two runs of seed 11 printed different traces");
    let a = sim(&["--seed", "11", "--window", "5000..9000", "--trace-server", "n2"]);
    let b = sim(&["--seed", "11", "--window", "5000..9000", "--trace-server", "n2"]);
    assert!(a.stdout == b.stdout);
}

#[test]
fn traces_and_failures_name_things_one_way_without_debug_text() {
    // The first seed on which the planted bug breaks C1 (seed 4 as of this writing).
    let seed = (0..20u64)
        .find(|s| text(&sim(&["--seed", &s.to_string(), "--plant", "no-holdback"]).stderr).contains("C1:"))
        .expect("no-holdback breaks C1 on some seed");
    let o = sim(&["--seed", &seed.to_string(), "--plant", "no-holdback", "--trace"]);
    let all = text(&o.stdout) + &text(&o.stderr);
    for debug in ["MsgId {", "NodeId {", "ServerId(", "ClusterId(", "Some(", "client: ", "incarnation:"] {
        assert!(!all.contains(debug), "{debug:?} in:\n{}", all.lines().find(|l| l.contains(debug)).unwrap_or(""));
    }
    // Servers by their lives, messages as client:seq.
    assert!(
        all.lines().any(|l| l.contains(" start ") && l.split(' ').any(|w| w.len() == 10 && w.as_bytes()[8] == b'/')),
        "no life like d1dacd6f/1"
    );
    let err = text(&o.stderr);
    let c1 = err.lines().find(|l| l.trim_start().starts_with("C1:")).expect("a C1 violation");
    assert!(
        c1.split(' ').any(|w| w
            .split_once(':')
            .is_some_and(|(c, s)| !c.is_empty() && c.chars().all(|x| x.is_ascii_hexdigit()) && s.parse::<u64>().is_ok())),
        "{c1}"
    );
}

#[test]
fn trace_filters_keep_their_window_their_server_and_their_kinds() {
    let ms = |l: &str| l.split("ms ").next().unwrap_or("").trim().parse::<f64>().expect("a time");
    let o = text(&sim(&["--seed", "7", "--window", "20000..20500"]).stdout);
    let lines: Vec<&str> = o.lines().take_while(|l| !l.starts_with("seed ")).collect();
    assert!(lines.len() > 20);
    assert!(lines.iter().all(|l| (20_000.0..20_500.0).contains(&ms(l))), "{lines:?}");
    let same = text(&sim(&["--seed", "7", "--trace-from-ms", "20000", "--trace-to-ms", "20500"]).stdout);
    assert_eq!(o, same, "--window A..B is --trace-from-ms A --trace-to-ms B");

    let o = text(&sim(&["--seed", "7", "--trace-kind", "voted,became_leader"]).stdout);
    let lines: Vec<&str> = o.lines().take_while(|l| !l.starts_with("seed ")).collect();
    assert!(lines.iter().any(|l| l.contains(" became_leader of cluster ")), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(" voted for ") || l.contains(" became_leader of ")), "{lines:?}");

    // A server by slot: each line is about it (it acts, or it is the peer).
    let o = text(&sim(&["--seed", "7", "--trace-server", "n1", "--trace-kind", "life"]).stdout);
    let first = o.lines().next().expect("a line");
    let id = first.split_whitespace().nth(1).expect("a name").split('/').next().expect("an id").to_string();
    assert_eq!(id.len(), 8, "{first}");
    let o = text(&sim(&["--seed", "7", "--window", "0..3000", "--trace-server", &id]).stdout);
    let lines: Vec<&str> = o.lines().take_while(|l| !l.starts_with("seed ")).collect();
    assert!(lines.len() > 10);
    assert!(lines.iter().all(|l| l.contains(&id)), "{:?}", lines.iter().find(|l| !l.contains(&id)));
}

#[test]
fn a_sweep_off_a_terminal_is_quiet_line_oriented_and_ends_with_a_summary() {
    let o = sim(&["--seeds", "0..4", "--plant", "rebind-names", "--duration-ms", "30000", "--jobs", "2"]);
    let out = text(&o.stdout);
    assert!(!out.contains('\r') && !out.contains('\u{1b}'), "terminal control codes off a terminal: {out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("4 seeds: "), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("  failures by property (seeds): ") && l.contains("N1=")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("  slowest seed: ")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("  faults: ")), "{out}");
    let err = text(&o.stderr);
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    // Failures come in seed order.
    let seeds: Vec<u64> =
        err.lines().filter_map(|l| l.strip_prefix("FAIL seed ")).filter_map(|s| s.trim_end_matches(':').parse().ok()).collect();
    assert!(!seeds.is_empty() && seeds.windows(2).all(|w| w[0] < w[1]), "{seeds:?}");

    // --json: one object per seed on stdout, in seed order; the summary on stderr.
    let o = sim(&["--seeds", "0..3", "--json", "--duration-ms", "5000"]);
    let reports: Vec<serde_json::Value> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(reports.iter().map(|r| r["seed"].as_u64()).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    assert!(text(&o.stderr).lines().next().is_some_and(|l| l.starts_with("3 seeds: ")), "{}", text(&o.stderr));
}

#[test]
fn elections_of_two_clusters_name_their_cluster() {
    // A majority disk loss leaves the survivors in their old cluster while the blank servers
    // found a new one: both may have an epoch 1.
    let o = sim(&["--seeds", "0..20", "--json", "--majority-loss", "--disk-loss", "--duration-ms", "40000"]);
    let two = text(&o.stdout).lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")).find(|r| {
        let clusters: std::collections::BTreeSet<&str> =
            r["elections"].as_array().into_iter().flatten().filter_map(|e| e["cluster"].as_str()).collect();
        clusters.len() > 1
    });
    let r = two.expect("no seed of 0..20 elected leaders in two clusters");
    let seed = r["seed"].as_u64().expect("a seed").to_string();
    let out = text(&sim(&["--seed", &seed, "--majority-loss", "--disk-loss", "--duration-ms", "40000"]).stdout);
    let lines: Vec<&str> =
        out.lines().skip_while(|l| !l.trim_start().starts_with("elections:")).skip(1).take_while(|l| l.starts_with("    ")).collect();
    assert!(lines.len() >= 2, "{out}");
    for (line, e) in lines.iter().zip(r["elections"].as_array().into_iter().flatten()) {
        let cluster = &e["cluster"].as_str().unwrap_or_default()[..8];
        let life = e["leader_life"].as_str().unwrap_or_default();
        assert!(line.trim_start().starts_with(&format!("cluster {cluster} epoch")), "{line}");
        assert!(line.contains(&format!(" leader {life} ")), "{line}");
    }
}
