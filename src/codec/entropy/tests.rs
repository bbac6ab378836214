use super::*;

/// Small deterministic PRNG so the property tests are reproducible without extra crates.
pub(crate) struct XorShift(u64);
impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[test]
fn gaussian_round_trip_random_streams() {
    let gc = GaussianConditional::new();
    for seed in 0..40 {
        let mut rng = XorShift::new(seed);
        let n = (rng.next_u64() % 5000) as usize;
        let indices: Vec<u8> = (0..n).map(|_| (rng.next_u64() % NUM_SCALES as u64) as u8).collect();
        let symbols: Vec<i32> = indices
            .iter()
            .map(|&i| {
                // Mostly in-distribution values, some far outliers to exercise the escape.
                if rng.next_u64().is_multiple_of(50) {
                    (rng.next_u64() % 200_000) as i32 - 100_000
                } else {
                    (rng.gaussian() * scale_of_index(i as usize)).round() as i32
                }
            })
            .collect();
        let mut enc = RansEncoder::new();
        gc.encode(&mut enc, &symbols, &indices).unwrap();
        let bytes = enc.finish();
        let mut dec = RansDecoder::new(&bytes).unwrap();
        let decoded = gc.decode(&mut dec, &indices).unwrap();
        assert_eq!(decoded, symbols, "seed {seed}");
        assert!(dec.is_exhausted(), "seed {seed}: decoder did not consume the stream exactly");
    }
}

#[test]
fn custom_tables_and_bypass_bits_round_trip() {
    let mut rng = XorShift::new(7);
    for _ in 0..50 {
        let n = 2 + (rng.next_u64() % 300) as usize;
        let pmf: Vec<f64> = (0..n).map(|_| rng.uniform().powi(4)).collect();
        let offset = (rng.next_u64() % 100) as i32 - 50;
        let table = CdfTable::from_pmf(&pmf, offset).unwrap();
        assert!(table.frequencies().iter().all(|&f| f > 0));
        assert_eq!(table.frequencies().iter().sum::<u32>(), 1 << PRECISION);
        let values: Vec<i32> = (0..1000).map(|_| offset - 5 + (rng.next_u64() % (n as u64 + 10)) as i32).collect();
        let bits: Vec<(u32, u32)> = (0..1000)
            .map(|_| {
                let nb = (rng.next_u64() % 17) as u32;
                (if nb == 0 { 0 } else { (rng.next_u64() as u32) & ((1 << nb) - 1) }, nb)
            })
            .collect();
        let mut enc = RansEncoder::new();
        for (v, &(b, nb)) in values.iter().zip(&bits) {
            table.encode(&mut enc, *v);
            enc.put_bits(b, nb);
        }
        let bytes = enc.finish();
        let mut dec = RansDecoder::new(&bytes).unwrap();
        for (v, &(b, nb)) in values.iter().zip(&bits) {
            assert_eq!(table.decode(&mut dec).unwrap(), *v);
            assert_eq!(dec.get_bits(nb), b);
        }
        assert!(dec.is_exhausted());
    }
}

#[test]
fn coded_size_is_within_one_percent_of_ideal() {
    let gc = GaussianConditional::new();
    let mut rng = XorShift::new(99);
    let n = 200_000;
    let indices: Vec<u8> = (0..n).map(|_| (8 + rng.next_u64() % 40) as u8).collect();
    let symbols: Vec<i32> =
        indices.iter().map(|&i| (rng.gaussian() * scale_of_index(i as usize)).round() as i32).collect();
    let ideal = gc.cost_bits(&symbols, &indices);
    let mut enc = RansEncoder::new();
    gc.encode(&mut enc, &symbols, &indices).unwrap();
    let actual = enc.finish().len() as f64 * 8.0;
    assert!(actual <= ideal * 1.01 + 64.0, "coded {actual} bits, ideal {ideal}");
    assert!(actual >= ideal * 0.99, "coded {actual} bits below the ideal {ideal}: cost model wrong");
}

#[test]
fn damaged_streams_never_panic() {
    let gc = GaussianConditional::new();
    let mut rng = XorShift::new(3);
    let indices: Vec<u8> = (0..2000).map(|_| (rng.next_u64() % NUM_SCALES as u64) as u8).collect();
    for _ in 0..200 {
        let len = (rng.next_u64() % 64) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if let Ok(mut dec) = RansDecoder::new(&garbage) {
            let _ = gc.decode(&mut dec, &indices);
        }
    }
    assert!(RansDecoder::new(&[1, 2]).is_err());
    // States below the bound are never written; from 0 the decoder would never finish.
    for start in [[0u8, 0, 0, 0], [0, 0, 0, 1], [0, 0x7f, 0xff, 0xff]] {
        let stream: Vec<u8> = start.iter().chain(&[0, 0, 9]).copied().collect();
        assert!(RansDecoder::new(&stream).is_err(), "{start:?}");
    }
    assert!(RansDecoder::new(&[0, 0x80, 0, 0]).is_ok());
}

#[test]
fn zero_frequencies_are_refused() {
    assert!(CdfTable::from_frequencies(&[0, 1 << PRECISION], 0).is_err());
    assert!(CdfTable::from_frequencies(&[5, 6], 0).is_err());
}
