//! MMIO latency benchmark (issue 5): one run measures, side by side,
//! - a bare UNIX-socket ping-pong between two processes, both blocking, and with the answering
//!   side spinning — the machine's floor for a round trip;
//! - inside a real guest (stock QEMU 11 under TCG, our accelerator over vfio-user), BAR reads,
//!   posted BAR writes, MSI-X round trips and BAR reads mixed with CPU work, for several
//!   `--poll-us` windows;
//! - the server's CPU use while the guest is idle, and whether any CPU still polls then;
//! - the same guest run with the server's CPU latency request switched off, and the bare
//!   ping-pong with that request held, to show what the request does on its own.
//!
//! Every figure is printed with its ratio to the blocking socket round trip.
//! Run: `cargo bench --bench latency` (after `scripts/setup`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vsvm::vfio_user::CpuLatency;

#[path = "../guest-tests/harness/qemu.rs"]
mod qemu;

const PING_ROUNDS: usize = 20_000;
/// One way of running the server (and QEMU) for the guest measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Config {
    /// `--poll-us`.
    window_us: u64,
    /// The CPU latency request (off: `--no-cpu-latency-qos`).
    qos: bool,
    /// Server on the last CPU and QEMU on the first, with `taskset` (a deployment choice, not
    /// a server default).
    pinned: bool,
}

const fn config(window_us: u64, qos: bool, pinned: bool) -> Config {
    Config {
        window_us,
        qos,
        pinned,
    }
}

