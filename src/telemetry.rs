//! Logging set-up. Secrets never reach here: handlers and use cases are instrumented
//! with `skip_all` and secret types have no `Debug`.
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("BREAKGLASS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,webauthn_rs=warn,webauthn_rs_core=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
