//! The guard every backend operation passes through: the circuit breaker,
//! the backend's operation timeout, a panic guard, and the timing for the
//! metrics and the slow-operation warning. Whatever the backend does, the
//! caller gets a `Result`.
//!
//! A hand-written future rather than an `async fn`: it runs on every hit,
//! and a future the compiler can inline into its caller's costs no layer of
//! its own (an `async fn` here cost about 150 instructions a hit).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use super::Cache;
use crate::circuit::{Permit, Transition};
use crate::error::{Error, Result};
use crate::observe::Op;

impl Cache {
    /// Runs one backend operation through the circuit breaker, the
    /// backend's operation timeout and a panic guard.
    ///
    /// Cancel safety: dropping the future abandons the operation; a probe of
    /// the circuit abandoned this way counts as a failed one (the permit's
    /// `Drop`).
    #[inline(always)]
    pub(crate) fn guarded<F, T>(&self, kind: Op, op: F) -> Guarded<'_, F>
    where
        F: Future<Output = Result<T>>,
    {
        let admission = if self.is_closed() {
            Admission::Closed
        } else {
            match self.inner.circuit.allow() {
                Some(permit) => Admission::Admitted(permit),
                None => Admission::CircuitOpen,
            }
        };
        Guarded::new(self, kind, op, admission)
    }

    /// [`guarded`](Self::guarded), whether the circuit is open or not: for
    /// health checks, whose success closes an open circuit as a successful
    /// probe would.
    pub(crate) fn bypassing<F, T>(&self, kind: Op, op: F) -> Guarded<'_, F>
    where
        F: Future<Output = Result<T>>,
    {
        Guarded::new(
            self,
            kind,
            op,
            Admission::Admitted(self.inner.circuit.bypass()),
        )
    }

    /// Records how long an operation took. Out of line: not on the path of
    /// an untimed operation.
    #[inline(never)]
    fn timed(&self, kind: Op, start: Instant) {
        self.inner
            .timing
            .record(self.inner.backend.name(), kind, start.elapsed());
    }

    fn report(&self, permit: Permit<'_>, ok: bool) {
        let backend = self.inner.backend.name();
        let transition = if ok {
            permit.success()
        } else {
            permit.failure()
        };
        match transition {
            Transition::None => {}
            Transition::Opened(period) => tracing::warn!(
                backend,
                retry_in = ?period,
                "cache backend failing; circuit open: calls run uncached without waiting for it"
            ),
            Transition::Closed => {
                tracing::info!(backend, "cache backend answers again; circuit closed")
            }
        }
    }
}

/// Whether an operation may run.
enum Admission<'a> {
    /// It may; its result is reported to the circuit through the permit.
    Admitted(Permit<'a>),
    Closed,
    CircuitOpen,
    /// The result was returned.
    Done,
}

pin_project! {
    /// A backend operation under the cache's guards: see
    /// [`Cache::guarded`].
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Guarded<'a, F> {
        cache: &'a Cache,
        kind: Op,
        admission: Admission<'a>,
        // When the operation started, if operations are timed.
        start: Option<Instant>,
        #[pin]
        op: Bounded<F>,
    }
}

pin_project! {
    /// The operation, under the backend's operation timeout if it has one
    /// and a Tokio runtime is current when the guard is built. The timer is
    /// built on the first poll that leaves the operation pending, inside the
    /// panic guard: a runtime without timers panics there, and the call gets
    /// an error (an operation that is ready at once needs no timer).
    #[project = BoundedProj]
    enum Bounded<F> {
        Unbounded { #[pin] op: F },
        Bounded {
            #[pin] op: F,
            // Built on the first poll, inside the panic guard: a runtime
            // without timers panics here.
            #[pin] sleep: Option<tokio::time::Sleep>,
            deadline: tokio::time::Instant,
            limit: Duration,
        },
    }
}

impl<'a, F: Future> Guarded<'a, F> {
    #[inline(always)]
    fn new(cache: &'a Cache, kind: Op, op: F, admission: Admission<'a>) -> Self {
        let limit = cache
            .inner
            .backend
            .operation_timeout()
            .filter(|_| tokio::runtime::Handle::try_current().is_ok());
        let op = match limit {
            None => Bounded::Unbounded { op },
            Some(limit) => Bounded::Bounded {
                op,
                sleep: None,
                deadline: tokio::time::Instant::now() + limit,
                limit,
            },
        };
        let start = match admission {
            Admission::Admitted(_) if cache.inner.timing.on() => Some(Instant::now()),
            _ => None,
        };
        Guarded {
            cache,
            kind,
            admission,
            start,
            op,
        }
    }
}

impl<F, T> Future for Guarded<'_, F>
where
    F: Future<Output = Result<T>>,
{
    type Output = Result<T>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.project();
        let cache = *this.cache;
        let backend = cache.inner.backend.name();
        match this.admission {
            Admission::Admitted(_) => {}
            Admission::Closed => {
                *this.admission = Admission::Done;
                return Poll::Ready(Err(Error::Closed));
            }
            Admission::CircuitOpen => {
                *this.admission = Admission::Done;
                return Poll::Ready(Err(Error::CircuitOpen { backend }));
            }
            Admission::Done => panic!("`Guarded` polled after completion"),
        }
        let mut op = this.op;
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            op.as_mut().poll(cx, backend)
        })) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result,
            Err(panic) => Err(Error::backend(
                backend,
                format!("the backend panicked: {}", panic_message(&*panic)),
            )),
        };
        if let Some(start) = *this.start {
            cache.timed(*this.kind, start);
        }
        if let Admission::Admitted(permit) = std::mem::replace(this.admission, Admission::Done) {
            cache.report(
                permit,
                result
                    .as_ref()
                    .map_or_else(Error::backend_answered, |_| true),
            );
        }
        Poll::Ready(result)
    }
}

impl<F, T> Bounded<F>
where
    F: Future<Output = Result<T>>,
{
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, backend: &'static str) -> Poll<Result<T>> {
        match self.project() {
            BoundedProj::Unbounded { op } => op.poll(cx),
            BoundedProj::Bounded {
                op,
                mut sleep,
                deadline,
                limit,
            } => {
                if let Poll::Ready(result) = op.poll(cx) {
                    return Poll::Ready(result);
                }
                if sleep.is_none() {
                    sleep.set(Some(tokio::time::sleep_until(*deadline)));
                }
                match sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(Error::backend(
                        backend,
                        format!("no answer within the operation timeout ({limit:?})"),
                    ))),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
