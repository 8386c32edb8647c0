//! Invalidations that failed, retried in the background until they land or the
//! stale entry has expired anyway. A write whose invalidation failed leaves the
//! old entry in the cache backend, where every instance would serve it until
//! its TTL; retrying after the backend answers again ends that early.
//!
//! One task drains one queue, rather than a task per failure: during an outage
//! every write fails its invalidation, and a task each would mean as many
//! retry loops hammering the backend the moment it answers, and as many
//! `Stale` copies of one hot user. The queue folds repeats into one pending
//! invalidation, attempts them all on one backoff, and stops in one place at
//! shutdown.
//!
//! The bound, exactly: the first attempt comes [`FIRST_DELAY`] after the first
//! failure (while nothing was pending), and the delay doubles after each
//! attempt that leaves something pending, up to [`MAX_DELAY`]. Each attempt
//! first pings the backend, which bypasses the circuit breaker and closes it
//! if the ping succeeds: an open circuit would otherwise refuse the retry
//! without asking the backend. So once the backend answers this process's
//! pings again, the next attempt lands: it starts at most [`MAX_DELAY`] (2 s)
//! after the previous one ended, and the previous one, if it was under way
//! when the backend came back, ends within one response timeout
//! (`CACHE_RESPONSE_TIMEOUT`); add the round trips of the ping and of the
//! invalidations themselves. An invalidation is dropped, logged, once its
//! entry's TTL has passed since the last write that needed it: the stale
//! entry has expired by then.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::users::Stale;

/// The delay before the first attempt.
pub const FIRST_DELAY: Duration = Duration::from_millis(50);

/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// Where writes queue the invalidations that failed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Retries {
    // Unbounded, but drained at once into a map keyed by what is stale: what
    // waits is at most one pending invalidation per user written within the
    // TTL, plus the list.
    queue: mpsc::UnboundedSender<Failed>,
}

/// The task that retries; stop it with [`RetryWorker::shutdown`].
#[derive(Debug)]
pub struct RetryWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// An invalidation that failed, and when.
#[derive(Debug)]
struct Failed {
    stale: Stale,
    at: Instant,
}

/// Starts the retry task on the current runtime (the cache must be installed:
/// the task invalidates through the process-wide cache).
pub fn start() -> (Retries, RetryWorker) {
    let (queue, failures) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(retry(failures, stopped));
    (Retries { queue }, RetryWorker { stop, task })
}

impl Retries {
    /// Retries invalidating `stale` in the background, from now until its TTL
    /// has passed.
    pub fn push(&self, stale: Stale) {
        let failed = Failed {
            stale,
            at: Instant::now(),
        };
        if self.queue.send(failed).is_err() {
            tracing::warn!(%stale, "shutting down: this invalidation is not retried");
        }
    }
}

impl RetryWorker {
    /// Stops retrying: what is still pending is abandoned and logged, and may
    /// be served stale until its TTL. Returns at once, even with the backend
    /// frozen: an attempt under way is dropped (an invalidation dropped
    /// midway may or may not have happened, which is no worse than not
    /// retrying).
    pub async fn shutdown(self) {
        // An error means the task is gone already, which the join reports.
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the invalidation retry task failed");
        }
    }
}

/// The retry task: waits for failures and attempts them on a capped
/// exponential backoff until each lands or expires, or until stopped.
async fn retry(mut failures: mpsc::UnboundedReceiver<Failed>, mut stop: oneshot::Receiver<()>) {
    let mut pending = Pending::default();
    loop {
        // `biased`: a stop wins over more work. A dropped `RetryWorker` stops
        // the task too (the receiver then resolves with an error).
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(failed) = failures.recv() => pending.add(failed),
            () = pending.due() => tokio::select! {
                biased;
                _ = &mut stop => break,
                () = pending.attempt() => {}
            },
        }
    }
    // Failures that arrived during the last attempt are still queued; later
    // pushes find the queue closed and log that they are not retried.
    failures.close();
    while let Ok(failed) = failures.try_recv() {
        pending.add(failed);
    }
    pending.abandon();
}

/// The invalidations still to retry, and when to try next.
#[derive(Debug)]
struct Pending {
    stale: HashMap<Stale, Deadlines>,
    delay: Duration,
    /// `None` exactly when nothing is pending.
    next_attempt: Option<Instant>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            stale: HashMap::new(),
            delay: FIRST_DELAY,
            next_attempt: None,
        }
    }
}

