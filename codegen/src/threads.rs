//! How many threads a run uses: all of the pool's, or only the caller's.
//!
//! A small model can run slower on two threads than on one: every split step hands chunks to
//! another core and waits for them, and at 0.1–1 ms per run those hand-offs (and a spinning
//! worker beside the caller) cost more than the parallel work saves: mobilenet_v3_small took
//! 0.72 ms at one thread and 0.96 at two, wav2vec2 0–11% longer at two (docs/benchmarks.md,
//! "Session 11: lead").
//! No cost estimate predicts that reliably, so an [`Executable`](crate::Executable) measures it:
//! after one warm-up run, its first runs alternate between all threads and one, [`SAMPLES`] of
//! each, timing every step. Steps whose median at all threads beats their median at one by
//! more than [`MARGIN`] are marked to split; when that marks some steps but not all, [`SAMPLES`]
//! more runs try that mixed plan. The run kept is the one of the two or three plans with the
//! lowest median run time, and one thread unless another beats it by the margin (ties go to one
//! thread, which leaves the other cores to the rest of the machine). The choice is
//! made once, on the caller's real inputs; it changes speed only: chunks split a step's outputs,
//! never a sum, so a run of one executable gives the same bits at every thread count, NaN
//! payloads aside (a map kernel's vector body and scalar tail make different NaNs, and a chunk's
//! end decides which an element meets). The differential tester runs each two-thread executable
//! through its choice and compares the runs bit for bit.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Timed runs per plan (all threads, one thread, and the mixed plan when there is one).
pub const SAMPLES: usize = 3;
/// Another plan is kept over one thread (and a step marked to split) only when its median time
/// is below this fraction of one thread's.
pub const MARGIN: f64 = 0.98;
/// The most runs before the choice is made: the warm-up and the samples of three plans.
pub const MAX_UNDECIDED_RUNS: usize = 1 + 3 * SAMPLES;

/// The most chunks each step of a run may split into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Every step the same.
    Uniform(usize),
    /// Per step, in schedule order.
    PerStep(Arc<[usize]>),
}

impl Plan {
    pub fn limit(&self, step: usize) -> usize {
        match self {
            Plan::Uniform(n) => *n,
            Plan::PerStep(v) => v.get(step).copied().unwrap_or(1),
        }
    }

    /// The most threads any step uses.
    pub fn most(&self) -> usize {
        match self {
            Plan::Uniform(n) => *n,
            Plan::PerStep(v) => v.iter().copied().max().unwrap_or(1),
        }
    }
}

/// The thread choice of one executable (shared by every run of it, from any thread).
#[derive(Debug)]
pub(crate) struct ThreadChoice {
    pool_threads: usize,
    chosen: OnceLock<Plan>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Sample runs handed out (the first is the warm-up).
    started: usize,
    all: Vec<Sample>,
    one: Vec<Sample>,
    /// The per-step plan the first two arms suggest, when it differs from both.
    mixed_plan: Option<Arc<[usize]>>,
    mixed: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    total: Duration,
    steps: Vec<Duration>,
}

/// The plan of one run, and which arm its time is a sample of (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub plan: Plan,
    arm: Option<Arm>,
}

impl Ticket {
    /// Whether the run should time its steps (a sample run).
    pub fn timed(&self) -> bool {
        self.arm.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    All,
    One,
    Mixed,
}

impl ThreadChoice {
    pub fn new(pool_threads: usize, adaptive: bool) -> ThreadChoice {
        let chosen = OnceLock::new();
        if !adaptive || pool_threads <= 1 {
            let _ = chosen.set(Plan::Uniform(pool_threads));
        }
        ThreadChoice { pool_threads, chosen, state: Mutex::new(State::default()) }
    }

    /// The most threads a step of a run uses once the choice is made; `None` while the first
    /// runs measure.
    pub fn chosen(&self) -> Option<usize> {
        self.chosen.get().map(Plan::most)
    }

