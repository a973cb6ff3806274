//! Robust baselines and the anomaly detector: each new point of a signal is judged against the
//! median and MAD (median absolute deviation) of its recent normal history, or, with a season,
//! against the same point one season ago plus the median seasonal change. A point is abnormal
//! when it is far from the baseline in the signal's bad direction (a robust z-score), by more
//! than the smallest change that matters in absolute and relative terms; an anomaly opens after
//! `persistence` abnormal points in a row and closes after as many normal ones. While a point
//! is abnormal the history learns the baseline's expectation instead of it, so a long fault
//! never becomes the new normal.
use std::collections::VecDeque;

/// Which way a signal goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (latency, errors, queue depth, memory).
    Up,
    /// Lower is worse (throughput).
    Down,
}

/// How one signal is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Which way the signal goes wrong.
    pub direction: Direction,
    /// Points of history the detector needs before it judges.
    pub warmup: usize,
    /// Points of (normal) history the baseline is computed over.
    pub window: usize,
    /// The robust z-score from which a point is abnormal.
    pub threshold: f64,
    /// Abnormal points in a row that open an anomaly; normal points in a row that close it.
    pub persistence: usize,
    /// The smallest change from the baseline that matters, in the signal's unit.
    pub min_change: f64,
    /// The smallest change relative to the baseline that matters (0.5: 50 %).
    pub min_ratio: f64,
    /// The season's length in points (e.g. a day), if the signal has one.
    pub season: Option<usize>,
}

impl DetectorConfig {
    /// Judging `direction` with the defaults: 20 points of warm-up, a 120-point window, z ≥ 6
    /// for 3 points, changes of at least `min_change` and 50 %.
    pub fn new(direction: Direction, min_change: f64) -> Self {
        Self {
            direction,
            warmup: 20,
            window: 120,
            threshold: 6.0,
            persistence: 3,
            min_change,
            min_ratio: 0.5,
            season: None,
        }
    }
}

/// What the baseline expected of a point, and how far off the point was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The point.
    pub value: f64,
    /// What the baseline expected.
    pub expected: f64,
    /// `(value - expected) / spread`, positive in the bad direction.
    pub score: f64,
    /// Whether the point is abnormal.
    pub abnormal: bool,
}

/// A change of state of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// An anomaly opened; it began `points_ago` points before this one (the first abnormal point
    /// of the run), judged as `at`.
    Opened {
        /// How many points before the current one its first abnormal point was.
        points_ago: usize,
        /// The current point, judged.
        at: Judged,
    },
    /// The open anomaly ended.
    Closed,
}

/// One signal's detector (see the module doc).
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    /// Learned points, oldest first (abnormal points replaced by what was expected of them).
    history: VecDeque<f64>,
    /// Abnormal points in a row (while closed) or normal points in a row (while open).
    run: usize,
    open: bool,
    /// The highest score of the open anomaly, and the point judged with it.
    worst: Option<Judged>,
}

impl Detector {
    /// A detector that has seen nothing.
    pub fn new(config: DetectorConfig) -> Self {
        Self { config, history: VecDeque::new(), run: 0, open: false, worst: None }
    }

    /// Whether an anomaly is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The worst point of the open anomaly.
    pub fn worst(&self) -> Option<Judged> {
        self.worst.filter(|_| self.open)
    }

    fn capacity(&self) -> usize {
        self.config.window + self.config.season.unwrap_or(0)
    }

