//! The latent autoencoder: our stand-in for Stable Diffusion's frozen VAE (no package
//! ships one). E maps RGB to a latent at 1/8 resolution; D maps it back.

use super::layers::{conv, ResBlock, SubpelConv};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderConfig {
    /// Feature channels at 1, 1/2, 1/4 and 1/8 resolution.
    pub channels: [i64; 4],
    pub latent_channels: i64,
}

impl AutoencoderConfig {
    /// Spatial down-sampling factor of the latent.
    pub const FACTOR: i64 = 8;
}

#[derive(Debug)]
pub struct LatentEncoder {
    conv_in: nn::Conv2D,
    down: Vec<nn::Conv2D>,
    res: Vec<ResBlock>,
    conv_out: nn::Conv2D,
}

impl LatentEncoder {
    pub fn new(p: nn::Path, cfg: &AutoencoderConfig) -> Self {
        let c = cfg.channels;
        let down = (0..3).map(|i| conv(&p / "down" / i, c[i], c[i + 1], 3, 2)).collect();
        let res = (0..2).map(|i| ResBlock::new(&p / "res" / i, c[3])).collect();
        Self {
            conv_in: conv(&p / "conv_in", 3, c[0], 3, 1),
            down,
            res,
            conv_out: conv(&p / "conv_out", c[3], cfg.latent_channels, 3, 1),
        }
    }

    /// RGB in [0,1], sides multiples of 8 → latent (N, C, H/8, W/8).
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(&(x * 2.0 - 1.0)).leaky_relu();
        h = self.down[0].forward(&h).leaky_relu();
        h = self.down[1].forward(&h).leaky_relu();
        h = self.down[2].forward(&h);
        h = self.res[0].forward(&h);
        h = self.res[1].forward(&h);
        self.conv_out.forward(&h)
    }
}

#[derive(Debug)]
pub struct LatentDecoder {
    conv_in: nn::Conv2D,
    res: Vec<ResBlock>,
    up: Vec<SubpelConv>,
    conv_out: nn::Conv2D,
}

impl LatentDecoder {
    pub fn new(p: nn::Path, cfg: &AutoencoderConfig) -> Self {
        let c = cfg.channels;
        let up = (0..3).map(|i| SubpelConv::new(&p / "up" / i, c[3 - i], c[2 - i])).collect();
        let res = (0..2).map(|i| ResBlock::new(&p / "res" / i, c[3])).collect();
        Self {
            conv_in: conv(&p / "conv_in", cfg.latent_channels, c[3], 3, 1),
            res,
            up,
            conv_out: conv(&p / "conv_out", c[0], 3, 3, 1),
        }
    }

    /// Latent → RGB, nominally in [0,1] (not clamped, so training sees the overshoot).
    pub fn decode(&self, y: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(y);
        h = self.res[0].forward(&h);
        h = self.res[1].forward(&h);
        h = self.up[0].forward(&h).leaky_relu();
        h = self.up[1].forward(&h).leaky_relu();
        h = self.up[2].forward(&h).leaky_relu();
        self.conv_out.forward(&h) * 0.5 + 0.5
    }
}

#[derive(Debug)]
pub struct LatentAutoencoder {
    pub encoder: LatentEncoder,
    pub decoder: LatentDecoder,
}

impl LatentAutoencoder {
    pub fn new(p: nn::Path, cfg: &AutoencoderConfig) -> Self {
        Self { encoder: LatentEncoder::new(&p / "encoder", cfg), decoder: LatentDecoder::new(&p / "decoder", cfg) }
    }
}
