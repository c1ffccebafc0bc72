//! A thread's scheduling priority (its nice value), for the queue runner's thread.
//!
//! In: a nice value. Out: the calling thread's nice value read or changed. On Linux the
//! nice value belongs to each thread (setpriority(2) with `PRIO_PROCESS` and 0 names the
//! calling thread, not the process), and a thread or process created afterwards starts
//! with its creator's value: a thread that raised its priority must have the threads and
//! programs it starts set back ([`set_this_thread`] in their start hook).
//!
//! Lowering the nice value (a higher priority) needs `CAP_SYS_NICE` or an `RLIMIT_NICE`
//! that allows it; raising it never does.

use std::io;

/// Lowest and highest nice values (setpriority(2) clamps to these as well).
pub const RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// The calling thread's nice value.
pub fn this_thread() -> io::Result<i32> {
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes two integers and returns one; no memory is passed. The
    // type of `which` differs between C libraries, hence the inferred cast.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
    // -1 is a valid nice value: only errno tells an error apart.
    match nix::errno::Errno::last_raw() {
        0 => Ok(nice),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Sets the calling thread's nice value (clamped to [`RANGE`]).
pub fn set_this_thread(nice: i32) -> io::Result<()> {
    let nice = nice.clamp(*RANGE.start(), *RANGE.end());
    // SAFETY: setpriority takes three integers; no memory is passed.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowers_its_own_priority_and_no_other() {
        let main = this_thread().expect("readable");
        let target = (main + 3).min(*RANGE.end());
        let seen = std::thread::spawn(move || {
            let inherited = this_thread().unwrap();
            set_this_thread(target).unwrap();
            let child = std::thread::spawn(this_thread).join().unwrap().unwrap();
            (inherited, this_thread().unwrap(), child)
        })
        .join()
        .unwrap();
        assert_eq!(seen, (main, target, target), "inherited, set, passed on");
        assert_eq!(
            this_thread().unwrap(),
            main,
            "the spawning thread is unchanged"
        );
    }

    #[test]
    fn values_out_of_range_are_clamped() {
        let got = std::thread::spawn(|| {
            set_this_thread(100).unwrap();
            this_thread().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, 19);
    }
}
