//! Usage errors and bind failures: one line on stderr and a non-zero exit; config files,
//! `--print-config` and `--version`.

mod common;

use common::*;
use std::net::UdpSocket;

fn one_line(err: &str) -> bool {
    err.lines().count() == 1 && err.starts_with("error: ")
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for args in [
        &["server", "--bind", "nonsense"][..],
        &["status", "--server", "x"],
        &["server", "--discovery", "sideways"],
        &["server", "--heartbeat-ms", "0"],
        &["server", "--expect", "0"],
        &["server", "--expect", "25"],
        &["server", "--join", "nowhere"],
        &["server", "--no-such-flag"],
        &["status", "--timeout-ms", "soon"],
        &["client", "--name", "x", "--discovery", "sideways"],
        &["client", "--name", "x", "--server", "nowhere"],
        &["client", "--name", "x", "--interface", "eth0"],
        // Nowhere to find a server, and a unicast address as the multicast group.
        &["client", "--name", "x", "--discovery", "off"],
        &["client", "--name", "x", "--group", "10.1.2.3:7777"],
        &["server", "--log-level", "info,=["],
        &["server", "--metrics", "nowhere"],
        &["server", "--config"],
        &["server", "--config", "/nonexistent/ringchat.toml"],
        &["status", "--discovery", "off"],
        &["status", "--only", "--discovery", "sideways"],
        &[],
    ] {
        let (code, _, err) = run_cli(args);
        assert_eq!(code, Some(2), "ringchat {args:?}: {err}");
        assert!(one_line(&err), "ringchat {args:?} printed {err:?}");
    }
    // A unicast address as the multicast group: checked after parsing.
    let port = free_port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--group", "10.1.2.3:7777"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(one_line(&err), "{err:?}");
}

#[test]
fn bind_on_a_taken_port_fails_with_exit_1() {
    let port = free_port();
    // Another thread's fork may briefly hold the probe socket: retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let _holder = loop {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("cannot hold port {port}: {e}"),
        }
    };
    let bind = format!("127.0.0.1:{port}");
    let key = test_key_file();
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--discovery", "off", "--key-file", key.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(one_line(&err), "{err:?}");
    assert!(err.contains(&format!("cannot bind {bind}")) && err.contains("in use"), "{err}");
}

