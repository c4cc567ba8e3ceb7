//! The `ringchat` binary: `server`, `client`, `demo`, `status`, `sim`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringchat_net::config::{self, Settings};
use ringchat_net::driver::{self, Discovery};
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
    /// Show the cluster: every server of a server's view, with its state and counters.
    Status(StatusArgs),
    /// Run the deterministic simulator.
    Sim(ringchat_sim::cli::SimArgs),
    /// Write a new key ring file with one fresh cluster key (give every server a copy).
    Keygen(KeygenArgs),
    /// Rotate cluster keys: install a new key everywhere, use it everywhere, remove the old one.
    Keys(KeysArgs),
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Where to write the key ring (an existing file is not overwritten).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Args, Debug)]
struct KeysArgs {
    #[command(subcommand)]
    op: KeysOp,
}

#[derive(Subcommand, Debug)]
enum KeysOp {
    /// List the keys of a key ring file (ids only) and which one seals.
    List {
        /// The key ring file.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
    /// Install a key: it opens at once, the primary still seals. Without KEY, a fresh key is made
    /// and printed, to install on the other servers.
    Install {
        /// The key ring file.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// The key, 64 hex digits (as printed by an earlier `keys install`).
        key: Option<String>,
    },
    /// Make an installed key primary: it seals from now on (install it on every server first).
    Use {
        /// The key ring file.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// The key's id (8 hex digits, as `keys list` shows).
        id: String,
    },
    /// Remove an installed key (not the primary) once every server uses the new one.
    Remove {
        /// The key ring file.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// The key's id (8 hex digits, as `keys list` shows).
        id: String,
    },
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
    /// Read settings from a TOML file (every option below is a key; flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings the server would run with, as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    /// Unicast address to listen on (default 0.0.0.0:7000). With 0.0.0.0 the advertised address
    /// is the interface's (from --interface, or the route towards the peers or the group).
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,
    /// How to find other servers besides --join (default multicast).
    #[arg(long, value_enum)]
    discovery: Option<DiscoveryArg>,
    /// Discovery group (multicast) or broadcast target, with the discovery port.
    #[arg(long, value_name = "IP:PORT")]
    group: Option<SocketAddrV4>,
    /// A known server (repeatable; replaces the config file's list). Does not turn group discovery off.
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
    /// Serve Prometheus/OpenMetrics text on http://IP:PORT/metrics.
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,
    /// Log filter, e.g. info or ringchat_net=debug (default: RUST_LOG, else the config file, else info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// The cluster's key ring (from `ringchat keygen`): server traffic is sealed with it. The
    /// file is read again on SIGHUP and whenever it changes (key rotation without a restart).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Run WITHOUT a key: server traffic is plain, and anyone on the network can join the
    /// cluster, forge its messages and read them. For study on a private machine only.
    #[arg(long)]
    insecure_no_key: bool,
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
    /// The user's key file (default: users/NAME.key in the config directory, made on first
    /// use): the name belongs to the key that first logged in with it.
    #[arg(long, value_name = "FILE")]
    user_key: Option<PathBuf>,
    /// The cluster's identity (64 hex digits, printed by `ringchat keygen` and `ringchat keys
    /// list`): answers from servers without it are not believed. Without it, the identity
    /// remembered for these servers is used, or the one they present is trusted on first use.
    #[arg(long, value_name = "HEX", value_parser = parse_identity)]
    cluster_key: Option<[u8; 32]>,
    /// Talk plain to a cluster run with --insecure-no-key (anyone on the network can read and
    /// forge this chat).
    #[arg(long, conflicts_with = "cluster_key")]
    insecure_no_key: bool,
}

fn parse_identity(s: &str) -> Result<[u8; 32], String> {
    ringchat_net::trust::parse_hex32(s).ok_or_else(|| "expected 64 hex digits (ringchat keys list prints the identity)".into())
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
    /// A server to ask first (default: found through the discovery group, as a client finds one).
    #[arg(long, value_name = "IP:PORT")]
    server: Option<SocketAddr>,
    /// How to find a server without --server (default multicast; off with --server).
    #[arg(long, value_enum)]
    discovery: Option<DiscoveryArg>,
    /// Discovery group (multicast) or broadcast target, with the discovery port (the servers' --group).
    #[arg(long, value_name = "IP:PORT")]
    group: Option<SocketAddrV4>,
    /// Interface address for multicast.
    #[arg(long, value_name = "IP")]
    interface: Option<Ipv4Addr>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The cluster's key ring: a sealed cluster answers status to operators only (holders of
    /// a key of its ring). Without it the request is plain, as an unsealed cluster takes it.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Ask only the server found and show its own full report (clients, inboxes), not the table.
    #[arg(long)]
    only: bool,
    /// Wait at most this many milliseconds for each step (finding, the first server, the others).
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
        Cmd::Keygen(a) => keygen_cmd(a),
        Cmd::Keys(a) => keys_cmd(a),
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
            eprintln!("error: a subcommand is needed (server, client, demo, status, sim, keygen, keys); try 'ringchat --help'");
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
    let file = match &a.config {
        Some(path) => match config::load(path) {
            Ok(f) => Some((path.display().to_string(), f)),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => None,
    };
    if let Some(level) = &a.log_level {
        if let Err(e) = config::check_log_level(level) {
            eprintln!("error: --log-level: {e}");
            return 2;
        }
    }
    let flag_level = a.log_level.clone();
    let flags = Settings {
        bind: a.bind,
        discovery: a.discovery.map(discovery_of),
        group: a.group,
        join: (!a.join.is_empty()).then_some(a.join),
        interface: a.interface,
        state: a.state,
        expect: a.expect,
        metrics: a.metrics,
        log_level: a.log_level,
        protocol: config::Protocol { heartbeat_ms: a.heartbeat_ms, ..Default::default() },
    };
    let resolved = match flags.resolve(file.as_ref().map(|(name, f)| (name.as_str(), f))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if a.print_config {
        use std::io::Write;
        let _ = write!(std::io::stdout().lock(), "{}", config::to_toml(&resolved.effective));
        return 0;
    }
    // --log-level, else RUST_LOG, else the config file's log_level, else info.
    let level = match (&flag_level, std::env::var("RUST_LOG")) {
        (None, Ok(env)) if !env.trim().is_empty() => env,
        _ => resolved.log_level.clone(),
    };
    let mut options = resolved.options;
    options.key_file = a.key_file;
    options.insecure_no_key = a.insecure_no_key;
    let prepared = match driver::prepare(options) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    init_logging(&level);
    driver::run(prepared)
}

fn keygen_cmd(a: KeygenArgs) -> i32 {
    match ringchat_net::keys::keygen(&a.file) {
        Ok((id, identity)) => {
            println!("wrote key ring {} with key {id}: give every server a copy (--key-file), and keep it secret", a.file.display());
            println!("cluster identity (public; give it to clients: ringchat client --cluster-key ...):");
            println!("{}", ringchat_net::trust::hex32(&identity));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn keys_cmd(a: KeysArgs) -> i32 {
    use ringchat_net::keys::{self, Edit};
    let done = match a.op {
        KeysOp::List { key_file } => keys::list(&key_file),
        KeysOp::Install { key_file, key } => keys::edit(&key_file, Edit::Install(key)),
        KeysOp::Use { key_file, id } => keys::edit(&key_file, Edit::Use(id)),
        KeysOp::Remove { key_file, id } => keys::edit(&key_file, Edit::Remove(id)),
    };
    match done {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn discovery_of(a: DiscoveryArg) -> Discovery {
    match a {
        DiscoveryArg::Multicast => Discovery::Multicast,
        DiscoveryArg::Broadcast => Discovery::Broadcast,
        DiscoveryArg::Off => Discovery::Off,
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new(config::DEFAULT_LOG_LEVEL));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn status_cmd(a: StatusArgs) -> i32 {
    use std::io::Write;
    let timeout = Duration::from_millis(a.timeout_ms);
    let ring = match a.key_file.as_deref().map(ringchat_net::keys::load).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let operator = ring.as_ref();
    let discovery =
        a.discovery.unwrap_or(if a.server.is_some() && a.group.is_none() { DiscoveryArg::Off } else { DiscoveryArg::Multicast });
    let server = match (a.server, discovery) {
        (Some(s), _) => s,
        (None, DiscoveryArg::Off) => {
            eprintln!("error: no way to find a server: give --server IP:PORT or use --discovery multicast|broadcast");
            return 2;
        }
        (None, d) => match status::find(discovery_of(d), a.group, a.interface, operator, timeout) {
            Ok(s) => s,
            Err(status::QueryError::Timeout) => {
                let target = a.group.map_or_else(|| "the discovery group".to_string(), |g| g.to_string());
                eprintln!("error: no server answered through {target} within {} ms", a.timeout_ms);
                return 1;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
    };
    let text = if a.only {
        match status::query(server, operator, timeout) {
            Ok(report) => {
                if a.json {
                    status::to_json(server, &report).to_string()
                } else {
                    status::to_human(server, &report)
                }
            }
            Err(e) => return status_error(server, a.timeout_ms, operator.is_some(), e),
        }
    } else {
        match status::survey(server, operator, timeout) {
            Ok(s) => {
                if a.json {
                    status::survey_to_json(&s).to_string()
                } else {
                    status::survey_to_human(&s)
                }
            }
            Err(e) => return status_error(server, a.timeout_ms, operator.is_some(), e),
        }
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    0
}

fn status_error(server: SocketAddr, timeout_ms: u64, operator: bool, e: status::QueryError) -> i32 {
    match e {
        status::QueryError::Timeout if !operator => {
            eprintln!(
                "error: no status from {server} within {timeout_ms} ms (a sealed cluster answers operators only: give --key-file FILE)"
            )
        }
        status::QueryError::Timeout => eprintln!("error: no status from {server} within {timeout_ms} ms"),
        e => eprintln!("error: {e}"),
    }
    1
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
        user_key: a.user_key,
        cluster_key: a.cluster_key,
        insecure_no_key: a.insecure_no_key,
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
