//! A spawned daemon that is killed when the test lets go of it, so a failing assertion does
//! not leave the process running (retrying a Redis that is gone) after the test.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A child process killed (`SIGKILL`) and reaped on drop unless it has exited already. Derefs
/// to the [`Child`], so `id()`, `try_wait()` and `&mut Child` arguments work unchanged.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl From<Child> for KillOnDrop {
    fn from(c: Child) -> Self {
        Self(c)
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_child_is_killed_and_reaped_on_drop() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        drop(KillOnDrop(child));
        // Reaped: no process (not even a zombie) has that pid any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
