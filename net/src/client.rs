//! `ringchat client`: drives [`ringchat_core::client::Client`] over a tokio UDP
//! socket. This module is the only user of the core's client API in `net`.
//!
//! The core keeps at most one operation outstanding (waiting for `stored`);
//! this driver queues the user's further commands locally ("pending") and
//! submits them one by one.

use crate::driver::{Discovery, DEFAULT_BROADCAST, DEFAULT_GROUP};
use crate::trust::{self, Link};
use ringchat_core::client::{Client, ClientConfig, ClientError, ClientEvent};
use ringchat_core::limits::{MAX_NAME, MAX_TEXT};
use ringchat_core::wire::{self, Packet};
use ringchat_core::wire::{ClientMsg, Op, ServerMsg, WhoList};
use ringchat_core::wire::{MsgId, Target};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::net::UdpSocket;

/// What `ringchat client` needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// User name.
    pub name: String,
    /// Known servers: asked for an assignment, and tried when none comes.
    pub servers: Vec<SocketAddr>,
    /// How to find servers besides `servers` (the client sends `Find` to the group).
    pub discovery: Discovery,
    /// Multicast group or broadcast target (with the discovery port); defaults per mode.
    pub group: Option<SocketAddrV4>,
    /// Interface address for multicast.
    pub interface: Option<Ipv4Addr>,
    /// JSON lines in and out instead of the interactive syntax.
    pub json: bool,
    /// The user's key file (default: `users/NAME.key` in the config directory; made on first use).
    pub user_key: Option<PathBuf>,
    /// The cluster's identity public key to trust (default: the one remembered for these
    /// servers, or the one they present, trusted on first use).
    pub cluster_key: Option<[u8; 32]>,
    /// Talk plain, to a cluster run with `--insecure-no-key`.
    pub insecure_no_key: bool,
}

/// A user command, from either syntax.
#[derive(Clone, Debug, PartialEq)]
enum Command {
    Op(Op),
    /// A list of names, fetched a page at a time.
    Who(WhoList),
    Quit,
}

fn id_str(id: MsgId) -> String {
    format!("{:x}-{}", id.client, id.seq)
}

fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME {
        Err(ClientError::BadName.to_string())
    } else {
        Ok(())
    }
}

fn chat(to: Target, text: String) -> Result<Command, String> {
    match &to {
        Target::User(n) | Target::Room(n) => check_name(n)?,
    }
    if text.len() > MAX_TEXT {
        return Err(ClientError::TooLong { len: text.len(), max: MAX_TEXT }.to_string());
    }
    if text.is_empty() {
        return Err("empty message".into());
    }
    Ok(Command::Op(Op::Chat { to, text }))
}

fn room_name(r: &str) -> Result<String, String> {
    let r = r.trim();
    if !r.starts_with('#') {
        return Err(format!("room names start with '#': {r}"));
    }
    check_name(r)?;
    Ok(r.to_string())
}

/// Parses an interactive line (`None` for a blank line).
fn parse_line(line: &str) -> Option<Result<Command, String>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (head, rest) = match line.split_once(char::is_whitespace) {
        Some((h, r)) => (h, r.trim()),
        None => (line, ""),
    };
    Some(match head {
        "/msg" => match rest.split_once(char::is_whitespace) {
            Some((to, text)) => chat(Target::User(to.to_string()), text.trim().to_string()),
            None => Err("usage: /msg USER TEXT".into()),
        },
        "/join" => room_name(rest).map(|r| Command::Op(Op::Join(r))),
        "/leave" => room_name(rest).map(|r| Command::Op(Op::Leave(r))),
        "/who" if rest.is_empty() => Ok(Command::Who(WhoList::Users)),
        "/who" => room_name(rest).map(|r| Command::Who(WhoList::Members(r))),
        "/rooms" => Ok(Command::Who(WhoList::Rooms)),
        "/quit" | "/exit" => Ok(Command::Quit),
        h if h.starts_with('#') => chat(Target::Room(h.to_string()), rest.to_string()),
        _ => Err("commands: /msg USER TEXT, /join #ROOM, /leave #ROOM, #ROOM TEXT, /who [#ROOM], /rooms, /quit".into()),
    })
}

