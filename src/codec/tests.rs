//! Engine tests on tiny random networks (plumbing) and real clip frames.

use super::bitstream::{self, FrameType};
use super::rate_control::RateTarget;
use super::session::{DecodedFrame, DecoderSession, EncodedFrame, EncoderParams, EncoderSession, MissingReference};
use crate::clips::{clip_dir, load_clip};
use crate::model::gvc::GvcModel;
use crate::model::{fnv1a64, ModelConfig, Precision};
use std::sync::Arc;
use tch::{Device, Tensor};

pub(crate) fn tiny_config() -> ModelConfig {
    ModelConfig::tiny_for_tests()
}

pub(crate) fn real_frames(n: i64) -> Tensor {
    load_clip(&clip_dir().join("carphone_pristine.mp4"), Some(n as usize), None).unwrap().float_frames(0, n)
}

fn params(w: u32, h: u32, ds: u8, d: u8) -> EncoderParams {
    EncoderParams {
        width: w,
        height: h,
        fps_n: 30,
        fps_d: 1,
        intra_period: 4,
        qp: 1,
        diffusion_steps: ds,
        independent_steps: d,
        adaptive_intra: false,
        intra_qp_offset: Some(0),
        rate_target: None,
        rounding_offset: 0.5,
        prompt_search: None,
        diffusion_mask: false,
    }
}

#[test]
fn encoder_reconstruction_equals_decoder_output_without_diffusion() {
    let model = Arc::new(GvcModel::random(tiny_config(), 7, Device::Cpu));
    let frames = real_frames(6);
    let mut enc = EncoderSession::new(model.clone(), &params(176, 144, 0, 0)).unwrap();
    let mut dec = DecoderSession::new(model);
    for i in 0..6 {
        let e = enc.encode(&frames.narrow(0, i, 1), false).unwrap();
        let expected = if i % 4 == 0 { FrameType::Intra } else { FrameType::Inter };
        assert_eq!(e.frame_type, expected, "frame {i}");
        let d = dec.decode(&e.data).unwrap();
        assert_eq!(d.frame_number, i as u32);
        assert_eq!(d.picture.size(), [1, 3, 144, 176]);
        assert!(d.picture.equal(&e.reconstruction), "frame {i}: decoder output differs from encoder reconstruction");
    }
}

/// A tiny random model coding intra and contextual codes in two checkerboard passes, with
/// the spatial priors' zero-started output layers scaled by `out_scale` (0: as initialised).
fn checkerboard_model(out_scale: f64) -> Arc<GvcModel> {
    let dir = std::env::temp_dir().join(format!("gvc-checkerboard-{out_scale}-{}", std::process::id()));
    let mut cfg = tiny_config();
    cfg.codec.checkerboard = true;
    GvcModel::random(cfg, 7, Device::Cpu).save(&dir).unwrap();
    let weights = dir.join("weights.safetensors");
    tch::manual_seed(11);
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let v = if k.contains(".spatial_prior.out.") { v.randn_like() * out_scale } else { v };
            (k, v)
        })
        .collect();
    Tensor::write_safetensors(&tensors, &weights).unwrap();
    let model = GvcModel::load(&dir, Device::Cpu).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Arc::new(model)
}

#[test]
fn checkerboard_passes_stay_bit_exact_and_the_second_uses_the_first() {
    let frames = real_frames(6);
    let mut sizes = Vec::new();
    for out_scale in [0.0, 0.5] {
        let model = checkerboard_model(out_scale);
        let mut enc = EncoderSession::new(model.clone(), &params(176, 144, 0, 0)).unwrap();
        let mut dec = DecoderSession::new(model);
        let mut bytes = Vec::new();
        for i in 0..6 {
            let e = enc.encode(&frames.narrow(0, i, 1), false).unwrap();
            let passes =
                e.bit_split.iter().filter(|p| p.part.ends_with(" code") && !p.part.starts_with("motion")).count();
            assert_eq!(passes, 2, "frame {i}: {:?}", e.bit_split);
            let d = dec.decode(&e.data).unwrap();
            assert!(
                d.picture.equal(&e.reconstruction),
                "frame {i}: decoder output differs from encoder reconstruction"
            );
            bytes.push(e.data.len());
        }
        sizes.push(bytes);
    }
    // The refined parameters change what the second pass costs.
    assert_ne!(sizes[0], sizes[1]);
}

#[test]
fn p_frame_without_reference_and_foreign_model_are_refused() {
    let model = Arc::new(GvcModel::random(tiny_config(), 7, Device::Cpu));
    let other = Arc::new(GvcModel::random(tiny_config(), 8, Device::Cpu));
    let frames = real_frames(2);
    let mut enc = EncoderSession::new(model.clone(), &params(176, 144, 0, 0)).unwrap();
    let i_frame = enc.encode(&frames.narrow(0, 0, 1), false).unwrap();
    let p_frame = enc.encode(&frames.narrow(0, 1, 1), false).unwrap();
    let mut dec = DecoderSession::new(model);
    assert!(dec.decode(&p_frame.data).is_err());
    dec.decode(&i_frame.data).unwrap();
    dec.reset();
    let err = dec.decode(&p_frame.data).unwrap_err();
    assert!(err.is::<MissingReference>(), "{err}");
    let err = DecoderSession::new(other).decode(&i_frame.data).unwrap_err().to_string();
    assert!(err.contains("made with model"), "{err}");
}

#[test]
fn damaged_payloads_give_errors_not_panics() {
    let model = Arc::new(GvcModel::random(tiny_config(), 7, Device::Cpu));
    let frames = real_frames(1);
    let mut enc = EncoderSession::new(model.clone(), &params(176, 144, 0, 0)).unwrap();
    let au = enc.encode(&frames, false).unwrap().data;
    let mut rng = crate::training::Rng::new(5);
    for _ in 0..100 {
        let mut bad = au.clone();
        let pos = rng.below(bad.len() as u64) as usize;
        bad[pos] ^= 1 << rng.below(8);
        let mut dec = DecoderSession::new(model.clone());
        assert!(dec.decode(&bad).is_err(), "flip at {pos} decoded");
        let _ = dec.decode(&au[..rng.below(au.len() as u64) as usize]);
    }
    assert!(bitstream::parse_access_unit(&[]).is_err());
}

