#![doc = include_str!("../../docs/usage/gvc-train.md")]

use anyhow::{bail, Context, Result};
use gstgvc::cli::{args_or_usage, KeyValues};
use gstgvc::model::lpips::Backbone;
use gstgvc::training::{self, autoencoder, codec, diffusion, Focus, StageOptions, TrainingClips};
use std::path::PathBuf;

enum Stage {
    Autoencoder(autoencoder::Options),
    /// The latent decoder alone, on the codec's ŷ; the cascade length.
    Decoder(autoencoder::Options, i64),
    Codec(codec::Options),
    CodecCheck(codec::Options, usize),
    Diffusion(diffusion::Options),
    Export(PathBuf),
    /// `data-report`: what the clips hold, per window of this many frames.
    DataReport(i64),
}

/// `--perceptual alexnet|vgg16`.
fn backbone(o: &KeyValues) -> Result<Backbone> {
    backbone_named(&o.string("perceptual", "alexnet"))
}

fn backbone_named(name: &str) -> Result<Backbone> {
    Ok(match name {
        "alexnet" => Backbone::AlexNet,
        "vgg16" => Backbone::Vgg16,
        other => bail!("unknown perceptual backbone {other}"),
    })
}

/// `--perceptual B[:W],…` (backbones alexnet|vgg16, each with its weight; without one,
/// `--perceptual-weight`, default 0.5).
fn perceptual_terms(o: &KeyValues) -> Result<Vec<(Backbone, f64)>> {
    let default_weight = o.value("perceptual-weight", 0.5)?;
    o.string("perceptual", "alexnet")
        .split(',')
        .map(|term| {
            let (name, weight) = term.split_once(':').unwrap_or((term, ""));
            let backbone = backbone_named(name)?;
            let weight = if weight.is_empty() {
                default_weight
            } else {
                weight.parse().with_context(|| format!("--perceptual {term}"))?
            };
            Ok((backbone, weight))
        })
        .collect()
}

/// Options of the autoencoder and decoder stages.
fn autoencoder_options(o: &KeyValues, stage: StageOptions) -> Result<autoencoder::Options> {
    Ok(autoencoder::Options {
        stage,
        perceptual: perceptual_terms(o)?,
        perceptual_layers: o.value("perceptual-layers", 5)?,
    })
}

fn codec_options(o: &KeyValues) -> Result<codec::Options> {
    Ok(codec::Options {
        stage: StageOptions::from_cli(o, 3000, 2e-4, 2)?,
        frames: o.list("frames")?.unwrap_or_else(|| vec![3]),
        lambdas: o.list("lambdas")?,
        align_floor: o.value("align-floor", 0.25)?,
        align_warmup: o.value("align-warmup", 0.2)?,
        distortion: match o.string("distortion", "latent").as_str() {
            "latent" => codec::Distortion::Latent,
            "pixel" => codec::Distortion::Pixel {
                perceptual: o.value("perceptual-weight", 0.01)?,
                backbone: backbone(o)?,
                latent_anchor: o.value("latent-anchor", 0.1)?,
            },
            other => bail!("unknown distortion {other} (latent or pixel)"),
        },
        rate_proxy: match o.string("rate-proxy", "noise").as_str() {
            "noise" => codec::Quantization::Train,
            "rounded" => codec::Quantization::TrainRounded,
            other => bail!("unknown rate proxy {other} (noise or rounded)"),
        },
        table_lr_factor: o.value("table-lr-factor", 1.0)?,
        qps: o.list("qps")?,
        trained: match (o.value("tables-only", false)?, o.value("spatial-prior-only", false)?) {
            (false, false) => codec::Trained::All,
            (true, false) => codec::Trained::Tables,
            (false, true) => codec::Trained::SpatialPrior,
            (true, true) => bail!("--tables-only and --spatial-prior-only exclude each other"),
        },
    })
}

fn main() -> Result<()> {
    let mut args = args_or_usage(include_str!("../../docs/usage/gvc-train.md")).into_iter();
    let stage = args.next().context("usage: gvc-train <stage> [--key value]…")?;
    let o = KeyValues::parse(args)?;
    let threads: i32 = o.value("threads", 2)?;
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let stage = match stage.as_str() {
        "export" => Stage::Export(StageOptions::model_dir(&o)),
        "autoencoder" => Stage::Autoencoder(autoencoder_options(&o, StageOptions::from_cli(&o, 6000, 3e-4, 1)?)?),
        "decoder" => {
            Stage::Decoder(autoencoder_options(&o, StageOptions::from_cli(&o, 1000, 1e-4, 4)?)?, o.value("frames", 2)?)
        }
        "codec" => Stage::Codec(codec_options(&o)?),
        "codec-check" => Stage::CodecCheck(codec_options(&o)?, o.value("batches", 3)?),
        "diffusion" => {
            let start_share: f64 = o.value("start-share", 0.0)?;
            if !(0.0..=1.0).contains(&start_share) {
                bail!("--start-share {start_share}: expected a share between 0 and 1");
            }
            let perceptual = match o.value::<f64>("sampled-perceptual", 0.0)? {
                w if w > 0.0 => Some(diffusion::SampledPerceptual {
                    weight: w,
                    lpips_weight: o.value("lpips-weight", 0.5)?,
                    harm_weight: o.value("harm-weight", 0.0)?,
                    backbone: backbone(&o)?,
                    steps: o.value("sample-steps", 4)?,
                }),
                _ => None,
            };
            let stage = StageOptions::from_cli(&o, 3000, 2e-4, 3)?;
            Stage::Diffusion(diffusion::Options { stage, start_share, perceptual, qps: o.list("qps")? })
        }
        "data-report" => Stage::DataReport(o.value("window", 16)?),
        other => bail!("unknown stage {other}"),
    };
    let focus: Option<String> = o.optional("focus")?;
    let focus_share: f64 = o.value("focus-share", 0.25)?;
    if focus.is_none() && o.get("focus-share").is_some() {
        bail!("--focus-share needs --focus");
    }
    o.finish()?;
    if let Stage::Export(dir) = &stage {
        return training::export(dir);
    }
    let mut data = TrainingClips::load()?;
    if let Some(spec) = focus {
        let f = Focus::parse(&spec, focus_share, &data.clips)?;
        eprintln!(
            "[data] focus: {:.0} % of crops from {} frames {:?}",
            f.share * 100.0,
            data.clips[f.clip].0,
            f.ranges
        );
        data.focus = Some(f);
    }
    match stage {
        Stage::Autoencoder(opt) => autoencoder::train(&data, &opt),
        Stage::Decoder(opt, frames) => autoencoder::train_decoder(&data, &opt, frames),
        Stage::Codec(opt) => codec::train(&data, &opt),
        Stage::CodecCheck(opt, batches) => codec::check(&data, &opt, batches),
        Stage::Diffusion(opt) => diffusion::train(&data, &opt),
        Stage::DataReport(window) => training::report_content(&data, window),
        Stage::Export(_) => unreachable!("handled above"),
    }
}
