use clap::Parser as _;
use monitor::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Run(args) => monitor::daemon::run(args),
    };
    if let Err(err) = result {
        // One line with the whole context chain; never a backtrace.
        eprintln!("twmon: error: {err:#}");
        std::process::exit(1);
    }
}
