//! Shared-memory helpers: one way to take a mutex (or a read-write lock) that a panic elsewhere
//! may have poisoned.
//!
//! Every lock in this crate guards data that is consistent between statements (no code panics
//! half-way through an update while holding one), so a poisoned lock still holds usable data:
//! taking it anyway keeps one panicked task from taking the daemon or the emulator down with it.

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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

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
