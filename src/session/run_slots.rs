//! A bound on the runs one session has in flight on its pool.
//!
//! A rayon worker that waits inside a run (for the other half of a split product) executes
//! whatever job is queued meanwhile, including another caller's whole run, nested on its own
//! stack; that one can nest a third, and so on. With many callers and no bound, a worker's
//! stack overflows (seen with 16 callers on a busy 2-core machine). Runs beyond the bound
//! wait for a slot before they enter the pool, which is busy with the others anyway, and the
//! workers' stacks are sized for the bound (see `stack_bytes`).

use std::sync::{Condvar, Mutex, PoisonError};

/// Stack a run may need on a worker, with a wide margin: measured, a MiniLM run overflows
/// 128 KiB and fits in 256 KiB.
const STACK_PER_RUN: usize = 1 << 20;
/// Never less than a thread's usual stack.
const MIN_STACK: usize = 8 << 20;

/// A counting semaphore of run slots.
#[derive(Debug)]
pub(super) struct RunSlots {
    free: Mutex<usize>,
    freed: Condvar,
    total: usize,
}

/// A held slot; dropping it frees the slot.
pub(super) struct Slot<'a>(&'a RunSlots);

impl RunSlots {
    /// Slots for a pool of `threads`: two runs per thread keep every worker fed.
    pub fn for_threads(threads: usize) -> Self {
        let total = 2 * threads.max(1);
        RunSlots {
            free: Mutex::new(total),
            freed: Condvar::new(),
            total,
        }
    }

    /// Stack size for the pool's workers: room for every slot's run nested on one stack.
    pub fn stack_bytes(&self) -> usize {
        (self.total * STACK_PER_RUN).max(MIN_STACK)
    }

    /// Waits for a free slot. A poisoned lock (a panic elsewhere while counting, which
    /// cannot happen between the lock and the unlock here) is used as is.
    pub fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn no_more_than_the_slots_are_held_at_once() {
        let slots = Arc::new(RunSlots::for_threads(2));
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _slot = slots.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 4);
        assert_eq!(*slots.free.lock().unwrap(), 4, "every slot came back");
    }
}
