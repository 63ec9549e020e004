//! The PCI Express endpoint model: configuration space, header and BARs, capabilities
//! (PCI Express, MSI-X), the extended capabilities ATS, PRI and PASID, and function addresses.

pub mod bdf;
pub mod builder;
pub mod caps;
pub mod config;
pub mod header;

pub use bdf::{Bdf, BdfError};
pub use builder::{ConfigBuilder, LayoutError};
pub use config::{ConfigSpace, Registers, CONFIG_SPACE_SIZE};
pub use header::{BarKind, BarSpec, Identity};
