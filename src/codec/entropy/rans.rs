//! Byte-wise rANS (32-bit state, 16-bit probability precision), after ryg_rans.
//!
//! Symbols are pushed in any order into [`RansEncoder`]; it codes them in reverse so the
//! [`RansDecoder`] reads them back in the order they were pushed. Only integer arithmetic.

use anyhow::{bail, Result};

/// Probability precision of every CDF table, in bits.
pub const PRECISION: u32 = 16;
const TOTAL: u32 = 1 << PRECISION;
/// Lower bound of the normalised state interval.
const RANS_L: u32 = 1 << 23;

/// One coded event: an interval `[start, start + freq)` of `[0, 2^16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start: u32,
    pub freq: u32,
}

/// Either a modelled interval or raw bits (bypass, for escaped values).
#[derive(Clone, Copy, Debug)]
enum Event {
    Model(Interval),
    Bits { value: u32, nbits: u32 },
}

#[derive(Default, Clone)]
pub struct RansEncoder {
    events: Vec<Event>,
}

impl RansEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, interval: Interval) {
        debug_assert!(interval.freq > 0 && interval.start + interval.freq <= TOTAL);
        self.events.push(Event::Model(interval));
    }

    /// Raw bits, coded with a uniform distribution (at most 16 bits per call).
    pub fn put_bits(&mut self, value: u32, nbits: u32) {
        debug_assert!(nbits <= 16 && (nbits == 32 || value < (1 << nbits)));
        if nbits > 0 {
            self.events.push(Event::Bits { value, nbits });
        }
    }

    /// Encodes everything pushed so far and returns the bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(self.events.len() / 2 + 8);
        let mut x: u32 = RANS_L;
        for ev in self.events.iter().rev() {
            let (start, freq, scale_bits) = match *ev {
                Event::Model(iv) => (iv.start, iv.freq, PRECISION),
                Event::Bits { value, nbits } => (value, 1, nbits),
            };
            let x_max = ((RANS_L >> scale_bits) << 8) * freq;
            while x >= x_max {
                out.push(x as u8);
                x >>= 8;
            }
            x = ((x / freq) << scale_bits) + (x % freq) + start;
        }
        out.extend_from_slice(&x.to_le_bytes());
        out.reverse();
        out
    }
}

pub struct RansDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    x: u32,
}

impl<'a> RansDecoder<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self> {
        if data.len() < 4 {
            bail!("rANS stream too short ({} bytes)", data.len());
        }
        let x = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        // Every encoder state is >= RANS_L, and decoding keeps it there. A smaller start
        // could reach 0 and then read the zeros past the end forever (found by fuzzing).
        if x < RANS_L {
            bail!("rANS stream starts below the state bound (damaged payload)");
        }
        Ok(Self { data, pos: 4, x })
    }

    /// The cumulative frequency the next modelled symbol falls in.
    pub fn peek(&self) -> u32 {
        self.x & (TOTAL - 1)
    }

    /// Consumes the interval the caller identified with [`Self::peek`].
    pub fn advance(&mut self, interval: Interval) {
        self.advance_scaled(interval.start, interval.freq, PRECISION);
    }

    pub fn get_bits(&mut self, nbits: u32) -> u32 {
        if nbits == 0 {
            return 0;
        }
        let value = self.x & ((1 << nbits) - 1);
        self.advance_scaled(value, 1, nbits);
        value
    }

    fn advance_scaled(&mut self, start: u32, freq: u32, scale_bits: u32) {
        let mask = (1u32 << scale_bits) - 1;
        self.x = freq * (self.x >> scale_bits) + (self.x & mask) - start;
        // Past the end the stream reads as zeros: a damaged payload decodes to wrong
        // symbols, never to an out-of-bounds read; callers validate what they decode.
        while self.x < RANS_L {
            let b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
            self.x = (self.x << 8) | b as u32;
        }
    }

    /// True when the stream was consumed exactly (a check against damaged payloads).
    pub fn is_exhausted(&self) -> bool {
        self.pos == self.data.len() && self.x == RANS_L
    }
}
