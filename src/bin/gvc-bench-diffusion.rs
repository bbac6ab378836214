#![doc = include_str!("../../docs/usage/gvc-bench-diffusion.md")]

use anyhow::{Context, Result};
use gstgvc::cli::{args_or_usage, KeyValues};
use gstgvc::clips::{clip_dir, load_clip};
use gstgvc::codec::bitstream::FrameType;
use gstgvc::codec::mask::DiffusionMask;
use gstgvc::codec::session::{DecoderSession, EncoderParams, EncoderSession};
use gstgvc::metrics::{mean_of, psnr, DistsMetric, LpipsMetric};
use gstgvc::model::autoencoder::AutoencoderConfig;
use gstgvc::model::gvc::GvcModel;
use gstgvc::model::Precision;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

fn main() -> Result<()> {
    let o = KeyValues::parse(args_or_usage(include_str!("../../docs/usage/gvc-bench-diffusion.md")))?;
    let clip_name = o.string("clip", "carphone_pristine.mp4");
    let frames: usize = o.value("frames", 32)?;
    let ds: u8 = o.value("diffusion-steps", 4)?;
    let start_steps: Vec<usize> = o.list("start-steps")?.unwrap_or_default();
    let qps: Option<Vec<u8>> = o.list("qps")?;
    let intra_qp_offset: Option<u8> = o.optional("intra-qp-offset")?;
    let agreements: Vec<f64> = o.list("tdir-agreements")?.unwrap_or_default();
    let timing_rounds: usize = o.value("timing-rounds", 5)?;
    // Some(every other QP's) or Some(one wrong) or None (no wrong-prompt rows).
    let wrong_prompt_rows = match o.string("prompts", "wrong").as_str() {
        "wrong" => Some(false),
        "all" => Some(true),
        "none" => None,
        other => anyhow::bail!("--prompts {other}: expected wrong, all or none"),
    };
    // TDIR setting of the wrong-prompt rows: D = DS/2 as decoded by default, or D = DS as
    // trained (the sampled term trains through the sampling without reuse).
    let prompt_tdir: Vec<bool> = match o.string("prompt-tdir", "on").as_str() {
        "on" => vec![true],
        "off" => vec![false],
        "both" => vec![true, false],
        other => anyhow::bail!("--prompt-tdir {other}: expected on, off or both"),
    };
    let prompt_search: Option<u8> = o.optional("prompt-search")?;
    let diffusion_mask: bool = o.value("diffusion-mask", false)?;
    let per_frame_path: Option<String> = o.optional("per-frame")?;
    let blends: Vec<f64> = o.list("blends")?.unwrap_or_default();
    anyhow::ensure!(blends.iter().all(|a| (0.0..=1.0).contains(a)), "--blends: weights between 0 and 1");
    let blocks: Vec<i64> = o.list("block-oracle")?.unwrap_or_default();
    anyhow::ensure!(
        blocks.iter().all(|&b| b > 0 && b % AutoencoderConfig::FACTOR == 0),
        "--block-oracle: block sizes must be multiples of the latent's {} pixels",
        AutoencoderConfig::FACTOR
    );
    let precision = Precision::resolve(&o.string("precision", "auto"), Device::Cpu)?;
    o.finish()?;
    let model = Arc::new(
        GvcModel::load(&GvcModel::resolve(&gstgvc::video::default_model())?, Device::Cpu)?.with_precision(precision),
    );
    let clip = load_clip(&clip_dir().join(&clip_name), Some(frames), None)?;
    let n = clip.len();
    let reference = clip.float_frames(0, n);
    let lpips = LpipsMetric::new(Device::Cpu)?;
    let dists = DistsMetric::new(Device::Cpu)?;
    println!(
        "{clip_name}: {n} frames {}x{}, DS = {ds}, start step N per QP {:?}, TDIR agreement τ per QP {:?}, intra QP offset {}, D and denoiser in {}, threads {}",
        clip.width(),
        clip.height(),
        (0..model.config.codec.num_qps).map(|q| model.config.denoiser.start_step_for(q)).collect::<Vec<_>>(),
        (0..model.config.codec.num_qps).map(|q| model.config.denoiser.tdir_agreement_for(q)).collect::<Vec<_>>(),
        intra_qp_offset.map_or_else(
            || format!(
                "per QP {:?}",
                (0..model.config.codec.num_qps as u8)
                    .map(|q| model.config.codec.intra_qp_offset_for(q))
                    .collect::<Vec<_>>()
            ),
            |k| k.to_string()
        ),
        precision.name(),
        tch::get_num_threads()
    );
    println!("| qp | decoder | bpp | PSNR | LPIPS | DISTS | tLP | ms / P-frame | of which sampling | network steps / P-frame |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // No coding at all: the ceiling of every rate point.
    let ceiling = tch::no_grad(|| {
        Tensor::cat(&(0..n).map(|t| model.autoencoder.reconstruct(&clip.float_frames(t, 1))).collect::<Vec<_>>(), 0)
    });
    println!(
        "| – | autoencoder alone, no coding (D(E(x))) | – | {:.2} | {:.4} | {:.4} | {:.4} | – | – | – |",
        psnr(&reference, &ceiling),
        lpips.mean(&reference, &ceiling),
        dists.mean(&reference, &ceiling),
        lpips.tlp(&reference, &ceiling)
    );
    let qps = qps.unwrap_or_else(|| (0..model.config.codec.num_qps as u8).collect());
    let mut speedups = Vec::new();
    let mut searches = Vec::new();
    let gop = 32i64;
    let mut per_gop = Vec::new();
    let mut per_frame_csv = String::from("qp,decoder,frame,type,bytes,psnr,lpips,dists\n");
    for &qp in &qps {
        anyhow::ensure!(
            (qp as i64) < model.config.codec.num_qps,
            "--qps: the model has {} rate points",
            model.config.codec.num_qps
        );
        let params = EncoderParams {
            width: clip.width() as u32,
            height: clip.height() as u32,
            fps_n: clip.fps_n as u32,
            fps_d: clip.fps_d as u32,
            intra_period: gop as u32,
            qp,
            diffusion_steps: ds,
            independent_steps: ds,
            adaptive_intra: true,
            intra_qp_offset,
            rate_target: None,
            rounding_offset: 0.5,
            prompt_search: None,
            diffusion_mask: false,
        };
        let mut enc = EncoderSession::new(model.clone(), &params)?;
        let started = Instant::now();
        let stream: Vec<Vec<u8>> =
            (0..n).map(|t| enc.encode(&clip.float_frames(t, 1), false).map(|e| e.data)).collect::<Result<_>>()?;
        let encode_ms = 1000.0 * started.elapsed().as_secs_f64() / n as f64;
        let num_qps = model.config.codec.num_qps as u8;
        let wrong_prompts: Vec<u8> = match wrong_prompt_rows {
            Some(true) => (0..num_qps).filter(|&q| q != qp).collect(),
            Some(false) => vec![if qp == 0 { num_qps - 1 } else { 0 }],
            None => Vec::new(),
        };
        let half = (ds / 2).max(1);
        let variant = |name: String, steps, independent| (name, decoder(&model, steps, independent));
        let mut variants = vec![
            variant("no diffusion (A)".into(), 0, 0),
            variant("diffusion, TDIR off (D = DS)".into(), ds, ds),
            variant("diffusion, TDIR on (D = DS/2)".into(), ds, half),
        ];
        for &tdir in &prompt_tdir {
            let (label, independent) = if tdir { ("on", half) } else { ("off", ds) };
            for &wrong in &wrong_prompts {
                let mut v = variant(format!("TDIR {label}, QP {wrong}'s prompt (wrong)"), ds, independent);
                v.1.prompt_qp = Some(wrong);
                variants.push(v);
            }
        }
        for &start in &start_steps {
            let mut v = variant(format!("TDIR on, N = {start}"), ds, half);
            v.1.start_step = Some(start);
            variants.push(v);
        }
        for &tau in &agreements {
            let mut v = variant(format!("TDIR on, τ = {tau}"), ds, half);
            v.1.tdir_agreement = Some(tau);
            variants.push(v);
        }
        let mut row = |name: &str, stream: &[Vec<u8>], decode: &Decode| {
            let timing = &decode.timing;
            let bpp =
                stream.iter().map(Vec::len).sum::<usize>() as f64 * 8.0 / (n * clip.width() * clip.height()) as f64;
            let decoded = Tensor::cat(&decode.pictures, 0);
            let lp = lpips.per_frame(&reference, &decoded);
            let di = dists.per_frame(&reference, &decoded);
            println!(
                "| {qp} | {name} | {bpp:.4} | {:.2} | {:.4} | {:.4} | {:.4} | {:.1} | {:.1} | {:.2} |",
                psnr(&reference, &decoded),
                mean_of(&lp),
                mean_of(&di),
                lpips.tlp(&reference, &decoded),
                timing.ms_per_p_frame,
                timing.sampling_ms_per_p_frame,
                timing.network_steps_per_p_frame
            );
            let gops: Vec<String> = lp.chunks(gop as usize).map(|c| format!("{:.4}", mean_of(c))).collect();
            per_gop.push(format!("| {qp} | {name} | {} |", gops.join(" | ")));
            if per_frame_path.is_some() {
                for (t, au) in stream.iter().enumerate() {
                    let kind = if decode.frame_types[t] == FrameType::Inter { "P" } else { "I" };
                    let frame_psnr = psnr(&reference.narrow(0, t as i64, 1), &decoded.narrow(0, t as i64, 1));
                    per_frame_csv.push_str(&format!(
                        "{qp},\"{name}\",{t},{kind},{},{frame_psnr:.3},{:.5},{:.5}\n",
                        au.len(),
                        lp[t],
                        di[t]
                    ));
                }
            }
        };
        // Row A's and TDIR on's decodes, for the blends and the block oracle.
        let mut ends = Vec::new();
        for (k, (name, mut dec)) in variants.into_iter().enumerate() {
            let decoded = decode_stream(&mut dec, &stream)?;
            row(&name, &stream, &decoded);
            if k == 0 || k == 2 {
                ends.push(decoded);
            }
        }
        let (plain, diffused) = (Tensor::cat(&ends[0].pictures, 0), &ends[1]);
        if !blends.is_empty() {
            blend_rows(qp, &blends, &plain, &Tensor::cat(&diffused.pictures, 0), &reference, &lpips, &dists);
        }
        if !blocks.is_empty() {
            block_oracle_rows(qp, &blocks, &model, &plain, diffused, &reference, &lpips, &dists);
        }
        // The prompt search, then the same search with diffusion masks.
        let searched_encodes = prompt_search
            .map(|r| (r, false))
            .into_iter()
            .chain(diffusion_mask.then(|| (prompt_search.unwrap_or(0), true)));
        for (range, masked) in searched_encodes {
            let searched = EncoderParams {
                prompt_search: Some(range),
                diffusion_mask: masked,
                independent_steps: half,
                ..params.clone()
            };
            let mut enc = EncoderSession::new(model.clone(), &searched)?;
            let started = Instant::now();
            let encoded = (0..n).map(|t| enc.encode(&clip.float_frames(t, 1), false)).collect::<Result<Vec<_>>>()?;
            let search_ms = 1000.0 * started.elapsed().as_secs_f64() / n as f64;
            let stream: Vec<Vec<u8>> = encoded.iter().map(|e| e.data.clone()).collect();
            let decoded = decode_stream(&mut decoder(&model, ds, half), &stream)?;
            let with_masks = if masked { " and diffusion masks" } else { "" };
            row(&format!("TDIR on, encoder-chosen prompt (±{range} or none){with_masks}"), &stream, &decoded);
            let offsets: Vec<String> =
                encoded.iter().map(|e| e.prompt_offset.map_or("off".into(), |o| format!("{o:+}"))).collect();
            let displayed =
                encoded.iter().zip(&decoded.pictures).all(|(e, d)| e.display.as_ref().is_some_and(|p| p.equal(d)));
            // Blocks showing diffusion among the frames shown with it, and the masks' bits
            // (their ideal cost under the coder's model).
            let diffused: Vec<f64> = encoded
                .iter()
                .filter(|e| e.prompt_offset.is_some())
                .map(|e| e.diffusion_mask.as_ref().map_or(1.0, DiffusionMask::share))
                .collect();
            let mask_bits: f64 = encoded
                .iter()
                .flat_map(|e| &e.bit_split)
                .filter(|part| part.part == "diffusion mask")
                .map(|part| part.bits)
                .sum();
            let mask_column = if masked {
                format!(
                    "{:.0} % of the blocks; {} of {} frames masked; {:.4} bpp",
                    100.0 * mean_of(&diffused),
                    encoded.iter().filter(|e| e.diffusion_mask.is_some()).count(),
                    n,
                    mask_bits / (n * clip.width() * clip.height()) as f64
                )
            } else {
                "–".into()
            };
            searches.push(format!(
                "| {qp} | ±{range}{with_masks} | {} | {mask_column} | {} | {encode_ms:.1} | {search_ms:.1} |",
                offsets.join(" "),
                if displayed { "yes" } else { "NO" }
            ));
        }
        if timing_rounds > 0 {
            speedups.push((qp, paired_timing(&model, &stream, ds, half, timing_rounds)?));
        }
    }
    if n > gop {
        println!();
        println!("LPIPS per {gop} frames, the intra period (adaptive intra may start a GOP earlier; the per-frame CSV has the frame types):");
        let header: Vec<String> =
            (0..(n + gop - 1) / gop).map(|g| format!("frames {}–{}", g * gop, ((g + 1) * gop).min(n) - 1)).collect();
        println!("| qp | decoder | {} |", header.join(" | "));
        println!("|---|---|{}", "---|".repeat(header.len()));
        for row in &per_gop {
            println!("{row}");
        }
    }
    if let Some(path) = &per_frame_path {
        std::fs::write(path, &per_frame_csv).with_context(|| format!("writing --per-frame {path}"))?;
    }
    if !searches.is_empty() {
        println!();
        println!("Encoder-chosen prompts (by LPIPS to the source): the offset signalled per frame, the diffusion masks, whether the decoder displayed the encoder's picture bit for bit, and the encoder's time without and with the search:");
        println!("| qp | search | prompt offset per frame | diffusion masks | decoder = encoder's picture | encode ms / frame | with search ms / frame |");
        println!("|---|---|---|---|---|---|---|");
        for row in &searches {
            println!("{row}");
        }
    }
    if !speedups.is_empty() {
        println!();
        println!(
            "TDIR speed-up (TDIR off / TDIR on, D = DS/2), median over {timing_rounds} paired rounds (min–max); ms per P-frame are medians:"
        );
        println!("| qp | whole P-frame | sampling only | no diffusion (A) ms | TDIR off ms | TDIR on ms | sampling off / on ms |");
        println!("|---|---|---|---|---|---|---|");
        for (qp, t) in &speedups {
            println!(
                "| {qp} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} |",
                t.whole.describe(),
                t.sampling.describe(),
                t.no_diffusion_ms,
                t.off_ms,
                t.on_ms,
                t.off_sampling_ms,
                t.on_sampling_ms
            );
        }
    }
    Ok(())
}

/// `--blends`: the pictures D(ŷ) + α·(diffused − D(ŷ)) for each α, and a per-frame oracle
/// that picks, frame by frame, the α (0 and 1 included) with the lowest LPIPS.
fn blend_rows(
    qp: u8,
    blends: &[f64],
    plain: &Tensor,
    diffused: &Tensor,
    reference: &Tensor,
    lpips: &LpipsMetric,
    dists: &DistsMetric,
) {
    let weights: Vec<f64> = [0.0].iter().chain(blends).chain(&[1.0]).copied().collect();
    let mut per_weight = Vec::with_capacity(weights.len());
    for &alpha in &weights {
        let blended = (plain + (diffused - plain) * alpha).clamp(0.0, 1.0);
        let lp = lpips.per_frame(reference, &blended);
        if blends.contains(&alpha) {
            println!(
                "| {qp} | pixel blend, α = {alpha} of TDIR on | (same) | {:.2} | {:.4} | {:.4} | {:.4} | – | – | – |",
                psnr(reference, &blended),
                mean_of(&lp),
                dists.mean(reference, &blended),
                lpips.tlp(reference, &blended)
            );
        }
        per_weight.push(lp);
    }
    let frames = per_weight[0].len();
    let picks: Vec<usize> = (0..frames)
        .map(|t| (0..weights.len()).min_by(|&a, &b| per_weight[a][t].total_cmp(&per_weight[b][t])).unwrap_or(0))
        .collect();
    let best: Vec<f64> = picks.iter().enumerate().map(|(t, &k)| per_weight[k][t]).collect();
    let counts: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(k, a)| format!("α {a}: {}", picks.iter().filter(|&&p| p == k).count()))
        .collect();
    println!(
        "| {qp} | per-frame oracle α by LPIPS ({}) | (same) | – | {:.4} | – | – | – | – | – |",
        counts.join(", "),
        mean_of(&best)
    );
}

