//! Trend forecasts for predictive alerts: Holt's linear (double exponential) smoothing of a
//! signal, and how many points it takes at the current trend to reach a limit. A forecast is only
//! trusted when the recent points really follow a line (the R² of a least-squares fit over the
//! window), so noise around a level never predicts a breach.
use std::collections::VecDeque;

/// Holt's linear smoothing of one signal, with the recent points kept for the fit check.
#[derive(Debug, Clone)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    level: f64,
    trend: f64,
    seen: usize,
    recent: VecDeque<f64>,
    window: usize,
}

/// When a signal reaches a limit at its current trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    /// Points from now until the forecast crosses the limit.
    pub points: f64,
    /// The smoothed level now.
    pub level: f64,
    /// The smoothed change per point.
    pub trend: f64,
}

impl Holt {
    /// Smoothing `alpha` for the level and `beta` for the trend, checked over `window` points.
    pub fn new(alpha: f64, beta: f64, window: usize) -> Self {
        Self { alpha, beta, level: 0.0, trend: 0.0, seen: 0, recent: VecDeque::new(), window: window.max(3) }
    }

    /// Learns the next point.
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        match self.seen {
            0 => self.level = x,
            1 => {
                self.trend = x - self.level;
                self.level = x;
            }
            _ => {
                let last = self.level;
                self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + self.trend);
                self.trend = self.beta * (self.level - last) + (1.0 - self.beta) * self.trend;
            }
        }
        self.seen += 1;
        self.recent.push_back(x);
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
    }

    /// The forecast `h` points ahead.
    pub fn forecast(&self, h: f64) -> f64 {
        self.level + h * self.trend
    }

    /// When the signal reaches `limit` going up, if a full window of points follows a rising line
    /// (R² ≥ `min_r2`) and the forecast gets there; already at or over it: zero points.
    pub fn reaches(&self, limit: f64, min_r2: f64) -> Option<Reach> {
        if self.recent.len() < self.window {
            return None;
        }
        let (slope, r2) = fit(&self.recent);
        if slope <= 0.0 || self.trend <= 0.0 || r2 < min_r2 {
            return None;
        }
        let points = ((limit - self.level) / self.trend).max(0.0);
        Some(Reach { points, level: self.level, trend: self.trend })
    }
}

/// The slope and R² of the least-squares line through `ys` at x = 0, 1, 2...
fn fit(ys: &VecDeque<f64>) -> (f64, f64) {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let (dx, dy) = (i as f64 - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return (0.0, 0.0);
    }
    (sxy / sxx, sxy * sxy / (sxx * syy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_climb_is_forecast_to_reach_its_limit_when_it_will() {
        let mut h = Holt::new(0.5, 0.3, 30);
        for i in 0..60 {
            // 100 MB + 2 MB per point, with a little wobble.
            h.push(100.0 + 2.0 * i as f64 + if i % 2 == 0 { 0.5 } else { -0.5 });
        }
        let reach = h.reaches(300.0, 0.8).expect("a climb reaches its limit");
        // At point 59 the signal is at ~218: 41 more points of 2 MB.
        assert!((35.0..47.0).contains(&reach.points), "{reach:?}");
        assert!((1.8..2.2).contains(&reach.trend), "{reach:?}");
    }

    #[test]
    fn noise_around_a_level_forecasts_nothing() {
        let mut h = Holt::new(0.5, 0.3, 30);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            h.push(100.0 + (x % 1000) as f64 / 50.0);
            assert_eq!(h.reaches(200.0, 0.8), None, "a level with noise is not a trend");
        }
    }

    #[test]
    fn a_falling_signal_or_a_short_history_forecasts_nothing() {
        let mut h = Holt::new(0.5, 0.3, 30);
        for i in 0..10 {
            h.push(i as f64);
        }
        assert_eq!(h.reaches(100.0, 0.8), None, "less than a window");
        let mut h = Holt::new(0.5, 0.3, 30);
        for i in 0..60 {
            h.push(500.0 - i as f64);
        }
        assert_eq!(h.reaches(1000.0, 0.8), None);
    }

    #[test]
    fn a_signal_over_its_limit_reaches_it_now() {
        let mut h = Holt::new(0.5, 0.3, 10);
        for i in 0..20 {
            h.push(10.0 * i as f64);
        }
        assert_eq!(h.reaches(50.0, 0.8).map(|r| r.points), Some(0.0));
        assert!((h.forecast(1.0) - 200.0).abs() < 5.0);
    }
}
