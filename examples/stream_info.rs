//! Where the bytes of a gvc stream go: per unit, the framing (sync, type, size, CRC), the
//! frame header (frame number, QP, noise seed, sub-stream sizes) and the rANS-coded symbols
//! (whose first 4 bytes are the coder's final state), then totals per unit type with their
//! share in bits per pixel of the stream's display size.
//!
//! `cargo run --release --example stream_info -- out.gvc [--frames]`

use anyhow::{bail, Context, Result};
use gstgvc::codec::bitstream::{split_units, FramePacket, FrameType, SequenceHeader, UnitType};
use std::collections::BTreeMap;
use std::io::Write;

/// Bytes of the rANS coder's final state at the start of every sub-stream.
const RANS_STATE_BYTES: usize = 4;

#[derive(Default)]
struct Totals {
    units: usize,
    bytes: usize,
    framing: usize,
    header: usize,
    state: usize,
    symbols: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else { bail!("usage: stream_info <file.gvc> [--frames]") };
    let per_frame = args.iter().any(|a| a == "--frames");
    // Written, not println!'d: a closed pipe (`| head`) ends the program with an error, not a panic.
    let mut out = std::io::stdout().lock();
    let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let units = split_units(&data).with_context(|| format!("parsing {path}"))?;
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut pixels_per_frame = None;
    if per_frame {
        writeln!(out, "| unit | frame | qp | bytes | framing | frame header | rANS state | symbols |")?;
        writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    }
    for unit in &units {
        let framing = unit.size - unit.payload.len();
        let (name, header, state, symbols) = match unit.unit_type {
            UnitType::SequenceHeader => {
                let sh = SequenceHeader::from_payload(unit.payload)?;
                pixels_per_frame = Some(sh.display_width as usize * sh.display_height as usize);
                ("S", unit.payload.len(), 0, 0)
            }
            UnitType::IntraFrame | UnitType::InterFrame => {
                let (name, ft) = if unit.unit_type == UnitType::IntraFrame {
                    ("I", FrameType::Intra)
                } else {
                    ("P", FrameType::Inter)
                };
                let frame = FramePacket::from_payload(ft, unit.payload)?;
                let coded: usize = frame.substreams.iter().map(Vec::len).sum();
                let state = frame.substreams.iter().map(|s| s.len().min(RANS_STATE_BYTES)).sum::<usize>();
                if per_frame {
                    writeln!(
                        out,
                        "| {name} | {} | {} | {} | {framing} | {} | {state} | {} |",
                        frame.frame_number,
                        frame.qp_index,
                        unit.size,
                        unit.payload.len() - coded,
                        coded - state
                    )?;
                }
                (name, unit.payload.len() - coded, state, coded - state)
            }
        };
        let t = totals.entry(name).or_default();
        t.units += 1;
        t.bytes += unit.size;
        t.framing += framing;
        t.header += header;
        t.state += state;
        t.symbols += symbols;
    }
    let frames: usize = totals.iter().filter(|(k, _)| **k != "S").map(|(_, t)| t.units).sum();
    let pixels = pixels_per_frame.context("no sequence header")? * frames.max(1);
    let bpp = |bytes: usize| bytes as f64 * 8.0 / pixels as f64;
    writeln!(out, "{path}: {} bytes, {frames} frames, {:.4} bpp", data.len(), bpp(data.len()))?;
    writeln!(out, "| unit | count | bytes | per unit | framing | header | rANS state | symbols | bpp of the stream: all | not symbols |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (name, t) in &totals {
        writeln!(
            out,
            "| {name} | {} | {} | {:.1} | {} | {} | {} | {} | {:.4} | {:.4} |",
            t.units,
            t.bytes,
            t.bytes as f64 / t.units as f64,
            t.framing,
            t.header,
            t.state,
            t.symbols,
            bpp(t.bytes),
            bpp(t.bytes - t.symbols)
        )?;
    }
    Ok(())
}
