//! `ringchat server --config FILE`: the server's settings as a TOML file.
//!
//! Every `ringchat server` option is a key of the file (see `docs/ringchat.example.toml`), and
//! the core's timings are the keys of its `[protocol]` table. A setting comes from the command
//! line if a flag gives it, else from the file, else from the default ([`Settings::resolve`]).
//! A file with an unknown key or a bad value is refused with one line that names the file and
//! the key.

use crate::driver::{Discovery, Options, DEFAULT_BROADCAST, DEFAULT_GROUP};
use ringchat_core::{RingOrder, ServerConfig};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Default unicast address of a server.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7000));
/// Default log filter (`RUST_LOG` syntax).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Heartbeat periods a server accepts, in milliseconds (`--heartbeat-ms`, `protocol.heartbeat_ms`).
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 10..=10_000;
/// Cluster sizes `--expect` accepts.
pub const EXPECT: std::ops::RangeInclusive<u64> = 1..=24;
/// Longest protocol duration accepted in the file (one hour), to catch a unit slip.
const MAX_MS: u64 = 3_600_000;

/// One layer of server settings: the file, or the flags. `None` is "not given here".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Unicast address to listen on (`--bind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// `multicast`, `broadcast` or `off` (`--discovery`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Discovery group or broadcast target with the discovery port (`--group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<SocketAddrV4>,
    /// Known servers (`--join`, repeatable; the flags replace the file's list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Vec<SocketAddr>>,
    /// Interface address for multicast (`--interface`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<Ipv4Addr>,
    /// State file (`--state`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<PathBuf>,
    /// Servers the cluster is meant to have (`--expect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
    /// Address of the Prometheus/OpenMetrics endpoint (`--metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Log filter in `RUST_LOG` syntax (`--log-level`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// The core's timings (`[protocol]`; the command line has only `--heartbeat-ms`).
    #[serde(default, skip_serializing_if = "Protocol::is_empty")]
    pub protocol: Protocol,
}

/// The `[protocol]` table: the fields of the core's [`ServerConfig`], same names and units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Heartbeat period. Unless set too, `suspect_ms` is 3.5 periods and `remove_ms` 30 (at least 3 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a member (or the leader) is suspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspect_ms: Option<u64>,
    /// Silence after which the leader removes a member from the view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_ms: Option<u64>,
    /// How long a fresh server listens for a cluster before founding one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_window_ms: Option<u64>,
    /// Period of Hello and JoinRequest datagrams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hello_ms: Option<u64>,
    /// Period of the leader's beacon to the discovery group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beacon_ms: Option<u64>,
    /// Wait for a ring hop's acknowledgement before a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop_timeout_ms: Option<u64>,
    /// Retries of a ring hop before its target is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop_retries: Option<u32>,
    /// An election without a leader after this restarts with a higher epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_ms: Option<u64>,
    /// Upper bound of the random back-off before an election.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Joining without an answer for this long makes a server found a cluster anew.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_give_up_ms: Option<u64>,
    /// Ring order, `ascending` or `hashed` (a cluster parameter: every server must agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<Ring>,
}

impl Protocol {
    fn is_empty(&self) -> bool {
        *self == Protocol::default()
    }
}

/// [`RingOrder`] as the file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ring {
    /// [`RingOrder::Ascending`].
    Ascending,
    /// [`RingOrder::Hashed`].
    Hashed,
}

impl From<Ring> for RingOrder {
    fn from(r: Ring) -> RingOrder {
        match r {
            Ring::Ascending => RingOrder::Ascending,
            Ring::Hashed => RingOrder::Hashed,
        }
    }
}

impl From<RingOrder> for Ring {
    fn from(r: RingOrder) -> Ring {
        match r {
            RingOrder::Ascending => Ring::Ascending,
            RingOrder::Hashed => Ring::Hashed,
        }
    }
}

/// Everything a server runs with, resolved from the flags, the file and the defaults.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Sockets, state and core settings.
    pub options: Options,
    /// Log filter.
    pub log_level: String,
    /// The same settings, every key filled in (what `--print-config` prints).
    pub effective: Settings,
}

