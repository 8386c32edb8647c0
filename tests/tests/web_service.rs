//! The example web service (`cache_examples::web_service`) end to end: its
//! binary runs as a child process against a private `redis-server` and a
//! SQLite file, and the tests drive it over real HTTP.
//!
//! A hit is seen from outside in three ways: the `x-cache` header (what the
//! cache did for the request, as `cache_runtime::with_outcome` reports it),
//! `/stats`, whose cache hit counter goes up while the process's database
//! query count stays put, and the Prometheus metrics of `/metrics`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cache_tests::redis_server::RedisServer;
use serde_json::{Value, json};

/// Generous bounds that only catch hangs.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Redis stays frozen after the write whose invalidation failed.
const FROZEN_AFTER_WRITE: Duration = Duration::from_secs(1);

/// One running instance of the service; killed on drop, and its log printed
/// if the test is failing.
struct Service {
    name: &'static str,
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

/// An HTTP answer, reduced to what the tests look at.
#[derive(Debug)]
struct Reply {
    status: u16,
    x_cache: Option<String>,
    invalidation: Option<String>,
    body: Value,
}

impl Reply {
    /// The `x-cache` header; empty if absent.
    fn cache(&self) -> &str {
        self.x_cache.as_deref().unwrap_or_default()
    }
}

/// The counters of `/stats` that tell a hit from a miss.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    hits: u64,
    db_queries: u64,
}

