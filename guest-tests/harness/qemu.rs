//! The QEMU command line of a test guest: stock QEMU 11 from the setup cache under TCG, one of
//! the stock Debian kernels `scripts/setup` prepared with its initramfs, and the server's socket
//! attached as a vfio-user function. Shared by the guest tests and `benches/latency.rs`.
#![allow(dead_code)] // each user takes what it needs

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// memfd with share=on: every RAM DMA_MAP carries an fd.
    MemfdShared,
    /// Plain anonymous RAM: maps come without fds, the server uses DMA_READ/WRITE.
    Anonymous,
}

/// Whether and how the guest gets our VT-d (a remap unit at 00:03.0 in front of the
/// accelerator, found through our DMAR table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iommu {
    /// No IOMMU: the accelerator alone, DMA by guest-physical address.
    Off,
    /// Scalable mode (Linux's default with FLTS: first-stage DMA domains).
    Scalable,
    /// Legacy mode (`sm_off`): second-stage DMA domains.
    Legacy,
    /// Scalable mode with `iommu=pt`: identity default domains.
    PassThrough,
}

impl Iommu {
    /// The guest kernel arguments of the mode (`intremap=off` is always there).
    pub fn kernel_args(self) -> &'static str {
        match self {
            Iommu::Off => "",
            Iommu::Scalable => "intel_iommu=on,sm_on",
            Iommu::Legacy => "intel_iommu=on,sm_off",
            Iommu::PassThrough => "intel_iommu=on,sm_on iommu=pt",
        }
    }

    /// As test and boot names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Iommu::Off => "",
            Iommu::Scalable => "iommu_sm",
            Iommu::Legacy => "iommu_legacy",
            Iommu::PassThrough => "iommu_pt",
        }
    }
}

/// The remap unit's socket and the DMAR table the server wrote.
#[derive(Clone, Debug)]
pub struct RemapUnit {
    /// Its vfio-user socket.
    pub socket: PathBuf,
    /// The DMAR table for `-acpitable`.
    pub dmar: PathBuf,
}

/// PCI address of the remap unit in test guests.
pub const REMAP_ADDR: &str = "03.0";
/// PCI address of the accelerator in test guests.
pub const ACCEL_ADDR: &str = "04.0";

/// Where `scripts/setup` put QEMU, the kernels and their initramfs.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("VSVM_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vsvm-cache"),
    }
}

/// `path`, or a panic telling how to create it.
pub fn require(path: &Path) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first (the README test command does)",
        path.display()
    );
    path.to_path_buf()
}

/// A guest kernel `scripts/setup` prepared: `$CACHE/guest/<tag>/` holds its vmlinuz and an
/// initramfs with our driver built for it.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// major.minor, e.g. `6.12`.
    pub tag: String,
    /// Its `uname -r`.
    pub release: String,
    dir: PathBuf,
}

impl Kernel {
    /// The kernels listed in `$CACHE/guest/kernels` ("<tag> <release> <package>" lines), the
    /// default one first.
    pub fn all() -> Result<Vec<Kernel>, String> {
        let guest = cache_dir().join("guest");
        let list = guest.join("kernels");
        let text = fs::read_to_string(&list).map_err(|e| {
            format!(
                "{}: {e}: run scripts/setup first (the README test command does)",
                list.display()
            )
        })?;
        let kernels: Vec<Kernel> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (tag, release) = (fields.next()?, fields.next()?);
                Some(Kernel {
                    tag: tag.to_string(),
                    release: release.to_string(),
                    dir: guest.join(tag),
                })
            })
            .collect();
        if kernels.is_empty() {
            return Err(format!("{} lists no kernel", list.display()));
        }
        Ok(kernels)
    }

    /// The default kernel (the first `scripts/setup` lists, 6.12), or a panic saying what is
    /// missing.
    pub fn default_kernel() -> Kernel {
        Kernel::all()
            .unwrap_or_else(|e| panic!("{e}"))
            .swap_remove(0)
    }

    /// `k6_12`: the kernel as test names spell it.
    pub fn name(&self) -> String {
        format!("k{}", self.tag.replace(['.', '-'], "_"))
    }

    /// Its vmlinuz.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// Its initramfs (busybox, the guest scripts and programs, our driver built for it).
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio.gz")
    }
}

/// The JSON -device argument (the only form QEMU 11 accepts for vfio-user-pci).
pub fn vfio_user_device(socket: &Path) -> String {
    vfio_user_device_at(socket, ACCEL_ADDR)
}

/// The JSON -device argument of a vfio-user function at `addr` ("DD.F") on pcie.0.
pub fn vfio_user_device_at(socket: &Path, addr: &str) -> String {
    let socket = serde_json::json!({ "path": socket, "type": "unix" });
    serde_json::json!({ "driver": "vfio-user-pci", "socket": socket, "addr": addr }).to_string()
}

/// A guest on `kernel` that runs `/guest/tests/<test>` (kernel parameter `vsvm.test`; several
/// as `a,b,c`, in one boot) with `extra` kernel parameters, the accelerator at 00:04.0 served
/// on `socket`; console on stdout.
pub fn guest_command(
    kernel: &Kernel,
    socket: &Path,
    test: &str,
    extra: &str,
    memory: Memory,
) -> Command {
    guest_command_with(kernel, socket, None, test, extra, memory)
}

/// The same, with the remap unit `remap` in front of the accelerator when given (its DMAR
/// table loaded with `-acpitable`, the remap unit at 00:03.0).
pub fn guest_command_with(
    kernel: &Kernel,
    socket: &Path,
    remap: Option<&RemapUnit>,
    test: &str,
    extra: &str,
    memory: Memory,
) -> Command {
    let cache = cache_dir();
    let mut qemu = Command::new(require(&cache.join("bin/qemu-system-x86_64")));
    qemu.args([
        "-machine",
        "q35,accel=tcg",
        "-cpu",
        "max",
        "-m",
        "512M",
        "-smp",
        "1",
    ])
    .args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(require(&kernel.vmlinuz()))
    .arg("-initrd")
    .arg(require(&kernel.initramfs()))
    .arg("-append")
    .arg(format!(
        "console=ttyS0 intremap=off panic=-1 vsvm.test={test} {extra}"
    ))
    .arg("-device")
    .arg(vfio_user_device(socket));
    if let Some(remap) = remap {
        let mut table = std::ffi::OsString::from("file=");
        table.push(&remap.dmar);
        qemu.arg("-acpitable")
            .arg(table)
            .arg("-device")
            .arg(vfio_user_device_at(&remap.socket, REMAP_ADDR));
    }
    if let Memory::MemfdShared = memory {
        qemu.args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
            .args(["-machine", "memory-backend=mem"]);
    }
    qemu
}
