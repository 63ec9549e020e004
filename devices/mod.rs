//! Device models served by vsvm. They build on the library's layers and nothing in src/
//! depends on them.

pub mod accel;
pub mod remap_unit;
pub mod topology;
