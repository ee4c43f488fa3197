//! Software prefetch: a hint that memory will be read soon, so that a loop
//! over many scattered records (a session close releasing 100k refs, issue
//! 6) has several cache misses in flight at once instead of one at a time.
//!
//! A prefetch changes nothing observable: it never faults, never writes, and
//! the machine's decisions do not depend on it (DESIGN principle 1). On
//! targets without a stable prefetch instruction it does nothing.

/// The size of a cache line on the targets this runs on.
pub(crate) const LINE: usize = 64;

/// Asks the CPU to bring the cache line holding `p` into its caches.
#[inline(always)]
pub(crate) fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint. It reads no value into the program,
    // writes nothing, and never faults, whatever the address (null, freed
    // or unmapped included), so no pointer validity is needed.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `*value` (at most `max_lines` of them):
/// for records longer than one line that a loop is about to read whole.
#[inline(always)]
pub(crate) fn lines<T>(value: &T, max_lines: usize) {
    let start = (value as *const T).cast::<u8>();
    let n = spanned(start as usize, std::mem::size_of::<T>()).min(max_lines);
    for k in 0..n {
        line(start.wrapping_add(k * LINE));
    }
}

/// How many cache lines `len` bytes from `addr` overlap (at least one).
fn spanned(addr: usize, len: usize) -> usize {
    let first = addr / LINE;
    let last = (addr + len.max(1) - 1) / LINE;
    last - first + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefetch is only a hint: any address, even one that must not be
    /// read, is accepted, and memory is left as it was.
    #[test]
    fn prefetch_never_faults_nor_changes_memory() {
        let data = Box::new([7u64; 64]);
        line(data.as_ptr());
        lines(&*data, 4);
        line(std::ptr::null::<u8>());
        line(usize::MAX as *const u8);
        let freed = {
            let b = Box::new(1u8);
            &*b as *const u8
        };
        line(freed);
        assert!(data.iter().all(|&x| x == 7));
    }

    /// A record is prefetched line by line, including a partial last line.
    #[test]
    fn a_record_spans_the_lines_it_overlaps() {
        assert_eq!(spanned(0, 0), 1);
        assert_eq!(spanned(0, 64), 1);
        assert_eq!(spanned(0, 65), 2);
        assert_eq!(spanned(63, 2), 2);
        assert_eq!(spanned(64, 496), 8);
        assert_eq!(spanned(100, 496), 9);
    }
}