/// One sample of a Prometheus text exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Service {
    /// Starts an instance on a free port with Redis at `redis_url` and the
    /// database file `db`, and waits until it says where it listens.
    fn start(name: &'static str, redis_url: &str, db: &Path) -> Service {
        Service::start_with_env(name, redis_url, db, &[])
    }

    /// [`start`](Self::start), with `env` set last (so it overrides the
    /// defaults set here).
    fn start_with_env(
        name: &'static str,
        redis_url: &str,
        db: &Path,
        env: &[(&str, &str)],
    ) -> Service {
        let log = db.with_file_name(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("the service's log file can be created");
        let mut command = Command::new(env!("CARGO_BIN_EXE_web_service"));
        // The developer's environment must not change what is tested.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("CACHE_") {
                command.env_remove(var);
            }
        }
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("REDIS_URL", redis_url)
            .env("DATABASE_PATH", db)
            // Short Redis timeouts and backoff, so an outage and the recovery
            // are noticed quickly.
            .env("CACHE_RESPONSE_TIMEOUT", "100ms")
            .env("CACHE_BACKOFF_MAX", "200ms")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = command.spawn().expect("the web_service binary runs");
        let stdout = child.stdout.take().expect("stdout is piped");

        // A thread reads stdout, so a service that hangs before printing
        // fails the test after a timeout instead of blocking it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(base) = line.strip_prefix("listening on ") {
                    let _ = tx.send(base.to_owned());
                }
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut service = Service {
            name,
            child,
            base: String::new(),
            log,
            http,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(base) => service.base = base,
            Err(_) => panic!(
                "{name} did not print `listening on http://...` within {START_TIMEOUT:?}; exited: {:?}",
                service.child.try_wait()
            ),
        }
        service
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)), "GET", path).await
    }

    /// Sends `body` as it is, as JSON (malformed bodies included).
    async fn send_json(&self, method: reqwest::Method, path: &str, body: &str) -> Reply {
        let request = self
            .http
            .request(method.clone(), self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request, method.as_str(), path).await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send_json(reqwest::Method::PUT, path, &body.to_string())
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send_json(reqwest::Method::POST, path, &body.to_string())
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder, method: &str, path: &str) -> Reply {
        let name = self.name;
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {method} {path} got no answer: {e}"));
        let header = |h: &str| {
            response
                .headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let (x_cache, invalidation) = (header("x-cache"), header("x-cache-invalidation"));
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{name}: {method} {path}: the body did not arrive: {e}"));
        let body = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{name}: {method} {path} answered {status} with a body that is not JSON ({e}): {text:?}")
        });
        Reply {
            status,
            x_cache,
            invalidation,
            body,
        }
    }

    /// GETs `path` and returns the status, the content type and the body as
    /// text, for answers that are not JSON.
    async fn get_text(&self, path: &str) -> (u16, Option<String>, String) {
        let name = self.name;
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: GET {path} got no answer: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{name}: GET {path}: the body did not arrive: {e}"));
        (status, content_type, text)
    }

    /// Scrapes `/metrics`, asserting a 200 in Prometheus's text format.
    async fn scrape(&self) -> Vec<Sample> {
        let (status, content_type, text) = self.get_text("/metrics").await;
        assert_eq!(status, 200, "{}: GET /metrics: {text}", self.name);
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; version=0.0.4"),
            "{}: GET /metrics should answer Prometheus's text format",
            self.name
        );
        parse_exposition(&text)
            .unwrap_or_else(|e| panic!("{}: GET /metrics: {e}:\n{text}", self.name))
    }

    /// The hit counter of one namespace, and the database queries.
    async fn counts(&self, namespace: &str) -> Counts {
        let stats = self.get("/stats").await;
        assert_eq!(stats.status, 200, "{}: /stats failed: {stats:?}", self.name);
        let counter = |field: &str| {
            stats.body["cache"]["namespaces"][namespace][field]
                .as_u64()
                .unwrap_or(0)
        };
        Counts {
            hits: counter("hits"),
            db_queries: stats.body["db_queries"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: /stats lacks db_queries: {stats:?}", self.name)),
        }
    }

    /// GETs `path`, asserting a 200, and returns the body.
    async fn get_ok(&self, path: &str) -> Reply {
        let reply = self.get(path).await;
        assert_eq!(
            reply.status, 200,
            "{}: GET {path} should answer 200: {reply:?}",
            self.name
        );
        reply
    }

    /// Sends SIGTERM and returns the exit status, failing if the service does
    /// not stop in time.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and asserts that the service exits with status 0.
    async fn terminate_cleanly(self) {
        let name = self.name;
        let status = self.terminate().await;
        assert!(
            status.success(),
            "{name}: SIGTERM should stop it with status 0, not {status}"
        );
    }

    /// PUTs Ada King over user 1 while Redis is frozen: the write must answer
    /// 200 in time (each cache call pays CACHE_RESPONSE_TIMEOUT, 100ms, before
    /// it gives up) and say that its invalidation failed.
    async fn put_while_frozen(&self) {
        let name = self.name;
        let put = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.put(
                "/users/1",
                &json!({ "name": "Ada King", "email": "ada.king@example.com" }),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("{name}: PUT with Redis frozen did not answer within {WRITE_TIMEOUT:?}")
        });
        assert_eq!(
            put.status, 200,
            "{name}: PUT with Redis frozen should not fail: {put:?}"
        );
        assert_eq!(
            put.body,
            user(1, "Ada King", "ada.king@example.com"),
            "{name}: PUT with Redis frozen answers the update"
        );
        assert_eq!(
            put.invalidation.as_deref(),
            Some("failed"),
            "{name}: PUT with Redis frozen should say its invalidation failed: {put:?}"
        );
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- log of {} ----\n{log}", self.name);
        }
    }
}

/// Polls `check` until it returns true, failing with `what` after `timeout`.
async fn eventually<F: AsyncFnMut() -> bool>(timeout: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The samples of a Prometheus text exposition (comments and blank lines
/// skipped); `Err` on a line that is not `name{labels} value [timestamp]`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("{why} in the line {line:?}");
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let (name, rest) = line.split_at(name_end);
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(list) => parse_labels(list).map_err(&bad)?,
            None => (BTreeMap::new(), rest),
        };
        // The value, then an optional timestamp.
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            number => number
                .parse()
                .map_err(|e| bad(&format!("a bad value ({e})")))?,
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The labels of a sample, from just after its `{`; and what follows the
/// `}`. Values are quoted, with `\\`, `\"` and `\n` escapes.
fn parse_labels(list: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, quoted) = rest
            .split_once("=\"")
            .ok_or("a label without a quoted value")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value"),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &quoted[end..];
    }
}

