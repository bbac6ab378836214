//! gvc: diffusion-based perceptual video compression for GStreamer.

pub mod clips;
pub mod codec;
pub mod model;
