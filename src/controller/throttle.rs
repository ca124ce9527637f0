//! Adaptive write concurrency: how many Secret writes the operator has in flight at once,
//! across all resources.
//!
//! A real API server under load answers 429 (API Priority and Fairness, or the max-in-flight
//! filter) with a `Retry-After` header, and 5xx when it struggles. The window is AIMD
//! (additive increase, multiplicative decrease) between 1 and a configured maximum
//! (`controller.write_concurrency`): it starts at the maximum (fast on an idle server), halves
//! on a 429 or 5xx, grows by one per window of successful writes, and after a 429 no write
//! starts before its `Retry-After` has passed.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a write's answer says about the server's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered (whatever the answer, apart from the two below): the server keeps up.
    Ok,
    /// 429 Too Many Requests: halve, and start nothing before `retry_after` (from the
    /// `Retry-After` header or `details.retryAfterSeconds`; 1 s when the server gave none).
    Throttled {
        /// How long the server asked to wait.
        retry_after: Duration,
    },
    /// A 5xx answer or a broken connection: halve.
    Overloaded,
}

/// The shared window. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct WriteWindow {
    max: usize,
    state: Mutex<State>,
    released: Notify,
}

#[derive(Debug)]
struct State {
    /// The window, between 1 and `max` (fractional: it grows by 1/limit per success).
    limit: f64,
    in_flight: usize,
    paused_until: Option<Instant>,
}

/// One write's place in the window; [`Permit::finish`] reports how it went. Dropping it
/// without a report frees the place and changes nothing.
#[derive(Debug)]
pub struct Permit<'a> {
    window: &'a WriteWindow,
}

impl WriteWindow {
    /// A window of at most `max` writes (at least 1), starting wide open.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
                paused_until: None,
            }),
            released: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many writes may be in flight now.
    pub fn limit(&self) -> usize {
        (self.lock().limit as usize).clamp(1, self.max)
    }

    /// Waits for a place in the window (and for any `Retry-After` pause to pass).
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release between the look and the wait is seen.
            released.as_mut().enable();
            let pause = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        s.paused_until = None;
                        let limit = (s.limit as usize).clamp(1, self.max);
                        if s.in_flight < limit {
                            s.in_flight += 1;
                            return Permit { window: self };
                        }
                        None
                    }
                }
            };
            match pause {
                Some(until) => tokio::select! {
                    () = tokio::time::sleep_until(until) => {},
                    () = &mut released => {},
                },
                None => released.await,
            }
        }
    }

    fn adjust(&self, signal: Signal) {
        let mut s = self.lock();
        match signal {
            Signal::Ok => {
                s.limit = (s.limit + 1.0 / s.limit.max(1.0)).min(self.max as f64);
            }
            Signal::Throttled { retry_after } => {
                s.limit = (s.limit / 2.0).max(1.0);
                let until = Instant::now() + retry_after;
                s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
            }
            Signal::Overloaded => s.limit = (s.limit / 2.0).max(1.0),
        }
    }
}

impl Permit<'_> {
    /// Frees the place, adjusting the window by what the answer said.
    pub fn finish(self, signal: Signal) {
        self.window.adjust(signal);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut s = self.window.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        drop(s);
        self.window.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn halves_on_throttling_waits_for_retry_after_and_grows_back_one_per_window() {
        let w = WriteWindow::new(16);
        assert_eq!(w.limit(), 16);
        w.acquire().await.finish(Signal::Throttled {
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(w.limit(), 8);
        let paused = Instant::now();
        let p = w.acquire().await;
        assert!(
            paused.elapsed() >= Duration::from_secs(2),
            "Retry-After honoured"
        );
        p.finish(Signal::Overloaded);
        assert_eq!(w.limit(), 4);
        // Additive increase: about one more per window of successes (4 + 1/4 + 1/4.25 + …).
        for _ in 0..5 {
            w.acquire().await.finish(Signal::Ok);
        }
        assert_eq!(w.limit(), 5);
        for _ in 0..200 {
            w.acquire().await.finish(Signal::Ok);
        }
        assert_eq!(w.limit(), 16, "never above the maximum");
        for _ in 0..10 {
            w.acquire().await.finish(Signal::Overloaded);
        }
        assert_eq!(w.limit(), 1, "never below one");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_window_is_in_flight_and_a_release_lets_the_next_in() {
        let w = std::sync::Arc::new(WriteWindow::new(2));
        let a = w.acquire().await;
        let _b = w.acquire().await;
        let w2 = std::sync::Arc::clone(&w);
        let third = tokio::spawn(async move {
            let _c = w2.acquire().await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "a third write waits");
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .expect("released")
            .unwrap();
    }
}
