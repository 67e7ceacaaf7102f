//! Buffers shared with the host (docs/guest-abi.md, "Memory framing"): each allocation carries a 4-byte little-endian
//! header holding its total size (payload + 4), and the pointer handed out is the byte after it.
//! Whoever receives a pointer frees it.

use std::alloc::{alloc, dealloc, Layout};

const HEADER: usize = 4;
const ALIGN: usize = 4;

/// Reserves `len` payload bytes; null when the request cannot be satisfied.
pub fn allocate(len: usize) -> *mut u8 {
    let Some(total) = len.checked_add(HEADER) else {
        return std::ptr::null_mut();
    };
    let Ok(total32) = u32::try_from(total) else {
        return std::ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(total, ALIGN) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout is non-zero-sized (it always includes the header).
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `base` points to at least HEADER writable bytes, aligned to 4.
    unsafe {
        (base as *mut [u8; HEADER]).write(total32.to_le_bytes());
        base.add(HEADER)
    }
}

/// Total size recorded in the header in front of `data`.
///
/// # Safety
/// `data` must come from [`allocate`] and not have been freed.
unsafe fn total_size(data: *const u8) -> usize {
    let header = (data.sub(HEADER) as *const [u8; HEADER]).read();
    u32::from_le_bytes(header) as usize
}

/// Frees a buffer from [`allocate`]; null is a no-op.
///
/// # Safety
/// `data` must be null or come from [`allocate`] and not have been freed.
pub unsafe fn release(data: *mut u8) {
    if data.is_null() {
        return;
    }
    let total = total_size(data).max(HEADER);
    if let Ok(layout) = Layout::from_size_align(total, ALIGN) {
        dealloc(data.sub(HEADER), layout);
    }
}

/// Reads the payload of a buffer, then frees it (the receiver consumes what it is given).
/// A null pointer reads as empty, which the ABI defines as "the default message".
///
/// # Safety
/// `data` must be null or come from [`allocate`] and not have been freed.
pub unsafe fn take(data: *mut u8) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    let len = total_size(data).saturating_sub(HEADER);
    let bytes = std::slice::from_raw_parts(data, len).to_vec();
    release(data);
    bytes
}

/// Copies `bytes` into a fresh buffer for the other side to consume; null on exhaustion.
pub fn give(bytes: &[u8]) -> *mut u8 {
    let data = allocate(bytes.len());
    if !data.is_null() {
        // SAFETY: `data` has room for `bytes.len()` bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_counts_itself_and_round_trips() {
        let p = give(b"hello");
        assert!(!p.is_null());
        // SAFETY: p is a live buffer from `give`.
        unsafe {
            assert_eq!(total_size(p), 9);
            assert_eq!(take(p), b"hello");
        }
    }

    #[test]
    fn empty_buffers_and_null_are_legal() {
        let p = allocate(0);
        assert!(!p.is_null());
        // SAFETY: p is live; null is accepted by contract.
        unsafe {
            assert!(take(p).is_empty());
            assert!(take(std::ptr::null_mut()).is_empty());
            release(std::ptr::null_mut());
        }
    }
}
