//! `--trace` filters: a window of virtual time, servers, and kinds of line.

use crate::report::TraceLine;

/// A server as `--trace-server` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSpec {
    /// A slot, as the run numbers its servers (`0`, `n0`): every life of that slot.
    Slot(usize),
    /// A short server id or a prefix of it (`d1dacd6f`, `d1da`): every life of that id.
    Id(String),
    /// One life (`d1dacd6f/2`).
    Life(String, u64),
}

impl std::fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerSpec::Slot(i) => write!(f, "n{i}"),
            ServerSpec::Id(id) => write!(f, "{id}"),
            ServerSpec::Life(id, life) => write!(f, "{id}/{life}"),
        }
    }
}

/// Parses a `--trace-server` value.
pub fn parse_server(s: &str) -> Result<ServerSpec, String> {
    let s = s.trim();
    let slot = s.strip_prefix('n').unwrap_or(s);
    if !slot.is_empty() && slot.len() <= 2 && slot.chars().all(|c| c.is_ascii_digit()) {
        let i: usize = slot.parse().map_err(|_| format!("bad server slot {s:?}"))?;
        return if i < 24 { Ok(ServerSpec::Slot(i)) } else { Err(format!("server slot {i} is beyond the 24 servers a run can have")) };
    }
    let (id, life) = match s.split_once('/') {
        Some((id, life)) => (id, Some(life.parse::<u64>().map_err(|_| format!("bad life {life:?} in {s:?} (expected like d1dacd6f/2)"))?)),
        None => (s, None),
    };
    if id.is_empty() || id.len() > 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is neither a server slot (n0, 3) nor a short server id (d1dacd6f, d1dacd6f/2)"));
    }
    let id = id.to_ascii_lowercase();
    Ok(match life {
        Some(l) if id.len() == 8 => ServerSpec::Life(id, l),
        Some(_) => return Err(format!("{s:?}: a life needs the whole 8-digit server id")),
        None => ServerSpec::Id(id),
    })
}

/// Parses a `--trace-kind` value: a lower-case word of letters, digits and `_`.
pub fn parse_kind(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 40 || !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("{s:?} is not a kind (message kinds like hello or chat, events like voted, or client, fault, life)"));
    }
    Ok(s.to_string())
}

/// Which trace lines to print.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// First virtual microsecond kept.
    pub from_us: u64,
    /// First virtual microsecond no longer kept.
    pub to_us: u64,
    /// Servers (empty: all).
    pub servers: Vec<ServerSpec>,
    /// Kinds (empty: all).
    pub kinds: Vec<String>,
}

/// Whether the name `name` (`d1dacd6f/3`, or a client's) is server `spec`.
fn names(spec: &ServerSpec, name: &str) -> bool {
    let Some((id, life)) = name.split_once('/') else { return false };
    match spec {
        ServerSpec::Slot(_) => false,
        ServerSpec::Id(p) => id.starts_with(p.as_str()),
        ServerSpec::Life(p, l) => id == p && life.parse::<u64>().ok() == Some(*l),
    }
}

impl Filter {
    /// Whether line `l` passes every filter.
    pub fn keeps(&self, l: &TraceLine) -> bool {
        l.at_us >= self.from_us && l.at_us < self.to_us && self.keeps_kind(l) && self.keeps_server(l)
    }

    fn keeps_kind(&self, l: &TraceLine) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == l.kind)
    }

    fn keeps_server(&self, l: &TraceLine) -> bool {
        self.servers.is_empty()
            || self.servers.iter().any(|s| match s {
                ServerSpec::Slot(i) => l.slots.contains(i),
                _ => [&l.who, &l.peer].into_iter().flatten().any(|n| names(s, n)),
            })
    }

    /// Notes on filters that matched no line of `trace`, naming what the run had instead.
    pub fn unmatched(&self, trace: &[TraceLine]) -> Vec<String> {
        let mut notes = Vec::new();
        for k in &self.kinds {
            if !trace.iter().any(|l| l.kind == k) {
                let kinds: std::collections::BTreeSet<&str> = trace.iter().map(|l| l.kind).collect();
                notes.push(format!("no trace line of kind {k}; this run has {}", kinds.into_iter().collect::<Vec<_>>().join(" ")));
            }
        }
        for s in &self.servers {
            let one = Filter { servers: vec![s.clone()], ..Filter::default() };
            if !trace.iter().any(|l| one.keeps_server(l)) {
                notes.push(format!("no trace line about server {s}"));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at_us: u64, who: &str, slot: usize, peer: Option<(&str, usize)>, kind: &'static str) -> TraceLine {
        let mut slots = vec![slot];
        slots.extend(peer.map(|p| p.1));
        TraceLine { at_us, who: Some(who.into()), slots, peer: peer.map(|p| p.0.to_string()), kind, text: String::new() }
    }

    #[test]
    fn server_specs_parse_slots_ids_and_lives() {
        assert_eq!(parse_server("n3"), Ok(ServerSpec::Slot(3)));
        assert_eq!(parse_server("3"), Ok(ServerSpec::Slot(3)));
        assert_eq!(parse_server("D1DA"), Ok(ServerSpec::Id("d1da".into())));
        assert_eq!(parse_server("d1dacd6f/2"), Ok(ServerSpec::Life("d1dacd6f".into(), 2)));
        for bad in ["", "n24", "xyz", "d1da/2", "d1dacd6f/x", "123456789"] {
            assert!(parse_server(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_kind("view_installed").is_ok());
        assert!(parse_kind("Voted {").is_err());
    }

    #[test]
    fn a_filter_keeps_its_window_its_servers_and_its_kinds() {
        let a = line(1_000, "d1dacd6f/1", 0, Some(("7b5e1c64/2", 1)), "hello");
        let b = line(5_000, "7b5e1c64/2", 1, None, "voted");
        let c = line(9_000, "1370ad6e/1", 2, None, "chat");
        let all = [a.clone(), b.clone(), c.clone()];
        let kept = |f: &Filter| all.iter().filter(|l| f.keeps(l)).map(|l| l.at_us).collect::<Vec<_>>();
        let window = Filter { from_us: 1_000, to_us: 9_000, ..Filter::default() };
        assert_eq!(kept(&window), vec![1_000, 5_000]);
        let by_slot = Filter { to_us: u64::MAX, servers: vec![ServerSpec::Slot(1)], ..Filter::default() };
        assert_eq!(kept(&by_slot), vec![1_000, 5_000], "the peer of a line counts");
        let by_life = Filter { to_us: u64::MAX, servers: vec![ServerSpec::Life("7b5e1c64".into(), 1)], ..Filter::default() };
        assert!(kept(&by_life).is_empty(), "another life of the id");
        let by_id = Filter { to_us: u64::MAX, servers: vec![ServerSpec::Id("1370".into())], ..Filter::default() };
        assert_eq!(kept(&by_id), vec![9_000]);
        let by_kind = Filter { to_us: u64::MAX, kinds: vec!["voted".into(), "chat".into()], ..Filter::default() };
        assert_eq!(kept(&by_kind), vec![5_000, 9_000]);
        let none = Filter { to_us: u64::MAX, kinds: vec!["show".into()], ..Filter::default() };
        assert_eq!(none.unmatched(&all).len(), 1);
    }
}