    /// Judges `value` against the baseline without learning it; `None` during the warm-up.
    pub fn judge(&self, value: f64) -> Option<Judged> {
        let c = &self.config;
        let (expected, spread) = match c.season {
            Some(p) if self.history.len() >= p + c.warmup => self.seasonal(p)?,
            None if self.history.len() >= c.warmup => {
                let recent: Vec<f64> = self.history.iter().rev().take(c.window).copied().collect();
                let m = median(&recent);
                (m, mad(&recent, m))
            }
            _ => return None,
        };
        let sign = if c.direction == Direction::Up { 1.0 } else { -1.0 };
        let change = sign * (value - expected);
        // A flat history has no spread: the smallest change that matters sets the scale.
        let floor = (c.min_change.max(c.min_ratio * expected.abs()) / c.threshold).max(f64::EPSILON);
        let score = change / (1.4826 * spread).max(floor);
        let abnormal = score >= c.threshold && change >= c.min_change && change >= c.min_ratio * expected.abs();
        Some(Judged { value, expected, score, abnormal })
    }

    /// The expectation one season ago plus the median seasonal change, and the spread of those
    /// changes.
    fn seasonal(&self, p: usize) -> Option<(f64, f64)> {
        let h = &self.history;
        let n = h.len();
        let diffs: Vec<f64> = (p.max(n.saturating_sub(self.config.window))..n).map(|i| h[i] - h[i - p]).collect();
        if diffs.is_empty() {
            return None;
        }
        let m = median(&diffs);
        // The point this one follows is one season before it: index n - p.
        Some((h[n - p] + m, mad(&diffs, m)))
    }

    /// Judges and learns `value`; says whether an anomaly opened or closed with it.
    pub fn push(&mut self, value: f64) -> Option<Transition> {
        if !value.is_finite() {
            return None;
        }
        let judged = self.judge(value);
        let abnormal = judged.is_some_and(|j| j.abnormal);
        let learned = match judged {
            Some(j) if abnormal => j.expected,
            _ => value,
        };
        self.history.push_back(learned);
        while self.history.len() > self.capacity() {
            self.history.pop_front();
        }
        let persistence = self.config.persistence.max(1);
        if self.open {
            if let Some(j) = judged.filter(|j| j.abnormal) {
                self.run = 0;
                if self.worst.is_none_or(|w| j.score > w.score) {
                    self.worst = Some(j);
                }
                return None;
            }
            self.run += 1;
            if self.run >= persistence {
                self.open = false;
                self.run = 0;
                self.worst = None;
                return Some(Transition::Closed);
            }
            return None;
        }
        match judged.filter(|j| j.abnormal) {
            Some(j) => {
                self.run += 1;
                if self.run >= persistence {
                    self.open = true;
                    let points_ago = self.run - 1;
                    self.run = 0;
                    self.worst = Some(j);
                    return Some(Transition::Opened { points_ago, at: j });
                }
                None
            }
            None => {
                self.run = 0;
                None
            }
        }
    }
}

/// The median of `xs` (0 for none).
pub(crate) fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if v.len() % 2 == 1 {
        m
    } else {
        let below = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + m) / 2.0
    }
}

