//! The autoencoder's own PSNR on the frame (the ceiling of every rate point), then where an
//! I-frame's bits go, per QP, on one frame of a clip (the first by default): hyper-latent and code
//! rate, the share spent on "surprise" symbols (> 10 bits each: a nonzero residual where the
//! entropy model predicted a tiny σ) and how many of those sit at the clamped σ floor.
//! Then, at the highest QP, the code bits of each 128×128 tile of the frame as part of the
//! whole frame vs coded on its own (the training crop size): a gap means the entropy model
//! fails on context it never saw in training, not on the content.
//! All bits are the entropy model's estimate (`gaussian_bits`), not coded bytes; a symbol past
//! 24 bits counts with the training's compressed cost, 24 + ln(1 + excess).
//! `cargo run --release --example intra_rate_check -- <clip> <width> <height> [frame] [model]`

use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::codec::entropy::{SCALE_MIN, SURPRISE_SYMBOL_BITS};
use gstgvc::model::entropy_model::gaussian_bits;
use gstgvc::model::gvc::GvcModel;
use gstgvc::training::psnr;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 4, "usage: intra_rate_check <clip> <width> <height> [frame] [model]");
    let (w, h): (i32, i32) = (args[2].parse()?, args[3].parse()?);
    let frame: usize = args.get(4).map_or(Ok(0), |f| f.parse())?;
    let model_dir = GvcModel::resolve(args.get(5).map_or("gvc-small", String::as_str))?;
    let model = GvcModel::load(&model_dir, Device::Cpu)?;
    let clip = load_clip(&clip_dir().join(&args[1]), Some(frame + 1), Some((w, h)))?;
    anyhow::ensure!(clip.len() > frame as i64, "{} has only {} frames", args[1], clip.len());
    let x = clip.frames.get(frame as i64).unsqueeze(0).to_kind(Kind::Float) / 255.0;
    let px = (w * h) as f64;
    let last_qp = model.config.codec.num_qps - 1;
    tch::no_grad(|| {
        let ae = &model.autoencoder;
        let ceiling = ae.reconstruct(&x);
        println!("autoencoder alone (D(E(x)), no coding): PSNR {:.2} dB", psnr(&ceiling, &x));
        for qp in 0..=last_qp {
            let (z_bits, bits, scale) = code_bits(&model, &x, qp);
            let z_bpp = z_bits / px;
            let bpp = |b: &Tensor| b.sum(Kind::Float).double_value(&[]) / px;
            let count = |m: &Tensor| m.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
            let surprises = bits.gt(SURPRISE_SYMBOL_BITS);
            // σ exactly at the table floor: the network asked for less (clamped).
            let at_floor = surprises.logical_and(&scale.le(SCALE_MIN * (1.0 + 1e-6)));
            println!(
                "qp{qp}: z {z_bpp:.4} bpp, code {:.4} bpp, of which {} surprise symbols ({} at the σ floor) {:.4} bpp",
                bpp(&bits),
                count(&surprises),
                count(&at_floor),
                bpp(&(&bits * &surprises)),
            );
        }
        const TILE: i64 = 128;
        let (rows, cols) = (h as i64 / TILE, w as i64 / TILE);
        if rows == 0 || cols == 0 {
            return;
        }
        let (_, full, _) = code_bits(&model, &x.narrow(2, 0, rows * TILE).narrow(3, 0, cols * TILE), last_qp);
        let full = full.sum_dim_intlist(1, false, Kind::Float).squeeze_dim(0);
        let cell = full.size()[0] / rows;
        println!("qp{last_qp} code bits per {TILE}×{TILE} tile, in the whole frame / coded alone:");
        for ty in 0..rows {
            let row: Vec<String> = (0..cols)
                .map(|tx| {
                    let tile = x.narrow(2, ty * TILE, TILE).narrow(3, tx * TILE, TILE);
                    let alone = code_bits(&model, &tile, last_qp).1.sum(Kind::Float).double_value(&[]);
                    let inside =
                        full.narrow(0, ty * cell, cell).narrow(1, tx * cell, cell).sum(Kind::Float).double_value(&[]);
                    format!("{inside:>6.0} / {alone:<6.0}")
                })
                .collect();
            println!("  {}", row.join(" "));
        }
    });
    Ok(())
}

/// I-frame coding of `x` at `qp`: z bits, per-symbol code bits and the predicted σ.
fn code_bits(model: &GvcModel, x: &Tensor, qp: i64) -> (f64, Tensor, Tensor) {
    let intra = &model.intra;
    let code = intra.analysis(&model.autoencoder.encoder.encode(x), qp);
    let z_hat = intra.hyper.analysis(&code, qp).round();
    let (mean, scale) = intra.prior(&z_hat, qp, code.size()[2], code.size()[3]).params_for(&code, Tensor::round);
    let code_hat = (&code - &mean).round() + &mean;
    (intra.hyper.z_bits(&z_hat, qp).double_value(&[]), gaussian_bits(&code_hat, &mean, &scale), scale)
}
