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

/// Sets the calling thread's nice value and its time slice, `slice_ns` nanoseconds
/// (sched_setattr(2); Linux takes 0.1–100 ms). Since Linux 6.12 a task with a shorter slice
/// than the running one preempts it when it wakes; before, the slice is ignored.
pub fn set_this_thread_and_slice(nice: i32, slice_ns: u64) -> io::Result<()> {
    set_attr(libc::SCHED_OTHER, nice, slice_ns)
}

/// Sets the calling thread's nice value and the `SCHED_BATCH` policy (sched(7)): it runs as
/// any thread of that nice value, but its wake-ups never preempt the running task. For
/// threads whose work can wait for the end of a slice, so that waking one does not cost
/// the thread that woke it its CPU (the queue runner's pool: [`crate::runner`]).
pub fn set_this_thread_batch(nice: i32) -> io::Result<()> {
    set_attr(libc::SCHED_BATCH, nice, 0)
}

/// The calling thread's scheduling policy (`SCHED_OTHER`, `SCHED_BATCH`, …).
pub fn policy_of_this_thread() -> io::Result<i32> {
    // SAFETY: sched_getscheduler takes a pid (0: the calling thread); no memory is passed.
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        p => Ok(p),
    }
}

fn set_attr(policy: i32, nice: i32, slice_ns: u64) -> io::Result<()> {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: policy as u32,
        sched_flags: 0,
        sched_nice: nice.clamp(*RANGE.start(), *RANGE.end()),
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: the kernel reads `attr.size` bytes at the pointer, a live and fully initialised
    // `sched_attr` of exactly that size; pid 0 names the calling thread; flags 0.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A thread's time slice in nanoseconds as the scheduler reports it: `se.slice` in the
/// `sched` file of `task` (`/proc/thread-self`, `/proc/PID/task/TID`); `None` where the
/// kernel does not show it.
pub fn slice_of(task: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(task.join("sched")).ok()?;
    let line = text.lines().find(|l| l.starts_with("se.slice"))?;
    line.split(':').nth(1)?.trim().parse().ok()
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
    fn a_thread_sets_its_nice_value_and_slice_in_one_call() {
        let base = this_thread().unwrap();
        let (nice, slice) = std::thread::spawn(move || {
            set_this_thread_and_slice(base + 1, 200_000).unwrap();
            (
                this_thread().unwrap(),
                slice_of("/proc/thread-self".as_ref()),
            )
        })
        .join()
        .unwrap();
        assert_eq!(nice, (base + 1).min(19));
        if let Some(slice) = slice {
            assert_eq!(slice, 200_000, "where the kernel shows it");
        }
    }

    #[test]
    fn a_thread_takes_the_batch_policy_and_back() {
        let base = this_thread().unwrap();
        let (batch, nice, other) = std::thread::spawn(move || {
            set_this_thread_batch(base).unwrap();
            let batch = policy_of_this_thread().unwrap();
            let nice = this_thread().unwrap();
            set_this_thread_and_slice(base, 0).unwrap();
            (batch, nice, policy_of_this_thread().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(
            (batch, nice, other),
            (libc::SCHED_BATCH, base, libc::SCHED_OTHER)
        );
        assert_eq!(
            policy_of_this_thread().unwrap(),
            libc::SCHED_OTHER,
            "this one untouched"
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
