//! The `kitbash-feynman` binary: config → telemetry → [`kitbash_feynman::run`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(kitbash_schema::DaemonKind::Feynman, kitbash_feynman::run)
}
