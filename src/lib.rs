//! gvc: diffusion-based perceptual video compression for GStreamer.
//!
//! Layers, top to bottom: the elements (`gvcenc`, `gvcdec`, `gvcparse`, the typefinder),
//! the GStreamer-free codec engine (`codec`), the networks (`model`) and the diffusion
//! sampler (`diffusion`). Training and evaluation tools reuse the engine.

use gst::glib;

pub mod cli;
pub mod clips;
pub mod codec;
pub mod diffusion;
pub mod evaluation;
mod gvcdec;
mod gvcenc;
mod gvcparse;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod training;
pub mod typefind;
pub mod video;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    model::reproducible_math();
    gvcenc::register(plugin)?;
    gvcdec::register(plugin)?;
    gvcparse::register(plugin)?;
    typefind::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    gvc,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
