mod base;

#[cfg(feature = "ddp")]
pub(crate) mod ddp;
pub(crate) mod multi;
pub(crate) mod single;

pub use base::*;
