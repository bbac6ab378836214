//! Rate–quality comparison: Bjøntegaard delta rate with piecewise cubic (PCHIP)
//! interpolation, as in the JVET common test conditions.

/// Shape-preserving cubic Hermite interpolant (Fritsch–Carlson slopes, SciPy's end rule).
struct Pchip {
    x: Vec<f64>,
    y: Vec<f64>,
    d: Vec<f64>,
}

impl Pchip {
    /// `x` strictly increasing, at least 2 points.
    fn new(x: Vec<f64>, y: Vec<f64>) -> Self {
        let n = x.len();
        let h: Vec<f64> = (0..n - 1).map(|k| x[k + 1] - x[k]).collect();
        let delta: Vec<f64> = (0..n - 1).map(|k| (y[k + 1] - y[k]) / h[k]).collect();
        let mut d = vec![0.0; n];
        if n == 2 {
            d = vec![delta[0]; 2];
        } else {
            for k in 1..n - 1 {
                if delta[k - 1] * delta[k] > 0.0 {
                    let (w1, w2) = (2.0 * h[k] + h[k - 1], h[k] + 2.0 * h[k - 1]);
                    d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k]);
                }
            }
            let end = |h0: f64, h1: f64, m0: f64, m1: f64| {
                let d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
                if d.signum() != m0.signum() {
                    0.0
                } else if m0.signum() != m1.signum() && d.abs() > 3.0 * m0.abs() {
                    3.0 * m0
                } else {
                    d
                }
            };
            d[0] = end(h[0], h[1], delta[0], delta[1]);
            d[n - 1] = end(h[n - 2], h[n - 3], delta[n - 2], delta[n - 3]);
        }
        Self { x, y, d }
    }

    fn eval(&self, t: f64) -> f64 {
        let k = self.x.windows(2).position(|w| t <= w[1]).unwrap_or(self.x.len() - 2);
        let h = self.x[k + 1] - self.x[k];
        let s = (t - self.x[k]) / h;
        let (h00, h10) = (2.0 * s.powi(3) - 3.0 * s * s + 1.0, s.powi(3) - 2.0 * s * s + s);
        let (h01, h11) = (-2.0 * s.powi(3) + 3.0 * s * s, s.powi(3) - s * s);
        h00 * self.y[k] + h10 * h * self.d[k] + h01 * self.y[k + 1] + h11 * h * self.d[k + 1]
    }

    /// ∫ over [a, b] (inside the data range) by composite Simpson on 2,000 intervals.
    fn integral(&self, a: f64, b: f64) -> f64 {
        let n = 2000;
        let step = (b - a) / n as f64;
        let sum: f64 = (0..=n)
            .map(|i| {
                let w = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                w * self.eval(a + i as f64 * step)
            })
            .sum();
        sum * step / 3.0
    }
}

/// log10(rate) as a function of the metric, sorted by metric, duplicates dropped.
fn log_rate_curve(points: &[(f64, f64)]) -> Option<Pchip> {
    let mut p: Vec<(f64, f64)> = points
        .iter()
        .filter(|(r, q)| *r > 0.0 && r.is_finite() && q.is_finite())
        .map(|&(r, q)| (q, r.log10()))
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-12);
    (p.len() >= 2).then(|| Pchip::new(p.iter().map(|v| v.0).collect(), p.iter().map(|v| v.1).collect()))
}

/// Bjøntegaard delta rate of `test` against `anchor`, in percent (negative: `test` needs
/// fewer bits for the same quality). Points are (bits per pixel, metric); the metric may
/// be higher- or lower-is-better. None when the curves share no quality range.
pub fn bd_rate(anchor: &[(f64, f64)], test: &[(f64, f64)]) -> Option<f64> {
    let (a, t) = (log_rate_curve(anchor)?, log_rate_curve(test)?);
    let lo = a.x[0].max(t.x[0]);
    let hi = a.x[a.x.len() - 1].min(t.x[t.x.len() - 1]);
    if hi - lo <= 1e-12 {
        return None;
    }
    let mean_diff = (t.integral(lo, hi) - a.integral(lo, hi)) / (hi - lo);
    Some((10f64.powf(mean_diff) - 1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(scale: f64) -> Vec<(f64, f64)> {
        // A typical rate–PSNR curve: PSNR grows with log rate, concave.
        [0.02, 0.05, 0.1, 0.2, 0.4].iter().map(|&r| (r * scale, 30.0 + 6.0 * (r / 0.02f64).ln().sqrt())).collect()
    }

    #[test]
    fn bd_rate_of_known_shifts() {
        let anchor = curve(1.0);
        assert!(bd_rate(&anchor, &anchor).unwrap().abs() < 1e-9);
        // Same quality at 10 % more / 20 % fewer bits everywhere.
        assert!((bd_rate(&anchor, &curve(1.1)).unwrap() - 10.0).abs() < 1e-6);
        assert!((bd_rate(&anchor, &curve(0.8)).unwrap() + 20.0).abs() < 1e-6);
        // Lower-is-better metrics work the same way.
        let flip = |c: Vec<(f64, f64)>| c.into_iter().map(|(r, q)| (r, 1.0 / q)).collect::<Vec<_>>();
        assert!((bd_rate(&flip(anchor.clone()), &flip(curve(1.1))).unwrap() - 10.0).abs() < 1e-6);
        // No common quality range.
        let far: Vec<(f64, f64)> = anchor.iter().map(|&(r, q)| (r, q + 100.0)).collect();
        assert!(bd_rate(&anchor, &far).is_none());
    }

    #[test]
    fn pchip_interpolates_and_keeps_monotonicity() {
        let p = Pchip::new(vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 1.0, 1.0, 5.0]);
        for (x, y) in [(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 5.0)] {
            assert!((p.eval(x) - y).abs() < 1e-12);
        }
        // Flat between equal values: no overshoot.
        assert!((p.eval(1.5) - 1.0).abs() < 1e-12);
        // ∫₀³ of a linear interpolant through a line is exact.
        let line = Pchip::new(vec![0.0, 1.0, 3.0], vec![1.0, 3.0, 7.0]);
        assert!((line.integral(0.0, 3.0) - 12.0).abs() < 1e-9);
    }
}
