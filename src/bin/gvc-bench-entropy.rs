#![doc = include_str!("../../docs/usage/gvc-bench-entropy.md")]

use gstgvc::cli::args_or_usage;
use gstgvc::codec::entropy::{scale_of_index, GaussianConditional, RansDecoder, RansEncoder, NUM_SCALES};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: usize = args_or_usage(include_str!("../../docs/usage/gvc-bench-entropy.md"))
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2_000_000);
    let gc = GaussianConditional::new();
    // Deterministic xorshift + Box–Muller samples at random table scales.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut indices = Vec::with_capacity(n);
    let mut symbols = Vec::with_capacity(n);
    for _ in 0..n {
        let i = (next() * NUM_SCALES as f64) as u8;
        let g = (-2.0 * next().ln()).sqrt() * (2.0 * std::f64::consts::PI * next()).cos();
        indices.push(i);
        symbols.push((g * scale_of_index(i as usize)).round() as i32);
    }
    let ideal = gc.cost_bits(&symbols, &indices);
    let t0 = Instant::now();
    let mut enc = RansEncoder::new();
    gc.encode(&mut enc, &symbols, &indices)?;
    let bytes = enc.finish();
    let enc_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut dec = RansDecoder::new(&bytes)?;
    let decoded = gc.decode(&mut dec, &indices)?;
    let dec_s = t0.elapsed().as_secs_f64();
    anyhow::ensure!(decoded == symbols, "round trip failed");
    let actual = bytes.len() as f64 * 8.0;
    println!("{n} symbols over {NUM_SCALES} scales");
    println!("ideal {ideal:.0} bits, coded {actual:.0} bits: overhead {:+.3} %", 100.0 * (actual / ideal - 1.0));
    println!("encode {:.1} M symbols/s, decode {:.1} M symbols/s", n as f64 / enc_s / 1e6, n as f64 / dec_s / 1e6);
    Ok(())
}
