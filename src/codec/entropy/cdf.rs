//! Integer CDF tables and the symbol coding built on them.
//!
//! A table covers the values `offset .. offset + n - 1`; its last symbol is an escape
//! after which the value is sent in bypass bits (Exp-Golomb), so any `i32` can be coded.
//! Every symbol has a non-zero frequency and the frequencies sum to exactly 2^16.

use super::rans::{Interval, RansDecoder, RansEncoder, PRECISION};
use anyhow::{bail, ensure, Result};

const TOTAL: u32 = 1 << PRECISION;
/// Escaped magnitudes above this are refused: no latent legitimately gets there, and it
/// bounds the bypass loop on damaged input.
const MAX_ESCAPE_BITS: u32 = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdfTable {
    /// `cdf[0] = 0`, `cdf[n] = 2^16`, strictly increasing; symbol `n - 1` is the escape.
    cdf: Vec<u32>,
    offset: i32,
}

impl CdfTable {
    /// Builds a table from the probabilities of `offset, offset + 1, …` followed by the
    /// escape probability (the mass outside the range). Probabilities need not sum to 1.
    pub fn from_pmf(pmf: &[f64], offset: i32) -> Result<Self> {
        ensure!(pmf.len() >= 2, "a CDF table needs at least one value and the escape");
        ensure!(pmf.len() < TOTAL as usize / 2, "CDF table too large: {} symbols", pmf.len());
        ensure!(pmf.iter().all(|p| p.is_finite() && *p >= 0.0), "invalid probabilities");
        let sum: f64 = pmf.iter().sum();
        ensure!(sum > 0.0, "probabilities sum to zero");
        // Each symbol keeps at least 1; the rest of the total is shared in proportion.
        let spare = (TOTAL - pmf.len() as u32) as f64;
        let mut freq: Vec<u32> = pmf.iter().map(|p| 1 + (p / sum * spare).floor() as u32).collect();
        let mut assigned: u32 = freq.iter().sum();
        // Hand out the rounding remainder to the most probable symbols, deterministically.
        let mut order: Vec<usize> = (0..pmf.len()).collect();
        order.sort_by(|&a, &b| pmf[b].partial_cmp(&pmf[a]).unwrap().then(a.cmp(&b)));
        let mut i = 0;
        while assigned < TOTAL {
            freq[order[i % order.len()]] += 1;
            assigned += 1;
            i += 1;
        }
        Self::from_frequencies(&freq, offset)
    }

    /// A table from integer frequencies (as stored with a model's weights).
    pub fn from_frequencies(freq: &[u32], offset: i32) -> Result<Self> {
        ensure!(freq.len() >= 2, "a CDF table needs at least one value and the escape");
        ensure!(freq.iter().all(|&f| f > 0), "zero-frequency symbol in CDF table");
        let mut cdf = Vec::with_capacity(freq.len() + 1);
        let mut acc = 0u32;
        cdf.push(0);
        for &f in freq {
            acc = acc.saturating_add(f);
            cdf.push(acc);
        }
        ensure!(acc == TOTAL, "CDF frequencies sum to {acc}, not {TOTAL}");
        Ok(Self { cdf, offset })
    }

    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Number of symbols including the escape.
    pub fn len(&self) -> usize {
        self.cdf.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn frequencies(&self) -> Vec<u32> {
        self.cdf.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn interval(&self, symbol: usize) -> Interval {
        Interval { start: self.cdf[symbol], freq: self.cdf[symbol + 1] - self.cdf[symbol] }
    }

    /// Ideal code length of `value` in bits (for rate estimates and tests).
    pub fn cost_bits(&self, value: i32) -> f64 {
        let escape = self.len() - 1;
        let s = value as i64 - self.offset as i64;
        let p = |sym: usize| self.interval(sym).freq as f64 / TOTAL as f64;
        if s >= 0 && (s as usize) < escape {
            -p(s as usize).log2()
        } else {
            -p(escape).log2() + escape_bits(value, self.offset, escape) as f64
        }
    }

    pub fn encode(&self, enc: &mut RansEncoder, value: i32) {
        let escape = self.len() - 1;
        let s = value as i64 - self.offset as i64;
        if s >= 0 && (s as usize) < escape {
            enc.put(self.interval(s as usize));
            return;
        }
        enc.put(self.interval(escape));
        // Escaped values map to 0, 1, 2, … by distance outside the range, sign first.
        let (below, dist) = if s < 0 { (1, (-s - 1) as u64) } else { (0, s as u64 - escape as u64) };
        enc.put_bits(below, 1);
        put_exp_golomb(enc, dist);
    }

    pub fn decode(&self, dec: &mut RansDecoder) -> Result<i32> {
        let escape = self.len() - 1;
        let target = dec.peek();
        // Largest symbol whose start is <= target.
        let symbol = self.cdf.partition_point(|&c| c <= target) - 1;
        dec.advance(self.interval(symbol));
        if symbol < escape {
            return Ok(self.offset + symbol as i32);
        }
        let below = dec.get_bits(1) == 1;
        let dist = get_exp_golomb(dec)? as i64;
        let value = if below { self.offset as i64 - 1 - dist } else { self.offset as i64 + escape as i64 + dist };
        i32::try_from(value).map_err(|_| anyhow::anyhow!("escaped value out of range"))
    }
}

fn escape_bits(value: i32, offset: i32, escape: usize) -> u32 {
    let s = value as i64 - offset as i64;
    let dist = if s < 0 { (-s - 1) as u64 } else { s as u64 - escape as u64 };
    1 + 2 * (64 - (dist + 1).leading_zeros()) - 1
}

fn put_exp_golomb(enc: &mut RansEncoder, value: u64) {
    let v = value + 1;
    let nbits = 64 - v.leading_zeros(); // >= 1
                                        // Unary length prefix, then the bits below the leading one.
    for _ in 1..nbits {
        enc.put_bits(0, 1);
    }
    enc.put_bits(1, 1);
    let rest = nbits - 1;
    let mut shift = rest;
    while shift > 0 {
        let chunk = shift.min(16);
        shift -= chunk;
        enc.put_bits(((v >> shift) & ((1 << chunk) - 1)) as u32, chunk);
    }
}

fn get_exp_golomb(dec: &mut RansDecoder) -> Result<u64> {
    let mut zeros = 0;
    while dec.get_bits(1) == 0 {
        zeros += 1;
        if zeros > MAX_ESCAPE_BITS {
            bail!("escape code longer than {MAX_ESCAPE_BITS} bits: damaged payload");
        }
    }
    let mut v: u64 = 1;
    let mut left = zeros;
    while left > 0 {
        let chunk = left.min(16);
        left -= chunk;
        v = (v << chunk) | dec.get_bits(chunk) as u64;
    }
    Ok(v - 1)
}
