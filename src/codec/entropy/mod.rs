//! Entropy coding: rANS over integer CDF tables, a Gaussian conditional model for latents
//! and per-channel factorized tables for hyper-latents.

mod cdf;
mod gaussian;
mod rans;

pub use cdf::CdfTable;
pub use gaussian::{scale_of_index, GaussianConditional, NUM_SCALES, SCALE_MAX, SCALE_MIN};
pub use rans::{Interval, RansDecoder, RansEncoder, PRECISION};

#[cfg(test)]
mod tests;