    /// The plan for the next run (`sample`: whether its times will be recorded).
    pub fn next(&self, sample: bool) -> Ticket {
        if let Some(plan) = self.chosen.get() {
            return Ticket { plan: plan.clone(), arm: None };
        }
        let all = Ticket { plan: Plan::Uniform(self.pool_threads), arm: None };
        if !sample {
            return all;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = st.started;
        st.started += 1;
        match r {
            // The warm-up run (page faults, the arena's first touch, cold caches) is not timed.
            0 => all,
            r if r <= 2 * SAMPLES && r % 2 == 1 => Ticket { arm: Some(Arm::All), ..all },
            r if r <= 2 * SAMPLES => Ticket { plan: Plan::Uniform(1), arm: Some(Arm::One) },
            // Then whatever is still missing: the mixed plan's samples, or a sample of a run
            // that failed (a failed run records nothing). Concurrent callers may take more
            // samples than needed; the extra ones count too.
            _ => match st.mixed_plan.clone() {
                Some(plan) if st.mixed.len() < SAMPLES => Ticket { plan: Plan::PerStep(plan), arm: Some(Arm::Mixed) },
                _ if st.all.len() < SAMPLES => Ticket { arm: Some(Arm::All), ..all },
                _ if st.one.len() < SAMPLES => Ticket { plan: Plan::Uniform(1), arm: Some(Arm::One) },
                _ => all,
            },
        }
    }

    /// Records a sample run's wall time and its steps' times; the last sample makes the choice.
    pub fn record(&self, ticket: &Ticket, total: Duration, steps: Vec<Duration>) {
        let Some(arm) = ticket.arm else { return };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let sample = Sample { total, steps };
        match arm {
            Arm::All => st.all.push(sample),
            Arm::One => st.one.push(sample),
            Arm::Mixed => st.mixed.push(sample),
        }
        if self.chosen.get().is_some() || st.all.len() < SAMPLES || st.one.len() < SAMPLES {
            return;
        }
        if st.mixed_plan.is_none() && st.mixed.is_empty() {
            let per_step = split_steps(self.pool_threads, &st.all, &st.one);
            let uniform = per_step.iter().all(|&n| n == 1) || per_step.iter().all(|&n| n == self.pool_threads);
            if !uniform {
                st.mixed_plan = Some(per_step.into());
                return;
            }
        } else if st.mixed.len() < SAMPLES {
            return;
        }
        let plan = choose(self.pool_threads, &st);
        let _ = self.chosen.set(plan);
    }
}

/// Per step: the pool's count where the step's median at all threads beats its median at one by
/// the margin, else 1.
fn split_steps(pool_threads: usize, all: &[Sample], one: &[Sample]) -> Vec<usize> {
    let n = all.iter().chain(one).map(|s| s.steps.len()).min().unwrap_or(0);
    (0..n)
        .map(|k| {
            let a = median(all.iter().map(|s| s.steps[k]));
            let o = median(one.iter().map(|s| s.steps[k]));
            if a < o.mul_f64(MARGIN) { pool_threads } else { 1 }
        })
        .collect()
}

/// The plan with the lowest median run time; one thread unless another beats it by the margin.
fn choose(pool_threads: usize, st: &State) -> Plan {
    let one = median(st.one.iter().map(|s| s.total));
    let mut best = (one.mul_f64(MARGIN), Plan::Uniform(1));
    let all = median(st.all.iter().map(|s| s.total));
    if all < best.0 {
        best = (all, Plan::Uniform(pool_threads));
    }
    if let (Some(plan), false) = (&st.mixed_plan, st.mixed.is_empty()) {
        let mixed = median(st.mixed.iter().map(|s| s.total));
        if mixed < best.0 {
            best = (mixed, Plan::PerStep(plan.clone()));
        }
    }
    best.1
}

fn median(xs: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = xs.collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

thread_local! {
    /// Most chunks the step being run on this thread may split into (set around each step by
    /// [`RunThreads::enter`]). A thread-local rather than an argument: every step kind asks
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

    fn us(x: u64) -> Duration {
        Duration::from_micros(x)
    }

    /// Runs until decided (at most `MAX_UNDECIDED_RUNS + 2`): each step `k` takes `all[k]` µs
    /// when it may split, `one[k]` when not; a run's time is its steps' sum. Returns each run's
    /// most threads per step.
    fn drive(c: &ThreadChoice, all: &[u64], one: &[u64]) -> Vec<usize> {
        (0..MAX_UNDECIDED_RUNS + 2)
            .map(|_| {
                let t = c.next(true);
                let steps: Vec<Duration> =
                    (0..all.len()).map(|k| us(if t.plan.limit(k) > 1 { all[k] } else { one[k] })).collect();
                c.record(&t, steps.iter().sum(), steps);
                t.plan.most()
            })
            .collect()
    }

    #[test]
    fn warm_up_then_alternate_then_keep_the_faster() {
        let c = ThreadChoice::new(4, true);
        assert_eq!(c.chosen(), None);
        // Every step slower split: one thread, decided after the warm-up and 2·SAMPLES runs.
        let used = drive(&c, &[10, 12], &[8, 9]);
        assert_eq!(&used[..1 + 2 * SAMPLES], &[4, 4, 1, 4, 1, 4, 1]);
        assert_eq!(c.chosen(), Some(1));
        assert!(used[1 + 2 * SAMPLES..].iter().all(|&n| n == 1), "{used:?}");
        // Every step twice as fast split: all threads.
        let c = ThreadChoice::new(4, true);
        drive(&c, &[5, 5], &[10, 10]);
        assert_eq!(c.chosen(), Some(4));
        assert_eq!(c.next(true).plan, Plan::Uniform(4));
    }

    #[test]
    fn steps_that_gain_split_and_the_rest_do_not() {
        // Step 0 gains from splitting, step 1 loses: the mixed plan [2, 1] is tried and kept
        // (5 + 3 µs against 10 + 3 at one thread and 5 + 9 at two).
        let c = ThreadChoice::new(2, true);
        let used = drive(&c, &[5, 9], &[10, 3]);
        assert_eq!(c.next(true).plan, Plan::PerStep(vec![2, 1].into()));
        assert_eq!(c.chosen(), Some(2));
        assert_eq!(used.len(), MAX_UNDECIDED_RUNS + 2);
    }

    #[test]
    fn a_failed_run_leaves_its_sample_to_a_later_run() {
        let c = ThreadChoice::new(2, true);
        // The warm-up, then the first one-thread sample fails (nothing recorded).
        for r in 0..1 + 2 * SAMPLES {
            let t = c.next(true);
            if r != 2 {
                c.record(&t, us(if t.plan.most() == 1 { 10 } else { 5 }), vec![us(1)]);
            }
        }
        assert_eq!(c.chosen(), None, "one sample short");
        let t = c.next(true);
        assert_eq!(t.plan, Plan::Uniform(1), "the missing one-thread sample");
        c.record(&t, us(10), vec![us(1)]);
        assert_eq!(c.chosen(), Some(2));
    }

    #[test]
    fn a_tie_within_the_margin_goes_to_one_thread() {
        let c = ThreadChoice::new(2, true);
        // 9.9 µs against 10 µs: 1% faster, inside the 2% margin.
        for _ in 0..MAX_UNDECIDED_RUNS {
            let t = c.next(true);
            let took = if t.plan.most() == 1 { us(10_000) } else { us(9_900) };
            c.record(&t, took, vec![took]);
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
            let took = if t.plan.most() == 1 {
                us(10_000)
            } else {
                all_runs += 1;
                if all_runs == 2 { us(100_000) } else { us(6_000) }
            };
            c.record(&t, took, vec![took]);
        }
        assert_eq!(c.chosen(), Some(2));
    }

    #[test]
    fn fixed_counts_and_untimed_runs_do_not_measure() {
        let fixed = ThreadChoice::new(3, false);
        assert_eq!(fixed.chosen(), Some(3));
        assert!(drive(&fixed, &[1], &[10]).iter().all(|&n| n == 3));
        assert!(!fixed.next(true).timed());
        let single = ThreadChoice::new(1, true);
        assert_eq!(single.chosen(), Some(1));
        // Untimed runs (profiling) use all threads and do not count towards the samples.
        let c = ThreadChoice::new(2, true);
        for _ in 0..20 {
            assert_eq!(c.next(false), Ticket { plan: Plan::Uniform(2), arm: None });
        }
        assert_eq!(c.chosen(), None);
        assert_eq!(&drive(&c, &[1], &[1])[..3], &[2, 2, 1]);
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