const CONFIGS: [Config; 6] = [
    config(0, true, false),
    config(50, true, false),
    config(200, true, false),
    config(1000, true, false),
    config(200, false, false),
    config(200, true, true),
];
const IDLE_SECONDS: u64 = 10;
const ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pong") {
        return pong(Path::new(&args[2]), args[3] == "spin");
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without --bench: it only checks that
        // this builds; the guest boots are for `cargo bench --bench latency`.
        println!("latency: run with `cargo bench --bench latency`");
        return;
    }
    // Boots differ more than accesses within a boot (thread placement on 2 cores), and so do
    // ping-pong runs: run everything ROUNDS times, interleaved, and report medians of medians.
    let (mut blocking, mut spinning, mut host_reads) = (Vec::new(), Vec::new(), Vec::new());
    let mut polling_idle = Vec::new();
    let mut runs: BTreeMap<Config, Vec<GuestResult>> = BTreeMap::new();
    for round in 0..ROUNDS {
        blocking.push(ping_pong(false));
        spinning.push(ping_pong(true));
        if let Ok(latency) = CpuLatency::open(Path::new(vsvm::vfio_user::cpu_latency::DEVICE_PATH))
        {
            let _hold = latency.hold();
            polling_idle.push(ping_pong(false));
        }
        host_reads.push(host_region_reads(PollWindowUs::DEFAULT));
        for config in CONFIGS {
            if config.pinned && cpu_count() < 2.0 {
                continue;
            }
            let idle = if round == 0 { IDLE_SECONDS } else { 0 };
            runs.entry(config)
                .or_default()
                .push(guest_run(config, idle));
        }
    }
    let (blocking, spinning) = (median(blocking), median(spinning));
    let base = blocking.as_secs_f64();
    println!(
        "socket ping-pong, both sides blocking      {:>9} (1.00)",
        us(blocking)
    );
    let ratio = spinning.as_secs_f64() / base;
    println!(
        "socket ping-pong, answering side spinning  {:>9} ({ratio:.2})",
        us(spinning)
    );
    if polling_idle.is_empty() {
        println!("socket ping-pong, both blocking, CPU latency request held: n/a (no access to the request)");
    } else {
        let held = median(polling_idle);
        println!(
            "socket ping-pong, both blocking, CPU latency request held {:>7} ({:.2})   (idle CPUs poll)",
            us(held),
            held.as_secs_f64() / base
        );
    }
    let host_read = median(host_reads);
    println!(
        "REGION_READ from a host client, default poll {:>7} ({:.2})   (our server's share of a BAR read)",
        us(host_read),
        host_read.as_secs_f64() / base
    );
    println!();
    println!(
        "{:>20} | {:>16} | {:>16} | {:>16} | {:>16} | {:>14} | {:>14}",
        "poll-us, qos",
        "BAR read",
        "posted write",
        "MSI-X round trip",
        "read+CPU work",
        "idle CPU (10s)",
        "CPUs polling"
    );
    for (config, results) in &runs {
        let cell = |op: &str| {
            let mut v: Vec<f64> = results
                .iter()
                .filter_map(|r| r.median_ns.get(op).copied())
                .collect();
            v.sort_by(f64::total_cmp);
            let ns = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
            format!("{:>7.1} µs ({:.2})", ns / 1000.0, ns / 1e9 / base)
        };
        let qos = if config.qos && config.window_us > 0 {
            "on"
        } else {
            "off"
        };
        let pinned = if config.pinned { ", pinned" } else { "" };
        println!(
            "{:>20} | {} | {} | {} | {} | {:>13.2}% | {:>13.2}%",
            format!("{}, {qos}{pinned}", config.window_us),
            cell("read"),
            cell("write"),
            cell("irq"),
            cell("mixed"),
            results[0].idle_cpu_percent,
            results[0].idle_polling_percent
        );
    }
    println!(
        "\nper boot: median of per-access times measured in the guest kernel; shown: median over \
         {ROUNDS} boots; ratios are to the blocking ping-pong; qos: the server's CPU latency \
         request inside its window (--no-cpu-latency-qos turns it off); pinned: server on the last \
         CPU, QEMU on the first (taskset); idle CPU: the server's CPU time, guest idle, first boot; CPUs polling: share of that idle time the machine's CPUs \
         spent in the cpuidle POLL state (0 once the request is lifted)"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

// ---------------------------------------------------------------- socket ping-pong

/// The answering process: echoes 16-byte messages until EOF, blocking or spinning.
fn pong(path: &Path, spin: bool) {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_nonblocking(spin).unwrap();
    let mut buf = [0u8; 16];
    loop {
        match s.read_exact(&mut buf) {
            Ok(()) => s.write_all(&buf).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(_) => return,
        }
    }
}

/// Median round trip of a 16-byte ping-pong with another process.
fn ping_pong(spin: bool) -> Duration {
    let path = std::env::temp_dir().join(format!("vsvm-pingpong-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "pong",
            path.to_str().unwrap(),
            if spin { "spin" } else { "block" },
        ])
        .spawn()
        .unwrap();
    let (mut s, _) = listener.accept().unwrap();
    let mut times = Vec::with_capacity(PING_ROUNDS);
    let mut buf = [0u8; 16];
    for i in 0..PING_ROUNDS {
        let t0 = Instant::now();
        s.write_all(&(i as u128).to_le_bytes()).unwrap();
        s.read_exact(&mut buf).unwrap();
        times.push(t0.elapsed());
    }
    drop(s);
    child.wait().unwrap();
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}

// ---------------------------------------------------------------- host client

/// The server's default poll window, as `vsvm serve` takes it.
struct PollWindowUs;

impl PollWindowUs {
    const DEFAULT: u64 = vsvm::vfio_user::PollWindow::DEFAULT.0.as_micros() as u64;
}

/// Median round trip of a BAR0 REGION_READ sent by a blocking host client (no QEMU): what our
/// server adds to a guest's BAR read.
fn host_region_reads(window_us: u64) -> Duration {
    use vsvm::vfio_user::protocol::{Command, Header, RegionAccess, VersionBody};
    use vsvm::vfio_user::transport::{recv_message, send_message};
    use zerocopy::IntoBytes;

    let socket = std::env::temp_dir().join(format!("vsvm-hostread-{}.sock", std::process::id()));
    let mut server = start_server(&socket, config(window_us, true, false));
    let s = UnixStream::connect(&socket).unwrap();
    let request = |id: u16, command: Command| Header {
        msg_id: id,
        command: command as u16,
        ..Default::default()
    };
    let mut version = VersionBody::default().as_bytes().to_vec();
    version.extend_from_slice(b"{\"capabilities\":{}}\0");
    send_message(&s, request(0, Command::Version), &[&version]).unwrap();
    recv_message(&s).unwrap();
    let access = RegionAccess {
        offset: 0x34,
        region: 0,
        count: 4,
    };
    let mut times = Vec::with_capacity(PING_ROUNDS);
    for i in 0..PING_ROUNDS {
        let t0 = Instant::now();
        send_message(
            &s,
            request(i as u16, Command::RegionRead),
            &[access.as_bytes()],
        )
        .unwrap();
        recv_message(&s).unwrap();
        times.push(t0.elapsed());
    }
    drop(s);
    let _ = server.kill();
    let _ = server.wait();
    median(times)
}

// ---------------------------------------------------------------- guest run

struct GuestResult {
    median_ns: BTreeMap<String, f64>,
    idle_cpu_percent: f64,
    idle_polling_percent: f64,
}

/// Microseconds all CPUs have spent in their cpuidle "POLL" state (NaN without cpuidle).
fn polling_idle_us() -> f64 {
    let mut total = f64::NAN;
    let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return total;
    };
    for cpu in cpus.flatten() {
        let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
            continue;
        };
        for state in states.flatten() {
            let read = |f: &str| std::fs::read_to_string(state.path().join(f)).unwrap_or_default();
            if read("name").trim() == "POLL" {
                let us = read("time").trim().parse::<f64>().unwrap_or(0.0);
                total = if total.is_nan() { us } else { total + us };
            }
        }
    }
    total
}