/// Parses a JSON command line.
fn parse_json(line: &str) -> Option<Result<Command, String>> {
    if line.trim().is_empty() {
        return None;
    }
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("not JSON: {e}"))),
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("missing string field \"{k}\""));
    let cmd = match s("cmd") {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    Some((|| match cmd.as_str() {
        "send" => chat(Target::User(s("to")?), s("text")?),
        "say" => chat(Target::Room(room_name(&s("room")?)?), s("text")?),
        "join" => Ok(Command::Op(Op::Join(room_name(&s("room")?)?))),
        "leave" => Ok(Command::Op(Op::Leave(room_name(&s("room")?)?))),
        "who" => match v.get("room").and_then(Value::as_str) {
            Some(r) => Ok(Command::Who(WhoList::Members(room_name(r)?))),
            None => Ok(Command::Who(WhoList::Users)),
        },
        "rooms" => Ok(Command::Who(WhoList::Rooms)),
        "quit" => Ok(Command::Quit),
        other => Err(format!("unknown cmd \"{other}\"")),
    })())
}

/// Output in either syntax.
struct Out {
    json: bool,
    me: String,
}

impl Out {
    fn emit(&self, v: Value, human: String) {
        let mut o = std::io::stdout().lock();
        let _ = if self.json { writeln!(o, "{v}") } else { writeln!(o, "{human}") };
        let _ = o.flush();
    }

    fn error(&self, msg: &str) {
        self.emit(json!({"event":"error","message":msg}), format!("! {msg}"));
    }

    fn describe(&self, op: &Op) -> String {
        match op {
            Op::Chat { to: Target::User(u), text } => format!("{} -> {u}: {text}", self.me),
            Op::Chat { to: Target::Room(r), text } => format!("{r} {}: {text}", self.me),
            Op::Join(r) => format!("join {r}"),
            Op::Leave(r) => format!("leave {r}"),
        }
    }

    /// An operation's event: `event`, the id it was sent with (none if it never was), its fields.
    fn op_json(&self, event: &str, id: Option<MsgId>, op: &Op) -> Value {
        let mut v = match op {
            Op::Chat { to: Target::User(u), text } => json!({"event":event,"to":u,"room":null,"text":text}),
            Op::Chat { to: Target::Room(r), text } => json!({"event":event,"to":null,"room":r,"text":text}),
            Op::Join(r) => json!({"event":event,"join":r}),
            Op::Leave(r) => json!({"event":event,"leave":r}),
        };
        if let (Value::Object(m), Some(id)) = (&mut v, id) {
            m.insert("id".into(), Value::String(id_str(id)));
        }
        v
    }
}

/// Shows a whole list of names (every page of it).
fn show_who(out: &Out, list: &WhoList, names: &[(String, u32)]) {
    match list {
        WhoList::Rooms => {
            let human = if names.is_empty() {
                "* no rooms".to_string()
            } else {
                names.iter().map(|(r, n)| format!("* {r}: {n} member{}", if *n == 1 { "" } else { "s" })).collect::<Vec<_>>().join("\n")
            };
            let v: Vec<Value> = names.iter().map(|(r, n)| json!({"room":r,"members":n})).collect();
            out.emit(json!({"event":"rooms","rooms":v}), human);
        }
        WhoList::Users | WhoList::Members(_) => {
            let all: Vec<&str> = names.iter().map(|(u, _)| u.as_str()).collect();
            let online: Vec<&str> = names.iter().filter(|(_, o)| *o > 0).map(|(u, _)| u.as_str()).collect();
            let human = names.iter().map(|(u, o)| if *o > 0 { format!("{u} (online)") } else { u.clone() }).collect::<Vec<_>>().join(", ");
            match list {
                WhoList::Members(r) => out.emit(json!({"event":"who","room":r,"users":all,"online":online}), format!("* {r}: {human}")),
                _ => out.emit(json!({"event":"who","users":all,"online":online}), format!("* users: {human}")),
            }
        }
    }
}

