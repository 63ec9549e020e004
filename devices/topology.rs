//! One served topology: a remap unit (the guest's VT-d, found through our DMAR table) and the
//! accelerators behind it, each at its PCI address, all reaching one physical VT-d model
//! through the neutral API — or accelerators alone, without an IOMMU. Builds the functions,
//! the DMAR table, and the QEMU arguments that match them. VT-d spec 8 (DMAR), DESIGN.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info};

use super::accel::{self, AccelError};
use super::remap_unit::base_check::BaseCheck;
use super::remap_unit::calibration::Slot;
use super::remap_unit::dmar::{DmarError, DmarSpec};
use super::remap_unit::front::MsiRoute;
use super::remap_unit::{self, RegisterWindow};
use crate::iommu::{DeviceId, HostIommu};
use crate::pci::{Bdf, LayoutError};
use crate::vfio_user::Device;
use crate::viommu::{self, FrontEnd};
use crate::vtd::piommu::PhysicalIommu;
use crate::vtd::VtdConfig;

/// What a guest behind our VT-d needs on its kernel command line: intel-iommu on in scalable
/// mode, and no interrupt remapping (its early DMAR parse would reserve the DRHD range before
/// PCI claims the BAR, and the BAR — our registers — would be moved away: ENVIRONMENT.md).
pub const GUEST_KERNEL_ARGS: &str = "intel_iommu=on,sm_on intremap=off";

/// The machine type topologies are calibrated for.
pub const MACHINE: &str = "q35";

/// An accelerator function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccelSpec {
    /// Its vfio-user socket.
    pub socket: PathBuf,
    /// Its PCI address on pcie.0.
    pub addr: Bdf,
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
}

/// The remap unit function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemapSpec {
    /// Its vfio-user socket.
    pub socket: PathBuf,
    /// Its PCI address on pcie.0.
    pub addr: Bdf,
}

/// Functions to serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// The remap unit, if the guest gets our VT-d.
    pub remap: Option<RemapSpec>,
    /// The accelerators (behind the remap unit when there is one).
    pub accels: Vec<AccelSpec>,
}

