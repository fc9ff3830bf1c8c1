//! The `gatehouse` CLI and server launcher.

fn main() -> anyhow::Result<std::process::ExitCode> {
    gatehouse_control_plane::cli::main()
}
