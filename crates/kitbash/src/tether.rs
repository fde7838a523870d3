//! Children tied to `kitbash up`, so that no way of ending `up` leaves them running.
//!
//! `up` starts each child (redis-server, a daemon) through itself:
//! `kitbash __tethered <up-pid> <program> <args…>`. That short-lived trampoline asks the kernel
//! to send it SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, through rustix's safe wrapper,
//! so no `unsafe` here), checks that the parent is still `up` (it may have died in between), and
//! then `exec`s the program, which keeps the pid and the death signal. So when `up` is killed
//! with SIGKILL, or panics, every child gets SIGTERM from the kernel: daemons drain, Redis saves.
//!
//! Children also run in their own process group, so a terminal's Ctrl-C reaches only `up`,
//! which stops them in order (daemons first, then Redis) instead of all at once.
//!
//! **Invariant:** children are spawned from `up`'s main thread. The kernel sends the death
//! signal when the *thread* that forked the child exits, and the main thread lives as long as
//! the process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitCode};

/// The hidden first argument that makes `kitbash` act as the trampoline.
pub const TETHER_ARG: &str = "__tethered";

/// A command that runs `program` tied to this process. Add arguments, environment and stdio,
/// then spawn it (from the main thread).
pub fn command(program: &Path) -> std::io::Result<Command> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.arg(TETHER_ARG)
        .arg(std::process::id().to_string())
        .arg(program)
        .process_group(0);
    Ok(c)
}

/// When this process was started as a trampoline, becomes the child (never returns on
/// success) or returns the exit code; `None` for an ordinary `kitbash` invocation.
pub fn exec_if_tethered() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != TETHER_ARG {
        return None;
    }
    let (Some(parent), Some(program)) = (args.next(), args.next()) else {
        eprintln!("kitbash {TETHER_ARG}: usage: {TETHER_ARG} PARENT_PID PROGRAM [ARGS…]");
        return Some(ExitCode::from(2));
    };
    let rest: Vec<OsString> = args.collect();
    let Some(parent) = parent.to_str().and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!("kitbash {TETHER_ARG}: bad parent pid {parent:?}");
        return Some(ExitCode::from(2));
    };
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        eprintln!("kitbash {TETHER_ARG}: cannot ask for a parent-death signal: {e}");
        return Some(ExitCode::FAILURE);
    }
    // If `up` died before the death signal was armed, nobody would ever stop this child.
    if rustix::process::getppid().map(rustix::process::Pid::as_raw_pid) != Some(parent) {
        eprintln!("kitbash {TETHER_ARG}: kitbash up (pid {parent}) is gone; not starting");
        return Some(ExitCode::FAILURE);
    }
    let err = Command::new(&program).args(rest).exec();
    eprintln!(
        "kitbash {TETHER_ARG}: cannot run {}: {err}",
        Path::new(&program).display()
    );
    Some(ExitCode::from(127))
}

/// Sends `sig` to `pid`; false when there is no such process.
pub fn signal(pid: u32, sig: rustix::process::Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, sig).is_ok())
}
