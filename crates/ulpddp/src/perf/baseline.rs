//! The raw TCP baseline: loopback throughput of one TCP stream measured in the same run as the
//! NVMe/TCP figures, so that results compare on noisy machines.
//!
//! It is meant as a fair ceiling: the sender and the receiver run on separate threads pinned to
//! separate cores, with large writes and large socket buffers. (A single-threaded iperf3 stream
//! is bound by its one core and underestimates loopback by a third or more.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// Size of each `write`/`read` call.
const CHUNK: usize = 1 << 20;
/// Socket buffer size requested on both ends.
const SOCKBUF: usize = 8 << 20;

/// Result of a baseline run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Baseline {
    /// Bytes received.
    pub bytes: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
}

impl Baseline {
    /// Throughput in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1024.0 * 1024.0)
    }
}

fn pin_to(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && !ids.is_empty()
    {
        core_affinity::set_for_current(ids[core % ids.len()]);
    }
}

/// Measures one loopback TCP stream for `duration` (after a short warm-up).
pub fn measure(duration: Duration) -> std::io::Result<Baseline> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));

    let stop_tx = stop.clone();
    let sender = std::thread::Builder::new()
        .name("baseline-tx".into())
        .spawn(move || -> std::io::Result<()> {
            pin_to(0);
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            SockRef::from(&s).set_send_buffer_size(SOCKBUF)?;
            let buf = vec![0x5Au8; CHUNK];
            while !stop_tx.load(Ordering::Relaxed) {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
            Ok(())
        })?;

    let (mut r, _) = listener.accept()?;
    SockRef::from(&r).set_recv_buffer_size(SOCKBUF)?;
    let receiver = std::thread::Builder::new()
        .name("baseline-rx".into())
        .spawn(move || -> std::io::Result<Baseline> {
            pin_to(1);
            let mut buf = vec![0u8; CHUNK];
            // Warm-up: let the congestion window and buffers settle.
            let warm = Instant::now();
            while warm.elapsed() < Duration::from_millis(200) {
                if r.read(&mut buf)? == 0 {
                    break;
                }
            }
            let start = Instant::now();
            let mut bytes = 0u64;
            while start.elapsed() < duration {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
            Ok(Baseline {
                bytes,
                seconds: start.elapsed().as_secs_f64(),
            })
        })?;
    let result = receiver
        .join()
        .map_err(|_| std::io::Error::other("baseline receiver panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_moves_bytes() {
        let b = measure(Duration::from_millis(100)).unwrap();
        assert!(b.bytes > 0);
        assert!(b.mib_per_s() > 0.0);
    }
}
