//! Typefinder: a gvc bytestream starts with a sequence-header unit, `G V S <size> G V C v`.

use crate::codec::bitstream::{SEQUENCE_MAGIC, SYNC};
use gst::glib;

/// True when `data` (the first bytes of a file) start like a gvc stream.
pub fn looks_like_gvc(data: &[u8]) -> bool {
    if data.len() < 8 || data[..2] != SYNC || data[2] != b'S' {
        return false;
    }
    // Skip the LEB128 size (1–4 bytes) to reach the sequence-header magic.
    let Some(len_bytes) = data[3..7].iter().position(|b| b & 0x80 == 0).map(|p| p + 1) else {
        return false;
    };
    let start = 3 + len_bytes;
    data.get(start..start + 4) == Some(&SEQUENCE_MAGIC[..])
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    let caps = gst::Caps::builder("video/x-gvc").field("stream-format", "bytestream").build();
    let suggested = caps.clone();
    gst::TypeFind::register(Some(plugin), "gvc_typefind", gst::Rank::PRIMARY, Some("gvc"), Some(&caps), move |tf| {
        if tf.peek(0, 16).is_some_and(looks_like_gvc) {
            tf.suggest(gst::TypeFindProbability::Maximum, &suggested);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::bitstream::tests_support::header;

    #[test]
    fn recognises_a_stream_and_nothing_else() {
        let unit = header().to_unit();
        assert!(looks_like_gvc(&unit));
        assert!(!looks_like_gvc(&unit[..6]));
        assert!(!looks_like_gvc(b"\x00\x00\x01\xb3 mpeg video......"));
        let mut other = unit.clone();
        other[2] = b'I';
        assert!(!looks_like_gvc(&other));
    }
}
