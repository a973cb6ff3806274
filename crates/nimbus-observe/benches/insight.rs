//! The cost of alerting's judging per step: one new point for each of 1,000 components, each
//! judged by the six detectors (median/MAD over 120 points) and three trend forecasts that
//! `nimbus_observe::insight` keeps per component. `cargo bench -p nimbus-observe --bench insight`.
#![allow(missing_docs, reason = "criterion_group! defines an undocumented public function")]
use criterion::{Criterion, criterion_group, criterion_main};
use nimbus_observe::insight::detect::{Detector, DetectorConfig, Direction};
use nimbus_observe::insight::forecast::Holt;

struct Judges {
    detectors: Vec<Detector>,
    forecasts: Vec<Holt>,
}

fn judges() -> Judges {
    Judges {
        detectors: (0..6).map(|_| Detector::new(DetectorConfig::new(Direction::Up, 5.0))).collect(),
        forecasts: (0..3).map(|_| Holt::new(0.5, 0.3, 30)).collect(),
    }
}

fn step(components: &mut [Judges], t: u64) {
    for (i, c) in components.iter_mut().enumerate() {
        let x = 20.0 + ((t as usize * 31 + i * 17) % 13) as f64;
        for d in &mut c.detectors {
            std::hint::black_box(d.push(x));
        }
        for h in &mut c.forecasts {
            h.push(x);
            std::hint::black_box(h.reaches(1000.0, 0.9));
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut components: Vec<Judges> = (0..1_000).map(|_| judges()).collect();
    // Full windows: the steady-state cost.
    for t in 0..200 {
        step(&mut components, t);
    }
    let mut t = 200;
    c.bench_function("judge one step of 1000 components", |b| {
        b.iter(|| {
            t += 1;
            step(&mut components, t);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
