//! The packet decoder on damaged frames: a valid sequence header for a tiny random model,
//! then up to four frame units whose payloads (and I/P types) come from the fuzzer, framed
//! with correct CRCs so the payload parser, the rANS decoder and the networks all see them.
#![no_main]

use gstgvc::codec::bitstream::{write_unit, SequenceHeader, UnitType};
use gstgvc::codec::session::DecoderSession;
use gstgvc::model::gvc::GvcModel;
use gstgvc::model::ModelConfig;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn model() -> Arc<GvcModel> {
    static MODEL: OnceLock<Arc<GvcModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            tch::set_num_threads(1);
            Arc::new(GvcModel::random(ModelConfig::tiny_for_tests(), 1, tch::Device::Cpu))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let model = model();
    let header = SequenceHeader {
        model_id: model.id,
        coded_width: 32,
        coded_height: 32,
        display_width: 30,
        display_height: 32,
        fps_n: 25,
        fps_d: 1,
        intra_period: 4,
        diffusion_steps: 2,
        independent_steps: 1,
        num_rate_points: model.config.codec.num_qps as u8,
    };
    let mut session = DecoderSession::new(model);
    for (i, chunk) in data.split(|&b| b == 0xA5).take(4).enumerate() {
        let mut au = if i == 0 { header.to_unit() } else { Vec::new() };
        let (kind, payload) = chunk.split_first().map_or((0, chunk), |(k, p)| (*k, p));
        let unit_type = if kind & 1 == 0 { UnitType::IntraFrame } else { UnitType::InterFrame };
        write_unit(&mut au, unit_type, payload);
        if let Ok(frame) = session.decode(&au) {
            assert_eq!(frame.picture.size()[2..], [32, 30]);
        }
    }
});
