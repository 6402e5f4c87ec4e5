//! `java.util.Random` (48-bit LCG, polar Gaussian), the generator of Kayenta's tie-breaking noise.

/// A `java.util.Random` with an explicit seed.
#[derive(Debug, Clone)]
pub struct JavaRandom {
    seed: i64,
    next_gaussian: Option<f64>,
}

const MULTIPLIER: i64 = 0x5_DEEC_E66D;
const MASK: i64 = (1 << 48) - 1;

impl JavaRandom {
    /// Same sequence as `new java.util.Random(seed)`.
    pub fn new(seed: i64) -> Self {
        JavaRandom {
            seed: (seed ^ MULTIPLIER) & MASK,
            next_gaussian: None,
        }
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.seed = (self.seed.wrapping_mul(MULTIPLIER).wrapping_add(0xB)) & MASK;
        (self.seed >> (48 - bits)) as i32
    }

    /// Uniform double in [0, 1).
    pub fn next_double(&mut self) -> f64 {
        let hi = i64::from(self.next(26));
        let lo = i64::from(self.next(27));
        ((hi << 27) + lo) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal draw (Marsaglia polar method, one value cached).
    pub fn next_gaussian(&mut self) -> f64 {
        if let Some(v) = self.next_gaussian.take() {
            return v;
        }
        loop {
            let v1 = 2.0 * self.next_double() - 1.0;
            let v2 = 2.0 * self.next_double() - 1.0;
            let s = v1 * v1 + v2 * v2;
            if s < 1.0 && s != 0.0 {
                let multiplier = (-2.0 * s.ln() / s).sqrt();
                self.next_gaussian = Some(v2 * multiplier);
                return v1 * multiplier;
            }
        }
    }

    /// A constant series plus Gaussian noise of sd `value·1e-5` (spec §4.1); one draw per value.
    pub fn add_noise(&mut self, series: &[f64]) -> Vec<f64> {
        series
            .iter()
            .map(|&v| v + (self.next_gaussian() * (v * 1e-5) + 0.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_java_util_random() {
        // new java.util.Random(42): nextInt() = -1170105035, nextDouble() after a fresh seed
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next(32), -1170105035);
        let mut r = JavaRandom::new(42);
        assert!((r.next_double() - 0.7275636800328681).abs() < 1e-16);
        let mut r = JavaRandom::new(42);
        assert!((r.next_gaussian() - 1.1419053154730547).abs() < 1e-15);
    }

    #[test]
    fn zero_constant_gets_no_noise() {
        let mut r = JavaRandom::new(1);
        assert_eq!(r.add_noise(&[0.0, 0.0]), vec![0.0, 0.0]);
        let noisy = r.add_noise(&[5.0; 4]);
        assert!(noisy.iter().all(|v| (v - 5.0).abs() < 1e-2 && *v != 5.0));
    }
}
