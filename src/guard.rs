//! Panics inside third-party readers (dicom-rs on hostile files) become errors, quietly.
//!
//! `guarded` catches a panic of the code it runs; `install_panic_hook` (called once by the
//! binary, and by the fuzz targets) keeps the panic hook from printing such a caught panic, so
//! a damaged file still gives one error line. Any other panic reaches the previous hook as before.

use std::cell::Cell;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook so that it stays silent for panics inside `guarded`.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(Cell::get) {
            previous(info);
        }
    }));
}

/// Runs `f`; a panic inside it gives `None` instead of unwinding further.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_an_error_and_the_flag_is_restored() {
        assert_eq!(guarded(|| 7), Some(7));
        let r: Option<()> = guarded(|| panic!("a reader bug"));
        assert_eq!(r, None);
        assert!(!GUARDED.with(Cell::get));
        let nested = guarded(|| {
            let inner: Option<()> = guarded(|| panic!("inner"));
            (inner, GUARDED.with(Cell::get))
        });
        assert_eq!(nested, Some((None, true)));
    }
}
