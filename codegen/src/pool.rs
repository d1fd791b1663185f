//! A persistent worker pool. Work is split statically (chunk i of n always covers the same rows),
//! so results never depend on which thread ran what: they are deterministic for a chunk count.
//!
//! Chunks are *claimed* from a shared counter, by the caller as well as the workers: the caller
//! never waits for a worker that has not woken up yet (on a loaded machine the wake-up of a parked
//! worker took longer than many steps' whole work, which made small models slower at 2 threads
//! than at 1); it waits only for chunks a worker has already started. Workers spin for a short
//! budget before parking, so the next step's chunks find them awake.
//!
//! The pool runs one job at a time. A run that finds it busy (another run of the same model, or
//! another model sharing the pool) runs all its chunks on its own thread instead of queueing, so
//! concurrent runs never serialise behind one another.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking. Measured (docs/benchmarks.md, "Threads and
/// run_into"): steps of the zoo models are 1–100 µs apart, and a parked worker took 30–100 µs to
/// wake on a loaded 2-core machine; 200 µs keeps workers awake across a model's steps without
/// burning a core for long once runs stop.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

type Task = Arc<dyn Fn(usize) + Send + Sync>;

/// One `run`: its chunks, the next one to claim and how many have finished.
struct Job {
    f: Task,
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Claims and runs chunks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            // Release: the chunk's writes are visible to the caller once it sees the count.
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Shared {
    /// The job being run, if any.
    job: Mutex<Option<Arc<Job>>>,
    /// Bumped each time a job is published; workers watch it.
    epoch: AtomicU64,
    /// Held by the run that owns the pool.
    busy: AtomicBool,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    spin: Duration,
}

/// A pool of `threads − 1` worker threads plus the caller; shareable between compiled models
/// (`Arc<Pool>`).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).field("spin", &self.shared.spin).finish()
    }
}

impl Pool {
    /// A pool that runs work on `threads` threads in total: the caller plus `threads − 1` workers.
    pub fn new(threads: usize) -> Pool {
        Pool::with_spin(threads, DEFAULT_SPIN)
    }

    /// [`Pool::new`] with idle workers spinning for `spin` before they park.
    pub fn with_spin(threads: usize, spin: Duration) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            epoch: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            spin,
        });
        let workers = (1..threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a kiln worker thread")
            })
            .collect();
        Pool { shared, workers, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..n)`, the calling thread taking part; returns once every chunk has finished.
    /// Returns false if any chunk panicked.
    pub fn run(&self, n: usize, f: Arc<dyn Fn(usize) + Send + Sync>) -> bool {
        let s = &*self.shared;
        if n <= 1
            || self.threads == 1
            || s.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            // Nothing to share, or the pool serves another run: every chunk on this thread.
            // Every chunk runs even after one panics, as on the pool.
            let mut ok = true;
            for i in 0..n {
                ok &= catch_unwind(AssertUnwindSafe(|| f(i))).is_ok();
            }
            return ok;
        }
        let job = Arc::new(Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&job));
        s.epoch.fetch_add(1, Ordering::SeqCst);
        // SeqCst pairs with the worker's (sleepers += 1; read epoch): either it sees the new epoch
        // or we see it asleep and wake it.
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.park.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        job.work();
        // Only chunks that a worker has started are left: spin, then yield (the worker may share
        // this core with us on a loaded machine).
        let start = Instant::now();
        let mut spins = 0u32;
        while job.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins < 1 << 10 || start.elapsed() < s.spin {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
        s.busy.store(false, Ordering::Release);
        !job.panicked.load(Ordering::Relaxed)
    }
}

fn worker(s: &Shared) {
    let mut seen = s.epoch.load(Ordering::Acquire);
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a spin: look at it every 64 spins.
            if spins.is_multiple_of(64) && start.elapsed() >= s.spin {
                let mut g = s.park.lock().unwrap_or_else(|p| p.into_inner());
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        let job = s.job.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(job) = job {
            job.work();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.park.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Rows `[lo, hi)` of chunk `i` when `rows` are split into `n` near-equal contiguous chunks.
pub fn chunk(rows: usize, n: usize, i: usize) -> (usize, usize) {
    (rows * i / n, rows * (i + 1) / n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counted(pool: &Pool, n: usize) -> Vec<usize> {
        let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let h = Arc::clone(&hits);
        assert!(pool.run(
            n,
            Arc::new(move |i| {
                h[i].fetch_add(1, Ordering::SeqCst);
            })
        ));
        hits.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    #[test]
    fn every_chunk_runs_once() {
        let pool = Pool::new(3);
        assert!(counted(&pool, 10).iter().all(|&c| c == 1));
        assert!(!pool.run(2, Arc::new(|i| assert!(i == 0, "chunk {i} fails on purpose"))));
        // The pool still works after a panic.
        assert!(counted(&pool, 5).iter().all(|&c| c == 1));
        assert_eq!(chunk(10, 3, 0), (0, 3));
        assert_eq!(chunk(10, 3, 2), (6, 10));
    }

    #[test]
    fn parked_workers_wake_up() {
        // No spin: every job finds the worker parked (the wake-up path).
        let pool = Pool::with_spin(2, Duration::ZERO);
        for _ in 0..200 {
            assert!(counted(&pool, 4).iter().all(|&c| c == 1));
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(counted(&pool, 4).iter().all(|&c| c == 1));
    }

    #[test]
    fn concurrent_runs_share_one_pool() {
        let pool = Arc::new(Pool::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        assert!(counted(&pool, 7).iter().all(|&c| c == 1));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