/// Why a topology cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An accelerator could not be built.
    #[error("accelerator at {addr}: {source}")]
    Accel {
        /// Where.
        addr: Bdf,
        /// Why.
        source: AccelError,
    },
    /// A configuration space layout does not fit.
    #[error("configuration space: {0}")]
    Layout(#[from] LayoutError),
    /// The DMAR table cannot be written.
    #[error("DMAR table: {0}")]
    Dmar(#[from] DmarError),
    /// The vIOMMU's thread could not be started.
    #[error("starting the vIOMMU thread: {0}")]
    Thread(#[from] std::io::Error),
    /// Two functions at one address.
    #[error("two functions at {0}")]
    DuplicateAddress(Bdf),
}

/// A function ready to serve on its socket.
pub struct Served {
    /// Its socket.
    pub socket: PathBuf,
    /// What it is, for logs.
    pub name: String,
    /// The function.
    pub device: Box<dyn Device + Send>,
}

/// A built topology.
pub struct Built {
    /// The functions, remap unit first.
    pub functions: Vec<Served>,
    /// The guest-facing VT-d, with a remap unit.
    pub front_end: Option<Arc<FrontEnd>>,
    /// The DMAR table to hand QEMU (`-acpitable file=…`), with a remap unit.
    pub dmar: Option<Vec<u8>>,
}

/// The VT-d the guest sees: what Linux needs for SVA, in caching mode.
pub fn vtd_config() -> VtdConfig {
    VtdConfig {
        caching_mode: true,
        ..VtdConfig::default()
    }
}

impl Topology {
    /// The remap unit's BAR0 size.
    pub fn window_size() -> u64 {
        viommu::window_size(&vtd_config())
    }

    fn check_addresses(&self) -> Result<(), TopologyError> {
        let mut seen: Vec<Bdf> = self.remap.iter().map(|r| r.addr).collect();
        for accel in &self.accels {
            if seen.contains(&accel.addr) {
                return Err(TopologyError::DuplicateAddress(accel.addr));
            }
            seen.push(accel.addr);
        }
        Ok(())
    }

    /// Builds every function. With a remap unit, `drhd_base` is where the DMAR table says
    /// its registers are (the calibrated BAR0 address); the remap unit checks firmware's
    /// placement against it and calls `on_placed` with every placement it sees.
    pub fn build(
        &self,
        drhd_base: u64,
        on_placed: impl Fn(u64) + Send + 'static,
    ) -> Result<Built, TopologyError> {
        self.check_addresses()?;
        let Some(remap) = &self.remap else {
            return self.build_plain();
        };
        let config = vtd_config();
        let remap_bus = remap_unit::bus();
        let iommu = Arc::new(PhysicalIommu::new(config, remap_bus.mem.clone()));
        let mut functions = Vec::new();
        let mut carriers = Vec::new();
        let mut ids = Vec::new();
        for spec in &self.accels {
            let id = DeviceId(spec.addr.requester_id());
            let host: Arc<dyn HostIommu> = iommu.clone();
            let endpoint = accel::endpoint_svm(spec.vendor_id, spec.device_id, host, id).map_err(
                |source| TopologyError::Accel {
                    addr: spec.addr,
                    source,
                },
            )?;
            carriers.push(endpoint.bus().clone());
            ids.push(id);
            functions.push(Served {
                socket: spec.socket.clone(),
                name: format!("accel {} (behind the remap unit)", spec.addr),
                device: Box::new(endpoint),
            });
        }
        let route = Arc::new(MsiRoute::new(carriers));
        let front = Arc::new(FrontEnd::new(
            config,
            remap_bus.mem.clone(),
            iommu,
            &ids,
            route,
        )?);
        let window: Arc<dyn RegisterWindow> = front.clone();
        let check = BaseCheck::new(Some(drhd_base)).on_assigned(on_placed);
        let endpoint = remap_unit::endpoint(remap_bus, window, check)?;
        let dmar = DmarSpec {
            host_address_width: config.mgaw,
            register_base: drhd_base,
            register_size: front.window_size(),
            devices: self.accels.iter().map(|a| a.addr).collect(),
        }
        .to_bytes()?;
        functions.insert(
            0,
            Served {
                socket: remap.socket.clone(),
                name: format!("remap unit {} (DRHD at 0x{drhd_base:x})", remap.addr),
                device: Box::new(endpoint),
            },
        );
        Ok(Built {
            functions,
            front_end: Some(front),
            dmar: Some(dmar),
        })
    }

    fn build_plain(&self) -> Result<Built, TopologyError> {
        let mut functions = Vec::new();
        for spec in &self.accels {
            let endpoint = accel::endpoint(spec.vendor_id, spec.device_id)?;
            functions.push(Served {
                socket: spec.socket.clone(),
                name: format!("accel {} (no IOMMU)", spec.addr),
                device: Box::new(endpoint),
            });
        }
        Ok(Built {
            functions,
            front_end: None,
            dmar: None,
        })
    }

    /// The functions as a calibration key sees them.
    pub fn slots(&self) -> Vec<Slot> {
        let mut slots: Vec<Slot> = self
            .remap
            .iter()
            .map(|r| Slot {
                bdf: r.addr,
                kind: "remap-unit".into(),
                bar_sizes: vec![Self::window_size()],
            })
            .collect();
        slots.extend(self.accels.iter().map(|a| Slot {
            bdf: a.addr,
            kind: "accel".into(),
            bar_sizes: vec![accel::BAR_SIZE, accel::BAR_SIZE],
        }));
        slots
    }

    /// QEMU's `-device` arguments for every function (JSON: the only form QEMU accepts for
    /// vfio-user-pci), on pcie.0 at their addresses.
    pub fn qemu_devices(&self) -> Vec<String> {
        let remap = self.remap.iter().map(|r| (&r.socket, r.addr));
        let accels = self.accels.iter().map(|a| (&a.socket, a.addr));
        remap
            .chain(accels)
            .flat_map(|(socket, addr)| ["-device".to_string(), device_json(socket, addr)])
            .collect()
    }

    /// The QEMU arguments the topology needs: shared memfd guest RAM of `ram` (so the server
    /// maps it: the remap unit reads the guest's tables only where it is mapped), the DMAR
    /// table at `dmar` with a remap unit, and the functions.
    pub fn qemu_args(&self, ram: &str, dmar: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            &format!("{MACHINE},accel=tcg,memory-backend=mem"),
            "-cpu",
            "max",
            "-m",
            ram,
            "-object",
            &format!("memory-backend-memfd,id=mem,size={ram},share=on"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(dmar) = dmar {
            args.push("-acpitable".into());
            args.push(format!("file={}", dmar.display()));
        }
        args.extend(self.qemu_devices());
        args
    }
}

/// A vfio-user-pci `-device` argument.
pub fn device_json(socket: &Path, addr: Bdf) -> String {
    let socket = serde_json::json!({ "path": socket, "type": "unix" });
    serde_json::json!({ "driver": "vfio-user-pci", "socket": socket, "addr": addr.qemu_addr() })
        .to_string()
}

/// Reports a placement the way a user can act on: a match is logged, a mismatch was already
/// explained by the remap unit's check.
pub fn log_placement(expected: u64, actual: u64) {
    if actual == expected {
        info!("remap unit BAR0 placed at 0x{actual:x}, where the DMAR table says: OK");
    } else {
        error!(
            "remap unit BAR0 placed at 0x{actual:x}, the DMAR table says 0x{expected:x}: \
             the guest will not find its IOMMU registers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology {
            remap: Some(RemapSpec {
                socket: "/run/r.sock".into(),
                addr: "03.0".parse().unwrap(),
            }),
            accels: vec![AccelSpec {
                socket: "/run/a.sock".into(),
                addr: "04.0".parse().unwrap(),
                vendor_id: accel::VENDOR_ID,
                device_id: accel::DEVICE_ID,
            }],
        }
    }

    #[test]
    fn test_build_gives_remap_unit_first_and_a_dmar_naming_the_accelerator() {
        let built = topology().build(0xfebf_f000, |_| ()).unwrap();
        assert_eq!(built.functions.len(), 2);
        assert_eq!(built.functions[0].socket, PathBuf::from("/run/r.sock"));
        let dmar = built.dmar.unwrap();
        assert_eq!(&dmar[..4], b"DMAR");
        assert_eq!(dmar.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert!(built.front_end.is_some());
    }

    #[test]
    fn test_duplicate_addresses_are_refused() {
        let mut t = topology();
        t.accels[0].addr = "03.0".parse().unwrap();
        assert!(matches!(
            t.build(0xfebf_f000, |_| ()),
            Err(TopologyError::DuplicateAddress(_))
        ));
    }

    #[test]
    fn test_qemu_args_carry_the_dmar_and_json_devices() {
        let args = topology().qemu_args("1G", Some(Path::new("/tmp/dmar.bin")));
        assert!(args.contains(&"file=/tmp/dmar.bin".to_string()));
        assert!(args.iter().any(|a| a.contains("\"addr\":\"03.0\"")));
        assert!(args.iter().any(|a| a.contains("\"addr\":\"04.0\"")));
        assert!(args.iter().any(|a| a.contains("share=on")));
    }

    #[test]
    fn test_plain_topology_has_no_dmar() {
        let mut t = topology();
        t.remap = None;
        let built = t.build(0, |_| ()).unwrap();
        assert!(built.dmar.is_none() && built.front_end.is_none());
    }
}