/// The value of the sample `name` whose labels are exactly `labels` (in any
/// order); panics, showing every sample of that name, if there is none.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
        .unwrap_or_else(|| {
            let same_name: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
            panic!("no sample {name}{wanted:?} in /metrics; the samples of {name}: {same_name:#?}")
        })
}

fn user(id: i64, name: &str, email: &str) -> Value {
    json!({ "id": id, "name": name, "email": email })
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("GET /users should answer an array: {list}"))
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .collect()
}

#[tokio::test]
async fn second_read_is_a_hit_and_a_write_invalidates_it() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = Service::start("service", &redis.url(), &dir.path().join("users.db"));
    let ada = user(1, "Ada Lovelace", "ada@example.com");

    let first = service.get_ok("/users/1").await;
    assert_eq!(first.body, ada, "the seeded user 1");
    assert_eq!(first.cache(), "miss", "first read: {first:?}");
    let before = service.counts("users").await;
    let second = service.get_ok("/users/1").await;
    let after = service.counts("users").await;
    assert_eq!(second.body, ada, "the second read changed the answer");
    assert_eq!(second.cache(), "hit", "second read: {second:?}");
    assert_eq!(
        after.hits,
        before.hits + 1,
        "the second read was not counted as a hit: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.db_queries, before.db_queries,
        "the second read queried the database: {before:?} -> {after:?}"
    );

    let ada_king = user(1, "Ada King", "ada.king@example.com");
    let put = service
        .put(
            "/users/1",
            &json!({ "name": "Ada King", "email": "ada.king@example.com" }),
        )
        .await;
    assert_eq!(put.status, 200, "PUT /users/1: {put:?}");
    assert_eq!(put.body, ada_king, "PUT answers the updated user");
    assert_eq!(
        put.invalidation, None,
        "the invalidation failed with Redis up: {put:?}"
    );
    let fresh = service.get_ok("/users/1").await;
    assert_eq!(
        fresh.body, ada_king,
        "the read after the PUT served the old entry"
    );
    assert_eq!(fresh.cache(), "miss", "the read after the PUT: {fresh:?}");
    let cached = service.get_ok("/users/1").await;
    assert_eq!(
        cached.cache(),
        "hit",
        "the new value was not cached: {cached:?}"
    );

    // Errors: JSON bodies with 404 and 400, and nothing written.
    let unknown = service.get("/users/999999").await;
    assert_eq!(unknown.status, 404, "unknown id: {unknown:?}");
    assert!(
        unknown.body["error"].is_string(),
        "404 without an error message: {unknown:?}"
    );
    let unknown_put = service
        .put(
            "/users/999999",
            &json!({ "name": "Nobody", "email": "no@example.com" }),
        )
        .await;
    assert_eq!(
        unknown_put.status, 404,
        "PUT to an unknown id: {unknown_put:?}"
    );
    let not_a_number = service.get("/users/abc").await;
    assert_eq!(not_a_number.status, 400, "non-numeric id: {not_a_number:?}");
    assert!(
        not_a_number.body["error"].is_string(),
        "400 without an error message: {not_a_number:?}"
    );
    for (body, what) in [
        ("{", "malformed JSON"),
        (r#"{"name": "Ada"}"#, "a missing field"),
        (
            r#"{"name": "  ", "email": "ada@example.com"}"#,
            "an empty name",
        ),
        (
            r#"{"name": 7, "email": "ada@example.com"}"#,
            "a field of the wrong type",
        ),
    ] {
        for (method, path) in [
            (reqwest::Method::PUT, "/users/1"),
            (reqwest::Method::POST, "/users"),
        ] {
            let reply = service.send_json(method.clone(), path, body).await;
            assert_eq!(
                reply.status, 400,
                "{method} {path} with {what} ({body}): {reply:?}"
            );
            assert!(
                reply.body["error"].is_string(),
                "{method} with {what}: 400 without an error message: {reply:?}"
            );
        }
    }
    let untyped = service
        .send(
            service.http.put(service.url("/users/1")).body("{}"),
            "PUT",
            "/users/1 without a content type",
        )
        .await;
    assert_eq!(
        untyped.status, 400,
        "a body without content-type: {untyped:?}"
    );
    assert_eq!(
        service.get_ok("/users/1").await.body,
        ada_king,
        "a rejected request changed user 1"
    );
    let list = service.get_ok("/users").await;
    assert_eq!(ids(&list.body), [1, 2, 3], "a rejected POST created a user");

    service.terminate_cleanly().await;
}

