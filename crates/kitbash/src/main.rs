//! The `kitbash` binary: see `kitbash --help`.

fn main() -> std::process::ExitCode {
    kitbash::cli::main()
}
