//! Engine tests on tiny random networks (plumbing) and real clip frames.

use super::bitstream::{self, FrameType};
use super::session::{DecoderSession, EncoderParams, EncoderSession, MissingReference};
use crate::clips::{clip_dir, load_clip};
use crate::model::gvc::GvcModel;
use crate::model::ModelConfig;
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
        assert!(d.picture.equal(&e.reconstruction), "frame {i}");
    }
}
