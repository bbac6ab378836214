//! The diffusion mask (format version 4): per 32×32 block of the coded picture, whether the
//! decoder shows the diffusion decoder's output there or the codec's reconstruction.
//!
//! The denoiser's harm is local (bikes at QP 0–1, session 37: its picture beats D(ŷ) in
//! about 40 % of the 32×32 blocks, loses in the rest), so the encoder, which has the source,
//! signals where it helps. The decoder decodes ŷ + m·(z⁰ − ŷ) once; the TDIR buffer keeps
//! the unmasked predictions, so a mask never carries into later frames. The bits follow the
//! frame's symbols in its rANS sub-stream: a sub-stream of their own would cost 5 bytes of
//! coder state and size field per frame, 12 % of a carphone frame's bits at QP 4 (0.0127 bpp
//! at 176×144, `models/gvc-small/logs/bench-diffusion-38-masks.log`).

use super::entropy::{Interval, RansDecoder, RansEncoder, PRECISION};
use crate::model::autoencoder::AutoencoderConfig;
use tch::{Kind, Tensor};

/// Block side in pixels of the coded picture.
pub const MASK_BLOCK: i64 = 32;
/// The adaptive model halves its counts above this total: it follows a mask whose statistics
/// change across the picture.
const MAX_COUNT: u32 = 255;
const TOTAL: u32 = 1 << PRECISION;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffusionMask {
    /// Block side in pixels: [`MASK_BLOCK`] in streams; other multiples of the latent's
    /// pixel for analysis (`gvc-bench-diffusion --block-oracle`).
    block: i64,
    rows: usize,
    cols: usize,
    /// Raster order; true: the block shows the diffusion output.
    bits: Vec<bool>,
}

/// Per context (the left and the upper neighbour's bits; 0 outside the picture), counts of
/// zeros and ones seen so far, from one each.
struct BitModel {
    counts: [[u32; 2]; 4],
}

impl BitModel {
    fn new() -> Self {
        Self { counts: [[1, 1]; 4] }
    }

    /// The coding interval of `bit` in context `ctx`: zeros take [0, f), ones [f, 2¹⁶).
    fn interval(&self, ctx: usize, bit: bool) -> Interval {
        let [zeros, ones] = self.counts[ctx];
        let f = ((zeros as u64 * TOTAL as u64) / (zeros + ones) as u64).clamp(1, TOTAL as u64 - 1) as u32;
        if bit {
            Interval { start: f, freq: TOTAL - f }
        } else {
            Interval { start: 0, freq: f }
        }
    }

    fn update(&mut self, ctx: usize, bit: bool) {
        let c = &mut self.counts[ctx];
        c[bit as usize] += 1;
        if c[0] + c[1] > MAX_COUNT {
            *c = [c[0].div_ceil(2), c[1].div_ceil(2)];
        }
    }
}

impl DiffusionMask {
    /// Block rows and columns of a coded picture.
    pub fn grid(coded_height: u16, coded_width: u16) -> (usize, usize) {
        let blocks = |v: u16| (v as i64 + MASK_BLOCK - 1) as usize / MASK_BLOCK as usize;
        (blocks(coded_height), blocks(coded_width))
    }

    /// A stream's mask ([`MASK_BLOCK`]-pixel blocks).
    pub fn new(rows: usize, cols: usize, bits: Vec<bool>) -> Self {
        assert_eq!(bits.len(), rows * cols, "mask of {} bits for {rows}×{cols} blocks", bits.len());
        Self { block: MASK_BLOCK, rows, cols, bits }
    }

    /// The [`MASK_BLOCK`]-pixel blocks where the diffusion output's LPIPS distance map
    /// (N = 1, 1, H, W) against the source is lower than the reconstruction's, on the picture
    /// the maps cover (the display size, whose blocks are the coded picture's: both sizes
    /// round up to the same grid).
    pub fn from_distance_maps(diffused: &Tensor, plain: &Tensor) -> Self {
        Self::from_distance_maps_in_blocks(diffused, plain, MASK_BLOCK)
    }