/// `/metrics` counts what the `x-cache` headers said, in Prometheus's text
/// format, with the histograms as histograms (buckets), not summaries.
#[tokio::test]
async fn metrics_count_the_miss_and_the_hit() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    // This test is not about outages: a generous response timeout, so that
    // a slow machine cannot turn the miss below into `uncached` (which
    // would then make the second read a miss too).
    let service = Service::start_with_env(
        "service",
        &redis.url(),
        &dir.path().join("users.db"),
        &[("CACHE_RESPONSE_TIMEOUT", "5s")],
    );

    let first = service.get_ok("/users/1").await;
    assert_eq!(first.cache(), "miss", "first read: {first:?}");
    let second = service.get_ok("/users/1").await;
    assert_eq!(second.cache(), "hit", "second read: {second:?}");

    let samples = service.scrape().await;
    let users = [("namespace", "users")];
    assert_eq!(sample(&samples, "cache_hits_total", &users), 1.0);
    assert_eq!(sample(&samples, "cache_misses_total", &users), 1.0);
    assert_eq!(sample(&samples, "cache_coalesced_total", &users), 0.0);
    assert_eq!(sample(&samples, "cache_stores_refused_total", &users), 0.0);
    for kind in ["read", "write", "decode", "encode", "key"] {
        assert_eq!(
            sample(
                &samples,
                "cache_errors_total",
                &[("namespace", "users"), ("kind", kind)]
            ),
            0.0,
            "cache_errors_total of kind {kind}"
        );
    }
    // One body ran, the miss's: `_bucket` series exist only because the
    // service configures buckets (a summary has `quantile` lines instead).
    assert_eq!(
        sample(&samples, "cache_body_duration_seconds_count", &users),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "cache_body_duration_seconds_bucket",
            &[("namespace", "users"), ("le", "+Inf")]
        ),
        1.0
    );
    // Both reads looked the key up in Redis, and the miss stored it.
    for op in ["get", "put"] {
        let count = sample(
            &samples,
            "cache_backend_duration_seconds_bucket",
            &[("backend", "redis"), ("op", op), ("le", "+Inf")],
        );
        assert!(count >= 1.0, "no Redis {op} was timed: {count}");
    }
    // The metrics agree with /stats.
    let counts = service.counts("users").await;
    assert_eq!(counts.hits, 1, "/stats: {counts:?}");

    service.terminate_cleanly().await;
}