/// A config file that cannot be used: one line, without the `error: ` prefix.
pub type ConfigError = String;

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {}", path.display(), crate::io_msg(&e)))?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks the text of a config file named `file` (for messages).
pub fn parse(text: &str, file: &str) -> Result<Settings, ConfigError> {
    let settings: Settings = toml::from_str(text).map_err(|e| describe(text, file, &e))?;
    settings.check(&format!("config file {file}"))?;
    Ok(settings)
}

/// A TOML or serde error as one line that names the file, the line and, when the error lies in
/// a key or its value, the key (dotted: `protocol.heartbeat_ms`).
fn describe(text: &str, file: &str, e: &toml::de::Error) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = one_line(e.message()).replace("unknown field", "unknown key");
    let Some(span) = e.span() else { return format!("config file {file}: {message}") };
    let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
    // The key comes from the document's own key spans when it parses as TOML at all, else from
    // the text of the line (a syntax error in a value).
    let key = match toml::de::DeTable::parse(text) {
        Ok(t) => key_at(t.get_ref(), span.start, ""),
        Err(_) => key_on_line(text, line),
    };
    match key {
        Some(k) => format!("config file {file}, line {line}, key `{k}`: {message}"),
        None => format!("config file {file}, line {line}: {message}"),
    }
}

/// The dotted key whose name or value covers byte `pos`.
fn key_at(table: &toml::de::DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let name = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
        if let toml::de::DeValue::Table(inner) = v.get_ref() {
            if let Some(found) = key_at(inner, pos, &name) {
                return Some(found);
            }
        }
        if k.span().contains(&pos) || v.span().contains(&pos) {
            return Some(name);
        }
    }
    None
}

/// The dotted key of a `key = value` line (`line` counted from 1), after its table's header.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let bare = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = h.trim().to_string();
        }
        if i + 1 == line {
            let key = l.split_once('=')?.0.trim();
            return bare(key).then(|| if table.is_empty() { key.to_string() } else { format!("{table}.{key}") });
        }
    }
    None
}

fn check_ms(source: &str, key: &str, v: Option<u64>, range: std::ops::RangeInclusive<u64>) -> Result<(), ConfigError> {
    match v {
        Some(n) if !range.contains(&n) => Err(format!("{source}, key `{key}`: {n} is out of range ({}..={})", range.start(), range.end())),
        _ => Ok(()),
    }
}

impl Settings {
    /// Checks the values one by one (`source` names the file in messages).
    fn check(&self, source: &str) -> Result<(), ConfigError> {
        check_ms(source, "expect", self.expect, EXPECT)?;
        if let Some(level) = &self.log_level {
            check_log_level(level).map_err(|e| format!("{source}, key `log_level`: {e}"))?;
        }
        let p = &self.protocol;
        check_ms(source, "protocol.heartbeat_ms", p.heartbeat_ms, HEARTBEAT_MS)?;
        for (key, v) in [
            ("protocol.suspect_ms", p.suspect_ms),
            ("protocol.remove_ms", p.remove_ms),
            ("protocol.discovery_window_ms", p.discovery_window_ms),
            ("protocol.hello_ms", p.hello_ms),
            ("protocol.beacon_ms", p.beacon_ms),
            ("protocol.hop_timeout_ms", p.hop_timeout_ms),
            ("protocol.election_timeout_ms", p.election_timeout_ms),
            ("protocol.backoff_ms", p.backoff_ms),
            ("protocol.join_give_up_ms", p.join_give_up_ms),
        ] {
            check_ms(source, key, v, 1..=MAX_MS)?;
        }
        check_ms(source, "protocol.hop_retries", p.hop_retries.map(u64::from), 0..=100)?;
        Ok(())
    }

