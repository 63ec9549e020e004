//! The `vsvm` command: serves device models over vfio-user sockets.

use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use clap::{Parser, Subcommand, ValueEnum};
use log::{error, info};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use vsvm::devices::accel;
use vsvm::vfio_user;

#[derive(Parser)]
#[command(
    name = "vsvm",
    version,
    about = "Userspace SVM devices for stock QEMU over vfio-user"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve devices over vfio-user; one socket per PCI function. Exits 0 on SIGTERM.
    ///
    /// Attach each socket to QEMU (>= 10.1) with
    /// -device '{"driver":"vfio-user-pci","socket":{"path":"PATH","type":"unix"}}'
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceKind {
    /// The SVM accelerator (plain mode: DMA by guest-physical address).
    Accel,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Device model to serve; repeat together with --socket-path for several functions.
    #[arg(long = "device", required = true)]
    devices: Vec<DeviceKind>,
    /// UNIX socket to listen on, one per --device, in the same order.
    #[arg(long = "socket-path", required = true)]
    sockets: Vec<PathBuf>,
    /// PCI vendor ID of the accelerator (hex).
    #[arg(long, value_parser = parse_hex_u16, default_value = "0x5653")]
    vendor_id: u16,
    /// PCI device ID of the accelerator (hex).
    #[arg(long, value_parser = parse_hex_u16, default_value = "0xa001")]
    device_id: u16,
    /// After each message, keep polling the socket this many microseconds before sleeping
    /// (0 = never spin). Shortens MMIO round trips; an idle server uses no CPU either way.
    #[arg(long, default_value_t = vfio_user::PollWindow::DEFAULT.0.as_micros() as u64)]
    poll_us: u64,
    /// Do not ask the kernel for 0 µs CPU wake-up latency while inside the poll window. By
    /// default the server holds that request (machine-wide, via /dev/cpu_dma_latency; needs
    /// root) so that idle CPUs poll instead of halting while a guest is busy, which makes QEMU's
    /// own thread hand-offs in each MMIO round trip cheaper. It is lifted once the window passes.
    #[arg(long)]
    no_cpu_latency_qos: bool,
    /// Most DMA maps a client may hold at once, counting the pieces a partial unmap leaves;
    /// advertised to the client as max_dma_maps. Past it, DMA_MAP (and a DMA_UNMAP that would
    /// cut a map in two) is refused with ENOSPC.
    #[arg(long, default_value_t = vfio_user::DmaLimits::DEFAULT.max_maps,
          value_parser = parse_positive)]
    max_dma_maps: usize,
    /// Most of a client's memory fds mapped into the server at once (each costs one of the
    /// process's vm.max_map_count mappings, which also bounds them). Maps beyond it still
    /// work, through DMA_READ/DMA_WRITE messages (slower).
    #[arg(long, default_value_t = vfio_user::DmaLimits::DEFAULT.max_fd_maps)]
    max_fd_maps: usize,
}

/// The CPU latency request the server holds inside its poll window, if it may.
fn cpu_latency(args: &ServeArgs) -> vfio_user::CpuLatency {
    if args.no_cpu_latency_qos || args.poll_us == 0 {
        return vfio_user::CpuLatency::off();
    }
    let path = std::path::Path::new(vfio_user::cpu_latency::DEVICE_PATH);
    match vfio_user::CpuLatency::open(path) {
        Ok(latency) => latency,
        Err(e) => {
            info!(
                "no CPU latency request ({}: {e}): idle CPUs halt between messages, so MMIO \
                 round trips are slower",
                path.display()
            );
            vfio_user::CpuLatency::off()
        }
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_hex_u16(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if args.devices.len() != args.sockets.len() {
        error!(
            "give one --socket-path per --device ({} devices, {} sockets)",
            args.devices.len(),
            args.sockets.len()
        );
        return ExitCode::from(2);
    }
    let options = vfio_user::ServerOptions {
        poll: vfio_user::PollWindow(std::time::Duration::from_micros(args.poll_us)),
        cpu_latency: cpu_latency(&args),
        dma: vfio_user::DmaLimits {
            max_maps: args.max_dma_maps,
            max_fd_maps: args.max_fd_maps,
        },
    };
    let mut workers = Vec::new();
    for (kind, path) in args.devices.iter().zip(&args.sockets) {
        let listener = match vfio_user::bind(path) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen on {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let mut device = match kind {
            DeviceKind::Accel => match accel::endpoint(args.vendor_id, args.device_id) {
                Ok(d) => d,
                Err(e) => {
                    error!("cannot build the accel function: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        info!("serving {kind:?} on {}", path.display());
        let (path, options) = (path.clone(), options.clone());
        workers.push(thread::spawn(move || {
            if let Err(e) = vfio_user::serve(&listener, &mut device, &options) {
                error!("socket {} failed: {e}", path.display());
            }
        }));
    }
    wait_for_signal(args.sockets)
}

/// Blocks until SIGTERM or SIGINT, removes the sockets and returns success.
fn wait_for_signal(sockets: Vec<PathBuf>) -> ExitCode {
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(signal) = signals.forever().next() {
        info!("signal {signal}: shutting down");
    }
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}