fn now_us(origin: std::time::Instant) -> ringchat_core::Instant {
    ringchat_core::Instant(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// The discovery target for `opts`, checked (`Err` is a one-line usage message).
fn group_of(opts: &ClientOptions) -> Result<Option<SocketAddrV4>, String> {
    match opts.discovery {
        Discovery::Off => Ok(None),
        Discovery::Multicast => {
            let g = opts.group.unwrap_or(DEFAULT_GROUP);
            if !g.ip().is_multicast() {
                return Err(format!("--group {g} is not a multicast address (use --discovery broadcast for broadcast)"));
            }
            Ok(Some(g))
        }
        Discovery::Broadcast => Ok(Some(opts.group.unwrap_or(DEFAULT_BROADCAST))),
    }
}

/// The client's one UDP socket: unicast to servers, and `Find` to the group
/// (replies come back to it by unicast).
fn client_socket(opts: &ClientOptions, group: Option<SocketAddrV4>) -> Result<UdpSocket, String> {
    let v6 = group.is_none() && opts.servers.first().is_some_and(SocketAddr::is_ipv6);
    let bind: SocketAddr = if v6 { SocketAddr::from(([0u16; 8], 0)) } else { SocketAddr::from(([0, 0, 0, 0], 0)) };
    let fail = |e: std::io::Error| format!("cannot bind a UDP socket: {}", crate::io_msg(&e));
    let sock = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    sock.bind(&SockAddr::from(bind)).map_err(fail)?;
    // A burst of shown messages (an inbox replayed at login) must not overflow the default buffer.
    let _ = sock.set_recv_buffer_size(crate::driver::SOCKET_BUFFER);
    match opts.discovery {
        Discovery::Off => {}
        Discovery::Broadcast => sock.set_broadcast(true).map_err(|e| format!("cannot set SO_BROADCAST: {}", crate::io_msg(&e)))?,
        Discovery::Multicast => {
            let _ = sock.set_multicast_ttl_v4(1);
            let _ = sock.set_multicast_loop_v4(true); // a server on this host answers too
            if let Some(ip) = opts.interface {
                sock.set_multicast_if_v4(&ip).map_err(|e| format!("cannot send multicast on interface {ip}: {}", crate::io_msg(&e)))?;
            }
        }
    }
    sock.set_nonblocking(true).map_err(fail)?;
    let std: std::net::UdpSocket = sock.into();
    UdpSocket::from_std(std).map_err(|e| format!("cannot register the socket: {}", crate::io_msg(&e)))
}

/// How long a client waits for the cluster's identity when it trusts none yet.
const FIRST_CONTACT: Duration = Duration::from_secs(30);

/// The identity the client seals to: none when `--insecure-no-key`; the one given; the one
/// remembered for these servers (refusing, as SSH does, a cluster that now presents another);
/// else the one the servers present, trusted on first use with a warning and remembered.
async fn cluster_identity(opts: &ClientOptions, sock: &UdpSocket, places: &[SocketAddr], out: &Out) -> Result<Option<[u8; 32]>, String> {
    if opts.insecure_no_key {
        out.emit(
            json!({"event":"insecure"}),
            "* WITHOUT A KEY (--insecure-no-key): anyone on this network can read and forge this chat".into(),
        );
        return Ok(None);
    }
    if let Some(k) = opts.cluster_key {
        return Ok(Some(k));
    }
    if let Some(known) = trust::known_identity(places)? {
        return match trust::ask_identity(sock, places, Duration::from_secs(1)).await {
            Some(now) if now != known => Err(format!(
                "the cluster at {} presents identity {}, not {} trusted before: someone may be impersonating it; \
                 if its operator changed it, run with --cluster-key {}",
                places.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                trust::hex32(&now),
                trust::hex32(&known),
                trust::hex32(&now)
            )),
            _ => Ok(Some(known)),
        };
    }
    let Some(found) = trust::ask_identity(sock, places, FIRST_CONTACT).await else {
        return Err(format!(
            "no server answered with the cluster's identity within {} s: are the servers up? \
             (give --cluster-key from `ringchat keygen`, or --insecure-no-key for an unsealed cluster)",
            FIRST_CONTACT.as_secs()
        ));
    };
    let hex = trust::hex32(&found);
    out.emit(
        json!({"event":"trusted","identity":hex}),
        format!("* trusting the cluster's identity {hex} on first use: check it with your operator (ringchat keys list)"),
    );
    if let Err(e) = trust::remember_identity(places, &found) {
        out.error(&format!("cannot remember the cluster's identity: {e}"));
    }
    Ok(Some(found))
}

/// Runs a client until `/quit`, end of input (after the queue drains) or Ctrl-C. Returns the exit code.
pub async fn run<R: AsyncBufRead + Unpin>(opts: ClientOptions, input: R) -> i32 {
    let out = Out { json: opts.json, me: opts.name.clone() };
    let group = match group_of(&opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if group.is_some() && opts.servers.iter().any(SocketAddr::is_ipv6) {
        eprintln!("error: multicast and broadcast discovery need IPv4 servers (or use --discovery off)");
        return 2;
    }
    if opts.servers.is_empty() && group.is_none() {
        eprintln!("error: no way to find a server: give --server IP:PORT or use --discovery multicast|broadcast");
        return 2;
    }
    let sock = match client_socket(&opts, group) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Err(e) = check_name(&opts.name) {
        eprintln!("error: {e}");
        return 2;
    }
    let user = match opts
        .user_key
        .clone()
        .map_or_else(|| trust::user_key_path(&opts.name), Ok)
        .and_then(|p| trust::user_secret(&p).map(|u| (p, u)))
    {
        Ok((path, (user, made))) => {
            if made {
                out.emit(
                    json!({"event":"user_key","made":true,"path":path.display().to_string()}),
                    format!("* made a key for {} in {} (the name will belong to it: keep the file)", opts.name, path.display()),
                );
            }
            user
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let places: Vec<SocketAddr> = opts.servers.iter().copied().chain(group.map(SocketAddr::V4)).collect();
    let identity = match cluster_identity(&opts, &sock, &places, &out).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut link = match Link::new(identity) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let origin = std::time::Instant::now();
    let cfg = ClientConfig {
        servers: opts.servers.clone(),
        group: group.map(SocketAddr::V4),
        channel: link.channel(),
        ..ClientConfig::default()
    };
    let random = uuid::Uuid::new_v4().as_u64_pair();
    let client_id: u64 = random.0 | 1;
    let start = (random.1 % 1024) as usize;
    let mut client = Client::new(cfg, client_id, start, now_us(origin));
    if let Err(e) = client.login(now_us(origin), &opts.name, user) {
        eprintln!("error: {e}");
        return 2;
    }
    // Operations not yet handed to the core, with when they were typed.
    let mut queue: VecDeque<(Op, std::time::Instant)> = VecDeque::new();
    let mut inflight: BTreeMap<MsgId, Op> = BTreeMap::new();
    let mut lines = input.lines();
    let mut input_open = true;
    let mut closing = false;
    let mut buf = vec![0u8; 65536];
    let mut code = 0;
    let mut linger: Option<std::time::Instant> = None;
    let mut attached: Option<SocketAddr> = None;
    // The list being fetched: which, the names so far, and when to ask (again) for the next page.
    let mut who_asked: Option<(WhoList, Vec<(String, u32)>, std::time::Instant)> = None;
    let mut who_todo: VecDeque<WhoList> = VecDeque::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    if !opts.json {
        let how = match group {
            Some(g) if opts.servers.is_empty() => format!("through the discovery group {g}"),
            Some(g) => format!("through {} given server(s) and the discovery group {g}", opts.servers.len()),
            None => format!("through {} given server(s)", opts.servers.len()),
        };
        out.emit(Value::Null, format!("* {} finding servers {how}; /quit to leave", opts.name));
    }
    'main: loop {
        // Events first: a message is printed before its acknowledgement leaves (below).
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::LoggedIn { server } => {
                    attached = Some(server);
                    // A list half fetched starts over at the new server.
                    if let Some((_, got, at)) = &mut who_asked {
                        got.clear();
                        *at = std::time::Instant::now();
                    }
                    let n = queue.len() + usize::from(client.is_busy());
                    out.emit(json!({"event":"attached","server":server.to_string()}), format!("* attached to {server} ({n} pending)"));
                }
                ClientEvent::Refused { reason } => {
                    out.emit(json!({"event":"error","message":format!("login refused: {reason}")}), format!("! login refused: {reason}"));
                    code = 1;
                    break 'main;
                }
                ClientEvent::Shown { id, from, room, text } => {
                    let to = if room.is_none() { Some(opts.name.clone()) } else { None };
                    let human = match &room {
                        Some(r) => format!("{r} {from}: {text}"),
                        None => format!("{from} -> you: {text}"),
                    };
                    out.emit(json!({"event":"shown","id":id_str(id),"from":from,"to":to,"room":room,"text":text}), human);
                }
                ClientEvent::Stored { id } => {
                    let op = inflight.remove(&id);
                    let human = op
                        .as_ref()
                        .map(|o| format!("  [stored] {}", out.describe(o)))
                        .unwrap_or_else(|| format!("  [stored] {}", id_str(id)));
                    out.emit(json!({"event":"stored","id":id_str(id)}), human);
                }
                ClientEvent::Failed { id } => {
                    let op = inflight.remove(&id);
                    let reason = "not stored in time (no majority of servers reachable?); it may or may not be delivered";
                    let what = op.as_ref().map(|o| out.describe(o)).unwrap_or_else(|| id_str(id));
                    out.emit(json!({"event":"failed","id":id_str(id),"reason":reason}), format!("! [failed] {what}: {reason}"));
                }
                ClientEvent::LoggedOut { .. } => {}
                ClientEvent::Rejected { id, reason } => {
                    let op = inflight.remove(&id);
                    let what = op.as_ref().map(|o| out.describe(o)).unwrap_or_else(|| id_str(id));
                    let reason = reason.to_string();
                    out.emit(json!({"event":"rejected","id":id_str(id),"reason":reason}), format!("! [rejected] {what}: {reason}"));
                }
                ClientEvent::Assigned { servers } => {
                    let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
                    out.emit(json!({"event":"assigned","servers":list}), format!("* the cluster assigned servers: {}", list.join(", ")));
                }
                ClientEvent::ServerLost { server } => {
                    attached = None;
                    let n = queue.len() + usize::from(client.is_busy());
                    out.emit(
                        json!({"event":"moving","from":server.to_string(),"pending":n}),
                        format!("* server {server} lost; moving to another server ({n} pending)"),
                    );
                }
                ClientEvent::ServerRefused { reason } => {
                    out.emit(json!({"event":"error","message":format!("refused: {reason}")}), format!("! refused: {reason}"));
                }
            }
        }
        // A client that cannot attach says so instead of holding what was typed for ever: what
        // waited longer than the core gives a sent operation was never sent at all.
        if !client.is_online() {
            let give_up = Duration::from_millis(ClientConfig::default().give_up_ms);
            while queue.front().is_some_and(|(_, at)| at.elapsed() >= give_up) {
                let Some((op, _)) = queue.pop_front() else { break };
                let reason = "not sent: no server took this client in time";
                let mut j = out.op_json("not_sent", None, &op);
                if let Value::Object(m) = &mut j {
                    m.insert("reason".into(), reason.into());
                }
                out.emit(j, format!("! [failed] {}: {reason}", out.describe(&op)));
            }
        }
        // Submit the next queued operation when the core is free.
        if client.is_online() && !client.is_busy() {
            if let Some((op, at)) = queue.pop_front() {
                match client.submit(now_us(origin), op.clone()) {
                    Ok(id) => {
                        out.emit(out.op_json("pending", Some(id), &op), format!("  [pending] {}", out.describe(&op)));
                        inflight.insert(id, op);
                    }
                    Err(ClientError::Busy | ClientError::NotLoggedIn) => queue.push_front((op, at)),
                    Err(e) => out.error(&e.to_string()),
                }
            }
        }
        while let Some((to, bytes)) = client.poll_transmit() {
            let _ = sock.send_to(&link.seal(&bytes), to).await;
        }
        if let Some(server) = attached {
            // One list at a time, a page at a time: the next page is asked for after the
            // last name of this one.
            if who_asked.is_none() {
                if let Some(list) = who_todo.pop_front() {
                    who_asked = Some((list, Vec::new(), std::time::Instant::now()));
                }
            }
            if let Some((list, got, asked)) = &mut who_asked {
                if *asked <= std::time::Instant::now() {
                    let after = got.last().map(|(n, _)| n.clone()).unwrap_or_default();
                    if let Some(bytes) = wire::encode(&Packet::FromClient(ClientMsg::Who { client: client_id, list: list.clone(), after }))
                    {
                        let _ = sock.send_to(&link.seal(&bytes), server).await;
                    }
                    // Asked again if the answer is lost.
                    *asked = std::time::Instant::now() + Duration::from_millis(500);
                }
            }
        }
        if closing && queue.is_empty() && !client.is_busy() && who_todo.is_empty() && who_asked.is_none() {
            // End of input: linger briefly for what the cluster still shows us.
            let until = *linger.get_or_insert_with(|| std::time::Instant::now() + Duration::from_millis(500));
            if std::time::Instant::now() >= until {
                break;
            }
        }
        let mut deadline = client.poll_timeout().map(|t| origin + Duration::from_micros(t.0));
        if let Some((_, _, at)) = who_asked.as_ref().filter(|_| attached.is_some()) {
            deadline = Some(deadline.map_or(*at, |d| d.min(*at)));
        }
        if let Some(l) = linger {
            deadline = Some(deadline.map_or(l, |d| d.min(l)));
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Some((plain, from)) = r.ok().and_then(|(n, from)| link.open(&buf[..n]).map(|p| (p, from))) {
                    if let Ok(Packet::ToClient(ServerMsg::Who { client: c, list, names, more })) = wire::decode(&plain) {
                        if let Some((asked, got, at)) = who_asked.as_mut().filter(|(l, _, _)| c == client_id && *l == list) {
                            // A page already taken (a late answer to a re-ask) starts at or before the last name.
                            let last = got.last().map(|(n, _)| n.clone()).unwrap_or_default();
                            got.extend(names.into_iter().filter(|(n, _)| *n > last));
                            if more {
                                *at = std::time::Instant::now();
                            } else {
                                show_who(&out, asked, got);
                                who_asked = None;
                            }
                        }
                    }
                    client.handle_datagram(now_us(origin), from, &plain);
                }
            }
            line = lines.next_line(), if input_open => {
                match line {
                    Ok(Some(l)) => {
                        let parsed = if opts.json { parse_json(&l) } else { parse_line(&l) };
                        match parsed {
                            None => {}
                            Some(Err(e)) => out.error(&e),
                            Some(Ok(Command::Op(op))) => {
                                if (!client.is_online() || client.is_busy()) && !opts.json {
                                    out.emit(Value::Null, format!("  [queued] {}", out.describe(&op)));
                                }
                                queue.push_back((op, std::time::Instant::now()));
                            }
                            Some(Ok(Command::Who(list))) => who_todo.push_back(list),
                            Some(Ok(Command::Quit)) => break 'main,
                        }
                    }
                    Ok(None) | Err(_) => {
                        input_open = false;
                        closing = true;
                    }
                }
            }
            _ = sleep => client.handle_timeout(now_us(origin)),
            _ = &mut ctrl_c => break 'main,
        }
    }
    // A clean quit: the logout is retried until the server says what we acknowledged is
    // stable (the core bounds the wait), so the next login is not shown it again.
    client.logout(now_us(origin));
    for (op, _) in queue {
        out.error(&format!("not sent: {}", out.describe(&op)));
    }
    'quit: loop {
        while let Some((to, bytes)) = client.poll_transmit() {
            let _ = sock.send_to(&link.seal(&bytes), to).await;
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Failed { id } => out.emit(
                    json!({"event":"failed","id":id_str(id),"reason":"quit before stored"}),
                    format!("! [failed] {} (quit before stored)", id_str(id)),
                ),
                ClientEvent::LoggedOut { confirmed } => {
                    if !confirmed {
                        out.emit(
                            json!({"event":"logout_unconfirmed"}),
                            "! no server confirmed the logout: what was shown last may be shown again at the next login".into(),
                        );
                    }
                    break 'quit;
                }
                _ => {}
            }
        }
        let Some(t) = client.poll_timeout() else { break };
        let deadline = tokio::time::Instant::from_std(origin + Duration::from_micros(t.0));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Some((plain, from)) = r.ok().and_then(|(n, from)| link.open(&buf[..n]).map(|p| (p, from))) {
                    client.handle_datagram(now_us(origin), from, &plain);
                }
            }
            _ = tokio::time::sleep_until(deadline) => client.handle_timeout(now_us(origin)),
        }
    }
    if !opts.json {
        out.emit(Value::Null, "* bye".into());
    }
    code
}