    /// Merges the command line (`self`) over `file` over the defaults, and checks the result.
    /// `file` carries its name for messages.
    pub fn resolve(&self, file: Option<(&str, &Settings)>) -> Result<Resolved, ConfigError> {
        let empty = Settings::default();
        let (file_name, f) = file.unwrap_or(("", &empty));
        let source = format!("config file {file_name}");
        let (a, p, fp) = (self, &self.protocol, &f.protocol);

        let discovery = a.discovery.or(f.discovery).unwrap_or(Discovery::Multicast);
        let group = a.group.or(f.group);
        // A flag's bad group is refused where the sockets are made (as before config files);
        // the file's is refused here, naming the key.
        if a.group.is_none() && discovery == Discovery::Multicast {
            if let Some(g) = f.group.filter(|g| !g.ip().is_multicast()) {
                return Err(format!("{source}, key `group`: {g} is not a multicast address (set discovery = \"broadcast\" for broadcast)"));
            }
        }

        let d = ServerConfig::default();
        let heartbeat = p.heartbeat_ms.or(fp.heartbeat_ms);
        // A heartbeat given without suspicion or removal times scales them, as `--heartbeat-ms` does.
        let suspect = p.suspect_ms.or(fp.suspect_ms).or(heartbeat.map(|h| h * 7 / 2)).unwrap_or(d.suspect_ms);
        let remove = p.remove_ms.or(fp.remove_ms).or(heartbeat.map(|h| (h * 30).max(d.remove_ms))).unwrap_or(d.remove_ms);
        let heartbeat = heartbeat.unwrap_or(d.heartbeat_ms);
        let pick = |flag: Option<u64>, file: Option<u64>, default: u64| flag.or(file).unwrap_or(default);
        let config = ServerConfig {
            heartbeat_ms: heartbeat,
            suspect_ms: suspect,
            remove_ms: remove,
            discovery_window_ms: pick(p.discovery_window_ms, fp.discovery_window_ms, d.discovery_window_ms),
            hello_ms: pick(p.hello_ms, fp.hello_ms, d.hello_ms),
            beacon_ms: pick(p.beacon_ms, fp.beacon_ms, d.beacon_ms),
            hop_timeout_ms: pick(p.hop_timeout_ms, fp.hop_timeout_ms, d.hop_timeout_ms),
            hop_retries: p.hop_retries.or(fp.hop_retries).unwrap_or(d.hop_retries),
            election_timeout_ms: pick(p.election_timeout_ms, fp.election_timeout_ms, d.election_timeout_ms),
            backoff_ms: pick(p.backoff_ms, fp.backoff_ms, d.backoff_ms),
            join_give_up_ms: pick(p.join_give_up_ms, fp.join_give_up_ms, d.join_give_up_ms),
            ring: p.ring.or(fp.ring).map(RingOrder::from).unwrap_or(d.ring),
            expect: a.expect.or(f.expect).map(|n| n as usize),
            ..d
        };
        // What the timings mean together: a member is suspected after a few silent heartbeats,
        // and removed only after it is suspected. Only `heartbeat_ms` has a flag, and suspicion and
        // removal times derived from it are consistent: a contradiction involves a key of the file.
        let key = |k: &str, flag: bool| if flag { "the command line".to_string() } else { format!("{source}, key `protocol.{k}`") };
        if config.suspect_ms <= config.heartbeat_ms {
            let (s, h) = (config.suspect_ms, config.heartbeat_ms);
            return Err(format!("{}: suspect_ms ({s}) must be longer than heartbeat_ms ({h})", key("suspect_ms", p.suspect_ms.is_some())));
        }
        if config.remove_ms <= config.suspect_ms {
            let (r, s) = (config.remove_ms, config.suspect_ms);
            return Err(if p.remove_ms.is_some() || fp.remove_ms.is_some() {
                format!("{}: remove_ms ({r}) must be longer than suspect_ms ({s})", key("remove_ms", p.remove_ms.is_some()))
            } else {
                format!(
                    "{}: suspect_ms ({s}) must be shorter than remove_ms ({r}); set remove_ms too",
                    key("suspect_ms", p.suspect_ms.is_some())
                )
            });
        }

        let options = Options {
            bind: a.bind.or(f.bind).unwrap_or(DEFAULT_BIND),
            discovery,
            group,
            join: a.join.clone().or_else(|| f.join.clone()).unwrap_or_default(),
            interface: a.interface.or(f.interface),
            config,
            state: a.state.clone().or_else(|| f.state.clone()),
            metrics: a.metrics.or(f.metrics),
            key_file: None,
            insecure_no_key: false,
        };
        let log_level = a.log_level.clone().or_else(|| f.log_level.clone()).unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        let effective = effective(&options, &log_level);
        Ok(Resolved { options, log_level, effective })
    }
}