#[test]
fn status_without_an_answer_fails_with_exit_1() {
    let port = free_port();
    let (code, out, err) =
        run_cli(&["status", "--key-file", &key_arg(), "--server", &format!("127.0.0.1:{port}"), "--timeout-ms", "200", "--json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty());
    assert!(one_line(&err), "{err:?}");
}

#[test]
fn help_and_version_succeed() {
    let (code, out, _) = run_cli(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("server") && out.contains("status") && out.contains("sim"));
    let (code, out, _) = run_cli(&["server", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--join") && out.contains("--discovery"));
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ringchat.example.toml");

/// Writes `text` to a config file of its own; returns its path.
fn config_file(name: &str, text: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ringchat-cli-configs");
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// `ringchat server ARGS --print-config`, parsed.
fn effective(args: &[&str]) -> toml::Table {
    let mut all = vec!["server"];
    all.extend_from_slice(args);
    all.push("--print-config");
    let (code, out, err) = run_cli(&all);
    assert_eq!(code, Some(0), "ringchat {all:?}: {err}");
    out.parse().unwrap_or_else(|e| panic!("--print-config printed no TOML ({e}): {out}"))
}

#[test]
fn the_example_config_file_parses() {
    let t = effective(&["--config", EXAMPLE]);
    assert_eq!(t["bind"].as_str(), Some("0.0.0.0:7000"));
    assert_eq!(t["expect"].as_integer(), Some(3));
    assert_eq!(t["state"].as_str(), Some("/var/lib/ringchat/state"));
    assert_eq!(t["protocol"]["heartbeat_ms"].as_integer(), Some(100));
    assert_eq!(t["protocol"]["ring"].as_str(), Some("ascending"));
    // What --print-config prints is itself a config file that gives the same settings.
    let (_, printed, _) = run_cli(&["server", "--config", EXAMPLE, "--print-config"]);
    let again = config_file("printed", &printed);
    assert_eq!(effective(&["--config", &again]), t);
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let file = config_file(
        "precedence",
        "bind = \"127.0.0.1:7100\"\ndiscovery = \"off\"\nexpect = 2\njoin = [\"127.0.0.1:7101\"]\nlog_level = \"debug\"\n[protocol]\nheartbeat_ms = 50\nhello_ms = 300\n",
    );
    let defaults = effective(&[]);
    assert_eq!(defaults["bind"].as_str(), Some("0.0.0.0:7000"));
    assert_eq!(defaults["discovery"].as_str(), Some("multicast"));
    assert!(defaults.get("expect").is_none());
    assert_eq!(defaults["protocol"]["heartbeat_ms"].as_integer(), Some(100));

    let from_file = effective(&["--config", &file]);
    assert_eq!(from_file["bind"].as_str(), Some("127.0.0.1:7100"));
    assert_eq!(from_file["discovery"].as_str(), Some("off"));
    assert_eq!(from_file["expect"].as_integer(), Some(2));
    assert_eq!(from_file["log_level"].as_str(), Some("debug"));
    assert_eq!(from_file["protocol"]["heartbeat_ms"].as_integer(), Some(50));
    assert_eq!(from_file["protocol"]["suspect_ms"].as_integer(), Some(175), "scaled from the file's heartbeat");
    assert_eq!(from_file["protocol"]["hello_ms"].as_integer(), Some(300));
    assert_eq!(from_file["protocol"]["beacon_ms"].as_integer(), defaults["protocol"]["beacon_ms"].as_integer(), "default");

    let flags = effective(&[
        "--config",
        &file,
        "--bind",
        "127.0.0.1:7200",
        "--expect",
        "3",
        "--heartbeat-ms",
        "200",
        "--join",
        "127.0.0.1:7201",
        "--join",
        "127.0.0.1:7202",
        "--log-level",
        "warn",
    ]);
    assert_eq!(flags["bind"].as_str(), Some("127.0.0.1:7200"));
    assert_eq!(flags["expect"].as_integer(), Some(3));
    assert_eq!(flags["log_level"].as_str(), Some("warn"));
    assert_eq!(flags["protocol"]["heartbeat_ms"].as_integer(), Some(200));
    assert_eq!(flags["protocol"]["suspect_ms"].as_integer(), Some(700));
    assert_eq!(flags["protocol"]["hello_ms"].as_integer(), Some(300), "still the file's");
    assert_eq!(flags["discovery"].as_str(), Some("off"), "still the file's");
    let join: Vec<&str> = flags["join"].as_array().expect("join").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(join, ["127.0.0.1:7201", "127.0.0.1:7202"], "the flags' list replaces the file's");
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file_and_the_key_with_exit_2() {
    for (name, text, key) in [
        ("unknown", "bind = \"127.0.0.1:7000\"\ncolour = \"blue\"\n", "colour"),
        ("unknown-protocol", "[protocol]\nheartbeat = 100\n", "protocol.heartbeat"),
        ("bad-addr", "join = [\"127.0.0.1:7001\", \"nowhere\"]\n", "join"),
        ("bad-type", "[protocol]\nsuspect_ms = \"soon\"\n", "protocol.suspect_ms"),
        ("bad-enum", "discovery = \"sideways\"\n", "discovery"),
        ("out-of-range", "expect = 99\n", "expect"),
        ("bad-level", "log_level = \"info,=[\"\n", "log_level"),
        ("not-toml", "bind = 127.0.0.1:7000\n", "bind"),
        ("unicast-group", "group = \"10.1.2.3:7777\"\n", "group"),
        ("contradiction", "[protocol]\nheartbeat_ms = 500\nsuspect_ms = 400\n", "protocol.suspect_ms"),
    ] {
        let path = config_file(name, text);
        // Discovery off, so nothing could reach a multicast group even if a check failed; but a
        // unicast group only matters with multicast (the driver would refuse it too, exit 1).
        let discovery = if name == "unicast-group" { "multicast" } else { "off" };
        let (code, out, err) = run_cli(&["server", "--config", &path, "--discovery", discovery, "--bind", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert!(one_line(&err), "{name}: {err:?}");
        assert!(err.contains(&path) && err.contains(&format!("`{key}`")), "{name}: {err}");
    }
}

#[test]
fn version_names_the_package_and_the_commit() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, Some(0));
    let line = out.trim_end();
    assert_eq!(out.lines().count(), 1, "{out:?}");
    let rest = line.strip_prefix(&format!("ringchat {} (", env!("CARGO_PKG_VERSION"))).unwrap_or_else(|| panic!("{line}"));
    let commit = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(hash == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())), "{line}");
    // Built from a git checkout (as here, when git is installed): the commit is HEAD's.
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) => assert_eq!(hash, h, "{line}"),
        None => eprintln!("note: no git here; --version says {commit}"),
    }
    let (code, short, _) = run_cli(&["-V"]);
    assert_eq!((code, short), (Some(0), out));
}

/// A client that no server ever takes reports what was typed as not sent, instead of holding
/// it for ever.
#[test]
fn a_client_that_cannot_attach_reports_what_it_holds_as_not_sent() {
    use std::io::{BufRead, Write};
    let port = free_port();
    let server = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(BIN)
        .args(["client", "--name", "ann", "--server", &server, "--discovery", "off", "--json", "--insecure-no-key"])
        .env("RINGCHAT_HOME", home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringchat client");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, r#"{{"cmd":"send","to":"bob","text":"hello"}}"#).expect("write");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(r#""event":"not_sent""#) => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no not_sent event; saw {seen:?}"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(v["to"], "bob", "{line}");
    assert_eq!(v["text"], "hello", "{line}");
}
