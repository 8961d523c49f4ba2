//! Shared-memory helpers: one way to take a mutex (or a read-write lock) that a panic elsewhere
//! may have poisoned, and one way to cut work into pieces, do them on threads and gather them
//! in order.
//!
//! Every lock in this crate guards data that is consistent between statements (no code panics
//! half-way through an update while holding one), so a poisoned lock still holds usable data:
//! taking it anyway keeps one panicked task from taking the daemon or the emulator down with it.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Takes `mutex`, poisoned or not.
pub fn guard<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for reading, poisoned or not.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for writing, poisoned or not.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// How many threads `work` units call for at `per_thread` units each: at most one a core, and
/// at least one.
pub fn threads_for(work: usize, per_thread: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work / per_thread.max(1))
        .max(1)
}

/// Cuts items of the given `weights` (in order) into at most `parts` contiguous runs of about
/// equal weight, each ending where the runs so far hold their share; one run (perhaps empty)
/// at least.
pub fn runs_by_weight(weights: &[usize], parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, weights.len().max(1));
    let total: usize = weights.iter().sum();
    let mut runs = Vec::with_capacity(parts);
    let (mut start, mut sum) = (0, 0);
    for (i, w) in weights.iter().enumerate() {
        sum += w;
        if runs.len() + 1 < parts && sum * parts >= total * (runs.len() + 1) {
            runs.push(start..i + 1);
            start = i + 1;
        }
    }
    runs.push(start..weights.len());
    runs
}

/// `work` done on every piece: the first on this thread, each other on a thread of its own (or
/// on this one, after the first, when no thread can be had); the results in the pieces' order.
/// A panic in any piece's work is this thread's.
pub fn in_order<P, R, F>(pieces: Vec<P>, name: &str, work: F) -> Vec<R>
where
    P: Copy + Send,
    R: Send,
    F: Fn(P) -> R + Sync,
{
    let mut pieces = pieces.into_iter();
    let Some(first) = pieces.next() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = pieces
            .map(|piece| {
                std::thread::Builder::new()
                    .name(name.to_owned())
                    .spawn_scoped(scope, move || work(piece))
                    .map_err(|_| piece)
            })
            .collect();
        let mut results = Vec::with_capacity(others.len() + 1);
        results.push(work(first));
        for other in others {
            results.push(match other {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(piece) => work(piece),
            });
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn pieces_done_on_threads_come_back_in_their_order() {
        let pieces: Vec<usize> = (0..20).collect();
        let done = super::in_order(pieces, "test", |i| {
            // Later pieces finish first.
            std::thread::sleep(std::time::Duration::from_millis(20 - i as u64));
            (i, std::thread::current().name().map(str::to_owned))
        });
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        // The first on this thread, the others on their own.
        assert_ne!(done[0].1.as_deref(), Some("test"));
        assert!(done[1..].iter().all(|d| d.1.as_deref() == Some("test")));
        assert!(super::in_order(Vec::<u8>::new(), "test", |i| i).is_empty());
    }

    #[test]
    fn a_panic_in_a_piece_is_the_callers() {
        let caught = std::panic::catch_unwind(|| {
            super::in_order(vec![0, 1, 2], "test", |i| assert!(i != 2, "piece two"))
        });
        assert!(caught.is_err());
    }

    #[test]
    fn a_poisoned_mutex_is_still_taken() {
        let m = Arc::new(Mutex::new(1));
        let poisoner = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let _held = poisoner.lock();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *super::guard(&m) += 1;
        assert_eq!(*super::guard(&m), 2);
    }
}
