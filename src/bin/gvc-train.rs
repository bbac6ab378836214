//! Trains gvc's own networks on the CPU (or a GPU when libtorch sees one), stage by stage.
//!
//! `gvc-train <stage> [--model-dir models/gvc-small] [--steps N] [--batch B] [--crop C]
//!  [--lr LR] [--seed S] [--minutes M] [--threads T]`; stages: `autoencoder`, `codec`
//! (also `--frames F`, `--lambdas λ0,λ1,…`), `diffusion`, then `export` writes the f16
//! `weights.safetensors` that inference loads. `codec-check [--batches N]` prints the
//! codec's per-QP rate and latent MSE on training crops without training.
//! Training resumes from the weights and step counter in the model folder.

use anyhow::{bail, Context, Result};
use gstgvc::cli::KeyValues;
use gstgvc::model::lpips::Backbone;
use gstgvc::training::{self, autoencoder, codec, diffusion, TrainingClips};
use std::path::PathBuf;

enum Stage {
    Autoencoder(autoencoder::Options),
    Codec(codec::Options),
    CodecCheck(codec::Options, usize),
    Diffusion(diffusion::Options),
    Export(PathBuf),
}

fn codec_options(o: &KeyValues, model_dir: PathBuf, minutes: Option<f64>) -> Result<codec::Options> {
    Ok(codec::Options {
        model_dir,
        steps: o.value("steps", 3000)?,
        batch: o.value("batch", 8)?,
        crop: o.value("crop", 128)?,
        frames: o.value("frames", 3)?,
        lr: o.value("lr", 2e-4)?,
        seed: o.value("seed", 2)?,
        minutes,
        lambdas: o.list("lambdas")?,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let stage = args.next().context("usage: gvc-train <stage> [--key value]…")?;
    let o = KeyValues::parse(args)?;
    let threads: i32 = o.value("threads", 2)?;
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let model_dir = PathBuf::from(o.string("model-dir", "models/gvc-small"));
    let minutes = o.optional("minutes")?;
    let stage = match stage.as_str() {
        "export" => Stage::Export(model_dir),
        "autoencoder" => Stage::Autoencoder(autoencoder::Options {
            model_dir,
            steps: o.value("steps", 6000)?,
            batch: o.value("batch", 8)?,
            crop: o.value("crop", 128)?,
            lr: o.value("lr", 3e-4)?,
            seed: o.value("seed", 1)?,
            minutes,
            perceptual_weight: o.value("perceptual-weight", 0.5)?,
            perceptual_backbone: match o.string("perceptual", "alexnet").as_str() {
                "alexnet" => Backbone::AlexNet,
                "vgg16" => Backbone::Vgg16,
                other => bail!("unknown perceptual backbone {other}"),
            },
            perceptual_layers: o.value("perceptual-layers", 5)?,
        }),
        "codec" => Stage::Codec(codec_options(&o, model_dir, minutes)?),
        "codec-check" => Stage::CodecCheck(codec_options(&o, model_dir, minutes)?, o.value("batches", 3)?),
        "diffusion" => Stage::Diffusion(diffusion::Options {
            model_dir,
            steps: o.value("steps", 3000)?,
            batch: o.value("batch", 8)?,
            crop: o.value("crop", 128)?,
            lr: o.value("lr", 2e-4)?,
            seed: o.value("seed", 3)?,
            minutes,
        }),
        other => bail!("unknown stage {other}"),
    };
    o.finish()?;
    if let Stage::Export(dir) = &stage {
        return training::export(dir);
    }
    let data = TrainingClips::load()?;
    match stage {
        Stage::Autoencoder(opt) => autoencoder::train(&data, &opt),
        Stage::Codec(opt) => codec::train(&data, &opt),
        Stage::CodecCheck(opt, batches) => codec::check(&data, &opt, batches),
        Stage::Diffusion(opt) => diffusion::train(&data, &opt),
        Stage::Export(_) => unreachable!("handled above"),
    }
}