/// When one invalidation first failed, and when to give up on it.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    first_failed: Instant,
    give_up: Instant,
}

impl Pending {
    fn add(&mut self, failed: Failed) {
        let give_up = failed.at + failed.stale.ttl();
        // A second write of the same user during the outage: one retry, kept
        // until the later write's TTL.
        self.stale
            .entry(failed.stale)
            .and_modify(|d| d.give_up = d.give_up.max(give_up))
            .or_insert(Deadlines {
                first_failed: failed.at,
                give_up,
            });
        if self.next_attempt.is_none() {
            self.delay = FIRST_DELAY;
            self.next_attempt = Some(Instant::now() + self.delay);
        }
    }

    /// Resolves when the next attempt is due; never while nothing is pending.
    async fn due(&self) {
        match self.next_attempt {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// One attempt at everything pending. Cancel safe: an invalidation that
    /// landed is removed before the next one starts, so a dropped attempt
    /// leaves the rest pending.
    async fn attempt(&mut self) {
        let now = Instant::now();
        self.stale.retain(|stale, deadlines| {
            let keep = now < deadlines.give_up;
            if !keep {
                tracing::info!(
                    %stale,
                    "stopped retrying an invalidation: its entry's TTL has passed since the write, so it has expired"
                );
            }
            keep
        });
        if self.stale.is_empty() {
            // Everything expired.
        } else if !cache_runtime::health().await.healthy {
            tracing::debug!(
                pending = self.stale.len(),
                "the cache backend still does not answer; retrying the invalidations later"
            );
        } else {
            let stale: Vec<Stale> = self.stale.keys().copied().collect();
            for stale in stale {
                match stale.invalidate().await {
                    Ok(()) => {
                        if let Some(deadlines) = self.stale.remove(&stale) {
                            tracing::info!(
                                %stale,
                                after = ?deadlines.first_failed.elapsed(),
                                "a failed invalidation landed on retry"
                            );
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%stale, %error, "retrying an invalidation failed")
                    }
                }
            }
        }
        self.back_off();
    }

    /// Schedules the next attempt after one that ended now: none if nothing
    /// is left, else after twice the last delay, at most [`MAX_DELAY`].
    fn back_off(&mut self) {
        if self.stale.is_empty() {
            self.next_attempt = None;
        } else {
            self.delay = (self.delay * 2).min(MAX_DELAY);
            self.next_attempt = Some(Instant::now() + self.delay);
        }
    }

    fn abandon(&self) {
        if !self.stale.is_empty() {
            let stale: Vec<String> = self.stale.keys().map(Stale::to_string).collect();
            tracing::warn!(
                ?stale,
                "shutting down: abandoning invalidation retries still pending; these entries may be served stale until their TTL"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stale: Stale, at: Instant) -> Failed {
        Failed { stale, at }
    }

    #[test]
    fn a_repeated_failure_is_one_retry_kept_until_the_later_writes_ttl() {
        let mut pending = Pending::default();
        let first = Instant::now();
        let later = first + Duration::from_secs(30);
        pending.add(failed(Stale::User(1), first));
        pending.add(failed(Stale::User(1), later));
        pending.add(failed(Stale::List, first));
        assert_eq!(pending.stale.len(), 2, "{pending:?}");
        let user = pending.stale[&Stale::User(1)];
        assert_eq!(user.first_failed, first);
        assert_eq!(user.give_up, later + Stale::User(1).ttl());
        assert_eq!(
            pending.stale[&Stale::List].give_up,
            first + Stale::List.ttl()
        );
    }

    #[test]
    fn the_delay_starts_small_doubles_and_is_capped() {
        let mut pending = Pending::default();
        assert!(
            pending.next_attempt.is_none(),
            "nothing pending, no attempt"
        );
        pending.add(failed(Stale::List, Instant::now()));
        assert!(
            pending.next_attempt.is_some(),
            "a failure schedules an attempt"
        );
        let mut delays = vec![pending.delay];
        for _ in 0..7 {
            pending.back_off();
            delays.push(pending.delay);
        }
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1600, 2000, 2000].map(ms),
            "FIRST_DELAY doubling up to MAX_DELAY"
        );
        pending.stale.clear();
        pending.back_off();
        assert!(pending.next_attempt.is_none(), "nothing left, no attempt");
        pending.add(failed(Stale::List, Instant::now()));
        assert_eq!(
            pending.delay, FIRST_DELAY,
            "a new outage starts small again"
        );
    }
}