fn cpu_count() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// CPU time (user + system) a process has used, from /proc/PID/stat, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux/x86-64
}

/// `command` run by `taskset` on `cpu` when `pin` (and as it is otherwise).
fn pinned_to(command: Command, pin: bool, cpu: usize) -> Command {
    if !pin {
        return command;
    }
    let mut taskset = Command::new("taskset");
    taskset
        .args(["-c", &cpu.to_string()])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => taskset.env(key, value),
            None => taskset.env_remove(key),
        };
    }
    taskset
}

fn last_cpu() -> usize {
    cpu_count() as usize - 1
}

fn start_server(socket: &Path, config: Config) -> Child {
    let _ = std::fs::remove_file(socket);
    let mut command = Command::new(env!("CARGO_BIN_EXE_vsvm"));
    command.args([
        "serve",
        "--device",
        "accel",
        "--poll-us",
        &config.window_us.to_string(),
    ]);
    if !config.qos {
        command.arg("--no-cpu-latency-qos");
    }
    command.arg("--socket-path").arg(socket);
    let child = pinned_to(command, config.pinned, last_cpu())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("starting vsvm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "vsvm did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn start_guest(socket: &Path, idle: u64, pin: bool) -> Child {
    let extra = format!("quiet vsvm.idle={}", if idle > 0 { idle + 2 } else { 0 });
    let kernel = qemu::Kernel::default_kernel();
    let command = qemu::guest_command(
        &kernel,
        socket,
        "latency",
        &extra,
        qemu::Memory::MemfdShared,
    );
    pinned_to(command, pin, 0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting qemu (run scripts/setup first)")
}

/// Boots the latency guest against a server run as `config` says and collects results.
fn guest_run(config: Config, idle: u64) -> GuestResult {
    let socket = std::env::temp_dir().join(format!("vsvm-latency-{}.sock", std::process::id()));
    let mut server = start_server(&socket, config);
    let mut qemu = start_guest(&socket, idle, config.pinned);
    let (tx, rx) = mpsc::channel();
    let console = BufReader::new(qemu.stdout.take().unwrap());
    std::thread::spawn(move || {
        console
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let mut median_ns = BTreeMap::new();
    let (mut idle_cpu_percent, mut idle_polling_percent) = (f64::NAN, f64::NAN);
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.trim().strip_prefix("BENCH ") {
            let kv: BTreeMap<&str, &str> = rest
                .split_whitespace()
                .filter_map(|f| f.split_once('='))
                .collect();
            median_ns.insert(
                kv["op"].to_string(),
                kv["median_ns"].parse::<f64>().unwrap(),
            );
        } else if line.contains("IDLE-START") && idle > 0 {
            std::thread::sleep(Duration::from_secs(1)); // let the last spin window pass
            let (before, polled_before) = (cpu_seconds(server.id()), polling_idle_us());
            std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
            let used = cpu_seconds(server.id()) - before;
            idle_cpu_percent = used / IDLE_SECONDS as f64 * 100.0;
            let polled = (polling_idle_us() - polled_before) / 1e6;
            idle_polling_percent = polled / (IDLE_SECONDS as f64 * cpu_count()) * 100.0;
        } else if line.contains("VSVM-RESULT") {
            assert!(line.contains("rc=0"), "guest benchmark failed: {line}");
            break;
        } else if line.contains("FAIL") {
            eprintln!("guest: {line}");
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = server.kill();
    let _ = server.wait();
    GuestResult {
        median_ns,
        idle_cpu_percent,
        idle_polling_percent,
    }
}
