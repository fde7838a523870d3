//! The `kitbash-archive` binary: everything is in [`kitbash_archive::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(
        kitbash_schema::DaemonKind::Archive,
        kitbash_archive::components,
    )
}
