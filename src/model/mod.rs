//! Networks, all on `tch::nn`. Parameter names mirror the reference PyTorch modules where
//! one exists (BasicVSR SpyNet, torchvision/LPIPS trunks, DCVC-DC codec modules).

pub mod autoencoder;
pub mod codec;
pub mod denoiser;
pub mod dists;
pub mod entropy_model;
pub mod gvc;
pub mod i3d;
pub mod layers;
pub mod lpips;
pub mod spynet;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// Asks MKL for results independent of the thread count (conditional numerical
/// reproducibility), unless the environment already chose: on an AVX-512 host its GEMM gave an
/// I-frame's ŷ that differed by 7e-7 between 1 and 2 intra-op threads, so encoder and decoder
/// on other thread counts disagreed in the last float bit (bytes were still identical). MKL
/// reads the setting once, at its first call, so this runs before any network does
/// (`plugin_init`, every `GvcModel` construction; `.cargo/config.toml` sets it for test binaries,
/// where another test may call MKL first).
pub fn reproducible_math() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MKL_CBWR").is_none() {
            std::env::set_var("MKL_CBWR", "AUTO,STRICT");
        }
    });
}

/// Number format of the networks outside the codec's reference loop: the latent decoder D and
/// the denoiser. The codec always runs in f32 (its decoding path is exact on every CPU); D and
/// the denoiser only shape the output picture, so bf16 there moves pixels slightly but never
/// what a stream decodes to (ŷ, the reference) or the encoder–decoder agreement. The encoder
/// searches motion on D's picture, so its bytes may differ between precisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
    /// The names [`Precision::resolve`] takes.
    pub const CHOICES: &'static str = "auto (bf16 on CPUs with native bf16 arithmetic, else f32), f32 or bf16";

    /// `auto`, `f32` or `bf16` on `device`. `auto` picks bf16 on CPUs with native bf16 dot
    /// products (AVX512-BF16, which every AMX CPU has), where oneDNN runs bf16 convolutions
    /// natively (a P-frame decoded without diffusion took 1.4–1.7× less time on carphone, README
    /// "Precision"), and f32 elsewhere: older CPUs emulate bf16, and on CUDA whether it pays
    /// depends on the GPU (not measured here).
    pub fn resolve(name: &str, device: Device) -> Result<Self> {
        if name == "auto" {
            return Ok(if device == Device::Cpu && cpu_has_native_bf16() { Self::Bf16 } else { Self::F32 });
        }
        [Self::F32, Self::Bf16]
            .into_iter()
            .find(|p| p.name() == name)
            .with_context(|| format!("unknown precision {name:?}: {}", Self::CHOICES))
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::Bf16 => tch::Kind::BFloat16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub use autoencoder::{AutoencoderConfig, LatentAutoencoder, LatentDecoder, LatentEncoder};
pub use codec::CodecConfig;
use codec::ContextualCodec;
use denoiser::Denoiser;
pub use denoiser::DenoiserConfig;

/// Architecture hyper-parameters, stored as `config.json` next to the weights so a bigger
/// model is a new folder, not a code change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    pub autoencoder: AutoencoderConfig,
    pub codec: CodecConfig,
    pub denoiser: DenoiserConfig,
}

impl ModelConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}

/// The channels of the parts of a layer's input that concatenates the latent with other
/// features (`gvc-train --grow-from` grows each part at its own end); `None` for other layers.
pub fn concat_inputs(name: &str, cfg: &ModelConfig) -> Option<Vec<i64>> {
    let latent = cfg.autoencoder.latent_channels;
    match name {
        "contextual.enc_in.weight" => Some(ContextualCodec::enc_in_parts(latent, &cfg.codec).to_vec()),
        "denoiser.control.conv_in.weight" => Some(Denoiser::control_in_parts(latent, cfg.codec.context).to_vec()),
        _ => None,
    }
}

impl ModelConfig {
    /// A tiny architecture for plumbing tests with random weights (fast on any CPU).
    pub fn tiny_for_tests() -> Self {
        Self {
            name: "tiny-random".into(),
            autoencoder: AutoencoderConfig { channels: [8, 8, 16, 16], latent_channels: 4, scale_blocks: [0, 0] },
            codec: CodecConfig {
                hidden: 16,
                code: 8,
                hyper: 8,
                context: 8,
                motion_code: 8,
                num_qps: 4,
                lambdas: vec![64.0, 16.0, 4.0, 1.0],
                intra_qp_offset_per_qp: Vec::new(),
                checkerboard: false,
            },
            denoiser: DenoiserConfig {
                channels: [8, 16],
                embed: 16,
                train_steps: 1000,
                beta_start: 1e-4,
                beta_end: 0.02,
                start_step: 300,
                start_step_per_qp: Vec::new(),
                latent_scale: 1.0,
                tdir_agreement: 0.3,
                tdir_agreement_per_qp: Vec::new(),
            },
        }
    }
}

/// Held by the tests that change libtorch's process-wide intra-op thread count, so that two of
/// them running in parallel cannot switch it under each other's comparison.
#[cfg(test)]
pub(crate) static THREAD_COUNT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Revision of the arithmetic by which the code turns a model into decoded values. The entropy
/// model's means and scales must match the encoder's to the last bit, so a stream coded under
/// another revision would decode to wrong values instead of being refused: bump this whenever a
/// network's computation changes (1: `ExactPointwiseConv` as a matrix product, session 21; 2: the
/// codec's decoding path in `PortableConv`, `portable_exp`, a gather-based `flow_warp` and table
/// indices from log σ, session 23).
pub const NUMERICS_REVISION: u32 = 2;

/// The model id written into every sequence header: FNV-1a 64 of the weights file followed
/// by the config as compact JSON and `numerics <NUMERICS_REVISION>`. All three decide what a
/// decoder outputs (the config holds the diffusion schedule and start steps), so a change to
/// any makes a new model.
pub fn model_id(weights: &Path, config: &ModelConfig) -> Result<u64> {
    let mut bytes = std::fs::read(weights).with_context(|| format!("reading {}", weights.display()))?;
    bytes.extend(serde_json::to_vec(config)?);
    bytes.extend(format!("numerics {NUMERICS_REVISION}").bytes());
    Ok(fnv1a64(&bytes))
}

/// FNV-1a 64 of `bytes`: the model id's hash, also what the tests fingerprint outputs with.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Loads a third-party network converted at setup (e.g. `spynet.safetensors`).
pub fn load_pretrained<T>(file: &str, device: Device, build: impl FnOnce(nn::Path) -> T) -> Result<(nn::VarStore, T)> {
    let path: PathBuf = crate::clips::weights_dir().join(file);
    let mut vs = nn::VarStore::new(device);
    let net = build(vs.root());
    vs.load(&path).with_context(|| format!("loading {} (run scripts/setup.sh)", path.display()))?;
    vs.freeze();
    Ok((vs, net))
}

#[cfg(test)]
mod tests;
