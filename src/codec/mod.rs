//! The codec engine: no GStreamer types. Used by the elements, training and evaluation.

pub mod bitstream;
pub mod entropy;
pub mod mask;
pub mod rate_control;
pub mod session;

#[cfg(test)]
pub(crate) mod tests;