#[test]
fn odd_sizes_are_padded_and_cropped_back() {
    let model = Arc::new(GvcModel::random(tiny_config(), 7, Device::Cpu));
    let frame = real_frames(1).narrow(2, 0, 37).narrow(3, 0, 53);
    let mut enc = EncoderSession::new(model.clone(), &params(53, 37, 0, 0)).unwrap();
    let e = enc.encode(&frame, false).unwrap();
    assert_eq!(enc.sequence_header().coded_width, 64);
    assert_eq!(enc.sequence_header().coded_height, 48);
    let d = DecoderSession::new(model).decode(&e.data).unwrap();
    assert_eq!(d.picture.size(), [1, 3, 37, 53]);
    assert!(d.picture.equal(&e.reconstruction));
}

/// Random full-size networks blow values up along a long GOP; the stream must stay
/// decodable and in sync anyway (symbols are clamped, never desynchronise).
#[test]
fn long_gop_with_exploding_values_stays_in_sync() {
    let cfg = ModelConfig::load(std::path::Path::new("models/gvc-small")).unwrap();
    let model = Arc::new(GvcModel::random(cfg, 1, Device::Cpu));
    let frames = real_frames(60);
    let mut enc =
        EncoderSession::new(model.clone(), &EncoderParams { intra_period: 32, ..params(176, 144, 0, 0) }).unwrap();
    let mut dec = DecoderSession::new(model);
    for i in 0..60 {
        let e = enc.encode(&frames.narrow(0, i, 1), false).unwrap();
        let d = dec.decode(&e.data).unwrap_or_else(|err| panic!("frame {i}: {err}"));
        // NaN != NaN: compare with NaNs mapped to a number on both sides.
        let clean = |t: &Tensor| t.nan_to_num(0.0, None, None);
        assert!(clean(&d.picture).equal(&clean(&e.reconstruction)), "frame {i}");
    }
}

#[test]
fn i_frames_take_the_intra_qp_offset_and_the_decoder_follows() {
    let mut cfg = tiny_config();
    cfg.codec.intra_qp_offset_per_qp = vec![0, 0, 2, 1];
    let model = Arc::new(GvcModel::random(cfg, 7, Device::Cpu));
    let frames = real_frames(5);
    // Offset 5 from QP 2 clamps at QP 0; None takes the model's 2 for QP 2.
    for (offset, intra_qp) in [(Some(0), 2), (Some(1), 1), (Some(5), 0), (None, 0)] {
        let p = EncoderParams { qp: 2, intra_period: 3, intra_qp_offset: offset, ..params(176, 144, 0, 0) };
        let coded = encode_frames(&model, &frames, &p);
        let mut dec = DecoderSession::new(model.clone());
        for (i, e) in coded.iter().enumerate() {
            let expected = if i % 3 == 0 { (FrameType::Intra, intra_qp) } else { (FrameType::Inter, 2) };
            assert_eq!((e.frame_type, qp_of(e)), expected, "offset {offset:?}, frame {i}");
            let d = dec.decode(&e.data).unwrap();
            assert!(d.picture.equal(&e.reconstruction), "offset {offset:?}, frame {i}: decoder differs from encoder");
        }
    }
}

/// The shipped, trained model (models/gvc-small).
fn shipped_model() -> Arc<GvcModel> {
    shipped_model_in(Precision::F32)
}

/// The shipped model with D and the denoiser in `precision`.
fn shipped_model_in(precision: Precision) -> Arc<GvcModel> {
    let dir = GvcModel::resolve(crate::video::DEFAULT_MODEL).unwrap();
    Arc::new(GvcModel::load(&dir, Device::Cpu).expect("the shipped model loads").with_precision(precision))
}

/// The rate point a coded frame's packet names.
fn qp_of(e: &EncodedFrame) -> u8 {
    bitstream::parse_access_unit(&e.data).unwrap().frame.qp_index
}

/// Every frame of `frames` through one encoder session with `p`.
fn encode_frames(model: &Arc<GvcModel>, frames: &Tensor, p: &EncoderParams) -> Vec<EncodedFrame> {
    let mut enc = EncoderSession::new(model.clone(), p).unwrap();
    (0..frames.size()[0]).map(|i| enc.encode(&frames.narrow(0, i, 1), false).unwrap()).collect()
}

fn encode_clip(model: &Arc<GvcModel>, frames: &Tensor, qp: u8) -> (Vec<Vec<u8>>, Vec<Tensor>) {
    let p = EncoderParams { qp, intra_period: 32, ..params(176, 144, 4, 2) };
    encode_frames(model, frames, &p).into_iter().map(|e| (e.data, e.reconstruction)).unzip()
}

fn hash_frames(frames: &[Tensor]) -> u64 {
    let bytes: Vec<u8> = frames.iter().flat_map(crate::video::tensor_to_rgb_bytes).collect();
    fnv1a64(&bytes)
}

