//! Trains gvc's own networks on the CPU (or a GPU when libtorch sees one), stage by stage.
//!
//! `gvc-train <stage> [--model-dir models/gvc-small] [--steps N] [--batch B] [--crop C]
//!  [--lr LR] [--seed S] [--minutes M] [--threads T]`; stages: `autoencoder`, `codec`, `diffusion`, then
//! `export` writes the f16 `weights.safetensors` that inference loads.
//! Training resumes from the weights and step counter in the model folder.

use anyhow::{bail, Context, Result};
use gstgvc::model::lpips::Backbone;
use gstgvc::training::{self, TrainingClips};
use std::collections::HashMap;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let stage = args.next().context("usage: gvc-train <stage> [--key value]…")?;
    let mut kv = HashMap::new();
    while let Some(k) = args.next() {
        let key = k.strip_prefix("--").with_context(|| format!("unexpected argument {k}"))?.to_string();
        kv.insert(key, args.next().with_context(|| format!("--{} needs a value", k))?);
    }
    let get = |k: &str, default: &str| kv.get(k).cloned().unwrap_or_else(|| default.to_string());
    let threads: i32 = get("threads", "2").parse()?;
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let model_dir = PathBuf::from(get("model-dir", "models/gvc-small"));
    let minutes = kv.get("minutes").map(|m| m.parse()).transpose()?;
    if stage == "export" {
        return training::export(&model_dir);
    }
    let data = TrainingClips::load()?;
    match stage.as_str() {
        "autoencoder" => training::autoencoder::train(
            &data,
            &training::autoencoder::Options {
                model_dir,
                steps: get("steps", "6000").parse()?,
                batch: get("batch", "8").parse()?,
                crop: get("crop", "128").parse()?,
                lr: get("lr", "3e-4").parse()?,
                seed: get("seed", "1").parse()?,
                minutes,
                perceptual_weight: get("perceptual-weight", "0.5").parse()?,
                perceptual_backbone: match get("perceptual", "alexnet").as_str() {
                    "alexnet" => Backbone::AlexNet,
                    "vgg16" => Backbone::Vgg16,
                    other => bail!("unknown perceptual backbone {other}"),
                },
                perceptual_layers: get("perceptual-layers", "5").parse()?,
            },
        ),
        "codec" => training::codec::train(
            &data,
            &training::codec::Options {
                model_dir,
                steps: get("steps", "3000").parse()?,
                batch: get("batch", "8").parse()?,
                crop: get("crop", "128").parse()?,
                frames: get("frames", "3").parse()?,
                lr: get("lr", "2e-4").parse()?,
                seed: get("seed", "2").parse()?,
                minutes,
            },
        ),
        "diffusion" => training::diffusion::train(
            &data,
            &training::diffusion::Options {
                model_dir,
                steps: get("steps", "3000").parse()?,
                batch: get("batch", "8").parse()?,
                crop: get("crop", "128").parse()?,
                lr: get("lr", "2e-4").parse()?,
                seed: get("seed", "3").parse()?,
                minutes,
            },
        ),
        other => bail!("unknown stage {other}"),
    }
}