/// `--block-oracle B,…`: per block size B, each frame shows the diffusion decoder's picture in the B×B blocks
/// where its LPIPS map against the source is lower than row A's, and D(ŷ) elsewhere: put
/// together in pixels, and in the latent (ŷ with z⁰ in those blocks, then D once, as a
/// decoder would). An encoder would signal one bit per block (the mask's uncoded cost is
/// printed); frames shown without diffusion keep D(ŷ).
#[allow(clippy::too_many_arguments)]
fn block_oracle_rows(
    qp: u8,
    blocks: &[i64],
    model: &GvcModel,
    plain: &Tensor,
    diffused: &Decode,
    reference: &Tensor,
    lpips: &LpipsMetric,
    dists: &DistsMetric,
) {
    let (n, h, w) = (plain.size()[0], plain.size()[2], plain.size()[3]);
    // The LPIPS maps (diffused, row A) do not depend on the block size: once per frame.
    let maps: Vec<Option<(Tensor, Tensor)>> = (0..n)
        .map(|t| {
            let source = reference.narrow(0, t, 1);
            diffused.diffused_latents[t as usize].as_ref().map(|_| {
                (lpips.map(&source, &diffused.pictures[t as usize]), lpips.map(&source, &plain.narrow(0, t, 1)))
            })
        })
        .collect();
    for &block in blocks {
        let (mut in_pixels, mut in_latent) = (Vec::new(), Vec::new());
        let mut share = 0.0;
        for t in 0..n {
            let a = plain.narrow(0, t, 1);
            let (Some(z0), Some((diffused_map, plain_map))) =
                (&diffused.diffused_latents[t as usize], &maps[t as usize])
            else {
                in_pixels.push(a.shallow_clone());
                in_latent.push(a);
                continue;
            };
            let mask = DiffusionMask::from_distance_maps_in_blocks(diffused_map, plain_map, block);
            share += mask.share();
            in_pixels.push(mask.compose_pixels(&a, &diffused.pictures[t as usize]));
            let y_hat = &diffused.latents[t as usize];
            let mixed = tch::no_grad(|| model.autoencoder.decoder.decode(&mask.compose(y_hat, z0)));
            in_latent.push(mixed.clamp(0.0, 1.0).narrow(2, 0, h).narrow(3, 0, w));
        }
        let blocks_per_frame = ((h + block - 1) / block) * ((w + block - 1) / block);
        for (how, frames) in [("pixels", in_pixels), ("the latent", in_latent)] {
            let shown = Tensor::cat(&frames, 0);
            println!(
                "| {qp} | block oracle {block}×{block}, put together in {how} (diffusion in {:.0} % of the blocks; mask uncoded {:.4} bpp) | (same) | {:.2} | {:.4} | {:.4} | {:.4} | – | – | – |",
                100.0 * share / n as f64,
                blocks_per_frame as f64 / (h * w) as f64,
                psnr(reference, &shown),
                lpips.mean(reference, &shown),
                dists.mean(reference, &shown),
                lpips.tlp(reference, &shown)
            );
        }
    }
}

