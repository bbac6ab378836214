//! The complete gvc model: every network of one model folder (`config.json` +
//! `weights.safetensors`), loaded onto one device.

use super::codec::{ContextualCodec, IntraCodec, MotionCodec};
use super::denoiser::Denoiser;
use super::spynet::SpyNet;
use super::{load_pretrained, model_id, LatentAutoencoder, ModelConfig};
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

    /// Loads a model folder. Every network must be present in the weights file.
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
