//! Memory for a KV pool on 2 MB pages, where the operating system grants them.
//!
//! A block table scatters a sequence's blocks over the whole pool. On the CPU every 4 KB page a walk
//! enters needs its translation, and the translation cache (the TLB) holds a few thousand of them:
//! about 8 MB of 4 KB pages, far less than a pool of tens of megabytes. A contiguous walk misses it
//! too, but its page-table entries sit side by side, so one cache line of them serves the next eight
//! pages; a shuffled table's next block is anywhere, and its entries are one more trip to memory. On
//! 2 MB pages the same cache covers gigabytes, and the table's scatter is left to the memory itself.
//!
//! [`HugePageBuf`] allocates a buffer aligned to 2 MB and, on Linux, asks for transparent huge pages
//! (`madvise(MADV_HUGEPAGE)` on an anonymous mapping of its own) before the first write touches it,
//! the way PyTorch does for its large CPU tensors when `THP_MEM_ALLOC_ENABLE=1` is set. The kernel may still refuse (huge pages disabled, or no
//! free 2 MB of physical memory): [`HugePageBuf::huge_fraction`] says how much it granted.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size this module asks for (x86-64 and arm64 Linux with 4 KB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// A buffer of `T` on memory of its own (an anonymous mapping on Linux), 2 MB aligned, advised onto huge
/// pages before it is first written.
pub struct HugePageBuf<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    span: Span,
}

// SAFETY: the buffer owns its elements as a `Vec<T>` would; `T: Copy` holds no references to share.
unsafe impl<T: Copy + Send> Send for HugePageBuf<T> {}
// SAFETY: shared access only reads through `&[T]`, as for a `Vec<T>`.
unsafe impl<T: Copy + Sync> Sync for HugePageBuf<T> {}

impl<T: Copy> HugePageBuf<T> {
    /// A copy of `src` on memory advised onto huge pages (a plain aligned allocation elsewhere).
    pub fn from_slice(src: &[T]) -> Self {
        assert!(std::mem::align_of::<T>() <= HUGE_PAGE);
        let bytes = std::mem::size_of_val(src)
            .max(1)
            .next_multiple_of(HUGE_PAGE);
        let span = Span::new(bytes);
        let ptr =
            NonNull::new(span.start.cast::<T>()).expect("a span starts at a non-null address");
        // SAFETY: the span is valid for `bytes >= src.len() * size_of::<T>()` bytes, 2 MB aligned (so
        // aligned for `T`), and new, so it does not overlap `src`. This first write is what faults the
        // pages in, after the advice.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), ptr.as_ptr(), src.len()) };
        Self {
            ptr,
            len: src.len(),
            span,
        }
    }

    /// The share of the buffer's 2 MB-rounded span that the kernel backs with huge pages (from
    /// `/proc/self/smaps`), or `None` where that cannot be read (not Linux, no procfs).
    pub fn huge_fraction(&self) -> Option<f64> {
        let start = self.span.start as usize;
        huge_bytes_in(start, start + self.span.bytes).map(|b| b as f64 / self.span.bytes as f64)
    }
}

impl<T: Copy> Deref for HugePageBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements were written by `from_slice` and live until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugePageBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugePageBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugePageBuf")
            .field("len", &self.len)
            .field("huge_fraction", &self.huge_fraction())
            .finish()
    }
}

/// `bytes` (a multiple of [`HUGE_PAGE`]) of fresh memory starting at a 2 MB boundary. On Linux an
/// anonymous mapping of its own, advised onto huge pages: no page of it was touched before the advice
/// (memory from the allocator may have been, with 4 KB pages), and the mapping is the advice's alone.
struct Span {
    start: *mut u8,
    bytes: usize,
    #[cfg(target_os = "linux")]
    mapped: (*mut u8, usize),
    #[cfg(not(target_os = "linux"))]
    layout: std::alloc::Layout,
}

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_long, c_void};
    // glibc's mmap(2), munmap(2) and madvise(2), with Linux's constants (the same on x86-64 and arm64).
    extern "C" {
        pub fn mmap(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            off: c_long,
        ) -> *mut c_void;
        pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
        pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    }
    pub const PROT_READ_WRITE: c_int = 0x1 | 0x2;
    pub const MAP_PRIVATE_ANONYMOUS: c_int = 0x02 | 0x20;
    pub const MADV_HUGEPAGE: c_int = 14;
}

impl Span {
    // ANCHOR: huge_span
    #[cfg(target_os = "linux")]
    fn new(bytes: usize) -> Self {
        // One huge page more than asked, so that a 2 MB boundary lies inside with `bytes` after it.
        let len = bytes + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            sys::mmap(
                std::ptr::null_mut(),
                len,
                sys::PROT_READ_WRITE,
                sys::MAP_PRIVATE_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw as isize == -1 {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(bytes, HUGE_PAGE).expect("valid layout"),
            );
        }
        let raw = raw.cast::<u8>();
        let start = raw.wrapping_add(raw.align_offset(HUGE_PAGE));
        // SAFETY: [start, start + bytes) lies inside the mapping. Advice changes no contents; a refusal
        // (THP compiled out) leaves ordinary pages, which `huge_fraction` reports.
        let _ = unsafe { sys::madvise(start.cast(), bytes, sys::MADV_HUGEPAGE) };
        Self {
            start,
            bytes,
            mapped: (raw, len),
        }
    }
    // ANCHOR_END: huge_span

    #[cfg(not(target_os = "linux"))]
    fn new(bytes: usize) -> Self {
        let layout =
            std::alloc::Layout::from_size_align(bytes, HUGE_PAGE).expect("a 2 MB-aligned layout");
        // SAFETY: the layout's size is at least one huge page, never zero.
        let start = unsafe { std::alloc::alloc(layout) };
        if start.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self {
            start,
            bytes,
            layout,
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        // SAFETY: the mapping (or allocation) made in `Span::new`, released once.
        #[cfg(target_os = "linux")]
        unsafe {
            sys::munmap(self.mapped.0.cast(), self.mapped.1);
        }
        #[cfg(not(target_os = "linux"))]
        unsafe {
            std::alloc::dealloc(self.start, self.layout)
        }
    }
}

/// Bytes of anonymous huge pages in the mappings that lie inside `[start, end)`, from
/// `/proc/self/smaps` (advice splits a mapping at the advised range, so the buffer's own mappings
/// lie inside it).
fn huge_bytes_in(start: usize, end: usize) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo >= start && hi <= end;
                continue;
            }
        }
        if let (true, Some(kb)) = (inside, line.strip_prefix("AnonHugePages:")) {
            total += kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()?
                * 1024;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_page_buffer_holds_its_copy_aligned() {
        let src: Vec<f32> = (0..3 * HUGE_PAGE / 4 + 7).map(|i| i as f32).collect();
        let mut buf = HugePageBuf::from_slice(&src);
        assert_eq!(&buf[..], &src[..]);
        assert_eq!(buf.as_ptr() as usize % HUGE_PAGE, 0);
        buf[5] = -1.0;
        assert_eq!(buf[5], -1.0);
        let f = buf.huge_fraction();
        if cfg!(target_os = "linux") {
            let f = f.expect("procfs readable on Linux");
            assert!((0.0..=1.0).contains(&f), "fraction {f}");
        }
        let empty = HugePageBuf::<u16>::from_slice(&[]);
        assert!(empty.is_empty());
    }
}