fn hash_latents(latents: &[Tensor]) -> u64 {
    let bytes: Vec<u8> = latents
        .iter()
        .flat_map(|t| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
        .flat_map(f32::to_le_bytes)
        .collect();
    fnv1a64(&bytes)
}

/// Decodes `stream` (access units) without and with diffusion; returns both frame lists and
/// the decoded latents ŷ.
fn decode_stream(model: &Arc<GvcModel>, stream: &[Vec<u8>]) -> (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>) {
    let mut plain = DecoderSession::new(model.clone());
    plain.diffusion_steps = Some(0);
    let mut diffused = DecoderSession::new(model.clone());
    let (mut pictures, mut diffused_pictures, mut latents) = (Vec::new(), Vec::new(), Vec::new());
    for au in stream {
        let frame = plain.decode(au).unwrap();
        pictures.push(frame.picture);
        latents.push(frame.latent);
        diffused_pictures.push(diffused.decode(au).unwrap().picture);
    }
    (pictures, diffused_pictures, latents)
}

/// Child-process half of `decode_in_child`.
#[test]
fn child_decode_from_file() {
    let Ok(path) = std::env::var("GVC_CHILD_STREAM") else { return };
    tch::set_num_threads(2);
    let data = std::fs::read(&path).unwrap();
    let stream: Vec<Vec<u8>> = serde_json::from_slice(&data).unwrap();
    let (plain, diffused, latents) = decode_stream(&shipped_model(), &stream);
    let hashes = [hash_frames(&plain), hash_frames(&diffused), hash_latents(&latents)];
    std::fs::write(format!("{path}.hash"), serde_json::to_vec(&hashes).unwrap()).unwrap();
}

/// Decodes `stream` with the shipped model in a new process with `env` set; returns the hashes
/// of its pictures without and with diffusion and of its latents ŷ.
fn decode_in_child(stream: &[Vec<u8>], env: &[(&str, &str)]) -> [u64; 3] {
    // Tests run in parallel in one process: each call gets its own file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gvc-child-{}-{call}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(stream).unwrap()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "codec::tests::child_decode_from_file", "--nocapture"])
        .env("GVC_CHILD_STREAM", &path)
        .envs(env.iter().copied())
        .status()
        .unwrap();
    assert!(status.success(), "the child decoder failed");
    let hashes = serde_json::from_slice(&std::fs::read(format!("{}.hash", path.display())).unwrap()).unwrap();
    std::fs::remove_file(&path).ok();
    hashes
}

#[test]
fn trained_model_is_bit_exact_across_processes_and_thread_counts() {
    let _threads = crate::model::THREAD_COUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let model = shipped_model();
    let frames = real_frames(16);
    tch::set_num_threads(2);
    let (stream, recon) = encode_clip(&model, &frames, 1);
    let (plain, diffused, _) = decode_stream(&model, &stream);
    for (i, (a, b)) in plain.iter().zip(&recon).enumerate() {
        assert!(a.equal(b), "frame {i}: decoder output differs from the encoder reconstruction");
    }
    // Decoding twice gives identical frames, diffusion included.
    let (_, again, _) = decode_stream(&model, &stream);
    assert!(diffused.iter().zip(&again).all(|(a, b)| a.equal(b)));
    // Another intra-op thread count changes nothing: an encoder on 1 thread writes the same
    // bytes and reconstruction, a decoder on 1 thread outputs the same pictures, diffusion
    // included (the codec's decoding path is `PortableConv`, the denoiser's 1×1 convolutions
    // are `ExactPointwiseConv`).
    tch::set_num_threads(1);
    let (stream_1t, recon_1t) = encode_clip(&model, &frames, 1);
    let (plain_1t, diffused_1t, _) = decode_stream(&model, &stream);
    tch::set_num_threads(2);
    assert_eq!(stream_1t, stream, "a 1-thread encoder writes other bytes");
    for i in 0..recon.len() {
        assert!(recon_1t[i].equal(&recon[i]), "frame {i}: 1-thread encoder reconstruction differs");
        assert!(plain_1t[i].equal(&recon[i]), "frame {i}: 1-thread decode differs");
        assert!(diffused_1t[i].equal(&diffused[i]), "frame {i}: 1-thread diffusion decode differs");
    }
    // A separate process decodes the same bits to the same pictures.
    let [plain_hash, diffused_hash, _] = decode_in_child(&stream, &[]);
    assert_eq!((plain_hash, diffused_hash), (hash_frames(&plain), hash_frames(&diffused)));
}

/// D and the denoiser in bf16 move the pictures, never the codec: an f32 decoder reads a bf16
/// encoder's stream to the same latents ŷ; the bf16 encoder writes the same bytes on another
/// thread count, and the bf16 decoder's plain output is its reconstruction to the bit, also on
/// another thread count, diffusion included; the bf16 pictures stay within rounding of the f32
/// ones.
#[test]
fn bf16_synthesis_changes_pictures_only_within_rounding() {
    let _threads = crate::model::THREAD_COUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let bf16 = shipped_model_in(Precision::Bf16);
    let f32 = shipped_model();
    let frames = real_frames(8);
    tch::set_num_threads(2);
    let (stream, recon) = encode_clip(&bf16, &frames, 1);
    let (plain, diffused, latents) = decode_stream(&bf16, &stream);
    let (plain_f32, diffused_f32, latents_f32) = decode_stream(&f32, &stream);
    tch::set_num_threads(1);
    let (stream_1t, _) = encode_clip(&bf16, &frames, 1);
    let (plain_1t, diffused_1t, _) = decode_stream(&bf16, &stream);
    tch::set_num_threads(2);
    assert_eq!(stream_1t, stream, "a 1-thread bf16 encoder writes other bytes");
    for i in 0..stream.len() {
        assert!(latents[i].equal(&latents_f32[i]), "frame {i}: bf16 and f32 decoders decoded other latents");
        assert!(plain[i].equal(&recon[i]), "frame {i}: bf16 decoder differs from the bf16 encoder");
        assert!(plain_1t[i].equal(&plain[i]), "frame {i}: 1-thread bf16 decode differs");
        assert!(diffused_1t[i].equal(&diffused[i]), "frame {i}: 1-thread bf16 diffusion decode differs");
        assert!(!plain[i].equal(&plain_f32[i]), "frame {i}: the bf16 decoder gave the f32 pictures");
        for (name, a, b) in [("plain", &plain, &plain_f32), ("diffused", &diffused, &diffused_f32)] {
            let psnr = crate::metrics::psnr(&a[i], &b[i]);
            assert!(psnr > 50.0, "frame {i}: {name} bf16 pictures are {psnr:.1} dB from the f32 ones");
        }
    }
}

/// A decoder on a CPU without this one's instruction sets reads the stream exactly as the
/// encoder wrote it. Another CPU is emulated by capping every back end libtorch dispatches to:
/// oneDNN at SSE4.1, ATen's kernels at their scalar build, MKL at SSE4.2 in its compatible mode.
/// With float convolutions on the decoding path such a decode lost sync within 25 frames
/// (`logs/cross-isa-22.log`); the decoded latents must equal the encoder's to the last bit.
#[test]
fn streams_decode_alike_on_other_instruction_sets() {
    let model = shipped_model();
    let frames = real_frames(16);
    let p = EncoderParams { qp: 0, intra_period: 32, ..params(176, 144, 0, 0) };
    let coded = encode_frames(&model, &frames, &p);
    let stream: Vec<Vec<u8>> = coded.iter().map(|e| e.data.clone()).collect();
    let latents: Vec<Tensor> = coded.iter().map(|e| e.latent.shallow_clone()).collect();
    let capped = [
        ("ONEDNN_MAX_CPU_ISA", "SSE41"),
        ("ATEN_CPU_CAPABILITY", "default"),
        ("MKL_CBWR", "COMPATIBLE"),
        ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
    ];
    let [_, _, child_latents] = decode_in_child(&stream, &capped);
    assert_eq!(child_latents, hash_latents(&latents), "the capped decoder decoded other latents");
}

/// A target between two rate points' rates is held on a real clip: the leaky bucket keeps the
/// bits spent within its tolerance (half a second of the target) plus the largest frame of
/// the target, which a coder left at its starting QP overshoots, by moving to the coarser
/// rate point.
#[test]
fn bitrate_mode_holds_a_target_between_rate_points() {
    let model = shipped_model();
    let frames = real_frames(64);
    let n = frames.size()[0] as f64;
    let bits = |coded: &[EncodedFrame]| coded.iter().map(|e| e.data.len() as f64 * 8.0).collect::<Vec<f64>>();
    let constant = |qp| bits(&encode_frames(&model, &frames, &EncoderParams { qp, ..params(176, 144, 0, 0) }));
    let (at_1, at_2): (f64, f64) = (constant(1).iter().sum(), constant(2).iter().sum());
    let bitrate = ((at_1 * at_2).sqrt() / n * 30.0) as u32;
    let rate_target = Some(RateTarget { bits_per_second: bitrate, buffer_seconds: 1.0 });
    let p = EncoderParams { qp: 1, rate_target, ..params(176, 144, 0, 0) };
    let coded = encode_frames(&model, &frames, &p);
    let sizes = bits(&coded);
    let (spent, target) = (sizes.iter().sum::<f64>(), f64::from(bitrate) * n / 30.0);
    let bound = f64::from(bitrate) * 0.5 + sizes.iter().fold(f64::from(bitrate) / 30.0, |a, &b| a.max(b));
    assert!(
        (spent - target).abs() <= bound,
        "spent {spent} bits for a target of {target} (QP 1: {at_1}, QP 2: {at_2}); allowed ±{bound}"
    );
    let qps: Vec<u8> = coded.iter().map(qp_of).collect();
    eprintln!(
        "spent {spent:.0} bits for {target:.0} (QP 1 {at_1:.0}, QP 2 {at_2:.0}, allowed ±{bound:.0}), QPs {qps:?}"
    );
    assert!(qps.iter().all(|&q| q == 1 || q == 2), "rate points used: {qps:?}");
}

#[test]
fn higher_qp_never_costs_more_bits() {
    let model = shipped_model();
    let frames = real_frames(8);
    let sizes: Vec<usize> = (0..model.config.codec.num_qps as u8)
        .map(|qp| encode_clip(&model, &frames, qp).0.iter().map(Vec::len).sum())
        .collect();
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "bytes per QP: {sizes:?}");
}

