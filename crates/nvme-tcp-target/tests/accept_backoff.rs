//! When `accept` fails for lack of file descriptors, the listener backs off and warns once,
//! then serves the waiting connections when descriptors are free again. Its own test binary:
//! it lowers the process's open-file limit and installs a log subscriber.

mod common;

use std::sync::{Arc, Mutex};

use common::*;

/// Log lines, shared with the subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn count(&self, level: &str, what: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| l.contains(level) && l.contains(what))
            .count()
    }
}

fn set_nofile_soft(n: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = n;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

/// The lowest descriptor number not in use.
fn lowest_free_fd() -> u64 {
    // SAFETY: dup of stdin gives the lowest free descriptor, closed right away.
    unsafe {
        let fd = libc::dup(0);
        assert!(fd >= 0);
        libc::close(fd);
        fd as u64
    }
}

#[test]
fn accept_backs_off_on_emfile_with_one_warning_and_recovers() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let t = start_target();
    let addr = t.local_addrs()[0];
    // Sockets made while descriptors are there; connected once they are not.
    let socks: Vec<socket2::Socket> = (0..3)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    set_nofile_soft(lowest_free_fd());
    for s in &socks {
        s.connect(&addr.into()).unwrap();
    }
    wait_for("accept to fail a few times", || {
        log.count("DEBUG", "accept failed") >= 3
    });
    set_nofile_soft(old.rlim_cur);
    assert_eq!(log.count("WARN", "accept failed"), 1, "one warning");
    // The connections that waited in the backlog are served.
    for s in socks {
        let mut c = Client::from_stream(s.into());
        c.ic(0, false, false);
    }
    assert_eq!(log.count("INFO", "accepting connections again"), 1);
}
