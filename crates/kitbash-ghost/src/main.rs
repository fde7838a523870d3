//! The `kitbash-ghost` binary: everything is in [`kitbash_ghost::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(kitbash_schema::DaemonKind::Ghost, kitbash_ghost::components)
}
