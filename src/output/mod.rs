//! Everything a run writes: the atomic staging folder (`staging`), the NIfTI maps on the input
//! grid (`maps`), and the figures and DICOM objects through their writers, with errors named by
//! the file they were headed to.

mod maps;
mod staging;
mod writers;

pub use maps::{pass_writer, write_maps};
pub use staging::{check_target, spill_error, OutputError, Staging};
pub use writers::{write_dicom, write_figures};
