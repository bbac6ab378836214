//! The complete gvc model: every network of one model folder (`config.json` +
//! `weights.safetensors`), loaded onto one device.

use super::codec::{ContextualCodec, IntraCodec, MotionCodec};
use super::denoiser::Denoiser;
use super::spynet::SpyNet;
use super::{load_pretrained, model_id, LatentAutoencoder, ModelConfig, Precision};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

pub struct GvcModel {
    pub config: ModelConfig,
    /// Written into every sequence header; a stream is refused by any other model.
    pub id: u64,
    pub device: Device,
    pub autoencoder: LatentAutoencoder,
    pub intra: IntraCodec,
    pub motion: MotionCodec,
    pub contextual: ContextualCodec,
    pub denoiser: Denoiser,
    vs: nn::VarStore,
}

// SAFETY: the parameters are frozen after construction and only read (no_grad forward
// passes); libtorch supports concurrent reads of shared tensors from several threads.
// Nothing mutates a `GvcModel` after `load`/`random` return.
unsafe impl Sync for GvcModel {}

impl GvcModel {
    fn build(config: ModelConfig, id: u64, device: Device) -> Self {
        super::reproducible_math();
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let latent = config.autoencoder.latent_channels;
        let autoencoder = LatentAutoencoder::new(&root / "autoencoder", &config.autoencoder);
        let intra = IntraCodec::new(&root / "intra", latent, &config.codec);
        let motion = MotionCodec::new(&root / "motion", &config.codec);
        let contextual = ContextualCodec::new(&root / "contextual", latent, &config.codec);
        let denoiser = Denoiser::new(&root / "denoiser", latent, config.codec.context, &config.denoiser);
        Self { config, id, device, autoencoder, intra, motion, contextual, denoiser, vs }
    }

    /// Loads a model folder (every network in f32). Every network must be present in the
    /// weights file.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let config = ModelConfig::load(dir)?;
        let weights = dir.join("weights.safetensors");
        let id = model_id(&weights, &config)?;
        let mut model = Self::build(config, id, device);
        model.vs.load(&weights).with_context(|| format!("loading {}", weights.display()))?;
        // Weights ship in f16 (half the size); inference runs in f32.
        model.vs.float();
        model.vs.freeze();
        Ok(model)
    }

    /// The model with D and the denoiser in `precision`. They cast their inputs to their
    /// weights' kind and return f32, so callers see the same types either way.
    pub fn with_precision(self, precision: Precision) -> Self {
        for (name, mut tensor) in self.vs.variables() {
            if name.starts_with("autoencoder.decoder.") || name.starts_with("denoiser.") {
                tensor.set_data(&tensor.to_kind(precision.kind()));
            }
        }
        self
    }

    /// Randomly initialised networks (seeded): for plumbing tests only.
    pub fn random(config: ModelConfig, seed: u64, device: Device) -> Self {
        tch::manual_seed(seed as i64);
        let mut model = Self::build(config, 0xFFFF_0000_0000_0000 | seed, device);
        model.vs.freeze();
        model
    }

    /// The model folder a name or path refers to: an existing directory, or a folder under
    /// `models/` of the source tree.
    pub fn resolve(name_or_path: &str) -> Result<PathBuf> {
        let p = PathBuf::from(name_or_path);
        if p.join("config.json").exists() {
            return Ok(p);
        }
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join(name_or_path);
        if shipped.join("config.json").exists() {
            return Ok(shipped);
        }
        bail!("no gvc model at {name_or_path} (neither a folder with config.json nor a name under models/)")
    }

    /// Writes the model as a folder (`config.json` + `weights.safetensors`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.config.save(dir)?;
        self.vs.save(dir.join("weights.safetensors"))?;
        Ok(())
    }

    /// SpyNet for the encoder's motion estimation (converted at setup from BasicVSR).
    pub fn load_spynet(device: Device) -> Result<(nn::VarStore, SpyNet)> {
        load_pretrained("spynet.safetensors", device, SpyNet::new)
    }

    /// Scaled latent for the diffusion model.
    pub fn to_diffusion_space(&self, y: &Tensor) -> Tensor {
        y * self.config.denoiser.latent_scale
    }

    pub fn from_diffusion_space(&self, z: &Tensor) -> Tensor {
        z / self.config.denoiser.latent_scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::grow_model_weights;
    use tch::Kind;

    /// Every network of a model grown to a wider latent (`gvc-train --grow-from`) computes on
    /// the old latent channels what the stored model computed, whatever the new ones hold: the
    /// layers that concatenate the latent with other features keep each part in place.
    #[test]
    fn a_model_grown_to_a_wider_latent_computes_what_it_grew_from() {
        let dir = std::env::temp_dir().join(format!("gvc-grow-model-{}", std::process::id()));
        let small_cfg = ModelConfig::tiny_for_tests();
        let small = GvcModel::random(small_cfg.clone(), 3, Device::Cpu);
        // Zero-started layers (the control branch's outputs) must not hide a misplaced part.
        // At 0.1 the denoiser's outputs stay near 1; at 0.2 they reached ~10³, where the grown
        // layers' other rounding (more zero-weight channels in each sum) broke the bound on AVX2.
        tch::no_grad(|| {
            for (_, mut v) in small.vs.variables() {
                v.copy_(&(v.randn_like() * 0.1));
            }
        });
        small.save(&dir).unwrap();
        let mut wide_cfg = small_cfg.clone();
        wide_cfg.autoencoder.latent_channels += 3;
        let mut wide = GvcModel::random(wide_cfg.clone(), 4, Device::Cpu);
        grow_model_weights(&mut wide.vs, &dir.join("weights.safetensors"), &small_cfg, &wide_cfg).unwrap();

        let latent = small_cfg.autoencoder.latent_channels;
        let randn = |c: i64| Tensor::randn([1, c, 8, 8], (Kind::Float, Device::Cpu));
        let widen = |t: &Tensor| Tensor::cat(&[t, &randn(3)], 1);
        let same = |a: &Tensor, b: &Tensor, what: &str| {
            let b = b.narrow(1, 0, a.size()[1]);
            assert!(
                a.allclose(&b, 1e-4, 1e-5, false),
                "{what}: max difference {}",
                (a - b).abs().max().double_value(&[])
            );
        };
        tch::no_grad(|| {
            let (y, prev) = (randn(latent), randn(latent));
            let flow = randn(2);
            let (ys, yw) = (y.shallow_clone(), widen(&y));
            same(&small.intra.analysis(&ys, 0), &wide.intra.analysis(&yw, 0), "intra analysis");
            let (cs, cw) = (
                small.contextual.temporal_context(&prev, &flow),
                wide.contextual.temporal_context(&widen(&prev), &flow),
            );
            same(&cs.c0, &cw.c0, "C̄⁰");
            same(&cs.c1, &cw.c1, "C̄¹");
            let code = small.contextual.analysis(&ys, &cs, 1);
            same(&code, &wide.contextual.analysis(&yw, &cw, 1), "contextual analysis");
            same(
                &small.contextual.synthesis(&code, &cs, 1),
                &wide.contextual.synthesis(&code, &cw, 1),
                "contextual synthesis",
            );
            let (t, ratio) = (Tensor::from_slice(&[7i64]), Tensor::from_slice(&[1.5f32]));
            let z = randn(latent);
            same(
                &small.denoiser.forward(&z, &t, &ys, &cs.c0, &ratio),
                &wide.denoiser.forward(&widen(&z), &t, &yw, &cw.c0, &ratio),
                "denoiser",
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
