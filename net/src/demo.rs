//! `ringchat demo`: three servers on 127.0.0.1 (child processes of the same
//! binary, free ports, `--discovery off` with join lists) and one client.

use crate::client::{self, ClientOptions};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the servers when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Removes the demo's key file when dropped.
struct KeyFile(std::path::PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Free UDP ports on 127.0.0.1 (held together while picking, so they differ).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let socks: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot bind 127.0.0.1: {}", crate::io_msg(&e)))?;
    socks.iter().map(|s| s.local_addr().map(|a| a.port()).map_err(|e| crate::io_msg(&e))).collect()
}

/// Runs the demo; `exe` is the `ringchat` binary. Returns the exit code.
pub fn run(exe: &Path, name: String, json: bool) -> i32 {
    let ports = match free_ports(3) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    // A key of its own, so the demo cluster is sealed with no set-up; removed on the way out.
    let key_file = KeyFile(std::env::temp_dir().join(format!("ringchat-demo-{}.key", std::process::id())));
    let _ = std::fs::remove_file(&key_file.0);
    let identity = match crate::keys::keygen(&key_file.0) {
        Ok((_, identity)) => identity,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut servers = Servers(Vec::new());
    for a in &addrs {
        let mut cmd = Command::new(exe);
        cmd.arg("server").arg("--bind").arg(a.to_string()).arg("--discovery").arg("off").arg("--key-file").arg(&key_file.0);
        for b in addrs.iter().filter(|b| *b != a) {
            cmd.arg("--join").arg(b.to_string());
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        match cmd.spawn() {
            Ok(c) => servers.0.push(c),
            Err(e) => {
                eprintln!("error: cannot start a server: {}", crate::io_msg(&e));
                return 1;
            }
        }
    }
    if !json {
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        println!("* demo cluster: 3 servers on {}", list.join(", "));
        println!("* try: /join #lobby, #lobby hello, /msg {name} note to self, /quit");
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {}", crate::io_msg(&e));
            return 1;
        }
    };
    let opts = ClientOptions {
        name,
        servers: addrs,
        discovery: crate::driver::Discovery::Off,
        group: None,
        interface: None,
        json,
        user_key: None,
        cluster_key: Some(identity),
        insecure_no_key: false,
    };
    let code = rt.block_on(client::run(opts, tokio::io::BufReader::new(tokio::io::stdin())));
    drop(servers);
    drop(key_file);
    code
}
