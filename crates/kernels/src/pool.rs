//! Parallel loops whose helper threads spin between loops instead of sleeping.
//!
//! A decoding step runs ~120 short parallel loops (the projections of 30 layers, tens of
//! microseconds each) with serial work between them (norms, attention). Rayon's idle workers go
//! to sleep within tens of microseconds, so nearly every loop paid a futex wake-up of a
//! sleeping thread (on a VM, of a halted virtual CPU): `perf` put thread wake-ups and idle
//! spinning at ~17% of a decoding step. Here helper threads spin (`pause`) for
//! [`SPIN`] after their last loop, so the next one starts on them at once, and only then park.
//! A loop started while another runs (two callers at once) goes to rayon instead.
//!
//! Invariants: `for_each_task(n, f)` calls `f(i)` exactly once for each `i < n`, returns only
//! after every call has finished (so `f` may borrow the caller's stack), and re-raises a panic
//! of any call on the caller.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a helper spins for the next loop before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// One parallel loop, on its caller's stack while it runs.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    /// The first panic of a task, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Runs tasks until none is left; a task's panic is kept, not propagated.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.tasks {
                return;
            }
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.f)(i))) {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
            }
        }
    }
}

struct Pool {
    /// The loop now running (type-erased `*const Job`), null when none.
    job: AtomicPtr<()>,
    /// Counts published loops: helpers spin on it (a new job may sit at the old one's address).
    epoch: AtomicUsize,
    /// Helpers that may be reading `job` or working on it: the caller waits for zero before
    /// its job leaves the stack.
    inside: AtomicUsize,
    /// Held by the caller of the running loop.
    busy: AtomicBool,
    /// Per helper: parked (or about to park) and wanting an unpark.
    parked: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

fn pool() -> Option<&'static Arc<Pool>> {
    static POOL: OnceLock<Option<Arc<Pool>>> = OnceLock::new();
    POOL.get_or_init(|| {
        // As many threads as rayon's pool has (RAYON_NUM_THREADS is respected), the caller one.
        let helpers = rayon::current_num_threads().saturating_sub(1);
        if helpers == 0 {
            return None;
        }
        let pool = Arc::new(Pool {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            parked: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
        });
        let mut threads = Vec::new();
        for h in 0..helpers {
            let p = Arc::clone(&pool);
            let spawned = std::thread::Builder::new().name(format!("cola-spin-{h}")).spawn(move || helper(&p, h));
            match spawned {
                Ok(t) => threads.push(t.thread().clone()),
                // No threads to be had: loops fall back to rayon (the pool stays busy forever).
                Err(_) => {
                    pool.busy.store(true, SeqCst);
                    break;
                }
            }
        }
        let _ = pool.threads.set(threads);
        Some(pool)
    })
    .as_ref()
}

fn helper(pool: &Pool, h: usize) {
    let mut seen = pool.epoch.load(SeqCst);
    let mut idle_since = Instant::now();
    let mut spins = 0u32;
    loop {
        let epoch = pool.epoch.load(SeqCst);
        if epoch != seen {
            seen = epoch;
            pool.inside.fetch_add(1, SeqCst);
            let job = pool.job.load(SeqCst) as *const Job<'_>;
            if !job.is_null() {
                // SAFETY: the caller keeps its job alive until `inside` is zero, and this helper
                // was counted before the pointer was read (both SeqCst, so the caller's clearing
                // of `job` and its reading of `inside` cannot both miss it).
                unsafe { (*job).work() };
            }
            pool.inside.fetch_sub(1, SeqCst);
            idle_since = Instant::now();
            continue;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) || idle_since.elapsed() < SPIN {
            continue;
        }
        // Park; a loop published after the flag is set finds it and unparks this thread.
        pool.parked[h].store(true, SeqCst);
        if pool.epoch.load(SeqCst) == seen {
            std::thread::park();
        }
        pool.parked[h].store(false, SeqCst);
        idle_since = Instant::now();
    }
}

/// Calls `f(i)` for each `i < tasks`, spread over the caller and the spinning helpers (see the
/// module header), and returns when all calls have finished. The first panic of a call is
/// re-raised here, with its own payload. One task, or a loop started while another runs, goes
/// to rayon.
pub fn for_each_task(tasks: usize, f: impl Fn(usize) + Sync) {
    use rayon::prelude::*;
    let pool = match pool() {
        Some(p) if tasks > 1 && p.busy.compare_exchange(false, true, SeqCst, SeqCst).is_ok() => p,
        _ => return (0..tasks).into_par_iter().for_each(&f),
    };
    let job = Job { f: &f, tasks, next: AtomicUsize::new(0), panic: Mutex::new(None) };
    pool.job.store(&job as *const Job<'_> as *mut (), SeqCst);
    pool.epoch.fetch_add(1, SeqCst);
    if let Some(threads) = pool.threads.get() {
        for (flag, t) in pool.parked.iter().zip(threads) {
            if flag.swap(false, SeqCst) {
                t.unpark();
            }
        }
    }
    // Tasks' panics are caught inside `work`, so nothing unwinds before the job is unpublished
    // and the helpers are out of it.
    job.work();
    pool.job.store(std::ptr::null_mut(), SeqCst);
    while pool.inside.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
    pool.busy.store(false, SeqCst);
    if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task runs exactly once, from one caller or several at once (those beside the
    /// running loop go to rayon), and the loop has finished when the call returns.
    #[test]
    fn every_task_runs_once() {
        use rayon::prelude::*;
        (0..8).into_par_iter().for_each(|round| {
            for tasks in [0, 1, 2, 3, 17, 1000] {
                let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                for_each_task(tasks, |i| {
                    if i % 7 == round % 7 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    counts[i].fetch_add(1, SeqCst);
                });
                assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "{tasks} tasks, round {round}");
            }
            // After the helpers have parked, a loop wakes them (or runs without them).
            std::thread::sleep(SPIN * 3);
        });
    }

    /// A panicking task's panic is re-raised on the caller (its own message) after the other
    /// tasks have finished, and the pool takes loops afterwards.
    #[test]
    fn a_panicking_task_panics_the_caller() {
        let done = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            for_each_task(64, |i| {
                if i == 5 {
                    panic!("task 5");
                }
                done.fetch_add(1, SeqCst);
            })
        }));
        let payload = caught.expect_err("the loop did not panic");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task 5"));
        assert_eq!(done.load(SeqCst), 63);
        let after = AtomicUsize::new(0);
        for_each_task(10, |_| {
            after.fetch_add(1, SeqCst);
        });
        assert_eq!(after.load(SeqCst), 10);
    }
}
