//! A persistent worker pool. Work is split statically (chunk i of n always covers the same rows),
//! so results never depend on which thread ran what: they are deterministic for a thread count.
//! The calling thread runs chunk 0 itself and then waits for the others.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

pub struct Pool {
    queue: Arc<Queue>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

/// Counts finished chunks; records whether any panicked.
struct Latch {
    state: Mutex<(usize, bool)>,
    done: Condvar,
}

impl Pool {
    /// A pool that runs work on `threads` threads in total: the caller plus `threads − 1` workers.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let queue = Arc::new(Queue { jobs: Mutex::new((VecDeque::new(), false)), ready: Condvar::new() });
        let workers = (1..threads)
            .map(|i| {
                let q = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("kiln-worker-{i}"))
                    .spawn(move || worker(&q))
                    .expect("spawning a kiln worker thread")
            })
            .collect();
        Pool { queue, workers, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..n)` with chunk 0 on the calling thread; returns once every chunk has finished.
    /// Returns false if any chunk panicked.
    pub fn run(&self, n: usize, f: Arc<dyn Fn(usize) + Send + Sync>) -> bool {
        if n == 0 {
            return true;
        }
        let latch = Arc::new(Latch { state: Mutex::new((n - 1, false)), done: Condvar::new() });
        if n > 1 {
            let mut q = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for i in 1..n {
                let f = Arc::clone(&f);
                let latch = Arc::clone(&latch);
                q.0.push_back(Box::new(move || {
                    let ok = catch_unwind(AssertUnwindSafe(|| f(i))).is_ok();
                    let mut s = latch.state.lock().unwrap_or_else(|p| p.into_inner());
                    s.0 -= 1;
                    s.1 |= !ok;
                    latch.done.notify_all();
                }));
            }
            drop(q);
            self.queue.ready.notify_all();
        }
        let ok0 = catch_unwind(AssertUnwindSafe(|| f(0))).is_ok();
        let mut s = latch.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 > 0 {
            s = latch.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        ok0 && !s.1
    }
}

fn worker(q: &Queue) {
    loop {
        let job = {
            let mut g = q.jobs.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(j) = g.0.pop_front() {
                    break j;
                }
                if g.1 {
                    return;
                }
                g = q.ready.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        };
        job();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.queue.ready.notify_all();
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

    #[test]
    fn every_chunk_runs_once() {
        let pool = Pool::new(3);
        let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..10).map(|_| AtomicUsize::new(0)).collect());
        let h = Arc::clone(&hits);
        assert!(pool.run(
            10,
            Arc::new(move |i| {
                h[i].fetch_add(1, Ordering::SeqCst);
            })
        ));
        assert!(hits.iter().all(|c| c.load(Ordering::SeqCst) == 1));
        assert!(!pool.run(2, Arc::new(|i| assert!(i == 0, "chunk {i} fails on purpose"))));
        assert_eq!(chunk(10, 3, 0), (0, 3));
        assert_eq!(chunk(10, 3, 2), (6, 10));
    }
}