/// The settings of `o`, every key given (the group shown as the mode's default when unset).
fn effective(o: &Options, log_level: &str) -> Settings {
    let c = &o.config;
    let group = match o.discovery {
        Discovery::Off => o.group,
        Discovery::Multicast => Some(o.group.unwrap_or(DEFAULT_GROUP)),
        Discovery::Broadcast => Some(o.group.unwrap_or(DEFAULT_BROADCAST)),
    };
    Settings {
        bind: Some(o.bind),
        discovery: Some(o.discovery),
        group,
        join: Some(o.join.clone()),
        interface: o.interface,
        state: o.state.clone(),
        expect: c.expect.map(|n| n as u64),
        metrics: o.metrics,
        log_level: Some(log_level.to_string()),
        protocol: Protocol {
            heartbeat_ms: Some(c.heartbeat_ms),
            suspect_ms: Some(c.suspect_ms),
            remove_ms: Some(c.remove_ms),
            discovery_window_ms: Some(c.discovery_window_ms),
            hello_ms: Some(c.hello_ms),
            beacon_ms: Some(c.beacon_ms),
            hop_timeout_ms: Some(c.hop_timeout_ms),
            hop_retries: Some(c.hop_retries),
            election_timeout_ms: Some(c.election_timeout_ms),
            backoff_ms: Some(c.backoff_ms),
            join_give_up_ms: Some(c.join_give_up_ms),
            ring: Some(c.ring.into()),
        },
    }
}

/// Checks a log filter (`RUST_LOG` syntax).
pub fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder().parse(level).map(|_| ()).map_err(|e| format!("bad log filter {level:?}: {e}"))
}

