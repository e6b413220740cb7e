//! Thin main: parse the command line, set up tracing, hand over to the library.

use clap::Parser;

/// glibc's malloc and free took about a sixth of the server's CPU under GraphQL load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = stigg_byos::cli::Cli::parse();
    stigg_byos::telemetry::setup_tracing(cli.settings.log_format);
    match stigg_byos::cli::main(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            // a missing or wrong setting exits as a bad flag does
            if e.downcast_ref::<stigg_byos::config::ConfigError>()
                .is_some()
            {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
