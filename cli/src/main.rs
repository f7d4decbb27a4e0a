//! `voca`: the Voca mesh command-line tool.

mod bench;
mod client;
mod generate;
mod invalidate;
mod quickstart;
mod vendors;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc, which took about a tenth of the
/// mesh's CPU time under load (perf). Built without transparent huge pages,
/// which made a pool node's RSS several times its cache budget.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line tool of the Voca mesh.
#[derive(Parser, Debug)]
#[command(name = "voca", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local mesh with in-process stand-ins and run a scripted conversation.
    Quickstart(quickstart::Args),
    /// Show which pool node owns a vendor.
    Route(client::RouteArgs),
    /// Send a message to a vendor and print the reply.
    Send(client::SendArgs),
    /// Load the mesh (through a gateway, a proxy or straight to the pool nodes) and report throughput and latency.
    Bench(bench::Args),
    /// Write generated benchmark vendors into a character store.
    GenerateVendors(generate::Args),
    /// Make the pool nodes load a vendor's changed files again (needs their Redis).
    Invalidate(invalidate::Args),
    /// Register, import, show, list and delete vendors.
    Vendors(vendors::Args),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Route(args) => client::route(args).await,
        Command::Send(args) => client::send(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::GenerateVendors(args) => generate::run(args).await,
        Command::Invalidate(args) => invalidate::run(args).await,
        Command::Vendors(args) => vendors::run(args).await,
    };
    // The error and its causes, without the backtrace that returning it
    // from main would print when RUST_BACKTRACE is set.
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
