//! A TUN device with virtio-net headers (`IFF_VNET_HDR`), so the kernel may hand over
//! TSO/GSO super-packets with partial checksums, and take them back.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::NicError;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device (non-blocking). The device goes away when this is dropped (it is not
/// persistent) or with its namespace.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates TUN device `name` in the calling thread's network namespace, with virtio-net
    /// headers and checksum + TSO offloads accepted from the kernel.
    pub fn create(name: &str) -> Result<Self, NicError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| NicError::permission("opening /dev/net/tun", e))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        let n = name.len().min(libc::IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        // SAFETY: TUNSETIFF reads (and writes back) a struct ifreq, which `req` is laid out as
        // (name, flags, padding to 40 bytes); the fd is open.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(NicError::permission(
                "creating a TUN device",
                io::Error::last_os_error(),
            ));
        }
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes the flags as the integer argument itself.
        if unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offloads as libc::c_ulong,
            )
        } < 0
        {
            return Err(NicError::io(
                "enabling TUN offloads",
                io::Error::last_os_error(),
            ));
        }
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(n);
        Ok(Self {
            file,
            name: String::from_utf8_lossy(&req.name[..end]).into_owned(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet (virtio-net header + IP packet); `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet (virtio-net header + IP packet).
    pub fn send(&self, pkt: &[u8]) -> io::Result<()> {
        match (&self.file).write(pkt) {
            Ok(_) => Ok(()),
            // The device's queue is full (or the interface went down): the packet is lost on
            // the wire, as on a real link; TCP retransmits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
