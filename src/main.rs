use std::process::ExitCode;

fn main() -> ExitCode {
    breakglass::cli::main()
}
