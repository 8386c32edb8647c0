//! The programs the tests start but cargo cannot build: finding them on the
//! PATH and, when some are missing, installing their packages with the system's
//! package manager (apt-get on Linux, as root or through a sudo that needs no
//! password; Homebrew on macOS), or else saying exactly what command to run.

use std::env;
use std::path::Path;
use std::process::{Command, Stdio};

/// A program the tests start, and the package that provides it.
struct Program {
    name: &'static str,
    apt_package: &'static str,
    brew_package: &'static str,
}

const PROGRAMS: [Program; 3] = [
    // The Redis tests start their own servers, on free ports, and stop them.
    Program {
        name: "redis-server",
        apt_package: "redis-server",
        brew_package: "redis",
    },
    Program {
        name: "redis-cli",
        apt_package: "redis-tools",
        brew_package: "redis",
    },
    // The TLS test makes its certificates with it.
    Program {
        name: "openssl",
        apt_package: "openssl",
        brew_package: "openssl",
    },
];

/// Makes sure every program in [`PROGRAMS`] is on the PATH, installing the
/// missing ones' packages when it can. The error says what to run instead.
pub(crate) fn ensure() -> Result<(), String> {
    let missing = missing_programs();
    if missing.is_empty() {
        return Ok(());
    }
    crate::say(&format!("not on the PATH: {}", names(&missing)));
    let plan = InstallPlan::for_this_system(&missing)?;
    for step in &plan.steps {
        let shown = step.join(" ");
        crate::say(&format!("running `{shown}`"));
        let status = Command::new(step[0])
            .args(&step[1..])
            // apt-get: never stop to ask a question; nobody may be there to answer.
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => return Err(format!("`{shown}` failed ({status}); {}", plan.manual)),
            Err(err) => return Err(format!("could not run `{shown}`: {err}; {}", plan.manual)),
        }
    }
    let still_missing = missing_programs();
    if !still_missing.is_empty() {
        return Err(format!(
            "still not on the PATH after installing: {}; install them, put them on the PATH, \
             then run `cargo xtask test` again",
            names(&still_missing)
        ));
    }
    Ok(())
}

/// The commands that install the missing programs here, and the one a person
/// should run if they fail.
struct InstallPlan {
    steps: Vec<Vec<&'static str>>,
    manual: String,
}

impl InstallPlan {
    /// Errs, with the command to run, when nothing can be installed from here.
    fn for_this_system(missing: &[&'static Program]) -> Result<Self, String> {
        if cfg!(target_os = "linux") && on_path("apt-get") {
            return Self::apt(packages(missing, |p| p.apt_package));
        }
        if cfg!(target_os = "macos") && on_path("brew") {
            return Ok(Self::brew(packages(missing, |p| p.brew_package)));
        }
        Err(
            "cannot install them here (no apt-get on Linux, no brew on macOS): install \
             redis-server, redis-cli and openssl with the system's package manager (on Debian \
             or Ubuntu: `sudo apt-get install -y redis-server redis-tools openssl`; on macOS: \
             `brew install redis openssl`), then run `cargo xtask test` again"
                .to_string(),
        )
    }

    /// `apt-get update`, then the install: as root, or through `sudo -n`.
    fn apt(packages: Vec<&'static str>) -> Result<Self, String> {
        let update = vec!["apt-get", "update"];
        let install = [vec!["apt-get", "install", "-y"], packages].concat();
        let sudo: &[&str] = if is_root() {
            &[]
        } else if !on_path("sudo") {
            let line = shell_line(&[], &update, &install);
            return Err(format!(
                "cannot install them: not root, and no sudo; as root, {}",
                run_then_retry(&line)
            ));
        } else if sudo_needs_no_password() {
            &["sudo", "-n"]
        } else {
            let line = shell_line(&["sudo"], &update, &install);
            return Err(format!(
                "cannot install them: sudo needs a password; {}",
                run_then_retry(&line)
            ));
        };
        // A person asked to run it can type a password: plain `sudo`, not `sudo -n`.
        let manual_sudo: &[&str] = if sudo.is_empty() { &[] } else { &["sudo"] };
        let manual = run_then_retry(&shell_line(manual_sudo, &update, &install));
        let steps = vec![[sudo, &update].concat(), [sudo, &install].concat()];
        Ok(Self { steps, manual })
    }

    fn brew(packages: Vec<&'static str>) -> Self {
        let install = [vec!["brew", "install"], packages].concat();
        let manual = run_then_retry(&install.join(" "));
        Self {
            steps: vec![install],
            manual,
        }
    }
}

fn run_then_retry(command: &str) -> String {
    format!("run `{command}`, then `cargo xtask test` again")
}

fn missing_programs() -> Vec<&'static Program> {
    PROGRAMS.iter().filter(|p| !on_path(p.name)).collect()
}

fn names(programs: &[&Program]) -> String {
    programs
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The programs' packages, each once (redis-server and redis-cli share one on brew).
fn packages(programs: &[&Program], package: fn(&Program) -> &'static str) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for program in programs {
        if !packages.contains(&package(program)) {
            packages.push(package(program));
        }
    }
    packages
}

/// `sudo apt-get update && sudo apt-get install -y ...`, for a person to run.
fn shell_line(prefix: &[&str], update: &[&str], install: &[&str]) -> String {
    let update = [prefix, update].concat().join(" ");
    let install = [prefix, install].concat().join(" ");
    format!("{update} && {install}")
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file() || path.with_extension(env::consts::EXE_EXTENSION).is_file()
}

/// std cannot ask for the effective user id without `unsafe`; `id -u` can.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// `sudo -n` fails instead of asking for a password, so this never blocks.
fn sudo_needs_no_password() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
