//! Where perf's threads run: the host's queue threads on one core, the embedded target's
//! threads on another, the way a comparison with SPDK pins its two processes (host on core 0,
//! target on core 1). Left to the scheduler, host and target threads of one process migrate
//! between the cores and share them, and figures vary from run to run with where they landed.
//!
//! Threads inherit the affinity of the thread that creates them: the target's listener and
//! connection threads are created while the calling thread is pinned to the target's core
//! ([`Pinning::enter_target`]), the host's threads after it moved to the host's core
//! ([`Pinning::enter_host`]).

/// The cores of the two roles; `None`: not pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    /// Core of the host's threads (an index into `cores`).
    pub host: Option<usize>,
    /// Core of the embedded target's threads (an index into `cores`).
    pub target: Option<usize>,
    /// The CPU ids the process could use when the pinning was chosen.
    cores: Vec<usize>,
}

impl Pinning {
    /// The cores to use: the ones asked for; by default, with the embedded target on a
    /// machine of at least two cores, host on core 0 and target on core 1; otherwise none.
    /// `cores` are the CPU ids this process may use ([`usable_cores`]); a core is named by
    /// its index among them.
    pub fn choose(
        host: Option<usize>,
        target: Option<usize>,
        no_pin: bool,
        embedded: bool,
        cores: Vec<usize>,
    ) -> Result<Self, String> {
        let n = cores.len();
        if no_pin {
            return Ok(Self {
                host: None,
                target: None,
                cores,
            });
        }
        for (what, c) in [("--host-cpu", host), ("--target-cpu", target)] {
            if let Some(c) = c
                && c >= n
            {
                return Err(format!(
                    "{what} {c}: this process may use {n} cores (0..={})",
                    n.saturating_sub(1)
                ));
            }
        }
        if !embedded && target.is_some() {
            return Err("--target-cpu is for the embedded target".into());
        }
        let default = embedded && n >= 2;
        Ok(Self {
            host: host.or(default.then_some(0)),
            target: if embedded {
                target.or(default.then_some(1))
            } else {
                None
            },
            cores,
        })
    }

    /// The CPU id of the host's core.
    pub fn host_cpu_id(&self) -> Option<usize> {
        self.host.and_then(|i| self.cores.get(i).copied())
    }

    /// The CPU id of the target's core.
    pub fn target_cpu_id(&self) -> Option<usize> {
        self.target.and_then(|i| self.cores.get(i).copied())
    }

    /// Pins the calling thread to the target's core (before the target starts its threads).
    pub fn enter_target(&self) {
        if let Some(c) = self.target_cpu_id() {
            set_current(&[c]);
        }
    }

    /// Pins the calling thread to the host's core (before the host starts its threads); with
    /// no host core but a target core, lets it run on every core it could use again.
    pub fn enter_host(&self) {
        match (self.host_cpu_id(), self.target) {
            (Some(c), _) => set_current(&[c]),
            (None, Some(_)) => set_current(&self.cores),
            (None, None) => {}
        }
    }

    /// Lets the calling thread run on every core it could use again (for threads of neither
    /// role).
    pub fn release(&self) {
        if self.host.is_some() || self.target.is_some() {
            set_current(&self.cores);
        }
    }
}

/// The CPU ids the calling thread may run on (its affinity mask).
pub fn usable_cores() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return vec![0];
    };
    let v: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    if v.is_empty() { vec![0] } else { v }
}

/// Restricts the calling thread to `cpus` (best effort: a refused mask leaves it as it was).
fn set_current(cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        let _ = set.set(c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

#[cfg(test)]
/// The core the calling thread may run on when it is pinned to one (`Cpus_allowed_list` of
/// `/proc/thread-self/status`); `None` if it may run on several.
pub fn current_pinned_core() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let list = s
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(p: &Pinning) -> (Option<usize>, Option<usize>) {
        (p.host, p.target)
    }

    #[test]
    fn embedded_default_is_host_0_target_1_on_two_cores() {
        let p = Pinning::choose(None, None, false, true, vec![0, 1]).unwrap();
        assert_eq!(pins(&p), (Some(0), Some(1)));
        let one = Pinning::choose(None, None, false, true, vec![0]).unwrap();
        assert_eq!(pins(&one), (None, None));
    }

    #[test]
    fn cores_are_indices_among_the_usable_ones() {
        let p = Pinning::choose(None, None, false, true, vec![4, 6]).unwrap();
        assert_eq!((p.host_cpu_id(), p.target_cpu_id()), (Some(4), Some(6)));
    }

    #[test]
    fn an_external_target_pins_the_host_only_when_asked() {
        let p = Pinning::choose(None, None, false, false, vec![0, 1, 2, 3]).unwrap();
        assert_eq!(pins(&p), (None, None));
        let p = Pinning::choose(Some(3), None, false, false, vec![0, 1, 2, 3]).unwrap();
        assert_eq!(pins(&p), (Some(3), None));
        assert!(Pinning::choose(None, Some(1), false, false, vec![0, 1]).is_err());
    }

    #[test]
    fn chosen_cores_are_checked_and_no_pin_wins() {
        let p = Pinning::choose(Some(1), Some(0), false, true, vec![0, 1]).unwrap();
        assert_eq!(pins(&p), (Some(1), Some(0)));
        let e = Pinning::choose(Some(2), None, false, true, vec![0, 1]).unwrap_err();
        assert!(e.contains("--host-cpu 2"), "{e}");
        let p = Pinning::choose(Some(1), Some(0), true, true, vec![0, 1]).unwrap();
        assert_eq!(pins(&p), (None, None));
    }

    #[test]
    fn threads_inherit_the_role_core_of_their_creator() {
        let cores = usable_cores();
        if cores.len() < 2 {
            return;
        }
        let p = Pinning::choose(None, None, false, true, cores.clone()).unwrap();
        let (child, host, released) = std::thread::spawn(move || {
            p.enter_target();
            let child = std::thread::spawn(current_pinned_core).join().unwrap();
            p.enter_host();
            let host = current_pinned_core();
            p.release();
            (child, host, current_pinned_core())
        })
        .join()
        .unwrap();
        assert_eq!(child, Some(cores[1]));
        assert_eq!(host, Some(cores[0]));
        assert_eq!(released, None);
    }
}