    /// As [`Self::from_distance_maps`] with `block`-pixel blocks (a multiple of the latent's
    /// pixel), which no stream carries: for analysis.
    pub fn from_distance_maps_in_blocks(diffused: &Tensor, plain: &Tensor, block: i64) -> Self {
        assert!(block > 0 && block % AutoencoderConfig::FACTOR == 0, "{block}-pixel blocks");
        let pool = |m: &Tensor| m.avg_pool2d([block, block], [block, block], [0, 0], true, false, None::<i64>);
        let better = pool(diffused).lt_tensor(&pool(plain));
        let (rows, cols) = (better.size()[2] as usize, better.size()[3] as usize);
        let bits = Vec::<bool>::try_from(better.flatten(0, -1).to_device(tch::Device::Cpu)).unwrap();
        Self { block, rows, cols, bits }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether every block shows the diffusion output (what a frame without a mask does).
    pub fn is_full(&self) -> bool {
        self.bits.iter().all(|&b| b)
    }

    /// The share of blocks showing the diffusion output.
    pub fn share(&self) -> f64 {
        self.bits.iter().filter(|&&b| b).count() as f64 / self.bits.len() as f64
    }

    fn context(&self, bits: &[bool], i: usize) -> usize {
        let (r, c) = (i / self.cols, i % self.cols);
        let left = c > 0 && bits[i - 1];
        let up = r > 0 && bits[i - self.cols];
        left as usize + 2 * up as usize
    }

    /// Codes every bit in raster order under the adaptive model; returns their ideal cost in
    /// bits.
    pub fn encode(&self, enc: &mut RansEncoder) -> f64 {
        let mut model = BitModel::new();
        let mut bits = 0.0;
        for (i, &bit) in self.bits.iter().enumerate() {
            let ctx = self.context(&self.bits, i);
            let interval = model.interval(ctx, bit);
            bits += PRECISION as f64 - (interval.freq as f64).log2();
            enc.put(interval);
            model.update(ctx, bit);
        }
        bits
    }

    /// Reads a mask of `rows`×`cols` blocks. Damage shows as the sub-stream not ending where
    /// the frame's last symbol does (`RansDecoder::is_exhausted`).
    pub fn decode(dec: &mut RansDecoder, rows: usize, cols: usize) -> Self {
        let mut mask = Self { block: MASK_BLOCK, rows, cols, bits: Vec::with_capacity(rows * cols) };
        let mut model = BitModel::new();
        for i in 0..rows * cols {
            let ctx = mask.context(&mask.bits, i);
            let one = model.interval(ctx, true);
            let bit = dec.peek() >= one.start;
            dec.advance(if bit { one } else { model.interval(ctx, false) });
            model.update(ctx, bit);
            mask.bits.push(bit);
        }
        mask
    }

    /// The mask at `size` (H, W) with `scale` pixels per block side: (1, 1, H, W), 1 where the
    /// diffusion output shows.
    fn weights(&self, size: [i64; 2], scale: i64, device: tch::Device) -> Tensor {
        let blocks: Vec<f32> = self.bits.iter().map(|&b| b as u8 as f32).collect();
        let full = [self.rows as i64 * scale, self.cols as i64 * scale];
        Tensor::from_slice(&blocks)
            .view([1, 1, self.rows as i64, self.cols as i64])
            .to_device(device)
            .upsample_nearest2d(full, Some(scale as f64), Some(scale as f64))
            .narrow(2, 0, size[0])
            .narrow(3, 0, size[1])
    }

    /// What the decoder decodes: ŷ + m·(z⁰ − ŷ) on the latent grid (both (1, C, h, w)).
    pub fn compose(&self, y_hat: &Tensor, z0: &Tensor) -> Tensor {
        let (h, w) = (y_hat.size()[2], y_hat.size()[3]);
        let m = self.weights([h, w], self.block / AutoencoderConfig::FACTOR, y_hat.device()).to_kind(y_hat.kind());
        y_hat + (z0 - y_hat) * m
    }

    /// `diffused` in the mask's blocks and `plain` elsewhere, on the pixel grid (N, C, H, W).
    pub fn compose_pixels(&self, plain: &Tensor, diffused: &Tensor) -> Tensor {
        let (h, w) = (plain.size()[2], plain.size()[3]);
        let m = self.weights([h, w], self.block, plain.device()).to_kind(plain.kind());
        plain + (diffused - plain) * m
    }

    /// The mean of the two distance maps (N = 1, 1, H, W) taken per block as the mask says:
    /// the encoder's estimate of the masked picture's LPIPS, without decoding it.
    pub fn masked_distance(&self, diffused: &Tensor, plain: &Tensor) -> f64 {
        self.compose_pixels(plain, diffused).mean(Kind::Float).double_value(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn pseudo_random_bits(n: usize, seed: u64, ones_in_8: u64) -> Vec<bool> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s % 8 < ones_in_8
            })
            .collect()
    }

    fn coded(mask: &DiffusionMask) -> (Vec<u8>, f64) {
        let mut enc = RansEncoder::new();
        let bits = mask.encode(&mut enc);
        (enc.finish(), bits)
    }