#[tokio::test]
async fn two_instances_share_entries_and_invalidations() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("users.db");
    let one = Service::start("instance 1", &redis.url(), &db);
    let two = Service::start("instance 2", &redis.url(), &db);

    // Instance 2 opened a seeded file: it must not have seeded it again.
    let list = two.get_ok("/users").await;
    assert_eq!(
        ids(&list.body),
        [1, 2, 3],
        "the second instance reseeded the database"
    );

    // Instance 1 caches user 1 in Redis; instance 2 reads it from there.
    assert_eq!(
        one.get_ok("/users/1").await.cache(),
        "miss",
        "instance 1's first read"
    );
    let before = two.counts("users").await;
    let shared = two.get_ok("/users/1").await;
    let after = two.counts("users").await;
    assert_eq!(
        shared.cache(),
        "hit",
        "instance 2 did not find instance 1's entry: {shared:?}"
    );
    assert_eq!(
        after.hits,
        before.hits + 1,
        "instance 2's read was not a hit: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.db_queries, before.db_queries,
        "instance 2 queried the database: {before:?} -> {after:?}"
    );

    // Instance 1 writes; instance 2's next read sees it.
    let put = one
        .put(
            "/users/1",
            &json!({ "name": "Ada King", "email": "ada.king@example.com" }),
        )
        .await;
    assert_eq!(put.status, 200, "PUT on instance 1: {put:?}");
    let seen = two.get_ok("/users/1").await;
    assert_eq!(
        seen.body,
        user(1, "Ada King", "ada.king@example.com"),
        "instance 2 served the entry instance 1 invalidated"
    );

    // Both lists cached, and instance 2 caches "no such user" for the next id.
    one.get_ok("/users").await;
    let listed = two.get_ok("/users").await;
    let next = ids(&listed.body).into_iter().max().unwrap_or(0) + 1;
    for expected in ["miss", "hit"] {
        let missing = two.get(&format!("/users/{next}")).await;
        assert_eq!(
            (missing.status, missing.cache()),
            (404, expected),
            "user {next} before it exists: {missing:?}"
        );
    }
    let post = one
        .post(
            "/users",
            &json!({ "name": "Barbara Liskov", "email": "barbara@example.com" }),
        )
        .await;
    assert_eq!(post.status, 201, "POST on instance 1: {post:?}");
    let barbara = user(next, "Barbara Liskov", "barbara@example.com");
    assert_eq!(
        post.body, barbara,
        "SQLite should give the new user the next id"
    );
    for service in [&one, &two] {
        let list = service.get_ok("/users").await;
        assert_eq!(
            list.body.as_array().and_then(|users| users.last()),
            Some(&barbara),
            "{}: the list after the POST lacks the new user: {list:?}",
            service.name
        );
    }
    let created = two.get(&format!("/users/{next}")).await;
    assert_eq!(
        (created.status, &created.body),
        (200, &barbara),
        "instance 2 still serves its cached 404 for the new id: {created:?}"
    );

    for service in [one, two] {
        service.terminate_cleanly().await;
    }
}

#[tokio::test]
async fn redis_outage_fails_open_and_recovers() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = Service::start("service", &redis.url(), &dir.path().join("users.db"));
    service.get_ok("/users/1").await;
    assert_eq!(
        service.get_ok("/users/1").await.cache(),
        "hit",
        "user 1 was not cached before the outage"
    );
    let health = service.get_ok("/health").await;
    assert_eq!(
        health.body["status"], "ok",
        "health with Redis up: {health:?}"
    );
    assert_eq!(
        health.body["cache"]["backend"], "redis",
        "health with Redis up: {health:?}"
    );

    redis.stop();
    let read = service.get_ok("/users/1").await;
    assert_eq!(
        read.body,
        user(1, "Ada Lovelace", "ada@example.com"),
        "the read during the outage"
    );
    assert_eq!(
        read.cache(),
        "uncached",
        "the read during the outage ran without the cache: {read:?}"
    );
    let health = service.get("/health").await;
    assert_eq!(health.status, 503, "health with Redis down: {health:?}");
    assert_eq!(
        health.body["status"], "degraded",
        "health with Redis down: {health:?}"
    );
    assert_eq!(
        health.body["cache"]["healthy"], false,
        "health with Redis down: {health:?}"
    );

    // A write during the outage succeeds, and says its invalidation failed.
    let put = service
        .put(
            "/users/1",
            &json!({ "name": "Ada King", "email": "ada.king@example.com" }),
        )
        .await;
    assert_eq!(
        put.status, 200,
        "PUT during the outage should not fail: {put:?}"
    );
    assert_eq!(
        put.invalidation.as_deref(),
        Some("failed"),
        "PUT during the outage: {put:?}"
    );
    let ada_king = user(1, "Ada King", "ada.king@example.com");
    assert_eq!(
        service.get_ok("/users/1").await.body,
        ada_king,
        "the read after the PUT during the outage"
    );

    redis.restart();
    eventually(
        RECOVERY_TIMEOUT,
        "/health should answer 200 after Redis restarts",
        async || service.get("/health").await.status == 200,
    )
    .await;
    eventually(
        RECOVERY_TIMEOUT,
        "reads should be cached again after Redis restarts",
        async || {
            let reply = service.get_ok("/users/1").await;
            assert_eq!(reply.body, ada_king, "a read after the restart");
            reply.cache() == "hit"
        },
    )
    .await;

    service.terminate_cleanly().await;
}

