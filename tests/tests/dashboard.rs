//! The Grafana dashboard of the web service example
//! (`examples/grafana/cache-dashboard.json`) against the metrics the runtime
//! really emits: every PromQL expression of its panels and variables may name
//! only those metrics (a histogram through its `_bucket`, `_sum` and `_count`
//! series, as the Prometheus exporter renders it with buckets) and only their
//! labels. The names are read back from metrics-util's `DebuggingRecorder`
//! after a cache ran a call, not copied from the docs, so a metric renamed in
//! the runtime fails this test until the dashboard follows.
//!
//! The PromQL is checked by a small lexer, enough for what a dashboard
//! holds (selectors, functions, aggregations, arithmetic); anything it does
//! not know is an error, so it can only be too strict, never let a name
//! through unchecked.

use std::collections::{BTreeMap, BTreeSet};

use cache_runtime::{Cache, cached};
use metrics_util::MetricKind;
use metrics_util::debugging::DebuggingRecorder;
use serde_json::Value;

/// Recompiled when the file changes, so `cargo test` always checks the
/// current dashboard.
const DASHBOARD: &str = include_str!("../../examples/grafana/cache-dashboard.json");

/// The data source every panel, target and query variable must use: the
/// import input, and the variable of the same name for provisioning.
const DATASOURCE: &str = "${DS_PROMETHEUS}";

/// Functions and aggregations a query may call.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "avg",
    "bottomk",
    "ceil",
    "clamp_max",
    "clamp_min",
    "count",
    "floor",
    "histogram_quantile",
    "increase",
    "irate",
    "max",
    "min",
    "quantile",
    "rate",
    "round",
    "sum",
    "topk",
];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Binary-operator keywords.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool"];

/// Every series a scrape of the exporter can hold, with the labels each
/// may carry.
type Series = BTreeMap<String, BTreeSet<String>>;

#[cached(namespace = "dashboard")]
async fn square(x: u64) -> u64 {
    x * x
}

/// The metric families a cache emits, by name: their kind and label names.
/// Every handle is registered when the cache is built (the backend's) or
/// when a namespace runs its first call (the namespace's): one call of one
/// namespace registers them all.
async fn emitted_families() -> BTreeMap<String, (MetricKind, BTreeSet<String>)> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let cache = Cache::builder()
        .metrics(true)
        .build()
        .expect("a memory cache");
    cache
        .scope(async {
            assert_eq!(square(3).await, 9);
            assert_eq!(square(3).await, 9);
        })
        .await;
    let mut families = BTreeMap::new();
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels = key.labels().map(|l| l.key().to_owned()).collect();
        let (_, all) = families
            .entry(key.name().to_owned())
            .or_insert_with(|| (kind, BTreeSet::new()));
        all.extend::<BTreeSet<String>>(labels);
    }
    families
}

/// The series of `families` as the Prometheus exporter renders them with
/// buckets configured: a counter as itself, a histogram as `_bucket` (with
/// `le`), `_sum` and `_count`.
fn series(families: &BTreeMap<String, (MetricKind, BTreeSet<String>)>) -> Series {
    let mut series = Series::new();
    for (name, (kind, labels)) in families {
        match kind {
            MetricKind::Histogram => {
                let mut with_le = labels.clone();
                with_le.insert("le".to_owned());
                series.insert(format!("{name}_bucket"), with_le);
                series.insert(format!("{name}_sum"), labels.clone());
                series.insert(format!("{name}_count"), labels.clone());
            }
            MetricKind::Counter | MetricKind::Gauge => {
                series.insert(name.clone(), labels.clone());
            }
        }
    }
    series
}

/// A PromQL token, as far as the check needs one.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// A `{...}` label matcher list: the label names it matches on.
    Matchers(Vec<String>),
    /// A `[...]` range or subquery: its contents are durations and Grafana
    /// variables, not names.
    Range,
    Number,
    Str,
    Punct(char),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
            tokens.push(Token::Str);
        } else if c == '{' {
            let (labels, next) = matchers(&chars, i + 1)?;
            tokens.push(Token::Matchers(labels));
            i = next;
        } else if c == '[' {
            let close = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .ok_or("a `[` without its `]`")?;
            tokens.push(Token::Range);
            i += close + 1;
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number);
        } else if "()+-*/%^=!<>,".contains(c) {
            tokens.push(Token::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}` at {i}"));
        }
    }
    Ok(tokens)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("an unterminated string at {start}"))
}

/// The label names of the matcher list that starts at `i` (after its `{`),
/// and the index just past its `}`.
fn matchers(chars: &[char], mut i: usize) -> Result<(Vec<String>, usize), String> {
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut labels = Vec::new();
    loop {
        skip_ws(&mut i);
        match chars.get(i) {
            Some('}') => return Ok((labels, i + 1)),
            Some(&c) if is_ident_start(c) => {}
            other => return Err(format!("a label name expected at {i}, found {other:?}")),
        }
        let start = i;
        while i < chars.len() && is_ident_char(chars[i]) {
            i += 1;
        }
        labels.push(chars[start..i].iter().collect());
        skip_ws(&mut i);
        let op_start = i;
        while i < chars.len() && "=!~".contains(chars[i]) {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
            return Err(format!(
                "a matcher operator expected at {op_start}, found `{op}`"
            ));
        }
        skip_ws(&mut i);
        if !matches!(chars.get(i), Some('"' | '\'' | '`')) {
            return Err(format!("a quoted label value expected at {i}"));
        }
        i = skip_string(chars, i)?;
        skip_ws(&mut i);
        match chars.get(i) {
            Some(',') => i += 1,
            Some('}') => {}
            other => return Err(format!("`,` or `}}` expected at {i}, found {other:?}")),
        }
    }
}