    fn decoded(data: &[u8], rows: usize, cols: usize) -> Option<DiffusionMask> {
        let mut dec = RansDecoder::new(data).ok()?;
        let mask = DiffusionMask::decode(&mut dec, rows, cols);
        dec.is_exhausted().then_some(mask)
    }

    #[test]
    fn masks_round_trip_and_uniform_masks_cost_little() {
        for (rows, cols) in [(1, 1), (1, 7), (5, 1), (9, 11), (40, 60)] {
            for (seed, ones) in [(1, 0), (2, 8), (3, 4), (4, 1), (5, 7)] {
                let mask = DiffusionMask::new(rows, cols, pseudo_random_bits(rows * cols, seed, ones));
                let (data, bits) = coded(&mask);
                assert_eq!(decoded(&data, rows, cols), Some(mask), "{rows}×{cols}, {ones}/8 ones");
                // The coder's bytes are the ideal cost plus its 4-byte state, within a byte.
                assert!((data.len() as f64 - 4.0 - bits / 8.0).abs() <= 1.0, "{} bytes for {bits} bits", data.len());
            }
        }
        // A uniform 40×60 mask: far below a bit per block (adaptive model), random: about one.
        let uniform = coded(&DiffusionMask::new(40, 60, vec![false; 2400])).1;
        let random = coded(&DiffusionMask::new(40, 60, pseudo_random_bits(2400, 9, 4))).1;
        assert!(uniform < 100.0 && random > 2300.0 && random < 2500.0, "uniform {uniform} bits, random {random} bits");
    }

    #[test]
    fn damaged_masks_are_refused() {
        let mask = DiffusionMask::new(9, 11, pseudo_random_bits(99, 7, 3));
        let (data, _) = coded(&mask);
        // Read as another grid, truncated, extended or flipped: refused or another mask,
        // never a panic.
        assert_eq!(decoded(&data, 9, 12), None);
        assert_eq!(decoded(&data[..data.len() - 1], 9, 11), None);
        assert_eq!(decoded(&[data.as_slice(), &[0]].concat(), 9, 11), None);
        assert_eq!(decoded(&data[..3], 9, 11), None);
        for byte in 4..data.len() {
            let mut damaged = data.clone();
            damaged[byte] ^= 0x10;
            assert_ne!(decoded(&damaged, 9, 11).as_ref(), Some(&mask), "byte {byte}: damage went unnoticed");
        }
    }

    #[test]
    fn the_mask_picks_blocks_by_distance_and_composes_in_the_latent() {
        // A 40×72 picture: 2×3 blocks, the last row and column partial.
        let plain = Tensor::ones([1, 1, 40, 72], (Kind::Float, Device::Cpu));
        let diffused = plain.copy();
        // The diffusion output is closer in block (0, 1) and, by its average, in the partial
        // block (1, 2).
        let _ = diffused.narrow(2, 0, 32).narrow(3, 32, 32).fill_(0.5);
        let _ = diffused.narrow(2, 32, 8).narrow(3, 64, 8).fill_(0.9);
        let _ = diffused.narrow(2, 0, 4).narrow(3, 0, 4).fill_(0.0);
        let mask = DiffusionMask::from_distance_maps(&diffused, &plain);
        assert_eq!(mask, DiffusionMask::new(2, 3, vec![true, true, false, false, false, true]));
        assert_eq!(DiffusionMask::grid(48, 80), (2, 3));
        let estimate = mask.masked_distance(&diffused, &plain);
        let expected = (40.0 * 72.0 - 16.0 - 32.0 * 32.0 * 0.5 - 64.0 * 0.1) / (40.0 * 72.0);
        assert!((estimate - expected).abs() < 1e-6, "{estimate} vs {expected}");
        // On the latent grid (6×10 for a 48×80 coded picture) a block is 4×4.
        let y_hat = Tensor::zeros([1, 2, 6, 10], (Kind::Float, Device::Cpu));
        let z0 = Tensor::ones([1, 2, 6, 10], (Kind::Float, Device::Cpu));
        let composed = mask.compose(&y_hat, &z0);
        let at = |r: i64, c: i64| composed.double_value(&[0, 1, r, c]);
        assert_eq!((at(0, 0), at(3, 3), at(0, 4), at(3, 7), at(0, 8), at(5, 9)), (1.0, 1.0, 1.0, 1.0, 0.0, 1.0));
        assert_eq!((at(4, 0), at(5, 7), at(2, 9)), (0.0, 0.0, 0.0));
    }
}
