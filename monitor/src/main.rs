use clap::Parser as _;
use monitor::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let level = cli.default_log_level();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if let Err(err) = cli::execute(cli) {
        // One line with the whole context chain; never a backtrace.
        eprintln!("twmon: error: {err:#}");
        std::process::exit(1);
    }
}