/// A decoder with DS = `steps` and D = `independent` in place of the stream's.
fn decoder(model: &Arc<GvcModel>, steps: u8, independent: u8) -> DecoderSession {
    let mut dec = DecoderSession::new(model.clone());
    dec.diffusion_steps = Some(steps);
    dec.independent_steps = Some(independent);
    dec
}

/// Per-P-frame means of one decode of the stream.
struct Timing {
    ms_per_p_frame: f64,
    sampling_ms_per_p_frame: f64,
    network_steps_per_p_frame: f64,
}

/// One decode of a stream.
struct Decode {
    pictures: Vec<Tensor>,
    frame_types: Vec<FrameType>,
    /// ŷ and the sampled z⁰ (None without diffusion) per frame, at the coded size.
    latents: Vec<Tensor>,
    diffused_latents: Vec<Option<Tensor>>,
    timing: Timing,
}

/// Decodes every access unit; the pictures, their types and the P-frames' timing.
fn decode_stream(dec: &mut DecoderSession, stream: &[Vec<u8>]) -> Result<Decode> {
    let (mut time, mut sampling, mut count, mut steps) = (0.0, 0.0, 0usize, 0usize);
    let mut pictures = Vec::with_capacity(stream.len());
    let mut frame_types = Vec::with_capacity(stream.len());
    let (mut latents, mut diffused_latents) = (Vec::new(), Vec::new());
    for au in stream {
        let t0 = Instant::now();
        let f = dec.decode(au)?;
        if f.frame_type == FrameType::Inter {
            time += t0.elapsed().as_secs_f64();
            sampling += f.stats.seconds;
            count += 1;
            steps += f.stats.network_steps;
        }
        pictures.push(f.picture);
        frame_types.push(f.frame_type);
        latents.push(f.latent);
        diffused_latents.push(f.diffused_latent);
    }
    let per_frame = |x: f64| x / count.max(1) as f64;
    let timing = Timing {
        ms_per_p_frame: 1000.0 * per_frame(time),
        sampling_ms_per_p_frame: 1000.0 * per_frame(sampling),
        network_steps_per_p_frame: per_frame(steps as f64),
    };
    Ok(Decode { pictures, frame_types, latents, diffused_latents, timing })
}

