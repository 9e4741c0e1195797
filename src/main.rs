//! `meetingd` binary: parse the command line, set up logging, run the command, print the whole
//! error chain on failure.

use std::process::ExitCode;

use clap::Parser;
use meetingd::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; daemon logs would drown it unless asked for.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    meetingd::telemetry::init(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meetingd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meetingd::cli::execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meetingd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
