//! Core placement for live capture: the packet path (RX threads and
//! workers) gets the cores the config names, and every other thread of the
//! process (detection, output, recording, statistics, retention, the API
//! server) is kept off them, so a burst of housekeeping never takes an RX
//! core for milliseconds while its ring fills.

use std::io;

/// The cores the calling thread may run on (`core_affinity` reads its
/// affinity mask; it can only set a single core, hence `set_allowed`).
pub fn allowed() -> io::Result<Vec<usize>> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .ok_or_else(|| io::Error::other("reading this thread's CPU affinity failed"))
}

/// Let the calling thread run on `cores` (any number of them).
fn set_allowed(cores: &[usize]) -> io::Result<()> {
    // Safety: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // Safety: `c` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // Safety: pid 0 is the calling thread; the size matches the set.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The cores left for housekeeping: those `allowed` minus `packet_cores`.
/// `None` when nothing would change, or when no core would be left (a
/// process given only its packet cores shares them, as before).
pub fn housekeeping(allowed: &[usize], packet_cores: &[usize]) -> Option<Vec<usize>> {
    let rest: Vec<usize> = allowed.iter().copied().filter(|c| !packet_cores.contains(c)).collect();
    (!rest.is_empty() && rest.len() < allowed.len()).then_some(rest)
}

/// Keep the calling thread, and every thread it starts from now on, off
/// `packet_cores` (threads of the packet path pin themselves to their own
/// core afterwards). Call before any other thread is started. Returns the
/// housekeeping cores, or `None` when nothing changed (see [`housekeeping`]).
pub fn keep_off(packet_cores: &[usize]) -> io::Result<Option<Vec<usize>>> {
    if packet_cores.is_empty() {
        return Ok(None);
    }
    let Some(rest) = housekeeping(&allowed()?, packet_cores) else {
        return Ok(None);
    };
    set_allowed(&rest)?;
    Ok(Some(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_is_what_the_packet_path_leaves() {
        assert_eq!(housekeeping(&[0, 1, 2, 3], &[2, 3]), Some(vec![0, 1]));
        assert_eq!(housekeeping(&[0, 1, 2, 3], &[1, 9]), Some(vec![0, 2, 3]));
        // Nothing to leave, or nothing left: unchanged.
        assert_eq!(housekeeping(&[0, 1], &[5]), None);
        assert_eq!(housekeeping(&[1], &[1]), None);
        assert_eq!(housekeeping(&[0, 1], &[0, 1]), None);
    }

    #[test]
    fn threads_started_after_keep_off_stay_off_the_packet_cores() {
        // On a thread of its own, so the test harness's threads are untouched.
        std::thread::spawn(|| {
            let all = allowed().unwrap();
            if all.len() < 2 {
                return; // a one-core machine has no housekeeping core to move to
            }
            let packet = [all[all.len() - 1]];
            let rest = keep_off(&packet).unwrap().expect("a core is left");
            assert_eq!(allowed().unwrap(), rest);
            let child = std::thread::spawn(allowed).join().unwrap().unwrap();
            assert!(!child.contains(&packet[0]), "{child:?}");
            // The packet path may still pin itself to its core.
            core_affinity::set_for_current(core_affinity::CoreId { id: packet[0] });
            assert_eq!(allowed().unwrap(), packet);
        })
        .join()
        .unwrap();
    }
}
