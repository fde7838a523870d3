//! The `kitbash-bridge` binary: everything is in [`kitbash_bridge::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(
        kitbash_schema::DaemonKind::Bridge,
        kitbash_bridge::components,
    )
}
