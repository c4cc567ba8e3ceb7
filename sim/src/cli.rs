//! `ringchat sim`: arguments and entry point (placeholder until the simulator lands).

/// Arguments of `ringchat sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Seed to run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `ringchat sim`; returns the process exit code.
pub fn run(_args: SimArgs) -> i32 {
    0
}
