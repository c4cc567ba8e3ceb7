use clap::Parser;
#[derive(Parser)]
struct A {
    #[command(flatten)]
    s: ringchat_sim::cli::SimArgs,
}
fn main() {
    std::process::exit(ringchat_sim::cli::run(A::parse().s));
}
