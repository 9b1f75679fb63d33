fn main() -> std::process::ExitCode {
    squint::cli::main()
}
