//! Where an I-frame's bits go, per QP, on one frame of a clip (the first by default): hyper-latent and code
//! rate, the share spent on "surprise" symbols (> 10 bits each: a nonzero residual where the
//! entropy model predicted a tiny σ), and what the code would cost with a larger σ floor.
//! `cargo run --release --example intra_rate_check -- <clip> <width> <height> [frame] [model]`

use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::codec::entropy::SCALE_MIN;
use gstgvc::model::entropy_model::gaussian_bits;
use gstgvc::model::gvc::GvcModel;
use tch::{Device, Kind};

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
    tch::no_grad(|| {
        let y = model.autoencoder.encoder.encode(&x);
        let intra = &model.intra;
        for qp in 0..model.config.codec.num_qps {
            let code = intra.analysis(&y, qp);
            let z_hat = intra.hyper.analysis(&code, qp).round();
            let z_bpp = intra.hyper.z_bits(&z_hat, qp).double_value(&[]) / px;
            let (mean, scale) = intra.entropy_params(&z_hat, qp, code.size()[2], code.size()[3]);
            let code_hat = (&code - &mean).round() + &mean;
            let bits = gaussian_bits(&code_hat, &mean, &scale);
            let bpp = |b: &tch::Tensor| b.sum(Kind::Float).double_value(&[]) / px;
            let count = |m: &tch::Tensor| m.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
            let surprises = bits.gt(10.0);
            // σ exactly at the table floor: the network asked for less (clamped).
            let at_floor = surprises.logical_and(&scale.le(SCALE_MIN * (1.0 + 1e-6)));
            let floors: Vec<String> = [0.15, 0.2, 0.25, 0.3]
                .iter()
                .map(|&f| format!("{f}: {:.4}", bpp(&gaussian_bits(&code_hat, &mean, &scale.clamp_min(f)))))
                .collect();
            println!(
                "qp{qp}: z {z_bpp:.4} bpp, code {:.4} bpp, of which {} surprise symbols ({} at the σ floor) {:.4} bpp; code with σ ≥ {}",
                bpp(&bits),
                count(&surprises),
                count(&at_floor),
                bpp(&(&bits * &surprises)),
                floors.join(", ")
            );
        }
    });
    Ok(())
}
