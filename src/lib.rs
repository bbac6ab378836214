//! gvc: diffusion-based perceptual video compression for GStreamer.
#![allow(clippy::new_without_default)]

pub mod codec;
