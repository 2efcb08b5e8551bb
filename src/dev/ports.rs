//! Ports for processes started by roost itself (`roost dev` machines, the
//! bench's Redis) and by its tests, which must be chosen before the process
//! binds them.
//!
//! A port found by binding port 0 comes from the kernel's ephemeral range,
//! which every outgoing connection draws from too: between releasing the
//! port and the child binding it, a client socket may take it. These ports
//! are picked below that range (Linux's default starts at 32768) instead.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A loopback port that was free a moment ago and that no outgoing
/// connection will take meanwhile. Successive calls in one process give
/// different ports; processes start at different offsets.
pub fn spare_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::AcqRel) % COUNT;
        let port = (FIRST + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Everything below the ephemeral range is taken: fall back to the kernel.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_outside_the_ephemeral_range() {
        let a = super::spare_port().unwrap();
        let b = super::spare_port().unwrap();
        assert_ne!(a, b);
        assert!((20_000..32_000).contains(&a), "{a}");
    }
}
