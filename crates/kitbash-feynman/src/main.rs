//! The `kitbash-feynman` binary: everything is in [`kitbash_feynman::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(
        kitbash_schema::DaemonKind::Feynman,
        kitbash_feynman::components,
    )
}
