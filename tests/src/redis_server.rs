//! A real `redis-server` for one test: a free port, a temporary directory, and
//! stopped on drop. Never port 6379, never a server left running elsewhere.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "redis-server was not found on PATH; the Redis tests need it. \
    Install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)";

/// A `redis-server` process owned by one test or benchmark.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    frozen: bool,
    /// Certificate and key: serve TLS only, on `port`.
    tls: Option<(PathBuf, PathBuf)>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra command-line options (`--requirepass x`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            frozen: false,
            tls: None,
        };
        // A free port can be taken between probing and binding: retry.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "redis-server did not start; see {}",
            server.log_path().display()
        );
    }

    /// Starts a server that speaks TLS only, with a certificate for
    /// `localhost` signed by a throwaway CA made with `openssl`. Returns the
    /// server and the CA certificate (PEM) to trust.
    pub fn start_tls() -> (RedisServer, Vec<u8>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let (ca, ca_key, csr) = (path("ca.pem"), path("ca.key"), path("server.csr"));
        let (cert, key, ext) = (path("server.pem"), path("server.key"), path("server.ext"));
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
        let ca = PathBuf::from(ca);
        let pem = std::fs::read(&ca).expect("the CA certificate");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: Vec::new(),
            frozen: false,
            tls: Some((cert, key)),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return (server, pem);
            }
        }
        panic!(
            "redis-server did not start with TLS; see {}",
            server.log_path().display()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server (for `taskset`, `perf -p`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn url_db(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts the process on `self.port`; false if it did not come up.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(cert)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--logfile", &self.log_path().display().to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status;
                self.child = None;
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Kills the server (SIGKILL): connections drop, nothing is saved.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.frozen {
                signal(&child, "CONT");
                self.frozen = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing answers.
    pub fn freeze(&mut self) {
        signal(self.child.as_ref().expect("running"), "STOP");
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        signal(self.child.as_ref().expect("running"), "CONT");
        self.frozen = false;
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_as(None, args)
    }

    /// `redis-cli` with `--user` / `--pass` (`user:password`).
    pub fn cli_as(&self, auth: Option<(&str, &str)>, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some((user, pass)) = auth {
            cmd.args(["--user", user, "--pass", pass, "--no-auth-warning"]);
        }
        let out = cmd
            .args(args)
            .output()
            .expect("redis-cli runs (it ships with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} failed");
}

fn openssl(args: &[&str]) {
    match Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => assert!(status.success(), "openssl {args:?} failed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "openssl was not found on PATH; the TLS test needs it: `sudo apt-get install openssl`"
            )
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

/// A port nothing listens on now (it may be taken before it is bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
