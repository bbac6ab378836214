//! The unit framing and every payload parser on arbitrary bytes: never a panic, a hang or
//! an unbounded allocation.
#![no_main]

use gstgvc::codec::bitstream::{
    find_sync, parse_access_unit, parse_unit, split_units, FramePacket, FrameType, SequenceHeader, UnitParse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = split_units(data);
    let _ = parse_access_unit(data);
    // Resynchronisation as gvcparse does it: walk every sync position.
    let mut pos = 0;
    while let Some(at) = find_sync(data, pos) {
        if let UnitParse::Complete(unit) = parse_unit(&data[at..]) {
            assert!(unit.size <= data.len() - at);
        }
        pos = at + 1;
    }
    // Payload parsers directly (random bytes rarely pass the CRC).
    if let Ok(h) = SequenceHeader::from_payload(data) {
        assert_eq!(SequenceHeader::from_payload(&h.to_payload()).unwrap(), h);
    }
    for ft in [FrameType::Intra, FrameType::Inter] {
        if let Ok(p) = FramePacket::from_payload(ft, data) {
            let _ = p.to_payload();
        }
    }
});
