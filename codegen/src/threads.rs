//! How many threads a run uses: all of the pool's, or only the caller's.
//!
//! A small model can run slower on two threads than on one: every split step hands chunks to
//! another core and waits for them, and at 0.1–1 ms per run those hand-offs (and a spinning
//! worker beside the caller) cost more than the parallel work saves: mobilenet_v3_small took
//! 0.72 ms at one thread and 0.96 at two, wav2vec2 0–11% longer at two (docs/benchmarks.md,
//! "Session 11: lead").
//! No cost estimate predicts that reliably, so an [`Executable`](crate::Executable) measures it:
//! after one warm-up run, its first runs alternate between all threads and one, [`SAMPLES`] of
//! each, and it keeps the pool's count only when that was faster by more than [`MARGIN`] (ties
//! go to one thread, which leaves the other cores to the rest of the machine). The choice is
//! made once, on the caller's real inputs; it changes speed only: chunks split a step's outputs,
//! never a sum, so a run of one executable gives the same bits at every thread count, NaN
//! payloads aside (a map kernel's vector body and scalar tail make different NaNs, and a chunk's
//! end decides which an element meets). The differential tester runs each two-thread executable
//! through its choice and compares the runs bit for bit.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Timed runs per arm (all threads, one thread) before the choice is made.
pub const SAMPLES: usize = 3;
/// All threads are kept when their median run time is below this fraction of one thread's.
pub const MARGIN: f64 = 0.98;

/// The thread choice of one executable (shared by every run of it, from any thread).
#[derive(Debug)]
pub(crate) struct ThreadChoice {
    pool_threads: usize,
    /// 0 until the choice is made (or for ever, when not adaptive).
    chosen: AtomicUsize,
    /// Runs started while undecided (the first is the warm-up).
    runs: AtomicUsize,
    samples: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    all: Vec<Duration>,
    one: Vec<Duration>,
}

/// The thread count of one run, and which arm its time is a sample of (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub threads: usize,
    arm: Option<Arm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    All,
    One,
}

impl ThreadChoice {
    pub fn new(pool_threads: usize, adaptive: bool) -> ThreadChoice {
        let fixed = !adaptive || pool_threads <= 1;
        ThreadChoice {
            pool_threads,
            chosen: AtomicUsize::new(if fixed { pool_threads } else { 0 }),
            runs: AtomicUsize::new(0),
            samples: Mutex::new(Samples::default()),
        }
    }

