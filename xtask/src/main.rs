//! The workspace's task runner, run as `cargo xtask <command>` (the alias is in
//! `.cargo/config.toml`). Its job is to make the README's test command the whole
//! set-up: `cargo xtask test` puts the programs the tests start (`redis-server`,
//! `redis-cli`, `openssl`) on the PATH when they are missing, installing them with
//! the system's package manager or saying exactly what to run, then runs every
//! test. `.ci/run` calls the same command. It uses only std, so a fresh clone
//! builds it in seconds.

mod prerequisites;

use std::env;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};

const HELP: &str = "\
Usage: cargo xtask <command> [args]

Commands:
  test [args]  install redis-server, redis-cli and openssl if they are missing,
               then run `cargo test --workspace --all-features [args]`
  help         print this message
";

/// The arguments `cargo xtask test` always passes to `cargo test`.
const CARGO_TEST: [&str; 3] = ["test", "--workspace", "--all-features"];

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    match command.as_ref().and_then(|c| c.to_str()) {
        Some("test") => test(args.collect()),
        Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{HELP}");
            ExitCode::from(2)
        }
        None if command.is_some() => {
            eprint!("xtask: the command is not valid UTF-8\n\n{HELP}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{HELP}");
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask test [args]`: the prerequisites, then `cargo test`, whose
/// output streams through and whose exit status becomes ours.
fn test(extra_args: Vec<OsString>) -> ExitCode {
    if let Err(message) = prerequisites::ensure() {
        say(&message);
        return ExitCode::FAILURE;
    }
    let shown: Vec<String> = CARGO_TEST
        .iter()
        .map(|arg| arg.to_string())
        .chain(
            extra_args
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect();
    say(&format!("running `cargo {}`", shown.join(" ")));
    // `cargo run` tells us which cargo it is: use the same one (and toolchain).
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(CARGO_TEST)
        .args(&extra_args)
        .current_dir(workspace_root())
        .status();
    match status {
        Ok(status) => exit_code(status),
        Err(err) => {
            say(&format!("could not run cargo: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// The directory of the workspace's `Cargo.toml`, wherever we are run from.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives inside the workspace")
}

/// The child's exit code as ours; a child killed by a signal is a failure.
fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// Reports what xtask itself does, on stderr so stdout stays cargo's.
fn say(message: &str) {
    eprintln!("xtask: {message}");
}
