//! The `tracelake` binary: `serve`, `compact`, `loadgen`, `sampler-eval` and `config example`.

mod config;
mod loadgen;
mod sampler_eval;
mod serve;

use clap::{Parser, Subcommand};

/// tracelake: trace storage and query. OTLP in, Delta Lake on object storage, DataFusion out.
#[derive(Parser, Debug)]
#[command(name = "tracelake", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: OTLP receivers, storage, query and HTTP APIs.
    Serve(config::ServeArgs),
    /// Compact the closed hours of every tenant's span table once, then exit (the server also
    /// does this every --compaction-interval). Takes the same storage flags as `serve`.
    Compact(config::ServeArgs),
    /// Send a realistic synthetic OTLP workload to a server.
    Loadgen(loadgen::LoadgenArgs),
    /// Compare the tail sampler with uniform sampling on a synthetic workload with known truth.
    SamplerEval(sampler_eval::SamplerEvalArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print a commented TOML config with every key and its default.
    Example,
}

/// mimalloc, as DataFusion's own CLI and benchmarks use: query operators allocate and free
/// large buffers at a high rate, which the system allocator serves with fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRACELAKE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            // deltalake's writer warns once per binary column of every file it writes (ids have
            // no min/max statistics, by design), and the kernel logs an error for each table it
            // is asked about before that table's first commit (which the caller expects and
            // handles): both would drown a compaction's real messages.
            EnvFilter::new(
                "info,deltalake=warn,deltalake_core=warn,deltalake_core::writer::stats=error,\
                 buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,delta_kernel=warn,\
                 datafusion=warn",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tracelake-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::Serve(args) => {
            init_tracing();
            config::Config::load(&args).and_then(|cfg| runtime.block_on(serve::run(cfg)))
        }
        Command::Compact(args) => {
            init_tracing();
            config::Config::load(&args).and_then(|cfg| runtime.block_on(serve::compact_once(cfg)))
        }
        Command::Loadgen(args) => {
            init_tracing();
            let json = args.json;
            runtime
                .block_on(loadgen::run(args))
                .map(|summary| summary.print(json))
        }
        Command::SamplerEval(args) => sampler_eval::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
