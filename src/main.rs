//! The `vsvm` command: serves device models over vfio-user sockets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use log::{error, info};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use vsvm::devices::topology::{AccelSpec, RemapSpec, Topology};
use vsvm::pci::Bdf;
use vsvm::vfio_user;

mod cli;

use cli::options;

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
    /// Plain accelerators (no IOMMU): --device accel --socket-path PATH (repeatable), or
    /// --accel socket=PATH,addr=DD.F. With --remap-unit the guest gets our VT-d: the
    /// accelerators sit behind it, the DMAR table is written to --dmar, and the QEMU and guest
    /// kernel arguments are printed. Attach each socket to QEMU (>= 10.1) with
    /// -device '{"driver":"vfio-user-pci","socket":{"path":"PATH","type":"unix"},"addr":"DD.F"}'
    Serve(ServeArgs),
    /// Learn where firmware puts the remap unit's registers for a topology (a firmware-only
    /// QEMU boot, about a second under TCG) and cache it; prints the address.
    Calibrate(CalibrateArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceKind {
    /// The SVM accelerator (plain mode: DMA by guest-physical address).
    Accel,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Device model to serve (plain, no IOMMU); repeat together with --socket-path.
    #[arg(long = "device")]
    devices: Vec<DeviceKind>,
    /// UNIX socket to listen on, one per --device, in the same order.
    #[arg(long = "socket-path")]
    sockets: Vec<PathBuf>,
    /// PCI vendor ID of the --device accelerators (hex).
    #[arg(long, value_parser = options::parse_hex_u16, default_value = "0x5653")]
    vendor_id: u16,
    /// PCI device ID of the --device accelerators (hex).
    #[arg(long, value_parser = options::parse_hex_u16, default_value = "0xa001")]
    device_id: u16,
    #[command(flatten)]
    topology: TopologyArgs,
    /// Where to write the DMAR table for QEMU's -acpitable file=... (with --remap-unit).
    #[arg(long)]
    dmar: Option<PathBuf>,
    /// Where firmware puts the remap unit's BAR0 (hex), as a calibration found it.
    #[arg(long, value_parser = options::parse_hex_u64)]
    drhd_base: Option<u64>,
    #[command(flatten)]
    calibration: CalibrationArgs,
    /// Write the QEMU arguments for this topology here, one per line.
    #[arg(long)]
    qemu_args: Option<PathBuf>,
    /// Guest RAM size in the QEMU arguments printed.
    #[arg(long, default_value = "1G")]
    ram: String,
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

#[derive(clap::Args)]
struct TopologyArgs {
    /// An accelerator: socket=PATH,addr=DD.F[,vendor-id=HEX][,device-id=HEX]. Repeatable.
    #[arg(long = "accel", value_parser = options::parse_accel)]
    accels: Vec<AccelSpec>,
    /// The remap unit (our VT-d, translating every --accel): socket=PATH,addr=DD.F.
    #[arg(long = "remap-unit", value_parser = options::parse_remap)]
    remap: Option<RemapSpec>,
}

#[derive(clap::Args)]
struct CalibrationArgs {
    /// QEMU binary for calibration boots (when no --drhd-base is given).
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// Calibration cache directory [default: $XDG_CACHE_HOME/vsvm/calibration].
    #[arg(long)]
    calibration_cache: Option<PathBuf>,
    /// Calibrate even if the cache knows this topology.
    #[arg(long)]
    recalibrate: bool,
}

#[derive(clap::Args)]
struct CalibrateArgs {
    #[command(flatten)]
    topology: TopologyArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
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

fn main() -> ExitCode {
    // Microseconds: a page fault's hand-offs between threads take tens of them (README,
    // "SVA in the guest").
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Calibrate(args) => calibrate(args),
    }
}

fn topology(args: &TopologyArgs) -> Topology {
    Topology {
        remap: args.remap.clone(),
        accels: args.accels.clone(),
    }
}

fn cache_dir(args: &CalibrationArgs) -> PathBuf {
    args.calibration_cache
        .clone()
        .unwrap_or_else(cli::calibrate::default_cache)
}

fn calibrate(args: CalibrateArgs) -> ExitCode {
    let Some(qemu) = &args.calibration.qemu else {
        error!("calibrate needs --qemu BIN");
        return ExitCode::from(2);
    };
    let topology = topology(&args.topology);
    if topology.remap.is_none() {
        error!("calibrate needs --remap-unit addr=DD.F");
        return ExitCode::from(2);
    }
    let cache = cache_dir(&args.calibration);
    match cli::calibrate::drhd_base(&topology, qemu, &cache, args.calibration.recalibrate) {
        Ok(base) => {
            println!("0x{base:x}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
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
    let mut topology = topology(&args.topology);
    // --device accel --socket-path PATH: plain accelerators, numbered from 04.0 on.
    for (i, (DeviceKind::Accel, socket)) in args.devices.iter().zip(&args.sockets).enumerate() {
        topology.accels.push(AccelSpec {
            socket: socket.clone(),
            addr: Bdf::new(0, 4 + i as u8, 0).unwrap_or_default(),
            vendor_id: args.vendor_id,
            device_id: args.device_id,
        });
    }
    if topology.accels.is_empty() {
        error!("nothing to serve: give --accel or --device accel --socket-path PATH");
        return ExitCode::from(2);
    }
    let plan = cli::serve::Plan {
        topology,
        dmar: args.dmar.clone(),
        drhd_base: args.drhd_base,
        qemu: args.calibration.qemu.clone(),
        cache: cache_dir(&args.calibration),
        recalibrate: args.calibration.recalibrate,
        qemu_args: args.qemu_args.clone(),
        ram: args.ram.clone(),
        options: vfio_user::ServerOptions {
            poll: vfio_user::PollWindow(std::time::Duration::from_micros(args.poll_us)),
            cpu_latency: cpu_latency(&args),
            dma: vfio_user::DmaLimits {
                max_maps: args.max_dma_maps,
                max_fd_maps: args.max_fd_maps,
            },
        },
    };
    cli::serve::run(plan)
}

/// Blocks until SIGTERM or SIGINT, removes the sockets and returns success.
pub(crate) fn wait_for_signal(sockets: Vec<PathBuf>) -> ExitCode {
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
