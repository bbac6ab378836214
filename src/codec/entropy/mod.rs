//! Entropy coding: rANS over integer CDF tables, a Gaussian conditional model for latents
//! and per-channel factorized tables for hyper-latents.

mod cdf;
mod gaussian;
mod rans;

pub use cdf::CdfTable;
pub use gaussian::{
    portable_exp, scale_of_index, GaussianConditional, LN_SCALE_MAX, LN_SCALE_MIN, NUM_SCALES, SCALE_MAX, SCALE_MIN,
};
pub use rans::{Interval, RansDecoder, RansEncoder, PRECISION};

/// A symbol costing more than this many bits is a "surprise": a residual where the entropy
/// model predicted almost none (the diagnostics' threshold, not a coder limit).
pub const SURPRISE_SYMBOL_BITS: f64 = 10.0;

#[cfg(test)]
mod tests;
