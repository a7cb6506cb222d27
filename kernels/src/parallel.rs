//! Where parallel loops run: on the current rayon pool, or inline on the calling thread.
//!
//! A session of one thread runs on its caller's thread, as onnxruntime does, rather than on a
//! one-thread pool: handing each run to a pool worker and waking the caller when it ends cost
//! ~60 µs a run on the 2-core VM (an idle virtual CPU is slow to wake), 7 % of a 64-row MLP.
//! But a rayon loop started outside any pool goes to rayon's global pool, so every parallel
//! loop of the kernels and operators goes through this module: inside [`Inline::enter`] it
//! runs serially on the current thread (driving the rayon iterator's producer directly, so it
//! never touches a pool), elsewhere it is the rayon call it wraps. `clippy.toml` disallows
//! the wrapped rayon methods everywhere else, so a new loop cannot bypass it.
#![allow(clippy::disallowed_methods)] // The one place that calls rayon's loops.

use rayon::iter::plumbing::{Producer, ProducerCallback};
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// While alive, this thread's parallel loops run inline (see the module docs). Restores the
/// previous mode when dropped, so scopes nest.
#[must_use = "the mode holds only while the guard lives"]
pub struct Inline {
    previous: bool,
}

impl Inline {
    pub fn enter() -> Inline {
        Inline {
            previous: INLINE.with(|c| c.replace(true)),
        }
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        INLINE.with(|c| c.set(self.previous));
    }
}

fn inline() -> bool {
    INLINE.with(Cell::get)
}

/// Threads a loop started here can use: 1 inline, else the current pool's.
pub fn threads() -> usize {
    if inline() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// `iter.for_each(op)`.
pub fn for_each<I, F>(iter: I, op: F)
where
    I: IndexedParallelIterator,
    F: Fn(I::Item) + Sync + Send,
{
    struct Serial<F>(F);
    impl<T, F: Fn(T)> ProducerCallback<T> for Serial<F> {
        type Output = ();
        fn callback<P: Producer<Item = T>>(self, producer: P) {
            producer.into_iter().for_each(self.0)
        }
    }
    if inline() {
        iter.with_producer(Serial(op))
    } else {
        iter.for_each(op)
    }
}

/// `iter.try_for_each(op)`: stops at the first error (inline, the first in order).
pub fn try_for_each<I, F, E>(iter: I, op: F) -> Result<(), E>
where
    I: IndexedParallelIterator,
    F: Fn(I::Item) -> Result<(), E> + Sync + Send,
    E: Send,
{
    struct Serial<F>(F);
    impl<T, E, F: Fn(T) -> Result<(), E>> ProducerCallback<T> for Serial<F> {
        type Output = Result<(), E>;
        fn callback<P: Producer<Item = T>>(self, producer: P) -> Result<(), E> {
            producer.into_iter().try_for_each(self.0)
        }
    }
    if inline() {
        iter.with_producer(Serial(op))
    } else {
        iter.try_for_each(op)
    }
}

/// `iter.for_each_init(init, op)`: inline, one `init()` serves the whole loop.
pub fn for_each_init<I, S, INIT, F>(iter: I, init: INIT, op: F)
where
    I: IndexedParallelIterator,
    INIT: Fn() -> S + Sync + Send,
    F: Fn(&mut S, I::Item) + Sync + Send,
{
    struct Serial<INIT, F>(INIT, F);
    impl<T, S, INIT: Fn() -> S, F: Fn(&mut S, T)> ProducerCallback<T> for Serial<INIT, F> {
        type Output = ();
        fn callback<P: Producer<Item = T>>(self, producer: P) {
            let mut state = (self.0)();
            producer
                .into_iter()
                .for_each(|item| (self.1)(&mut state, item))
        }
    }
    if inline() {
        iter.with_producer(Serial(init, op))
    } else {
        iter.for_each_init(init, op)
    }
}

/// `iter.collect::<Vec<_>>()`, in order.
pub fn collect_vec<I: IndexedParallelIterator>(iter: I) -> Vec<I::Item> {
    struct Serial;
    impl<T> ProducerCallback<T> for Serial {
        type Output = Vec<T>;
        fn callback<P: Producer<Item = T>>(self, producer: P) -> Vec<T> {
            producer.into_iter().collect()
        }
    }
    if inline() {
        iter.with_producer(Serial)
    } else {
        iter.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    /// The thread that ran each item of a loop over `n` items, with its index in a rayon pool.
    fn loop_threads(n: usize) -> Vec<(ThreadId, Option<usize>)> {
        let seen = Mutex::new(Vec::new());
        for_each((0..n).into_par_iter(), |_| {
            let here = (std::thread::current().id(), rayon::current_thread_index());
            seen.lock().unwrap().push(here);
        });
        seen.into_inner().unwrap()
    }

    #[test]
    fn inline_loops_run_in_order_on_the_calling_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let me = std::thread::current().id();
        {
            let _inline = Inline::enter();
            assert_eq!(threads(), 1);
            assert!(loop_threads(64).iter().all(|&t| t == (me, None)));
            let mut out = vec![0usize; 10];
            for_each(out.par_chunks_mut(3).enumerate(), |(i, c)| c.fill(i));
            assert_eq!(out, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
            let squares = collect_vec((0..5usize).into_par_iter().map(|i| i * i));
            assert_eq!(squares, [0, 1, 4, 9, 16]);
            let first = try_for_each((0..10).into_par_iter(), |i| match i {
                3 | 7 => Err(i),
                _ => Ok(()),
            });
            assert_eq!(first, Err(3));
            let inits = std::sync::atomic::AtomicUsize::new(0);
            let total = std::sync::atomic::AtomicUsize::new(0);
            for_each_init(
                (0..100usize).into_par_iter(),
                || inits.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                |_, i| {
                    total.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
                },
            );
            assert_eq!(inits.into_inner(), 1);
            assert_eq!(total.into_inner(), 4950);
            {
                let _again = Inline::enter();
            }
            // Leaving a nested scope keeps the outer one.
            assert_eq!(threads(), 1);
        }
        // Outside the scope, loops go to the pool again.
        pool.install(|| {
            assert_eq!(threads(), 2);
            assert!(loop_threads(64).iter().all(|&(_, index)| index.is_some()));
        });
    }
}
