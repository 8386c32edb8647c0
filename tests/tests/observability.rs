//! What the cache tells about itself besides its counters: a `tracing`
//! span per call, and warnings about slow backend operations.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, MemoryBackend, cached};
use common::{Captured, Faulty, Mode, Op};
use tracing_subscriber::fmt::format::FmtSpan;

#[cached(namespace = "spans")]
async fn traced(id: u64) -> u64 {
    tracing::info!("in the body");
    id
}

/// Spans (closed, with their fields) and events, as text.
fn capture_spans() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn each_call_has_a_span_with_its_namespace_function_and_outcome() {
    let (logs, _guard) = capture_spans();
    let cache = Cache::memory();
    cache
        .scope(async {
            traced(1).await;
            traced(1).await;
        })
        .await;
    cache
        .get_or_insert_with("api-spans", "k", Duration::from_secs(60), async { 1_u8 })
        .await;
    let text = logs.text();
    let closes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cache_call{") && l.contains("close"))
        .collect();
    assert_eq!(closes.len(), 3, "{text}");
    for (line, outcome) in closes.iter().zip(["miss", "hit", "miss"]) {
        assert!(line.contains(&format!("outcome=\"{outcome}\"")), "{line}");
    }
    assert!(closes[0].contains("namespace=\"spans\""), "{}", closes[0]);
    assert!(closes[0].contains("observability.traced"), "{}", closes[0]);
    assert!(
        closes[2].contains("namespace=\"api-spans\""),
        "{}",
        closes[2]
    );
    assert!(closes[2].contains("(api)"), "{}", closes[2]);
    // The body's own events are inside the call's span.
    let body = text.lines().find(|l| l.contains("in the body")).unwrap();
    assert!(body.contains("cache_call{"), "{body}");
}

#[tokio::test]
async fn slow_backend_operations_are_logged_at_warn_above_the_threshold() {
    let (logs, _guard) = capture_spans();
    let backend = Arc::new(Faulty::new(Arc::new(MemoryBackend::new())));
    let cache = Cache::builder()
        .shared_backend(backend.clone())
        .slow_threshold(Some(Duration::from_millis(40)))
        .build()
        .unwrap();
    cache.scope(traced(2)).await;
    assert!(
        !logs.text().contains("slow cache backend operation"),
        "{}",
        logs.text()
    );
    backend.set(Op::Get, Mode::Delay(Duration::from_millis(60)));
    cache.scope(traced(2)).await;
    cache.scope(traced(2)).await;
    let text = logs.text();
    let slow: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("slow cache backend operation"))
        .collect();
    // Rate-limited: one line per period, however many operations were slow.
    assert_eq!(slow.len(), 1, "{text}");
    assert!(slow[0].contains("WARN"), "{}", slow[0]);
    assert!(slow[0].contains("op=\"get\""), "{}", slow[0]);
    assert!(slow[0].contains("backend=\"faulty\""), "{}", slow[0]);

    // Off: nothing, however slow.
    let quiet = Cache::builder()
        .shared_backend(backend.clone())
        .slow_threshold(None)
        .build()
        .unwrap();
    let before = logs.text().matches("slow cache backend operation").count();
    quiet.scope(traced(3)).await;
    assert_eq!(
        logs.text().matches("slow cache backend operation").count(),
        before
    );
}