/// What one expression reads.
#[derive(Debug, Default)]
struct Reads {
    /// The series it selects.
    metrics: BTreeSet<String>,
    /// The labels those series carry.
    labels: BTreeSet<String>,
    /// The labels it groups by (or matches on), in every `by (...)` and the
    /// like.
    grouping: BTreeSet<String>,
}

/// Checks that `expr` selects only series of `series`, and names only their
/// labels; returns what it reads.
fn check_expr(expr: &str, series: &Series) -> Result<Reads, String> {
    let tokens = tokenize(expr)?;
    let mut reads = Reads::default();
    let mut depth = 0_i32;
    let mut i = 0;
    while i < tokens.len() {
        let next = tokens.get(i + 1);
        match &tokens[i] {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth -= 1;
                if depth < 0 {
                    return Err("a `)` without its `(`".to_owned());
                }
            }
            Token::Ident(word) if GROUPING.contains(&word.as_str()) => {
                if next != Some(&Token::Punct('(')) {
                    return Err(format!("`{word}` without its label list"));
                }
                i += 2;
                loop {
                    match tokens.get(i) {
                        Some(Token::Ident(label)) => {
                            reads.grouping.insert(label.clone());
                        }
                        other => {
                            return Err(format!(
                                "a label expected in `{word} (...)`, found {other:?}"
                            ));
                        }
                    }
                    match tokens.get(i + 1) {
                        Some(Token::Punct(',')) => i += 2,
                        Some(Token::Punct(')')) => {
                            i += 1;
                            break;
                        }
                        other => {
                            return Err(format!(
                                "`,` or `)` expected in `{word} (...)`, found {other:?}"
                            ));
                        }
                    }
                }
            }
            Token::Ident(word)
                if FUNCTIONS.contains(&word.as_str())
                    && matches!(next, Some(Token::Punct('('))) => {}
            // An aggregation with its grouping first: `sum by (...) (...)`.
            Token::Ident(word)
                if FUNCTIONS.contains(&word.as_str())
                    && matches!(next, Some(Token::Ident(g)) if g == "by" || g == "without") => {}
            Token::Ident(word) if KEYWORDS.contains(&word.as_str()) => {}
            Token::Ident(name) => {
                let labels = series
                    .get(name)
                    .ok_or_else(|| format!("`{name}` is not a series the runtime emits"))?;
                reads.metrics.insert(name.clone());
                reads.labels.extend(labels.iter().cloned());
                if let Some(Token::Matchers(matched)) = next {
                    if let Some(unknown) = matched.iter().find(|l| !labels.contains(*l)) {
                        return Err(format!("`{name}` has no label `{unknown}`"));
                    }
                    i += 1;
                }
            }
            Token::Matchers(_) => {
                return Err("a selector without a metric name cannot be checked".to_owned());
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a `(` without its `)`".to_owned());
    }
    if reads.metrics.is_empty() {
        return Err("selects no series".to_owned());
    }
    if let Some(unknown) = reads.grouping.iter().find(|l| !reads.labels.contains(*l)) {
        return Err(format!(
            "groups by `{unknown}`, which none of {:?} carries",
            reads.metrics
        ));
    }
    Ok(reads)
}

/// The `{{label}}` names of a legend format.
fn legend_labels(legend: &str) -> Vec<&str> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}"))
        .map(|(label, _)| label.trim())
        .collect()
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn datasource_uid(value: &Value) -> Option<&str> {
    value["datasource"]["uid"].as_str()
}