/// A dead zone (rounding offset below 0.5) is the encoder's choice alone: the stream costs
/// fewer bytes, the latents move, and the decoder still reproduces the encoder's
/// reconstruction bit for bit. Offsets outside 0 ..= 0.5 are refused.
#[test]
fn rounding_offset_spends_fewer_bits_and_stays_in_sync() {
    let model = shipped_model();
    let frames = real_frames(8);
    let coded = |rounding_offset| {
        let p = EncoderParams { qp: 1, intra_period: 32, rounding_offset, ..params(176, 144, 0, 0) };
        encode_frames(&model, &frames, &p)
    };
    let (plain, dead_zone) = (coded(0.5), coded(0.35));
    let bytes = |c: &[EncodedFrame]| c.iter().map(|e| e.data.len()).sum::<usize>();
    assert!(
        bytes(&dead_zone) < bytes(&plain),
        "{} bytes with a dead zone, {} without",
        bytes(&dead_zone),
        bytes(&plain)
    );
    let stream: Vec<Vec<u8>> = dead_zone.iter().map(|e| e.data.clone()).collect();
    let (pictures, _, latents) = decode_stream(&model, &stream);
    for (i, e) in dead_zone.iter().enumerate() {
        assert!(latents[i].equal(&e.latent), "frame {i}: decoded latent differs from the encoder's");
        assert!(pictures[i].equal(&e.reconstruction), "frame {i}: decoder output differs from the encoder's");
        assert!(!e.latent.equal(&plain[i].latent), "frame {i}: the dead zone changed nothing");
    }
    for bad in [-0.1, 0.6, f64::NAN] {
        let p = EncoderParams { rounding_offset: bad, ..params(176, 144, 0, 0) };
        assert!(EncoderSession::new(model.clone(), &p).is_err(), "rounding offset {bad} accepted");
    }
}

/// Decodes access units with DS/D overrides; returns the pictures.
fn decode_with(model: &Arc<GvcModel>, stream: &[Vec<u8>], ds: u8, d: u8) -> Vec<Tensor> {
    let mut dec = DecoderSession::new(model.clone());
    dec.diffusion_steps = Some(ds);
    dec.independent_steps = Some(d);
    stream.iter().map(|au| dec.decode(au).unwrap().picture).collect()
}

