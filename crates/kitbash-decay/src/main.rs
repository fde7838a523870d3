//! The `kitbash-decay` binary: everything is in [`kitbash_decay::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(kitbash_schema::DaemonKind::Decay, kitbash_decay::components)
}
