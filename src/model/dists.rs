//! DISTS (Ding et al. 2020) as in the `dists-pytorch` package: VGG16 with max-pooling
//! replaced by L2 pooling (3×3 Hann window, stride 2), structure and texture similarity of
//! the input and five feature stages, weighted by the shipped α/β.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// `(features index, cin, cout)` of VGG16's convs; a stage ends after each listed index.
const CONVS: [(usize, i64, i64); 13] = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
];
const STAGE_ENDS: [usize; 5] = [2, 7, 14, 21, 28];
pub const CHANNELS: [i64; 6] = [3, 64, 128, 256, 512, 512];

#[derive(Debug)]
pub struct Dists {
    convs: Vec<(usize, nn::Conv2D)>,
    /// (1, 1475, 1, 1) each, loaded separately from the package's `weights.pt` conversion.
    pub alpha: Tensor,
    pub beta: Tensor,
}

/// L2 pooling: sqrt(conv(x², hann) + ε) with the normalised outer product of [0.5, 1, 0.5].
fn l2_pool(x: &Tensor) -> Tensor {
    let c = x.size()[1];
    let a = Tensor::from_slice(&[0.5f32, 1.0, 0.5]).to_device(x.device());
    let g = a.view([3, 1]).matmul(&a.view([1, 3]));
    let g = (&g / g.sum(Kind::Float)).view([1, 1, 3, 3]).repeat([c, 1, 1, 1]);
    (x.square().conv2d(&g, None::<Tensor>, [2, 2], [1, 1], [1, 1], c) + 1e-12).sqrt()
}

impl Dists {
    pub fn new(p: nn::Path) -> Self {
        let convs = CONVS
            .iter()
            .map(|&(idx, ci, co)| {
                let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
                (idx, nn::conv2d(&p / "features" / idx, ci, co, 3, cfg))
            })
            .collect();
        let total: i64 = CHANNELS.iter().sum();
        let alpha = Tensor::full([1, total, 1, 1], 0.1, (Kind::Float, p.device()));
        Self { convs, beta: alpha.copy(), alpha }
    }

    /// The input and the five stage outputs (after ReLU), images in [0,1].
    fn features(&self, x: &Tensor) -> Vec<Tensor> {
        let dev = x.device();
        let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]).to_device(dev);
        let std = Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([1, 3, 1, 1]).to_device(dev);
        let mut out = vec![x.shallow_clone()];
        let mut h = (x - mean) / std;
        for (idx, conv) in &self.convs {
            // Stages 2–5 start with L2 pooling in place of VGG's max pooling.
            if [5, 10, 17, 24].contains(idx) {
                h = l2_pool(&h);
            }
            h = conv.forward(&h).relu();
            if STAGE_ENDS.contains(idx) {
                out.push(h.shallow_clone());
            }
        }
        out
    }

    /// Per-image DISTS (N) between RGB batches in [0,1]: 0 for identical images.
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let (fa, fb) = (self.features(a), self.features(b));
        let (c1, c2) = (1e-6, 1e-6);
        let w_sum = self.alpha.sum(Kind::Float) + self.beta.sum(Kind::Float);
        let alphas = (&self.alpha / &w_sum).split_with_sizes(CHANNELS, 1);
        let betas = (&self.beta / &w_sum).split_with_sizes(CHANNELS, 1);
        let dims = [2i64, 3];
        let mut similarity = Tensor::zeros([a.size()[0]], (Kind::Float, a.device()));
        for (k, (x, y)) in fa.iter().zip(&fb).enumerate() {
            let mx = x.mean_dim(dims.as_slice(), true, Kind::Float);
            let my = y.mean_dim(dims.as_slice(), true, Kind::Float);
            let s1 = (&mx * &my * 2.0 + c1) / (mx.square() + my.square() + c1);
            let vx = (x - &mx).square().mean_dim(dims.as_slice(), true, Kind::Float);
            let vy = (y - &my).square().mean_dim(dims.as_slice(), true, Kind::Float);
            let cov = (x * y).mean_dim(dims.as_slice(), true, Kind::Float) - &mx * &my;
            let s2 = (cov * 2.0 + c2) / (vx + vy + c2);
            let term = (&alphas[k] * s1 + &betas[k] * s2).sum_dim_intlist(1, false, Kind::Float);
            similarity += term.view([-1]);
        }
        1.0 - similarity
    }
}