#[test]
fn tdir_with_d_equal_ds_is_the_no_reuse_path_and_resets_at_i_frames() {
    let model = shipped_model();
    let frames = real_frames(7);
    let p = EncoderParams { qp: 2, intra_period: 3, ..params(176, 144, 4, 2) };
    let mut enc = EncoderSession::new(model.clone(), &p).unwrap();
    let stream: Vec<Vec<u8>> = (0..7).map(|i| enc.encode(&frames.narrow(0, i, 1), false).unwrap().data).collect();
    // D = DS: every step runs the network, as if there were no buffer at all.
    let full = decode_with(&model, &stream, 4, 4);
    for i in 0..stream.len() {
        let mut fresh = DecoderSession::new(model.clone());
        fresh.diffusion_steps = Some(4);
        fresh.independent_steps = Some(4);
        // Rebuild the reference without diffusion history, then decode frame i alone.
        let gop_start = i / 3 * 3;
        let mut last = None;
        for au in &stream[gop_start..=i] {
            last = Some(fresh.decode(au).unwrap());
        }
        let f = last.unwrap();
        assert!(f.picture.equal(&full[i]), "frame {i}: D = DS depends on earlier diffusion");
        assert_eq!(f.stats.reused_steps, 0);
    }
    // With reuse (D = 2), a stream cut at an I-frame decodes exactly like the full stream
    // from that point: the buffer is reset at every I-frame.
    let tdir_full = decode_with(&model, &stream, 4, 2);
    let tdir_cut = decode_with(&model, &stream[3..], 4, 2);
    for (i, (a, b)) in tdir_full[3..].iter().zip(&tdir_cut).enumerate() {
        assert!(a.equal(b), "frame {}: cut stream differs", i + 3);
    }
    // And reuse really happens on the second P-frame of a GOP.
    let mut dec = DecoderSession::new(model.clone());
    let stats: Vec<_> = stream.iter().map(|au| dec.decode(au).unwrap().stats).collect();
    assert_eq!(stats[1].reused_steps, 0, "first P-frame of a GOP runs every step");
    assert_eq!(stats[2].reused_steps, 2, "later P-frames reuse DS − D steps");
    assert_eq!(stats[3].network_steps, 4, "I-frames run every step");
}