/// What a [`SyncClient`] reports (a thin copy of the core's client events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// Logged in at a server.
    Attached(SocketAddr),
    /// A submission is stored.
    Stored(MsgId),
    /// A submission failed.
    Failed(MsgId),
    /// A message shown to this user.
    Shown {
        /// Its id.
        id: MsgId,
        /// Its text.
        text: String,
        /// When the client took the datagram that showed it (before its acknowledgement left).
        at: std::time::Instant,
    },
    /// Anything else (server lost, refused).
    Other,
}

/// A blocking client on a std UDP socket, for benchmarks and tools: one
/// operation outstanding at a time, as the core allows. It is pinned to the
/// servers it is given (no assignment), so a benchmark decides placement.
pub struct SyncClient {
    client: Client,
    sock: std::net::UdpSocket,
    origin: std::time::Instant,
    buf: Vec<u8>,
    /// Bytes of datagrams received (sealed, as on the wire).
    received: u64,
    /// The receive wait the socket is set to (None: unknown).
    wait: Option<Duration>,
    link: Link,
}

/// A benchmark user's key: a function of its name.
fn bench_user(name: &str) -> ringchat_core::user::UserSecret {
    use sha2::{Digest, Sha256};
    ringchat_core::user::UserSecret::from_seed(Sha256::new().chain_update(b"ringchat bench user").chain_update(name).finalize().into())
}

