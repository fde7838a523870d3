//! The `kitbash-example` binary: everything is in [`kitbash_example::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(
        kitbash_schema::DaemonKind::Example,
        kitbash_example::components,
    )
}