#[test]
fn model_id_covers_weights_and_config() {
    let dir = std::env::temp_dir().join(format!("gvc-model-id-{}", std::process::id()));
    GvcModel::random(tiny_config(), 7, Device::Cpu).save(&dir).unwrap();
    let id = |dir: &std::path::Path| GvcModel::load(dir, Device::Cpu).unwrap().id;
    let original = id(&dir);
    assert_eq!(id(&dir), original, "the id must be a pure function of the folder");
    // Another start step per QP decodes differently, so it must be another model.
    let mut config = ModelConfig::load(&dir).unwrap();
    config.denoiser.start_step_per_qp = vec![300, 200, 100, 50];
    config.save(&dir).unwrap();
    assert_eq!(ModelConfig::load(&dir).unwrap().denoiser.start_step_for(2), 100);
    assert_eq!(ModelConfig::load(&dir).unwrap().denoiser.start_step_for(9), 300);
    let with_steps = id(&dir);
    assert_ne!(with_steps, original);
    // So does another TDIR agreement τ per QP.
    config.denoiser.tdir_agreement_per_qp = vec![0.0, 0.0, 0.1, 0.2];
    config.save(&dir).unwrap();
    assert_eq!(ModelConfig::load(&dir).unwrap().denoiser.tdir_agreement_for(3), 0.2);
    assert_eq!(ModelConfig::load(&dir).unwrap().denoiser.tdir_agreement_for(9), config.denoiser.tdir_agreement);
    assert_ne!(id(&dir), with_steps);
    GvcModel::random(tiny_config(), 8, Device::Cpu).save(&dir).unwrap();
    assert_ne!(id(&dir), original, "other weights, same config");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decoder_uses_the_tdir_agreement_of_the_frames_qp() {
    // The shipped weights: a random latent decoder saturates its pixels, hiding τ.
    let dir = GvcModel::resolve(crate::video::DEFAULT_MODEL).unwrap();
    let mut model = GvcModel::load(&dir, Device::Cpu).unwrap();
    model.config.denoiser.tdir_agreement = 0.0;
    model.config.denoiser.tdir_agreement_per_qp = vec![0.0, 0.5];
    let model = Arc::new(model);
    let frames = real_frames(4);
    let mut enc = EncoderSession::new(model.clone(), &params(176, 144, 4, 2)).unwrap();
    let stream: Vec<Vec<u8>> = (0..4).map(|i| enc.encode(&frames.narrow(0, i, 1), false).unwrap().data).collect();
    let decode = |tau: Option<f64>| {
        let mut dec = DecoderSession::new(model.clone());
        dec.tdir_agreement = tau;
        stream.iter().map(|au| dec.decode(au).unwrap().picture).collect::<Vec<_>>()
    };
    let (shipped, explicit, none) = (decode(None), decode(Some(0.5)), decode(Some(0.0)));
    // params() codes at QP 1, so the model's τ there is 0.5.
    assert!(shipped.iter().zip(&explicit).all(|(a, b)| a.equal(b)), "QP 1 must decode with τ = 0.5");
    // Frame 2 is the first that reuses the buffer (the second P-frame of the GOP).
    assert!(!shipped[2].equal(&none[2]), "τ = 0.5 and τ = 0 decode alike: τ is not used");
}

/// On hard motion (bikes at QP 2) the first P-frames cost more than the I-frame without any
/// drift; adaptive intra must keep such P-frames. A two-frame byte balance alone restarted
/// there every few frames (13 I-frames in 32, for 0.9 dB less at more bits).
#[test]
fn adaptive_intra_keeps_costly_p_frames_that_do_not_drift() {
    let model = shipped_model();
    let frames = load_clip(&clip_dir().join("bikes.mp4"), Some(5), None).unwrap().float_frames(0, 5);
    let (_, _, h, w) = frames.size4().unwrap();
    let encode = |adaptive_intra| {
        let p = EncoderParams { qp: 2, intra_period: 32, adaptive_intra, ..params(w as u32, h as u32, 0, 0) };
        encode_frames(&model, &frames, &p).into_iter().map(|e| e.data).collect::<Vec<_>>()
    };
    let (fixed, adaptive) = (encode(false), encode(true));
    let sizes: Vec<usize> = fixed.iter().map(Vec::len).collect();
    assert!(sizes[1..].iter().all(|&p| p > sizes[0]), "premise: P-frames dearer than the I-frame, {sizes:?}");
    let adaptive_sizes: Vec<usize> = adaptive.iter().map(Vec::len).collect();
    assert!(fixed == adaptive, "restarted: fixed GOP {sizes:?}, adaptive {adaptive_sizes:?}");
}

/// A hard cut (carphone, then vtest) coded as a P-frame costs more than restarting; with
/// adaptive intra the encoder restarts the GOP there at every rate point, changes nothing before
/// the cut, and the decoder follows bit-exactly.
#[test]
fn adaptive_intra_restarts_the_gop_at_a_scene_cut() {
    let model = shipped_model();
    let other = load_clip(&clip_dir().join("vtest.avi"), Some(2), Some((176, 144))).unwrap().float_frames(0, 2);
    let frames = Tensor::cat(&[real_frames(3), other], 0);
    for qp in 0..model.config.codec.num_qps as u8 {
        let encode = |adaptive_intra| {
            let p = EncoderParams { qp, intra_period: 32, adaptive_intra, ..params(176, 144, 0, 0) };
            encode_frames(&model, &frames, &p)
        };
        let (fixed, adaptive) = (encode(false), encode(true));
        let types: Vec<FrameType> = adaptive.iter().map(|e| e.frame_type).collect();
        use FrameType::{Inter as P, Intra as I};
        assert_eq!(types, [I, P, P, I, P], "qp {qp}");
        assert!(fixed.iter().skip(1).all(|e| e.frame_type == P), "qp {qp}: fixed GOP");
        for i in 0..3 {
            assert_eq!(fixed[i].data, adaptive[i].data, "qp {qp} frame {i}: before the cut");
        }
        let bytes = |s: &[EncodedFrame]| s[3..].iter().map(|e| e.data.len()).sum::<usize>();
        assert!(
            bytes(&adaptive) < bytes(&fixed),
            "qp {qp}: restart {} vs P-frames {}",
            bytes(&adaptive),
            bytes(&fixed)
        );
        let mut dec = DecoderSession::new(model.clone());
        for (i, e) in adaptive.iter().enumerate() {
            let d = dec.decode(&e.data).unwrap();
            assert!(d.picture.equal(&e.reconstruction), "qp {qp} frame {i}: decoder differs from encoder");
        }
    }
}

/// carphone's code grid (11×9) is padded to 12×12 for the hyperprior; the side information
/// must stay a small part of a P-frame there, as on frames that need no padding.
#[test]
fn hyper_latents_of_a_padded_code_grid_stay_cheap() {
    let model = shipped_model();
    let frames = real_frames(6);
    let p = EncoderParams { qp: 3, intra_period: 32, ..params(176, 144, 0, 0) };
    let mut enc = EncoderSession::new(model, &p).unwrap();
    let (mut z, mut code) = (0.0, 0.0);
    for i in 0..6 {
        for part in enc.encode(&frames.narrow(0, i, 1), false).unwrap().bit_split {
            match part.part {
                "contextual z" => z += part.bits,
                "contextual code" => code += part.bits,
                _ => {}
            }
        }
    }
    assert!(code > 0.0 && z < 0.25 * code, "contextual z {z:.0} bits vs code {code:.0} bits");
}

/// `au` with its frame's prompt offset replaced.
fn with_prompt_offset(au: &[u8], offset: Option<i8>) -> Vec<u8> {
    with_frame(au, |f| f.prompt_offset = offset)
}

#[test]
fn decoder_conditions_on_the_signalled_prompt() {
    let model = shipped_model();
    let frames = real_frames(3);
    let p = EncoderParams { qp: 2, intra_period: 32, ..params(176, 144, 4, 2) };
    let stream: Vec<Vec<u8>> = encode_frames(&model, &frames, &p).into_iter().map(|e| e.data).collect();
    let own = decode_with(&model, &stream, 4, 2);
    // Every frame signalling QP 3's prompt decodes as a decoder told to use QP 3's.
    let signalled: Vec<Vec<u8>> = stream.iter().map(|au| with_prompt_offset(au, Some(1))).collect();
    let shifted = decode_with(&model, &signalled, 4, 2);
    let mut told = DecoderSession::new(model.clone());
    told.prompt_qp = Some(3);
    for (i, au) in stream.iter().enumerate() {
        assert!(told.decode(au).unwrap().picture.equal(&shifted[i]), "frame {i}: the signalled prompt was not used");
        assert!(!shifted[i].equal(&own[i]), "frame {i}: the prompt changed nothing");
    }
    // The codec's reconstruction does not depend on the prompt.
    assert!(decode_with(&model, &signalled, 0, 0)
        .iter()
        .zip(decode_with(&model, &stream, 0, 0))
        .all(|(a, b)| a.equal(&b)));
    // A prompt outside the model's rate points is refused with a clear error.
    let err =
        DecoderSession::new(model.clone()).decode(&with_prompt_offset(&stream[0], Some(3))).unwrap_err().to_string();
    assert!(err.contains("prompt of rate point 2 + 3"), "{err}");
}

#[test]
fn prompt_search_signals_the_picture_it_chose() {
    let frames = real_frames(4);
    let lpips = crate::metrics::LpipsMetric::new(Device::Cpu).unwrap();
    let wide = GvcModel::resolve("gvc-wide").unwrap();
    let wide = Arc::new(GvcModel::load(&wide, Device::Cpu).unwrap().with_precision(Precision::F32));
    let mut lead_changed = false;
    for (model, qp) in [(shipped_model(), 0), (wide, 3)] {
        // The model's I-frame QP (one better at QP 3), as the benchmark codes.
        let p = EncoderParams {
            qp,
            intra_period: 32,
            intra_qp_offset: None,
            prompt_search: Some(1),
            ..params(176, 144, 4, 2)
        };
        let encoded = encode_frames(&model, &frames, &p);
        let stream: Vec<Vec<u8>> = encoded.iter().map(|e| e.data.clone()).collect();
        let decoded = decode_with(&model, &stream, 4, 2);
        for (i, (e, d)) in encoded.iter().zip(&decoded).enumerate() {
            assert!(e.display.as_ref().unwrap().equal(d), "qp {qp} frame {i}: the decoder shows another picture");
            let packet = bitstream::parse_access_unit(&e.data).unwrap().frame;
            assert_eq!(packet.prompt_offset, e.prompt_offset);
            // Within ±1 and the model's rate points (QP 0 has no lower prompt).
            let offset = e.prompt_offset.expect("diffusion helps on carphone at these rate points");
            let prompt = packet.qp_index as i64 + offset as i64;
            assert!(offset.abs() <= 1 && (0..5).contains(&prompt), "qp {qp} frame {i}: prompt {prompt}");
        }
        lead_changed |= encoded.windows(2).any(|w| w[0].prompt_offset != w[1].prompt_offset);
        // The I-frame's pick is at least as close to the source as its own prompt.
        let mut own = DecoderSession::new(model.clone());
        own.prompt_qp = Some(qp_of(&encoded[0]));
        let own_picture = own.decode(&stream[0]).unwrap().picture;
        let source = frames.narrow(0, 0, 1);
        let (chosen, unsearched) = (lpips.mean(&source, &decoded[0]), lpips.mean(&source, &own_picture));
        assert!(
            chosen < unsearched || (encoded[0].prompt_offset == Some(0) && chosen == unsearched),
            "qp {qp}: chose offset {:?} at LPIPS {chosen}, own prompt {unsearched}",
            encoded[0].prompt_offset
        );
    }
    // gvc-wide at QP 3 signals +1, then 0 (session 33): the decoder's TDIR state then is no
    // single track's, the case the equality above must also hold in.
    assert!(lead_changed, "no stream changed its prompt within the GOP; the test no longer covers that case");
    // Range 0 weighs the own prompt against no diffusion only: on carphone at QP 0 the own
    // prompt, and the decoder shows the encoder's picture.
    let p = EncoderParams { qp: 0, intra_period: 32, prompt_search: Some(0), ..params(176, 144, 4, 2) };
    let encoded = encode_frames(&shipped_model(), &frames, &p);
    let decoded = decode_with(&shipped_model(), &encoded.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), 4, 2);
    for (i, (e, d)) in encoded.iter().zip(&decoded).enumerate() {
        assert_eq!(e.prompt_offset, Some(0), "range 0 frame {i}");
        assert!(e.display.as_ref().unwrap().equal(d), "range 0 frame {i}: the decoder shows another picture");
    }
    // Without diffusion there is nothing to choose.
    let p = EncoderParams { prompt_search: Some(1), ..params(176, 144, 0, 0) };
    assert!(encode_frames(&shipped_model(), &frames, &p)
        .iter()
        .all(|e| e.prompt_offset == Some(0) && e.display.is_none()));
}