    /// The count every run uses once the choice is made; `None` while the first runs measure.
    pub fn chosen(&self) -> Option<usize> {
        match self.chosen.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// The thread count for the next run (`sample`: whether its time will be recorded).
    pub fn next(&self, sample: bool) -> Ticket {
        if let Some(threads) = self.chosen() {
            return Ticket { threads, arm: None };
        }
        let all = Ticket { threads: self.pool_threads, arm: None };
        if !sample {
            return all;
        }
        match self.runs.fetch_add(1, Ordering::Relaxed) {
            // The warm-up run (page faults, the arena's first touch, cold caches) is not timed.
            0 => all,
            r if r <= 2 * SAMPLES && r % 2 == 1 => Ticket { arm: Some(Arm::All), ..all },
            r if r <= 2 * SAMPLES => Ticket { threads: 1, arm: Some(Arm::One) },
            // More runs started than samples are wanted (concurrent callers): they wait for none.
            _ => all,
        }
    }

    /// Records the wall time of a run made with `ticket`; the last sample makes the choice.
    pub fn record(&self, ticket: Ticket, took: Duration) {
        let Some(arm) = ticket.arm else { return };
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match arm {
            Arm::All => s.all.push(took),
            Arm::One => s.one.push(took),
        }
        if s.all.len() >= SAMPLES && s.one.len() >= SAMPLES && self.chosen().is_none() {
            let threads = choose(self.pool_threads, &s.all, &s.one);
            self.chosen.store(threads, Ordering::Release);
        }
    }
}

/// The pool's count when its runs' median beats one thread's by the margin, else 1.
fn choose(pool_threads: usize, all: &[Duration], one: &[Duration]) -> usize {
    if median(all) < median(one).mul_f64(MARGIN) { pool_threads } else { 1 }
}

fn median(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    v[v.len() / 2]
}

thread_local! {
    /// Most chunks a step of the run on this thread may split into (set for the run's duration
    /// by [`RunThreads::enter`]). A thread-local rather than an argument: every step kind asks
    /// for its split through `Executable::par`, and concurrent runs of one executable may use
    /// different counts while the choice is being measured.
    static RUN_THREADS: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sets this thread's run limit until dropped, then restores the previous one.
pub(crate) struct RunThreads(usize);

impl RunThreads {
    pub fn enter(threads: usize) -> RunThreads {
        RunThreads(RUN_THREADS.with(|t| t.replace(threads)))
    }

    /// The limit of the run on this thread (`usize::MAX` outside a run).
    pub fn current() -> usize {
        RUN_THREADS.with(|t| t.get())
    }
}

impl Drop for RunThreads {
    fn drop(&mut self) {
        RUN_THREADS.with(|t| t.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// Runs `n` tickets, timing all-thread runs at `all` and one-thread runs at `one`.
    fn drive(c: &ThreadChoice, n: usize, all: u64, one: u64) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let t = c.next(true);
                c.record(t, if t.threads == 1 { ms(one) } else { ms(all) });
                t.threads
            })
            .collect()
    }

    #[test]
    fn warm_up_then_alternate_then_keep_the_faster() {
        let c = ThreadChoice::new(4, true);
        assert_eq!(c.chosen(), None);
        // Warm-up, then all/one alternating for SAMPLES each, then the choice: one is faster.
        let used = drive(&c, 2 + 2 * SAMPLES, 10, 8);
        assert_eq!(&used[..1 + 2 * SAMPLES], &[4, 4, 1, 4, 1, 4, 1]);
        assert_eq!(c.chosen(), Some(1));
        assert_eq!(used[1 + 2 * SAMPLES], 1);
        // All threads twice as fast: kept.
        let c = ThreadChoice::new(4, true);
        drive(&c, 1 + 2 * SAMPLES, 5, 10);
        assert_eq!(c.chosen(), Some(4));
    }

    #[test]
    fn a_tie_within_the_margin_goes_to_one_thread() {
        let c = ThreadChoice::new(2, true);
        // 9.9 ms against 10 ms: 1% faster, inside the 2% margin.
        for _ in 0..1 + 2 * SAMPLES {
            let t = c.next(true);
            c.record(t, if t.threads == 1 { ms(10) } else { Duration::from_micros(9_900) });
        }
        assert_eq!(c.chosen(), Some(1));
    }

    #[test]
    fn the_median_ignores_one_outlier() {
        // One all-thread run preempted (100 ms) does not decide against all threads.
        let c = ThreadChoice::new(2, true);
        let mut all_runs = 0;
        for _ in 0..1 + 2 * SAMPLES {
            let t = c.next(true);
            let took = if t.threads == 1 {
                ms(10)
            } else {
                all_runs += 1;
                if all_runs == 2 { ms(100) } else { ms(6) }
            };
            c.record(t, took);
        }
        assert_eq!(c.chosen(), Some(2));
    }

    #[test]
    fn fixed_counts_and_untimed_runs_do_not_measure() {
        let fixed = ThreadChoice::new(3, false);
        assert_eq!(fixed.chosen(), Some(3));
        assert_eq!(drive(&fixed, 10, 10, 1), vec![3; 10]);
        let single = ThreadChoice::new(1, true);
        assert_eq!(single.chosen(), Some(1));
        // Untimed runs (profiling) use all threads and do not count towards the samples.
        let c = ThreadChoice::new(2, true);
        for _ in 0..20 {
            assert_eq!(c.next(false).threads, 2);
        }
        assert_eq!(c.chosen(), None);
        assert_eq!(drive(&c, 3, 1, 1), vec![2, 2, 1]);
    }

    #[test]
    fn the_run_limit_nests_and_restores() {
        assert_eq!(RunThreads::current(), usize::MAX);
        {
            let _a = RunThreads::enter(2);
            assert_eq!(RunThreads::current(), 2);
            {
                let _b = RunThreads::enter(1);
                assert_eq!(RunThreads::current(), 1);
            }
            assert_eq!(RunThreads::current(), 2);
        }
        assert_eq!(RunThreads::current(), usize::MAX);
    }
}
