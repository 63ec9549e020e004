//! Guest memory: the DMA map table (GPA → mapping) and bounds-checked access to it.
//! Maps with an fd are mapped into the server; maps without one go through DMA_READ/DMA_WRITE.

pub mod address;
pub mod budget;
pub mod guest;
pub mod mapping;
pub mod table;

pub use address::Gpa;
pub use guest::{GuestMemory, MemError, MemView, ViewCache};
pub use table::{MapError, PAGE_SIZE};