#[test]
fn frames_signalled_without_diffusion_show_the_reconstruction_and_empty_the_buffer() {
    let model = shipped_model();
    let frames = real_frames(5);
    let p = EncoderParams { qp: 2, intra_period: 32, ..params(176, 144, 4, 2) };
    let encoded = encode_frames(&model, &frames, &p);
    // Frame 2 (a P-frame after the GOP's first) signalled without diffusion.
    let stream: Vec<Vec<u8>> = encoded
        .iter()
        .enumerate()
        .map(|(i, e)| if i == 2 { with_prompt_offset(&e.data, None) } else { e.data.clone() })
        .collect();
    let mut dec = DecoderSession::new(model.clone());
    let decoded: Vec<DecodedFrame> = stream.iter().map(|au| dec.decode(au).unwrap()).collect();
    assert!(decoded[2].picture.equal(&encoded[2].reconstruction), "frame 2 is not D(ŷ)");
    assert_eq!(decoded[2].stats.network_steps, 0);
    // TDIR: frame 1 (the GOP's first P-frame) samples every step and frame 4 reuses; frame 3
    // follows a frame without diffusion, so it has nothing to reuse.
    let steps: Vec<usize> = decoded.iter().map(|f| f.stats.network_steps).collect();
    assert_eq!(steps, vec![4, 4, 0, 4, 2]);
    let own = decode_with(&model, &encoded.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), 4, 2);
    assert!(decoded[1].picture.equal(&own[1]) && !decoded[3].picture.equal(&own[3]));
}

#[test]
fn prompt_search_signals_no_diffusion_where_the_denoiser_hurts() {
    // The shipped model made to sample from pure noise, which its denoiser never saw (it
    // trains up to step 300): far worse than D(ŷ) at QP 0.
    let dir = GvcModel::resolve(crate::video::DEFAULT_MODEL).unwrap();
    let mut model = GvcModel::load(&dir, Device::Cpu).unwrap().with_precision(Precision::F32);
    model.config.denoiser.start_step_per_qp = vec![model.config.denoiser.train_steps; 5];
    let model = Arc::new(model);
    let frames = real_frames(4);
    // Range 0 is the own prompt against no diffusion alone.
    for range in [0, 1] {
        let p = EncoderParams { qp: 0, intra_period: 32, prompt_search: Some(range), ..params(176, 144, 4, 2) };
        let encoded = encode_frames(&model, &frames, &p);
        let stream: Vec<Vec<u8>> = encoded.iter().map(|e| e.data.clone()).collect();
        let decoded = decode_with(&model, &stream, 4, 2);
        for (i, (e, d)) in encoded.iter().zip(&decoded).enumerate() {
            assert_eq!(e.prompt_offset, None, "range {range} frame {i}");
            assert!(d.equal(&e.reconstruction) && d.equal(e.display.as_ref().unwrap()), "range {range} frame {i}");
        }
    }
}