/// The median absolute deviation of `xs` from `m`.
fn mad(xs: &[f64], m: f64) -> f64 {
    let dev: Vec<f64> = xs.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source (xorshift) mapped to roughly N(0, 1).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            // Sum of 4 uniforms, centred and scaled: close enough to a normal for these tests.
            (0..4)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                .mul_add(1.0, -2.0)
                * 1.732
        }
    }

    fn latency() -> DetectorConfig {
        DetectorConfig::new(Direction::Up, 5.0)
    }

    /// Feeds `series`; returns the indexes at which anomalies opened (their first abnormal
    /// point) and closed.
    fn run(config: DetectorConfig, series: &[f64]) -> (Vec<usize>, Vec<usize>) {
        let mut d = Detector::new(config);
        let (mut opened, mut closed) = (Vec::new(), Vec::new());
        for (i, &x) in series.iter().enumerate() {
            match d.push(x) {
                Some(Transition::Opened { points_ago, .. }) => opened.push(i - points_ago),
                Some(Transition::Closed) => closed.push(i),
                None => {}
            }
        }
        (opened, closed)
    }

    fn noisy(n: usize, level: f64, sigma: f64, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        (0..n).map(|_| level + sigma * noise.next()).collect()
    }

    #[test]
    fn noise_alone_never_opens_an_anomaly() {
        for seed in 1..20 {
            let (opened, _) = run(latency(), &noisy(2_000, 20.0, 2.0, seed));
            assert!(opened.is_empty(), "seed {seed}: {opened:?}");
        }
    }

    #[test]
    fn a_step_opens_at_the_step_and_closes_after_it_ends() {
        let mut s = noisy(400, 20.0, 2.0, 7);
        for x in &mut s[200..300] {
            *x += 200.0;
        }
        let (opened, closed) = run(latency(), &s);
        assert_eq!(opened, vec![200], "the anomaly begins at the step");
        assert_eq!(closed.len(), 1);
        assert!((300..310).contains(&closed[0]), "closed at {closed:?}");
    }

    #[test]
    fn a_step_too_small_to_matter_does_not_open() {
        // Far outside the noise (sigma 0.1) but only 3 ms: below the smallest change that matters.
        let mut s = noisy(300, 20.0, 0.1, 3);
        for x in &mut s[150..] {
            *x += 3.0;
        }
        assert!(run(latency(), &s).0.is_empty());
    }

    #[test]
    fn a_single_spike_does_not_open_but_a_burst_does() {
        let mut s = noisy(400, 20.0, 2.0, 11);
        s[150] = 500.0;
        assert!(run(latency(), &s).0.is_empty(), "one point is not an anomaly");
        for x in &mut s[250..256] {
            *x = 500.0;
        }
        assert_eq!(run(latency(), &s).0, vec![250]);
    }

    #[test]
    fn a_ramp_is_found_while_it_climbs() {
        let mut s = noisy(600, 20.0, 1.0, 5);
        for (i, x) in s[300..].iter_mut().enumerate() {
            *x += i as f64 * 0.5;
        }
        let (opened, _) = run(latency(), &s);
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert!((300..400).contains(&opened[0]), "found at {opened:?}");
    }

    #[test]
    fn a_drop_is_found_by_a_downward_detector_only() {
        let mut s = noisy(400, 100.0, 5.0, 9);
        for x in &mut s[200..] {
            *x = 10.0;
        }
        assert_eq!(run(DetectorConfig::new(Direction::Down, 5.0), &s).0, vec![200]);
        assert!(run(DetectorConfig::new(Direction::Up, 5.0), &s).0.is_empty());
    }

    #[test]
    fn a_long_fault_stays_one_anomaly() {
        let mut s = noisy(1_000, 20.0, 2.0, 13);
        for x in &mut s[200..900] {
            *x += 100.0;
        }
        let (opened, closed) = run(latency(), &s);
        assert_eq!(opened, vec![200], "the fault never becomes the baseline");
        assert_eq!(closed.len(), 1);
    }

    /// A daily-like pattern: busy for 10 points of every 60, quiet otherwise.
    fn seasonal(n: usize, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        (0..n).map(|i| if i % 60 < 10 { 200.0 } else { 20.0 } + 2.0 * noise.next()).collect()
    }

    #[test]
    fn a_seasonal_detector_follows_the_season_and_finds_what_breaks_it() {
        let season = DetectorConfig { season: Some(60), window: 180, ..latency() };
        assert!(
            !run(latency(), &seasonal(600, 17)).0.is_empty(),
            "without the season, every busy period looks like an anomaly"
        );
        assert!(run(season, &seasonal(600, 17)).0.is_empty(), "the season is expected");
        let mut s = seasonal(600, 17);
        for x in &mut s[435..445] {
            *x += 150.0; // a busy period in a quiet phase
        }
        assert_eq!(run(season, &s).0, vec![435]);
    }

    #[test]
    fn non_finite_points_are_skipped() {
        let mut d = Detector::new(latency());
        for _ in 0..50 {
            d.push(10.0);
        }
        assert_eq!(d.push(f64::NAN), None);
        assert_eq!(d.push(f64::INFINITY), None);
        assert!(!d.is_open());
    }
}
