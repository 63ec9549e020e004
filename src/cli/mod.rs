//! The `vsvm` command's subcommands (the binary's own modules, not part of the library).

pub mod calibrate;
pub mod options;
pub mod serve;
