//! Gaussian conditional entropy model over a fixed log-spaced scale table.
//!
//! The tables are built with IEEE basic operations only (+ − × ÷), never the platform's
//! `exp`/`erf`, so every machine builds bit-identical tables.

use super::cdf::CdfTable;
use super::rans::{RansDecoder, RansEncoder};
use anyhow::{ensure, Result};

pub const SCALE_MIN: f64 = 0.11;
pub const SCALE_MAX: f64 = 64.0;
/// ln SCALE_MIN and ln SCALE_MAX as literals: the platform's `ln` need not round alike
/// everywhere, and these place the table's index boundaries.
pub const LN_SCALE_MIN: f64 = -2.2072749131897207;
pub const LN_SCALE_MAX: f64 = 4.1588830833596715;
pub const NUM_SCALES: usize = 64;
/// Tail mass left to the escape symbol on each side.
const TAIL_MASS: f64 = 1e-6;

/// `exp` from range reduction and a Taylor series in IEEE basic operations: the same on every
/// platform (Rust does not contract them into fused multiply-adds).
pub fn portable_exp(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    if x < -700.0 {
        return 0.0;
    }
    let k = (x / LN2).round();
    let r = x - k * LN2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=24 {
        term = term * r / i as f64;
        sum += term;
    }
    let mut scale = 1.0;
    let mut kk = k as i64;
    while kk > 0 {
        scale *= 2.0;
        kk -= 1;
    }
    while kk < 0 {
        scale *= 0.5;
        kk += 1;
    }
    sum * scale
}

/// Standard normal CDF via erfc (Numerical Recipes' Chebyshev fit, rel. error < 1.2e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = -x / std::f64::consts::SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * portable_exp(poly);
    let erfc = if z >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

/// ln of the scale of table entry `i`: evenly spaced from ln SCALE_MIN to ln SCALE_MAX.
fn log_scale_of_index(i: usize) -> f64 {
    LN_SCALE_MIN + (LN_SCALE_MAX - LN_SCALE_MIN) * i as f64 / (NUM_SCALES - 1) as f64
}

/// The scale of table entry `i`: log-spaced from SCALE_MIN to SCALE_MAX.
pub fn scale_of_index(i: usize) -> f64 {
    portable_exp(log_scale_of_index(i))
}

pub struct GaussianConditional {
    log_scales: Vec<f64>,
    tables: Vec<CdfTable>,
}

impl Default for GaussianConditional {
    fn default() -> Self {
        Self::new()
    }
}

impl GaussianConditional {
    pub fn new() -> Self {
        let log_scales = (0..NUM_SCALES).map(log_scale_of_index).collect();
        let tables = (0..NUM_SCALES).map(Self::table_for_index).collect();
        Self { log_scales, tables }
    }

    fn table_for_index(i: usize) -> CdfTable {
        let s = scale_of_index(i);
        // Smallest half-width whose one-sided tail is below TAIL_MASS.
        let mut m = 1i32;
        while normal_cdf(-(m as f64 + 0.5) / s) > TAIL_MASS {
            m += 1;
        }
        let mut pmf: Vec<f64> =
            (-m..=m).map(|v| normal_cdf((v as f64 + 0.5) / s) - normal_cdf((v as f64 - 0.5) / s)).collect();
        pmf.push(2.0 * normal_cdf(-(m as f64 + 0.5) / s));
        CdfTable::from_pmf(&pmf, -m).expect("Gaussian table is well formed")
    }

    /// The table index for a predicted scale given as its logarithm (the networks' output, so
    /// no platform `exp` decides it): the smallest table scale >= the scale.
    pub fn index_for_log_scale(&self, log_scale: f32) -> u8 {
        let i = self.log_scales.partition_point(|&s| s < log_scale as f64);
        i.min(NUM_SCALES - 1) as u8
    }

    pub fn table(&self, index: u8) -> &CdfTable {
        &self.tables[index as usize]
    }

    /// Codes symbols (already mean-removed and rounded) with their scale indices.
    pub fn encode(&self, enc: &mut RansEncoder, symbols: &[i32], indices: &[u8]) -> Result<()> {
        ensure!(symbols.len() == indices.len(), "symbols and scale indices differ in length");
        for (&s, &i) in symbols.iter().zip(indices) {
            ensure!((i as usize) < NUM_SCALES, "scale index {i} out of range");
            self.tables[i as usize].encode(enc, s);
        }
        Ok(())
    }

    pub fn decode(&self, dec: &mut RansDecoder, indices: &[u8]) -> Result<Vec<i32>> {
        indices
            .iter()
            .map(|&i| {
                ensure!((i as usize) < NUM_SCALES, "scale index {i} out of range");
                self.tables[i as usize].decode(dec)
            })
            .collect()
    }

    /// Ideal code length in bits.
    pub fn cost_bits(&self, symbols: &[i32], indices: &[u8]) -> f64 {
        symbols.iter().zip(indices).map(|(&s, &i)| self.tables[i as usize].cost_bits(s)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_math_matches_libm() {
        for x in [-30.0, -5.5, -1.0, 0.0, 0.3, 2.0, 10.0] {
            let (a, b) = (portable_exp(x), f64::exp(x));
            assert!(((a - b) / b).abs() < 1e-13, "exp({x}): {a} vs {b}");
        }
        assert_eq!(LN_SCALE_MIN, SCALE_MIN.ln());
        assert_eq!(LN_SCALE_MAX, SCALE_MAX.ln());
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 1e-6);
        assert!((normal_cdf(-2.0) - 0.022_750_132).abs() < 1e-6);
    }

    #[test]
    fn tables_are_symmetric_and_valid() {
        let gc = GaussianConditional::new();
        for i in 0..NUM_SCALES as u8 {
            let t = gc.table(i);
            let f = t.frequencies();
            let n = f.len() - 1; // without the escape
            assert_eq!(t.offset(), -((n as i32 - 1) / 2));
            for k in 0..n / 2 {
                assert!(f[k].abs_diff(f[n - 1 - k]) <= 1, "table {i} asymmetric at {k}");
            }
        }
        assert_eq!(gc.index_for_log_scale(-100.0), 0);
        assert_eq!(gc.index_for_log_scale(100.0), (NUM_SCALES - 1) as u8);
        let between = |i: usize| ((log_scale_of_index(i) + log_scale_of_index(i + 1)) / 2.0) as f32;
        assert_eq!(gc.index_for_log_scale(between(10)), 11);
        assert_eq!(gc.index_for_log_scale(log_scale_of_index(10) as f32 - 1e-6), 10);
    }
}
