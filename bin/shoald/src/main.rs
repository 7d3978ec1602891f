use std::process::ExitCode;

use clap::Parser;
use shoald::{Args, Command, Config, Daemon};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoald: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(Command::Keygen { file }) = args.command.take() {
        return keygen(&file);
    }
    let config = Config::from_args(args)?;
    let daemon = Daemon::start(config).await?;
    shutdown_signal().await?;
    tracing::info!("shutting down");
    daemon.stop().await
}

fn keygen(file: &std::path::Path) -> anyhow::Result<()> {
    let key = shoal_net::NetworkKey::generate()?;
    key.create_file(file)?;
    eprintln!(
        "shoald: wrote network key {} (fingerprint {}); give it to every peer as --network-key",
        file.display(),
        key.fingerprint()
    );
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