/// Regression test: a write whose invalidation failed while Redis was frozen
/// left the old entry in Redis, and after the thaw every instance served the
/// old name until the entry's TTL (5 minutes) ran out.
#[tokio::test]
async fn a_failed_invalidation_lands_after_the_thaw() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("users.db");
    let a = Service::start("instance A", &redis.url(), &db);
    let b = Service::start("instance B", &redis.url(), &db);
    let ada = user(1, "Ada Lovelace", "ada@example.com");
    let ada_king = user(1, "Ada King", "ada.king@example.com");

    // User 1 cached in Redis: A stores it, B finds it there. Polled, as a
    // first read that pays for the lazy connection may time out and run
    // uncached.
    eventually(
        RECOVERY_TIMEOUT,
        "user 1 should be cached in Redis (a hit on instance B) before the freeze",
        async || {
            assert_eq!(a.get_ok("/users/1").await.body, ada, "the seeded user 1");
            let shared = b.get_ok("/users/1").await;
            assert_eq!(shared.body, ada, "the seeded user 1, on instance B");
            shared.cache() == "hit"
        },
    )
    .await;

    redis.freeze();
    a.put_while_frozen().await;

    // Still frozen for a while: the retries fail too, and the circuit opens.
    tokio::time::sleep(FROZEN_AFTER_WRITE).await;
    redis.thaw();
    // Done when both instances serve the new name from Redis (a hit): a read
    // that fails open (circuit still open) would show the new name from the
    // database while the old entry still sits in Redis.
    let instances = [&a, &b];
    let mut new_seen = [false; 2];
    let mut new_cached = [false; 2];
    eventually(
        RECOVERY_TIMEOUT,
        "both instances should serve the new name from the cache after the thaw",
        async || {
            for (i, service) in instances.iter().enumerate() {
                let reply = service.get_ok("/users/1").await;
                if reply.body == ada_king {
                    new_seen[i] = true;
                    new_cached[i] |= reply.cache() == "hit";
                } else {
                    assert_eq!(reply.body, ada, "{}: a read after the thaw", service.name);
                    assert!(
                        !new_seen[i],
                        "{}: served the old name again after the new one: {reply:?}",
                        service.name
                    );
                }
            }
            new_cached == [true; 2]
        },
    )
    .await;
    for _ in 0..5 {
        for service in instances {
            let reply = service.get_ok("/users/1").await;
            assert_eq!(
                reply.body, ada_king,
                "{}: served the old name again after the new one",
                service.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for service in [a, b] {
        service.terminate_cleanly().await;
    }
}

/// A shutdown while an invalidation is still failing abandons its retry (and
/// logs it) instead of waiting for Redis.
#[tokio::test]
async fn shutdown_abandons_pending_invalidation_retries() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = Service::start("service", &redis.url(), &dir.path().join("users.db"));
    service.get_ok("/users/1").await;

    redis.freeze();
    service.put_while_frozen().await;

    let log = service.log.clone();
    service.terminate_cleanly().await;
    let log = std::fs::read_to_string(&log).expect("the service's log can be read");
    assert!(
        log.contains("abandoning invalidation"),
        "the shutdown did not log the invalidation retry it abandoned:\n{log}"
    );
    redis.thaw();
}
