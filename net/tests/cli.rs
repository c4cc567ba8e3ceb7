//! Usage errors and bind failures: one line on stderr and a non-zero exit.

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
    let (code, _, err) = run_cli(&["server", "--bind", &bind, "--discovery", "off"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(one_line(&err), "{err:?}");
    assert!(err.contains(&format!("cannot bind {bind}")) && err.contains("in use"), "{err}");
}

#[test]
fn status_without_an_answer_fails_with_exit_1() {
    let port = free_port();
    let (code, out, err) = run_cli(&["status", "--server", &format!("127.0.0.1:{port}"), "--timeout-ms", "200", "--json"]);
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
