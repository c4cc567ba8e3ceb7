//! The `ringchat` binary: `server`, `client`, `demo`, `status`, `sim`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringchat_core::ServerConfig;
use ringchat_net::driver::{self, Discovery, Options};
use ringchat_net::status;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::exit;
use std::time::Duration;

/// A fault-tolerant chat cluster for a LAN.
#[derive(Parser, Debug)]
#[command(name = "ringchat", version = ringchat_net::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a server (logs to stderr; RUST_LOG sets the level, default info).
    Server(ServerArgs),
    /// Chat as NAME (interactive; --json for JSON lines on stdin and stdout).
    Client(ClientArgs),
    /// A local 3-server cluster on 127.0.0.1 and an interactive client, in one command.
    Demo(DemoArgs),
    /// Ask one server for its status.
    Status(StatusArgs),
    /// Run the deterministic simulator.
    Sim(ringchat_sim::cli::SimArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DiscoveryArg {
    /// UDP multicast to --group (default 239.255.77.77:7777).
    Multicast,
    /// UDP broadcast to --group (default 255.255.255.255:7777; a subnet broadcast such as 10.0.0.255:7777 works too).
    Broadcast,
    /// No group discovery: only the --join list.
    Off,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Unicast address to listen on. With 0.0.0.0 the advertised address is the
    /// interface's (from --interface, or the route towards the peers or the group).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:7000")]
    bind: SocketAddr,
    /// How to find other servers besides --join.
    #[arg(long, value_enum, default_value_t = DiscoveryArg::Multicast)]
    discovery: DiscoveryArg,
    /// Discovery group (multicast) or broadcast target, with the discovery port.
    #[arg(long, value_name = "IP:PORT")]
    group: Option<SocketAddrV4>,
    /// A known server (repeatable). Does not turn group discovery off.
    #[arg(long, value_name = "IP:PORT")]
    join: Vec<SocketAddr>,
    /// Interface address for multicast.
    #[arg(long, value_name = "IP")]
    interface: Option<Ipv4Addr>,
    /// Heartbeat period in milliseconds (default 100). Suspicion (3.5 periods) and
    /// removal (30 periods, at least 3 s) scale with it. All servers should agree.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..=10_000))]
    heartbeat_ms: Option<u64>,
    /// How many servers the cluster is meant to have: found a cluster only with a majority
    /// of them in sight, so a cold start split by a partition founds one cluster, not two.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=24))]
    expect: Option<u64>,
    /// Keep id, epoch, vote and view in FILE across restarts (a restart comes back as the next incarnation).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// User name (1 to 16 bytes).
    #[arg(long)]
    name: String,
    /// A known server (repeatable). The client asks it which server to use and
    /// moves there; without --server it finds servers through the discovery group.
    #[arg(long, value_name = "IP:PORT")]
    server: Vec<SocketAddr>,
    /// How to find servers: multicast or broadcast sends the request to --group
    /// (default: multicast without --server, off with it).
    #[arg(long, value_enum)]
    discovery: Option<DiscoveryArg>,
    /// Discovery group (multicast) or broadcast target, with the discovery port
    /// (the servers' --group; default 239.255.77.77:7777 or 255.255.255.255:7777).
    #[arg(long, value_name = "IP:PORT")]
    group: Option<SocketAddrV4>,
    /// Interface address for multicast.
    #[arg(long, value_name = "IP")]
    interface: Option<Ipv4Addr>,
    /// JSON lines in on stdin, JSON lines out.
    #[arg(long)]
    json: bool,
    /// Credential that proves the name is yours (default: derived from the name).
    #[arg(long, value_name = "N")]
    token: Option<u64>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// User name.
    #[arg(long, default_value = "you")]
    name: String,
    /// JSON lines in on stdin, JSON lines out (for scripts and tests).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Server to ask.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7000")]
    server: SocketAddr,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit(usage_error(e)),
    };
    let code = match cli.cmd {
        Cmd::Server(a) => server(a),
        Cmd::Client(a) => client_cmd(a),
        Cmd::Demo(a) => demo_cmd(a),
        Cmd::Status(a) => status_cmd(a),
        Cmd::Sim(a) => ringchat_sim::cli::run(a),
    };
    exit(code);
}

/// Help and version as clap prints them; every other usage error as one line, exit 2.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!("error: a subcommand is needed (server, client, demo, status, sim); try 'ringchat --help'");
            2
        }
        _ => {
            let text = e.to_string();
            let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("error: bad arguments");
            if line.starts_with("error:") {
                eprintln!("{line}");
            } else {
                eprintln!("error: {line}");
            }
            2
        }
    }
}

fn server(a: ServerArgs) -> i32 {
    let mut config = ServerConfig { expect: a.expect.map(|n| n as usize), ..ServerConfig::default() };
    if let Some(h) = a.heartbeat_ms {
        config.heartbeat_ms = h;
        config.suspect_ms = h * 7 / 2;
        config.remove_ms = (h * 30).max(config.remove_ms);
    }
    let opts = Options {
        bind: a.bind,
        discovery: discovery_of(a.discovery),
        group: a.group,
        join: a.join,
        interface: a.interface,
        config,
        state: a.state,
    };
    let prepared = match driver::prepare(opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    init_logging();
    driver::run(prepared)
}

fn discovery_of(a: DiscoveryArg) -> Discovery {
    match a {
        DiscoveryArg::Multicast => Discovery::Multicast,
        DiscoveryArg::Broadcast => Discovery::Broadcast,
        DiscoveryArg::Off => Discovery::Off,
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn status_cmd(a: StatusArgs) -> i32 {
    match status::query(a.server, Duration::from_millis(a.timeout_ms)) {
        Ok(report) => {
            use std::io::Write;
            let text = if a.json { status::to_json(a.server, &report).to_string() } else { status::to_human(a.server, &report) };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            0
        }
        Err(status::QueryError::Timeout) => {
            eprintln!("error: no status from {} within {} ms", a.server, a.timeout_ms);
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn client_cmd(a: ClientArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let default = if a.server.is_empty() || a.group.is_some() { DiscoveryArg::Multicast } else { DiscoveryArg::Off };
    let opts = ringchat_net::client::ClientOptions {
        name: a.name,
        servers: a.server,
        discovery: discovery_of(a.discovery.unwrap_or(default)),
        group: a.group,
        interface: a.interface,
        json: a.json,
        token: a.token,
    };
    rt.block_on(ringchat_net::client::run(opts, tokio::io::BufReader::new(tokio::io::stdin())))
}

fn demo_cmd(a: DemoArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find the ringchat binary: {e}");
            return 1;
        }
    };
    ringchat_net::demo::run(&exe, a.name, a.json)
}