/// Median and range of per-round ratios.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        Self {
            median: median(values),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    fn describe(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct PairedTiming {
    whole: Spread,
    sampling: Spread,
    no_diffusion_ms: f64,
    off_ms: f64,
    on_ms: f64,
    off_sampling_ms: f64,
    on_sampling_ms: f64,
}

/// `rounds` decodes each of no diffusion, TDIR off (D = DS) and TDIR on (D = `half`), the
/// three back to back in an order that rotates between rounds.
fn paired_timing(model: &Arc<GvcModel>, stream: &[Vec<u8>], ds: u8, half: u8, rounds: usize) -> Result<PairedTiming> {
    let configs = [(0, 0), (ds, ds), (ds, half)];
    let mut per_config: [Vec<Timing>; 3] = Default::default();
    for round in 0..rounds {
        for k in 0..configs.len() {
            let c = (round + k) % configs.len();
            let mut dec = decoder(model, configs[c].0, configs[c].1);
            per_config[c].push(decode_stream(&mut dec, stream)?.timing);
        }
    }
    let [none, off, on] = &per_config;
    let ratios = |f: fn(&Timing) -> f64| -> Vec<f64> { off.iter().zip(on).map(|(a, b)| f(a) / f(b)).collect() };
    let med = |runs: &[Timing], f: fn(&Timing) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(PairedTiming {
        whole: Spread::of(&ratios(|t| t.ms_per_p_frame)),
        sampling: Spread::of(&ratios(|t| t.sampling_ms_per_p_frame)),
        no_diffusion_ms: med(none, |t| t.ms_per_p_frame),
        off_ms: med(off, |t| t.ms_per_p_frame),
        on_ms: med(on, |t| t.ms_per_p_frame),
        off_sampling_ms: med(off, |t| t.sampling_ms_per_p_frame),
        on_sampling_ms: med(on, |t| t.sampling_ms_per_p_frame),
    })
}
