//! Network namespaces of our own, held by file descriptor only.
//!
//! A namespace is created on a short-lived thread (`unshare(CLONE_NEWNET)` affects only the
//! calling thread) and kept alive by an open descriptor of `/proc/thread-self/ns/net`. It is
//! never bind-mounted or named: it disappears, with every device, address and route in it,
//! when the last descriptor closes — at the end of the program however it ends (exit, Ctrl-C,
//! a crash, `kill -9`). Two instances never clash because nothing has a global name.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use crate::NicError;

/// A network namespace, alive while this value (or a thread inside it) exists.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// The namespace the calling thread is in.
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            fd: File::open("/proc/thread-self/ns/net")?.into(),
        })
    }

    /// Another handle of the same namespace.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
        })
    }

    /// A new, empty network namespace (only a loopback device, down). Needs CAP_SYS_ADMIN.
    pub fn create() -> Result<Self, NicError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare has no memory-safety preconditions; it moves only this
                // thread (which ends right after) into a new namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(NicError::permission(
                        "creating a network namespace",
                        io::Error::last_os_error(),
                    ));
                }
                Self::current().map_err(|e| NicError::io("opening the new namespace", e))
            })
            .join()
            .unwrap_or_else(|_| Err(NicError::Setup("namespace thread panicked".into())))
        })
    }

    /// Moves the calling thread into this namespace until the guard is dropped (then it goes
    /// back where it was). Sockets and TUN devices created meanwhile belong to this namespace
    /// for their whole life; threads spawned meanwhile start in it.
    pub fn enter(&self) -> io::Result<NsGuard> {
        let back = Self::current()?;
        setns(&self.fd)?;
        Ok(NsGuard { back: Some(back) })
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.fd)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }

    /// Runs `ip ARGS` (iproute2) inside this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), NicError> {
        let out = self
            .run(|| Command::new("ip").args(args).output())
            .and_then(|r| r)
            .map_err(|e| NicError::io("running ip (iproute2)", e))?;
        if !out.status.success() {
            return Err(NicError::Setup(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Keeps the calling thread in a namespace; dropping it goes back.
#[derive(Debug)]
pub struct NsGuard {
    back: Option<NetNs>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Some(ns) = self.back.take()
            && let Err(e) = setns(&ns.fd)
        {
            tracing::error!(error = %e, "could not return to the original network namespace");
        }
    }
}

fn setns(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fd is an open namespace descriptor for the duration of the call.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