/// The settings as a config file (`ringchat server --print-config`).
pub fn to_toml(s: &Settings) -> String {
    toml::to_string(s).unwrap_or_else(|e| format!("# cannot print the settings: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/ringchat.example.toml");

    #[test]
    fn the_example_parses_and_shows_the_core_defaults() {
        let s = parse(EXAMPLE, "ringchat.example.toml").expect("the example parses");
        let r = Settings::default().resolve(Some(("ringchat.example.toml", &s))).expect("the example resolves");
        let d = ServerConfig::default();
        let c = &r.options.config;
        // The example documents the defaults of the protocol timings: it must keep up with the core.
        let timings = |c: &ServerConfig| {
            (
                c.heartbeat_ms,
                c.suspect_ms,
                c.remove_ms,
                c.discovery_window_ms,
                c.hello_ms,
                c.beacon_ms,
                c.hop_timeout_ms,
                c.hop_retries,
                c.election_timeout_ms,
                c.backoff_ms,
                c.join_give_up_ms,
                c.ring,
            )
        };
        assert_eq!(timings(c), timings(&d));
        // Every key is there, commented: the example is what `--print-config` prints of itself.
        assert_eq!(r.effective.protocol, effective(&r.options, &r.log_level).protocol);
        assert!(s.bind.is_some() && s.discovery.is_some() && s.group.is_some() && s.join.is_some());
        assert!(s.interface.is_some() && s.state.is_some() && s.expect.is_some() && s.metrics.is_some() && s.log_level.is_some());
        let p = &s.protocol;
        assert!([
            p.heartbeat_ms,
            p.suspect_ms,
            p.remove_ms,
            p.discovery_window_ms,
            p.hello_ms,
            p.beacon_ms,
            p.hop_timeout_ms,
            p.hop_retries.map(u64::from),
            p.election_timeout_ms,
            p.backoff_ms,
            p.join_give_up_ms
        ]
        .iter()
        .all(Option::is_some));
        assert!(p.ring.is_some());
    }

    #[test]
    fn flags_over_file_over_defaults() {
        let file = parse("bind = \"127.0.0.1:7100\"\nexpect = 3\njoin = [\"127.0.0.1:7101\"]\n[protocol]\nheartbeat_ms = 50\n", "f.toml")
            .expect("parses");
        let flags = Settings { bind: Some("127.0.0.1:7200".parse().expect("addr")), ..Settings::default() };
        let r = flags.resolve(Some(("f.toml", &file))).expect("resolves");
        assert_eq!(r.options.bind.port(), 7200, "flag over file");
        assert_eq!(r.options.config.expect, Some(3), "file over default");
        assert_eq!(r.options.join.len(), 1);
        assert_eq!(r.options.discovery, Discovery::Multicast, "default");
        // The file's heartbeat scales suspicion and removal as the flag does.
        assert_eq!((r.options.config.heartbeat_ms, r.options.config.suspect_ms, r.options.config.remove_ms), (50, 175, 3000));
        // The flags' list replaces the file's.
        let flags = Settings { join: Some(vec!["127.0.0.1:1".parse().expect("addr"), "127.0.0.1:2".parse().expect("addr")]), ..flags };
        assert_eq!(flags.resolve(Some(("f.toml", &file))).expect("resolves").options.join.len(), 2);
        // Nothing given: the defaults.
        let r = Settings::default().resolve(None).expect("defaults");
        assert_eq!(r.options.bind, DEFAULT_BIND);
        assert_eq!(r.log_level, DEFAULT_LOG_LEVEL);
        assert_eq!(r.options.config.heartbeat_ms, ServerConfig::default().heartbeat_ms);
    }

    #[test]
    fn errors_are_one_line_and_name_the_file_and_the_key() {
        for (text, key) in [
            ("colour = \"blue\"\n", "colour"),
            ("bind = \"nonsense\"\n", "bind"),
            ("bind = \"127.0.0.1:7000\"\n\n[protocol]\nheartbeat_ms = \"fast\"\n", "protocol.heartbeat_ms"),
            ("[protocol]\nhartbeat_ms = 100\n", "protocol.hartbeat_ms"),
            ("[protocl]\nheartbeat_ms = 100\n", "protocl"),
            ("discovery = \"sideways\"\n", "discovery"),
            ("join = [\"127.0.0.1:1\",\n  \"nowhere\"]\n", "join"),
            ("expect = 0\n", "expect"),
            ("log_level = \"info,=[\"\n", "log_level"),
            ("[protocol]\nheartbeat_ms = 5\n", "protocol.heartbeat_ms"),
            ("[protocol]\nring = \"round\"\n", "protocol.ring"),
            // Syntax errors in a value still name the key.
            ("bind = \n", "bind"),
            ("[protocol]\nhello_ms = 1 2\n", "protocol.hello_ms"),
        ] {
            let e = parse(text, "x.toml").expect_err(text);
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.contains("x.toml") && e.contains(&format!("`{key}`")), "{text:?}: {e}");
        }
        // A unicast group for multicast discovery, and timings that contradict each other.
        let f = parse("group = \"10.1.2.3:7777\"\n", "g.toml").expect("parses");
        let e = Settings::default().resolve(Some(("g.toml", &f))).expect_err("unicast group");
        assert!(e.contains("g.toml") && e.contains("`group`"), "{e}");
        let f = parse("[protocol]\nheartbeat_ms = 100\nsuspect_ms = 100\n", "t.toml").expect("parses");
        let e = Settings::default().resolve(Some(("t.toml", &f))).expect_err("suspect too short");
        assert!(e.contains("t.toml") && e.contains("`protocol.suspect_ms`"), "{e}");
    }

    #[test]
    fn printed_settings_parse_back() {
        let r = Settings::default().resolve(None).expect("defaults");
        let text = to_toml(&r.effective);
        let back = parse(&text, "printed").expect("what --print-config prints is a config file");
        assert_eq!(back, r.effective);
    }
}
