//! The latent autoencoder: our stand-in for Stable Diffusion's frozen VAE (no package
//! ships one). E maps RGB to a latent at 1/8 resolution; D maps it back.

use super::layers::{channels_last, conv, pad_replicate, ResBlock, SubpelConv};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderConfig {
    /// Feature channels at 1, 1/2, 1/4 and 1/8 resolution.
    pub channels: [i64; 4],
    pub latent_channels: i64,
    /// Residual blocks at 1/2 and 1/4 resolution, in E after its first two down-samplings and
    /// in D after its last two up-samplings (gvc-small has none; absent from its config).
    #[serde(default, skip_serializing_if = "no_scale_blocks")]
    pub scale_blocks: [i64; 2],
}

fn no_scale_blocks(blocks: &[i64; 2]) -> bool {
    *blocks == [0, 0]
}

impl AutoencoderConfig {
    /// Spatial down-sampling factor of the latent.
    pub const FACTOR: i64 = 8;
}

#[derive(Debug)]
pub struct LatentEncoder {
    conv_in: nn::Conv2D,
    down: Vec<nn::Conv2D>,
    /// Blocks at 1/2 and at 1/4 resolution.
    scale_res: [Vec<ResBlock>; 2],
    res: Vec<ResBlock>,
    conv_out: nn::Conv2D,
}

impl LatentEncoder {
    pub fn new(p: nn::Path, cfg: &AutoencoderConfig) -> Self {
        let c = cfg.channels;
        let down = (0..3).map(|i| conv(&p / "down" / i, c[i], c[i + 1], 3, 2)).collect();
        let res = (0..2).map(|i| ResBlock::new(&p / "res" / i, c[3])).collect();
        let scale_res = [0, 1].map(|s| scale_blocks(&p / "scale_res" / s, c[s + 1], cfg.scale_blocks[s]));
        Self {
            conv_in: conv(&p / "conv_in", 3, c[0], 3, 1),
            down,
            scale_res,
            res,
            conv_out: conv(&p / "conv_out", c[3], cfg.latent_channels, 3, 1),
        }
    }

    /// RGB in [0,1], sides multiples of 8 → latent (N, C, H/8, W/8).
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(&channels_last(&(x * 2.0 - 1.0))).leaky_relu();
        h = self.down[0].forward(&h).leaky_relu();
        h = self.scale_res[0].iter().fold(h, |h, b| b.forward(&h));
        h = self.down[1].forward(&h).leaky_relu();
        h = self.scale_res[1].iter().fold(h, |h, b| b.forward(&h));
        h = self.down[2].forward(&h);
        h = self.res[0].forward(&h);
        h = self.res[1].forward(&h);
        self.conv_out.forward(&h).contiguous()
    }
}

#[derive(Debug)]
pub struct LatentDecoder {
    conv_in: nn::Conv2D,
    res: Vec<ResBlock>,
    up: Vec<SubpelConv>,
    /// Blocks at 1/4 and at 1/2 resolution.
    scale_res: [Vec<ResBlock>; 2],
    conv_out: nn::Conv2D,
}

impl LatentDecoder {
    pub fn new(p: nn::Path, cfg: &AutoencoderConfig) -> Self {
        let c = cfg.channels;
        let up = (0..3).map(|i| SubpelConv::new(&p / "up" / i, c[3 - i], c[2 - i])).collect();
        let res = (0..2).map(|i| ResBlock::new(&p / "res" / i, c[3])).collect();
        let scale_res = [0, 1].map(|s| scale_blocks(&p / "scale_res" / s, c[2 - s], cfg.scale_blocks[1 - s]));
        Self {
            conv_in: conv(&p / "conv_in", cfg.latent_channels, c[3], 3, 1),
            res,
            up,
            scale_res,
            conv_out: conv(&p / "conv_out", c[0], 3, 3, 1),
        }
    }

    /// Latent → RGB (f32), nominally in [0,1] (not clamped, so training sees the overshoot).
    /// Runs in its weights' kind ([`crate::model::Precision`]).
    pub fn decode(&self, y: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(&channels_last(&y.to_kind(self.conv_in.ws.kind())));
        h = self.res[0].forward(&h);
        h = self.res[1].forward(&h);
        h = self.up[0].forward(&h).leaky_relu();
        h = self.scale_res[0].iter().fold(h, |h, b| b.forward(&h));
        h = self.up[1].forward(&h).leaky_relu();
        h = self.scale_res[1].iter().fold(h, |h, b| b.forward(&h));
        h = self.up[2].forward(&h).leaky_relu();
        (self.conv_out.forward(&h).to_kind(Kind::Float) * 0.5 + 0.5).contiguous()
    }
}

/// `n` residual blocks of `ch` channels that start as the identity: a model grown from one
/// without them (`gvc-train autoencoder --grow-from`) starts as that model.
fn scale_blocks(p: nn::Path, ch: i64, n: i64) -> Vec<ResBlock> {
    (0..n).map(|i| ResBlock::identity_at_start(&p / i, ch)).collect()
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

    /// D(E(x)) of (N, 3, H, W) frames of any size, clamped to [0,1]: no coding at all, the
    /// ceiling of every rate point; E(x) is also the clean latent the denoiser's ε objective aims
    /// at. Sides are replicate-padded to the latent's factor and cropped back.
    pub fn reconstruct(&self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("frames (N, 3, H, W)");
        self.decoder
            .decode(&self.encoder.encode(&Self::pad_to_factor(x)))
            .narrow(2, 0, h)
            .narrow(3, 0, w)
            .clamp(0.0, 1.0)
    }

    /// Frames replicate-padded on the bottom and right to sides that are multiples of the
    /// latent's factor (unchanged when they already are).
    pub fn pad_to_factor(x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("frames (N, 3, H, W)");
        let up = |v: i64| (v + AutoencoderConfig::FACTOR - 1) / AutoencoderConfig::FACTOR * AutoencoderConfig::FACTOR;
        pad_replicate(x, up(h), up(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn reconstruct_pads_odd_sizes_and_crops_back() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let ae = LatentAutoencoder::new(
            vs.root(),
            &AutoencoderConfig { channels: [4, 4, 4, 4], latent_channels: 2, scale_blocks: [1, 1] },
        );
        let x = Tensor::rand([1, 3, 20, 27], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| ae.reconstruct(&x));
        assert_eq!(out.size(), [1, 3, 20, 27]);
        // The crop keeps the top-left: it is what D decodes from E of the padded frame.
        let padded = x.pad([0, 5, 0, 4], "replicate", None);
        let full = tch::no_grad(|| ae.decoder.decode(&ae.encoder.encode(&padded)).clamp(0.0, 1.0));
        assert!(out.equal(&full.narrow(2, 0, 20).narrow(3, 0, 27)));
        // Sizes already on the grid are not padded.
        let y = x.narrow(2, 0, 16).narrow(3, 0, 24);
        let direct = tch::no_grad(|| ae.decoder.decode(&ae.encoder.encode(&y)).clamp(0.0, 1.0));
        assert!(tch::no_grad(|| ae.reconstruct(&y)).equal(&direct));
    }
}
