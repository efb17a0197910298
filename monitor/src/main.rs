use clap::Parser as _;
use monitor::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // `check` prints its own report; its log would only repeat it.
    let level = match cli.command {
        Command::Check(_) | Command::Snapshot(_) | Command::Top(_) | Command::Replay(_) => "warn",
        Command::Run(_) | Command::Record(_) => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Run(args) => monitor::daemon::run(args, None),
        Command::Record(args) => monitor::daemon::run(args.run, Some(&args.file)),
        Command::Replay(args) => monitor::replay::run(&args),
        Command::Snapshot(args) => monitor::client::snapshot(&args),
        Command::Top(args) => monitor::top::run(&args),
        Command::Check(args) => monitor::check::run(&args),
    };
    if let Err(err) = result {
        // One line with the whole context chain; never a backtrace.
        eprintln!("twmon: error: {err:#}");
        std::process::exit(1);
    }
}