/// `au` with its frame header changed by `change`.
fn with_frame(au: &[u8], change: impl FnOnce(&mut bitstream::FramePacket)) -> Vec<u8> {
    let parsed = bitstream::parse_access_unit(au).unwrap();
    let mut data = parsed.sequence_header.map(|h| h.to_unit()).unwrap_or_default();
    let mut frame = parsed.frame;
    change(&mut frame);
    data.extend(frame.to_unit());
    data
}

#[test]
fn diffusion_masks_show_the_encoders_picture_and_never_carry_over() {
    let model = shipped_model();
    let frames = real_frames(4);
    let p = EncoderParams { qp: 0, intra_period: 32, diffusion_mask: true, ..params(176, 144, 4, 2) };
    let encoded = encode_frames(&model, &frames, &p);
    let stream: Vec<Vec<u8>> = encoded.iter().map(|e| e.data.clone()).collect();
    let mut dec = DecoderSession::new(model.clone());
    let decoded: Vec<DecodedFrame> = stream.iter().map(|au| dec.decode(au).unwrap()).collect();
    for (i, (e, d)) in encoded.iter().zip(&decoded).enumerate() {
        assert!(e.display.as_ref().unwrap().equal(&d.picture), "frame {i}: the decoder shows another picture");
        assert_eq!(d.mask, e.diffusion_mask, "frame {i}");
        let packet = bitstream::parse_access_unit(&e.data).unwrap().frame;
        assert_eq!(packet.diffusion_mask, e.diffusion_mask.is_some(), "frame {i}");
        let mask_bits = e.bit_split.iter().filter(|p| p.part == "diffusion mask").map(|p| p.bits).sum::<f64>();
        assert_eq!(mask_bits > 0.0, e.diffusion_mask.is_some(), "frame {i}");
    }
    // Carphone at QP 0 (session 38): the own prompt, diffusion in 77–93 % of the blocks.
    let partial = |e: &EncodedFrame| e.diffusion_mask.as_ref().is_some_and(|m| m.share() > 0.0 && m.share() < 1.0);
    assert!(partial(&encoded[1]), "frame 1 has no partial mask; the test no longer covers masks");
    // The same search without masks signals the same prompts: the decoder samples the same
    // z⁰ in every frame and shows D(z⁰) where the masked stream had a mask: the TDIR buffer
    // holds the unmasked predictions, so no mask carries over.
    let p = EncoderParams { prompt_search: Some(0), diffusion_mask: false, ..p };
    let unmasked_stream: Vec<Vec<u8>> = encode_frames(&model, &frames, &p).into_iter().map(|e| e.data).collect();
    let mut dec = DecoderSession::new(model.clone());
    let unmasked: Vec<DecodedFrame> = unmasked_stream.iter().map(|au| dec.decode(au).unwrap()).collect();
    let z0 = |f: &DecodedFrame| f.diffused_latent.as_ref().unwrap().shallow_clone();
    for (i, (e, (u, d))) in encoded.iter().zip(unmasked.iter().zip(&decoded)).enumerate() {
        assert!(z0(u).equal(&z0(d)) && u.mask.is_none(), "frame {i}");
        assert_eq!(u.picture.equal(&d.picture), e.diffusion_mask.is_none(), "frame {i}");
    }
    // Malformed masks are refused with clear errors.
    let refused = |au: Vec<u8>| {
        let mut dec = DecoderSession::new(model.clone());
        dec.decode(&stream[0]).unwrap();
        format!("{:#}", dec.decode(&au).unwrap_err())
    };
    let err = refused(with_prompt_offset(&stream[1], None));
    assert!(err.contains("carries a diffusion mask but is shown without diffusion"), "{err}");
    for au in [
        with_frame(&stream[1], |f| f.diffusion_mask = false),
        with_frame(&unmasked_stream[1], |f| f.diffusion_mask = true),
    ] {
        let err = refused(au);
        assert!(err.contains("frame 1 payload does not match its symbols"), "{err}");
    }
    let err = refused(with_frame(&stream[1], |f| f.substreams.push(vec![0; 4])));
    assert!(err.contains("2 sub-streams"), "{err}");
    // A stream without masks written as format version 3 decodes as before.
    let mut as_v3 = unmasked_stream.clone();
    let parsed = bitstream::parse_access_unit(&as_v3[0]).unwrap();
    let mut header = parsed.sequence_header.unwrap().to_payload();
    header[4] = 3;
    as_v3[0] = Vec::new();
    bitstream::write_unit(&mut as_v3[0], bitstream::UnitType::SequenceHeader, &header);
    as_v3[0].extend(parsed.frame.to_unit());
    let (v3, v4) = (decode_with(&model, &as_v3, 4, 2), decode_with(&model, &unmasked_stream, 4, 2));
    assert!(v3.iter().zip(&v4).all(|(a, b)| a.equal(b)));
    // An odd size: the encoder chooses on the 170×100 display, the decoder reads the 176×112
    // coded picture's 4×6 blocks.
    let odd = frames.narrow(0, 0, 3).narrow(2, 0, 100).narrow(3, 0, 170);
    let p = EncoderParams { diffusion_mask: true, ..params(170, 100, 4, 2) };
    let encoded = encode_frames(&model, &odd, &p);
    let decoded = decode_with(&model, &encoded.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), 4, 2);
    assert!(encoded.iter().any(|e| e.diffusion_mask.is_some()), "no odd-size frame has a mask");
    for (i, (e, d)) in encoded.iter().zip(&decoded).enumerate() {
        assert!(e.display.as_ref().unwrap().equal(d), "odd size, frame {i}");
        assert!(e.diffusion_mask.as_ref().is_none_or(|m| (m.rows(), m.cols()) == (4, 6)), "odd size, frame {i}");
    }
}