/// Most datagrams one [`SyncClient::step`] handles.
const STEP_DRAIN: usize = 64;

impl SyncClient {
    /// Binds a socket and starts logging in as `name` at `servers` (first one first, no `Find`),
    /// on a channel to the cluster of `identity` (`None`: an unsealed cluster). The user's key
    /// is a function of the name (a benchmark's users need no files): never for real users.
    pub fn new(name: &str, servers: Vec<SocketAddr>, id: u64, identity: Option<[u8; 32]>) -> Result<SyncClient, String> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| crate::io_msg(&e))?;
        let origin = std::time::Instant::now();
        let link = Link::new(identity)?;
        let cfg = ClientConfig { servers, find: false, channel: link.channel(), ..ClientConfig::default() };
        let mut client = Client::new(cfg, id, 0, now_us(origin));
        client.login(now_us(origin), name, bench_user(name)).map_err(|e| e.to_string())?;
        let mut c = SyncClient { client, sock, origin, buf: vec![0u8; 65536], received: 0, wait: None, link };
        c.flush();
        Ok(c)
    }

    /// Bytes of datagrams received so far, as on the wire.
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// Whether a submission waits for `stored`.
    pub fn is_busy(&self) -> bool {
        self.client.is_busy()
    }

    /// Whether logged in.
    pub fn is_online(&self) -> bool {
        self.client.is_online()
    }

    /// Submits a private message.
    pub fn send(&mut self, to: &str, text: String) -> Result<MsgId, String> {
        self.submit(Op::Chat { to: Target::User(to.to_string()), text })
    }

    /// Submits an operation (a message, a join or a leave).
    pub fn submit(&mut self, op: Op) -> Result<MsgId, String> {
        let id = self.client.submit(now_us(self.origin), op).map_err(|e| e.to_string())?;
        self.flush();
        Ok(id)
    }

    fn flush(&mut self) {
        while let Some((to, bytes)) = self.client.poll_transmit() {
            let _ = self.sock.send_to(&self.link.seal(&bytes), to);
        }
    }

    /// Sets the socket to wait at most `wait` on receive (zero: not at all), if it does not already.
    fn set_wait(&mut self, wait: Duration) {
        if self.wait == Some(wait) {
            return;
        }
        let ok = if wait.is_zero() {
            self.sock.set_nonblocking(true).is_ok()
        } else {
            self.sock.set_nonblocking(false).is_ok() && self.sock.set_read_timeout(Some(wait)).is_ok()
        };
        self.wait = ok.then_some(wait);
    }

    /// Handles due timers, then waits at most `wait` for one datagram and handles it; with a
    /// zero `wait`, handles every datagram that is ready (up to 64) instead. Returns
    /// the events. (A caller that keeps one `wait` never changes the socket's mode, which costs
    /// system calls on the path it measures.)
    pub fn step(&mut self, wait: Duration) -> Vec<SyncEvent> {
        let now = now_us(self.origin);
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        let mut out = Vec::new();
        self.take_events(&mut out);
        self.set_wait(wait);
        let most = if wait.is_zero() { STEP_DRAIN } else { 1 };
        for _ in 0..most {
            let Ok((n, from)) = self.sock.recv_from(&mut self.buf) else { break };
            self.received += n as u64;
            if let Some(plain) = self.link.open(&self.buf[..n]) {
                self.client.handle_datagram(now_us(self.origin), from, &plain);
            }
            self.take_events(&mut out);
        }
        // Acknowledgements leave after the events are taken: a message counts as shown when
        // the client has it, not after its acknowledgement is on the wire.
        self.flush();
        out
    }

    fn take_events(&mut self, out: &mut Vec<SyncEvent>) {
        let at = std::time::Instant::now();
        while let Some(e) = self.client.poll_event() {
            out.push(match e {
                ClientEvent::LoggedIn { server } => SyncEvent::Attached(server),
                ClientEvent::Stored { id } => SyncEvent::Stored(id),
                ClientEvent::Failed { id } | ClientEvent::Rejected { id, .. } => SyncEvent::Failed(id),
                ClientEvent::Shown { id, text, .. } => SyncEvent::Shown { id, text, at },
                _ => SyncEvent::Other,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactive_syntax() {
        assert_eq!(parse_line("/msg bob hi there"), Some(chat(Target::User("bob".into()), "hi there".into())));
        assert_eq!(parse_line("/join #r"), Some(Ok(Command::Op(Op::Join("#r".into())))));
        assert_eq!(parse_line("#r hello"), Some(chat(Target::Room("#r".into()), "hello".into())));
        assert!(matches!(parse_line("/join r"), Some(Err(_))));
        assert!(matches!(parse_line(&format!("/msg bob {}", "x".repeat(MAX_TEXT + 1))), Some(Err(_))));
        assert_eq!(parse_line("  "), None);
        assert_eq!(parse_line("/who"), Some(Ok(Command::Who(WhoList::Users))));
        assert_eq!(parse_line("/who #r"), Some(Ok(Command::Who(WhoList::Members("#r".into())))));
        assert_eq!(parse_line("/rooms"), Some(Ok(Command::Who(WhoList::Rooms))));
    }

    #[test]
    fn json_syntax() {
        assert_eq!(parse_json(r##"{"cmd":"say","room":"#r","text":"x"}"##), Some(chat(Target::Room("#r".into()), "x".into())));
        assert_eq!(parse_json(r#"{"cmd":"quit"}"#), Some(Ok(Command::Quit)));
        assert!(matches!(parse_json(r#"{"cmd":"send","to":"bob"}"#), Some(Err(_))));
        assert!(matches!(parse_json("nope"), Some(Err(_))));
    }
}
