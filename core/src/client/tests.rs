//! The client state machine's unit tests.
use super::*;

#[test]
fn oversize_text_is_refused_before_anything_is_sent() {
    let addr: SocketAddr = "10.0.0.1:7000".parse().expect("addr");
    let mut c = Client::new(ClientConfig { servers: vec![addr], ..ClientConfig::default() }, 1, 0, Instant(0));
    c.login(Instant(0), "ann", UserSecret::from_seed([7; 32])).expect("login");
    while c.poll_transmit().is_some() {}
    let text = "x".repeat(MAX_TEXT + 1);
    let err = c.submit(Instant(0), Op::Chat { to: Target::User("bob".into()), text }).unwrap_err();
    assert_eq!(err, ClientError::TooLong { len: MAX_TEXT + 1, max: MAX_TEXT });
    assert!(c.poll_transmit().is_none());
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7000))
}

/// Every datagram queued, decoded: `(to, message)`.
fn sent(c: &mut Client) -> Vec<(SocketAddr, ClientMsg)> {
    let mut out = Vec::new();
    while let Some((to, bytes)) = c.poll_transmit() {
        if let Ok(Packet::FromClient(m)) = wire::decode(&bytes) {
            out.push((to, m));
        }
    }
    out
}

fn reply(msg: ServerMsg) -> Vec<u8> {
    wire::encode(&Packet::ToClient(msg)).expect("fits")
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Runs the client's timers from `from` to `to` (ms), returning what it sent.
fn run(c: &mut Client, from_ms: u64, to_ms: u64) -> Vec<(SocketAddr, ClientMsg)> {
    let mut out = Vec::new();
    let mut t = from_ms;
    while t <= to_ms {
        c.handle_timeout(Instant(t * 1000));
        out.extend(sent(c));
        t += 10;
    }
    out
}

#[test]
fn client_follows_assignment() {
    let (given, assigned, other) = (addr(1), addr(2), addr(3));
    let group: SocketAddr = "239.255.77.77:7777".parse().expect("addr");
    let cfg = ClientConfig { servers: vec![given], group: Some(group), ..ClientConfig::default() };
    let mut c = Client::new(cfg, 9, 0, Instant(0));
    c.login(Instant(0), "ann", UserSecret::from_seed([7; 32])).expect("login");
    // It asks the given server and the group first, and logs in nowhere yet.
    let out = sent(&mut c);
    assert_eq!(out, vec![(given, ClientMsg::Find { client: 9 }), (group, ClientMsg::Find { client: 9 })]);
    // An assignment for another client is ignored.
    c.handle_datagram(Instant(1000), given, &reply(ServerMsg::Assign { client: 8, servers: vec![other] }));
    assert!(sent(&mut c).is_empty());
    // The assignment (from any server) moves it to the assigned server.
    c.handle_datagram(Instant(2000), other, &reply(ServerMsg::Assign { client: 9, servers: vec![assigned, other, given] }));
    assert_eq!(events(&mut c), vec![ClientEvent::Assigned { servers: vec![assigned, other, given] }]);
    let out = sent(&mut c);
    assert!(matches!(out.as_slice(), [(to, ClientMsg::Login { client: 9, .. })] if *to == assigned), "{out:?}");
    let ClientMsg::Login { attempt, .. } = out[0].1.clone() else { unreachable!() };
    // A late second assignment changes nothing; the login answer attaches it.
    c.handle_datagram(Instant(3000), given, &reply(ServerMsg::Assign { client: 9, servers: vec![given] }));
    assert!(sent(&mut c).is_empty());
    c.handle_datagram(Instant(4000), assigned, &reply(ServerMsg::LoginOk { client: 9, attempt }));
    assert_eq!(events(&mut c), vec![ClientEvent::LoggedIn { server: assigned }]);
    assert!(c.is_online());
    // Its server goes silent: it moves to the next assigned server.
    let out = run(&mut c, 5, 1500);
    let logins: Vec<SocketAddr> = out.iter().filter(|(_, m)| matches!(m, ClientMsg::Login { .. })).map(|(to, _)| *to).collect();
    assert_eq!(logins.first(), Some(&other), "{out:?}");
    assert!(events(&mut c).contains(&ClientEvent::ServerLost { server: assigned }));
}

/// Client 4, "eve", pinned to one server and logged in there.
fn eve_logged_in() -> (SocketAddr, Client) {
    let a = addr(1);
    let mut c = Client::new(ClientConfig { servers: vec![a], find: false, ..ClientConfig::default() }, 4, 0, Instant(0));
    c.login(Instant(0), "eve", UserSecret::from_seed([1; 32])).expect("login");
    let ClientMsg::Login { attempt, .. } = sent(&mut c)[0].1.clone() else { panic!("no login") };
    c.handle_datagram(Instant(1000), a, &reply(ServerMsg::LoginOk { client: 4, attempt }));
    assert_eq!(events(&mut c), vec![ClientEvent::LoggedIn { server: a }]);
    (a, c)
}

#[test]
fn a_refused_client_logs_in_again_or_says_why() {
    let (a, mut c) = eve_logged_in();
    // Refusals for another client id, or from another address, are ignored.
    let not_logged_in = reply(ServerMsg::Refused { client: 4, reason: RefusalReason::NotLoggedIn });
    c.handle_datagram(Instant(2000), a, &reply(ServerMsg::Refused { client: 5, reason: RefusalReason::NotLoggedIn }));
    c.handle_datagram(Instant(2000), addr(2), &not_logged_in);
    assert!(sent(&mut c).is_empty() && c.is_online());
    // The server lost our session: the client logs in there again, as a new attempt, silently.
    c.handle_datagram(Instant(3000), a, &not_logged_in);
    let out = sent(&mut c);
    assert!(matches!(out.as_slice(), [(to, ClientMsg::Login { attempt: again, .. })] if *to == a && *again > 1), "{out:?}");
    assert!(events(&mut c).is_empty() && !c.is_online());
    // Other refusals are surfaced.
    let never = RefusalReason::NeverShown { count: 2 };
    c.handle_datagram(Instant(4000), a, &reply(ServerMsg::Refused { client: 4, reason: never }));
    assert_eq!(events(&mut c), vec![ClientEvent::ServerRefused { reason: never }]);
}

#[test]
fn pinned_client_logs_in_directly_and_cycles() {
    let (a, b) = (addr(1), addr(2));
    let mut c = Client::new(ClientConfig { servers: vec![a, b], find: false, ..ClientConfig::default() }, 3, 1, Instant(0));
    c.login(Instant(0), "dee", UserSecret::from_seed([1; 32])).expect("login");
    let out = sent(&mut c);
    assert!(matches!(out.as_slice(), [(to, ClientMsg::Login { .. })] if *to == b), "{out:?}");
    let out = run(&mut c, 1, 4000);
    assert!(out.iter().all(|(_, m)| !matches!(m, ClientMsg::Find { .. })), "{out:?}");
    assert!(out.iter().any(|(to, _)| *to == a) && out.iter().any(|(to, _)| *to == b), "{out:?}");
}

#[test]
fn client_refinds_when_assigned_servers_are_gone() {
    let (given, b, d) = (addr(1), addr(2), addr(4));
    let cfg = ClientConfig { servers: vec![given], ..ClientConfig::default() };
    let mut c = Client::new(cfg, 5, 0, Instant(0));
    c.login(Instant(0), "bob", UserSecret::from_seed([1; 32])).expect("login");
    sent(&mut c);
    c.handle_datagram(Instant(1000), given, &reply(ServerMsg::Assign { client: 5, servers: vec![b, d] }));
    // Neither assigned server answers: it tries b, then d, then asks again,
    // at the given address and at the servers it was assigned.
    let mut out = Vec::new();
    let mut t = 2;
    while !out.iter().any(|(_, m)| matches!(m, ClientMsg::Find { .. })) {
        assert!(t < 5000, "no new Find: {out:?}");
        out.extend(run(&mut c, t, t));
        t += 10;
    }
    let first_find = out.iter().position(|(_, m)| matches!(m, ClientMsg::Find { .. })).expect("a new Find");
    let logins: Vec<SocketAddr> =
        out[..first_find].iter().filter(|(_, m)| matches!(m, ClientMsg::Login { .. })).map(|(to, _)| *to).collect();
    assert!(logins.contains(&b) && logins.contains(&d), "{out:?}");
    assert_eq!(logins.iter().position(|a| *a == d).map(|i| logins[..i].iter().all(|a| *a == b)), Some(true));
    let finds: Vec<SocketAddr> =
        out[first_find..].iter().take(3).filter(|(_, m)| matches!(m, ClientMsg::Find { .. })).map(|(to, _)| *to).collect();
    assert_eq!(finds, vec![given, b, d]);
    assert!(c.is_active() && !c.is_online());
    // A new assignment is followed.
    let e = addr(5);
    c.handle_datagram(Instant(t * 1000), b, &reply(ServerMsg::Assign { client: 5, servers: vec![e] }));
    let out = sent(&mut c);
    assert!(matches!(out.as_slice(), [(to, ClientMsg::Login { .. })] if *to == e), "{out:?}");
    // Without any answer at all, it falls back to logging in at what it knows, then asks again.
    let mut lone = Client::new(ClientConfig { servers: vec![given], ..ClientConfig::default() }, 6, 0, Instant(0));
    lone.login(Instant(0), "cy", UserSecret::from_seed([1; 32])).expect("login");
    sent(&mut lone);
    let out = run(&mut lone, 1, 3000);
    assert!(out.iter().any(|(to, m)| *to == given && matches!(m, ClientMsg::Login { .. })), "{out:?}");
    assert!(out.iter().filter(|(_, m)| matches!(m, ClientMsg::Find { .. })).count() >= 2, "{out:?}");
}

#[test]
fn a_logout_that_the_server_no_longer_knows_of_is_not_a_clean_quit() {
    let (a, mut c) = eve_logged_in();
    c.logout(Instant(2000));
    assert!(sent(&mut c).iter().any(|(to, m)| *to == a && matches!(m, ClientMsg::Logout { client: 4, .. })));
    // The server restarted and lost the session (and maybe the acknowledgements the logout
    // carried): the client must not report a clean quit.
    c.handle_datagram(Instant(3000), a, &reply(ServerMsg::Refused { client: 4, reason: RefusalReason::NotLoggedIn }));
    assert_eq!(events(&mut c), vec![ClientEvent::LoggedOut { confirmed: false }]);
    assert!(sent(&mut c).is_empty(), "no login again after quitting");
}