#[tokio::test]
async fn every_query_names_only_metrics_the_runtime_emits() {
    let families = emitted_families().await;
    // What the runtime's metrics table promises; the check below reads the
    // recorder, so this only guards against an empty or partial recording
    // making the test pass vacuously.
    for name in [
        "cache_hits_total",
        "cache_misses_total",
        "cache_coalesced_total",
        "cache_errors_total",
        "cache_stores_refused_total",
        "cache_body_duration_seconds",
        "cache_backend_duration_seconds",
    ] {
        assert!(
            families.contains_key(name),
            "the runtime did not emit {name}: {families:?}"
        );
    }
    let series = series(&families);

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON");
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: the dashboard targets Grafana 10 and 11"
    );
    assert!(
        dashboard["uid"].is_string() && dashboard["title"].is_string(),
        "a dashboard needs a uid and a title"
    );
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the import input DS_PROMETHEUS (a Prometheus data source) is missing: {inputs:?}"
    );

    // The variables: the data source, and the namespaces from label_values.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` variable: {variables:?}"))
    };
    let datasource = variable("DS_PROMETHEUS");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&Value::from("datasource"), &Value::from("prometheus")),
        "DS_PROMETHEUS should be a Prometheus data source variable"
    );
    let namespace = variable("namespace");
    let query = namespace["query"]["query"]
        .as_str()
        .or(namespace["query"].as_str())
        .expect("the namespace variable has a query");
    assert_eq!(query, "label_values(cache_hits_total, namespace)");
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let name = &variable["name"];
        assert_eq!(
            datasource_uid(variable),
            Some(DATASOURCE),
            "variable {name}"
        );
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable {name} has no query"));
        let (selector, label) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| {
                panic!("variable {name}: not `label_values(metric, label)`: {query}")
            });
        let reads = check_expr(selector, &series)
            .unwrap_or_else(|e| panic!("variable {name}: {query}: {e}"));
        assert!(
            reads.labels.contains(label.trim()),
            "variable {name}: {query}: no series of {:?} carries `{}`",
            reads.metrics,
            label.trim()
        );
    }

    // The panels.
    let panels = panels(&dashboard);
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        assert!(
            ids.insert(
                panel["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{title}: no id"))
            ),
            "{title}: a duplicate panel id"
        );
        assert!(
            panel["gridPos"]["w"].is_u64() && panel["gridPos"]["h"].is_u64(),
            "{title}: no gridPos"
        );
        assert_eq!(datasource_uid(panel), Some(DATASOURCE), "{title}");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut ref_ids = BTreeSet::new();
        for target in &targets {
            let ref_id = target["refId"].as_str().unwrap_or_default();
            assert!(
                ref_ids.insert(ref_id.to_owned()) && !ref_id.is_empty(),
                "{title}: refIds must be unique and set: {targets:?}"
            );
            assert_eq!(datasource_uid(target), Some(DATASOURCE), "{title} {ref_id}");
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title} {ref_id}: no expr"));
            let reads = check_expr(expr, &series)
                .unwrap_or_else(|e| panic!("{title} {ref_id}: {e}\n{expr}"));
            // A legend can only show labels that survive the aggregation.
            let shown = if reads.grouping.is_empty() {
                &reads.labels
            } else {
                &reads.grouping
            };
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for label in legend_labels(legend) {
                assert!(
                    shown.contains(label),
                    "{title} {ref_id}: the legend shows `{label}`, which the query does not keep ({shown:?})"
                );
            }
            used.extend(reads.metrics);
        }
    }

    // And the dashboard shows every family the runtime emits.
    for (name, (kind, _)) in &families {
        let shown = match kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| used.contains(&format!("{name}{suffix}"))),
            _ => used.contains(name),
        };
        assert!(shown, "no panel shows {name}");
    }
}

/// The check above is only as good as its lexer: these must fail.
#[test]
fn the_check_rejects_what_the_runtime_does_not_emit() {
    let series: Series = [
        ("cache_hits_total", &["namespace"][..]),
        (
            "cache_body_duration_seconds_bucket",
            &["namespace", "le"][..],
        ),
    ]
    .into_iter()
    .map(|(name, labels)| {
        (
            name.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect(),
        )
    })
    .collect();
    let good = r#"histogram_quantile(0.99, sum by (le, namespace) (rate(cache_body_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))"#;
    assert!(
        check_expr(good, &series).is_ok(),
        "{:?}",
        check_expr(good, &series)
    );
    for (expr, why) in [
        ("rate(cache_hit_total[5m])", "not a series"),
        (
            "sum by (instance) (rate(cache_hits_total[5m]))",
            "groups by `instance`",
        ),
        (r#"cache_hits_total{job="web"}"#, "no label `job`"),
        (r#"{__name__="cache_hits_total"}"#, "without a metric name"),
        // The exporter without buckets: a summary, which has no `_bucket`.
        (
            "histogram_quantile(0.99, rate(cache_body_duration_seconds[5m]))",
            "not a series",
        ),
        ("sum(rate(cache_hits_total[5m])", "without its `)`"),
        ("rate(cache_hits_total[5m])) / 2", "without its `(`"),
        (r#"cache_hits_total{namespace="users}"#, "unterminated"),
        ("sum by (namespace (cache_hits_total)", "expected"),
        ("$namespace", "unexpected character"),
    ] {
        match check_expr(expr, &series) {
            Ok(reads) => panic!("{expr} passed: {reads:?}"),
            Err(error) => assert!(error.contains(why), "{expr}: {error} (expected: {why})"),
        }
    }
}
