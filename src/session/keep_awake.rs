//! Keeps a session's idle rayon workers spinning between the steps of a run.
//!
//! A rayon worker that finds no work yields a few dozen times (~30–50 µs) and then sleeps on a
//! futex; the next parallel step must wake it, which costs ~35–40 µs on the 2-core VM this
//! was measured on (a `join` of two 20 µs halves after a 50 µs serial gap took 53–63 µs
//! instead of 21). A CNN runs dozens of parallel steps separated by short serial ones (a
//! Concat, a pooling, a step's own setup), so without this a second thread mostly arrives
//! late (on a 16-core VM, runs without keepers were ~10 % slower at 2 and 16 threads;
//! BENCHMARKS.md). onnxruntime's pool spins between ops for the same reason.
//!
//! Rayon has no setting for how long workers spin, so while a run is in progress the session
//! broadcasts a *keeper* job to its other workers: it polls the pool with `rayon::yield_now`,
//! which runs any job that appears (so the worker picks up the next step's tasks at once),
//! and ends after [`IDLE_LIMIT_US`] without work. A keeper never blocks on anything, so it
//! cannot deadlock a worker that waits inside a `join`; the worst it does is hold that worker
//! in its poll loop for at most the idle limit. The thread that runs the steps (which spawned
//! the broadcast) skips its own copy.

use infer_kernels::parallel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A keeper ends after this long without finding a job: long enough to bridge the serial
/// steps between parallel ones, short enough not to burn a core after a run.
const IDLE_LIMIT_US: u64 = 300;
/// A keeper that has not polled for this long is taken as gone (ended, or busy in a long job).
const STALE_US: u64 = 100;
/// At most one broadcast per this interval, so that a burst of short steps queues no pile of
/// keepers behind a busy worker.
const RESPAWN_US: u64 = 200;
/// Idle polls between OS yields: a spinning keeper gives its core away now and then, in case
/// another process (or another session) has runnable threads.
const POLLS_PER_OS_YIELD: u32 = 64;

/// One session's keeper state, shared with the keeper jobs.
#[derive(Debug)]
pub(crate) struct Keeper {
    epoch: Instant,
    /// When some keeper last polled (µs since `epoch`).
    beat: AtomicU64,
    /// When keepers were last broadcast (µs since `epoch`).
    spawned: AtomicU64,
}

impl Keeper {
    pub(crate) fn new() -> Arc<Keeper> {
        Arc::new(Keeper {
            epoch: Instant::now(),
            beat: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Called before each step of a run, on a worker of the session's pool: starts keepers on
    /// the other workers unless some are already polling (or were just started).
    pub(crate) fn poke(self: &Arc<Self>) {
        if parallel::threads() < 2 {
            return;
        }
        let now = self.now_us();
        let since = |at: &AtomicU64| now.saturating_sub(at.load(Ordering::Relaxed));
        if since(&self.beat) <= STALE_US || since(&self.spawned) <= RESPAWN_US {
            return;
        }
        self.spawned.store(now, Ordering::Relaxed);
        let spawner = rayon::current_thread_index();
        let keeper = Arc::clone(self);
        rayon::spawn_broadcast(move |_| keeper.keep(spawner));
    }

    /// The keeper job's body (see the module docs).
    fn keep(&self, spawner: Option<usize>) {
        if rayon::current_thread_index() == spawner {
            return;
        }
        let mut last_work = self.now_us();
        let mut idle_polls = 0u32;
        loop {
            let now = self.now_us();
            self.beat.store(now, Ordering::Relaxed);
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => last_work = self.now_us(),
                Some(rayon::Yield::Idle) => {
                    if now.saturating_sub(last_work) > IDLE_LIMIT_US {
                        return;
                    }
                    idle_polls = idle_polls.wrapping_add(1);
                    if idle_polls.is_multiple_of(POLLS_PER_OS_YIELD) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // A pool's loop, as the kernels' inside a run.
    fn keepers_run_the_steps_jobs_and_stop_when_idle() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let keeper = Keeper::new();
        // Two "runs" at once from outside the pool, as two callers of one session.
        let sums: Vec<u64> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2u64)
                .map(|r| {
                    let (pool, keeper) = (&pool, &keeper);
                    s.spawn(move || {
                        pool.install(|| {
                            let mut total = 0u64;
                            for step in 0..300u64 {
                                keeper.poke();
                                // A serial gap, then a parallel step.
                                std::thread::sleep(Duration::from_micros(step % 3 * 50));
                                total += (0..256u64)
                                    .into_par_iter()
                                    .map(|x| x * step + r)
                                    .sum::<u64>();
                            }
                            total
                        })
                    })
                })
                .collect();
            runs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want = |r: u64| -> u64 {
            (0..300u64)
                .map(|step| (0..256u64).map(|x| x * step + r).sum::<u64>())
                .sum()
        };
        assert_eq!(sums, vec![want(0), want(1)]);
        // Past the idle limit every keeper returns: the heartbeat stops moving. On a busy
        // machine a keeper may be descheduled for a while before it sees that, so the beat
        // has to hold still over one 30 ms window within two seconds, not the first one.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let beat = keeper.beat.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(30));
            if keeper.beat.load(Ordering::Relaxed) == beat {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the keepers still beat two seconds after the last run"
            );
        }
    }
}
