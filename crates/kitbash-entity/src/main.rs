//! The `kitbash-entity` binary: everything is in [`kitbash_entity::components`].

fn main() -> std::process::ExitCode {
    kitbash_runtime::daemon::main(
        kitbash_schema::DaemonKind::Entity,
        kitbash_entity::components,
    )
}
