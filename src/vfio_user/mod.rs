//! vfio-user server plumbing: wire format, framing, command dispatch, server-initiated DMA.
//! Follows the vfio-user specification (QEMU docs/interop/vfio-user.rst) as QEMU 11.1 uses it.

pub mod cpu_latency;
pub mod device;
pub mod dispatch;
pub mod dma_port;
pub mod poll;
pub mod protocol;
pub mod server;
pub mod transport;

pub use cpu_latency::CpuLatency;
pub use device::{
    Device, DmaLimits, DmaMapRequest, DmaUnmapRequest, IrqAction, IrqData, IrqDescription,
    IrqSetRequest, RegionDescription,
};
pub use dma_port::{DmaPort, DmaPortError};
pub use poll::PollWindow;
pub use server::{bind, serve, serve_connection, ServerOptions};
