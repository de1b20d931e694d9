//! Serving scenarios, as MLPerf's LoadGen names them, for the models people put behind a
//! service (embedding, transcription, codec decode):
//!
//! - **single-stream**: one query at a time, back to back; the latency percentiles.
//! - **offline**: one large batch; the throughput.
//! - **server**: queries arriving as a Poisson process at a target rate, served by one worker
//!   that batches whatever is waiting (up to a maximum batch); the highest rate whose p99
//!   latency (arrival to result) meets a bound, found by bisection between zero and the
//!   offline throughput.
//!
//! Every query is evaluated before its latency is taken. Arrival times come from a seeded
//! generator, so two runs see the same arrival pattern.
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use mlx_rs::{ops, random, Array};
use models::checkpoint::Checkpointed;
use serde::{Deserialize, Serialize};

use super::workload::{noise, Variant};
use crate::report::WorkloadInfo;
use crate::stats::{quantile_sorted, Rng};
use indicatif::ProgressBar;

/// What a service does with a batch of queries (indices into its pool of inputs, which it
/// cycles through).
pub trait Service {
    /// Serve queries `ids` as one batch, evaluated.
    fn serve(&mut self, ids: &[usize], v: Variant) -> Result<()>;
}

/// A registered scenario workload.
pub struct ScenarioSpec {
    /// `serve/<name>`.
    pub id: String,
    pub info: WorkloadInfo,
    /// The largest batch the service takes in one call (the offline batch and the server's
    /// batching limit).
    pub max_batch: usize,
    pub build: Box<dyn Fn() -> Result<Box<dyn Service>>>,
}

/// How the scenarios run (from `bench`'s flags).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Single-stream queries.
    pub queries: usize,
    /// Queries per server trial.
    pub server_queries: usize,
    /// Server bisection steps.
    pub server_steps: usize,
    /// The server's p99 bound in seconds; `None`: [`DEFAULT_BOUND_FACTOR`] times the
    /// single-stream p50.
    pub latency_bound_s: Option<f64>,
    /// Caps every scenario's batch (`None`: each scenario's own maximum).
    pub max_batch: Option<usize>,
    /// Offline timed runs (after one warm-up batch).
    pub offline_runs: usize,
}

/// The server's default p99 bound, in multiples of the single-stream p50.
pub const DEFAULT_BOUND_FACTOR: f64 = 5.0;

/// Percentiles of a set of latencies (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub n: usize,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    pub mean_s: f64,
    pub max_s: f64,
}

impl Latencies {
    /// Percentiles by linear interpolation between order statistics (numpy's default). Refuses
    /// an empty or non-finite set: a latency that is not a number is a measurement error.
    pub fn of(xs: &[f64]) -> Result<Self> {
        ensure!(!xs.is_empty(), "no latencies were measured");
        ensure!(xs.iter().all(|x| x.is_finite() && *x >= 0.0), "a latency is not a finite non-negative number");
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        Ok(Self {
            n: v.len(),
            p50_s: quantile_sorted(&v, 0.50),
            p90_s: quantile_sorted(&v, 0.90),
            p99_s: quantile_sorted(&v, 0.99),
            mean_s: v.iter().sum::<f64>() / v.len() as f64,
            max_s: v[v.len() - 1],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offline {
    /// Queries in the batch.
    pub batch: usize,
    pub runs: usize,
    /// Median time of one batch.
    pub median_s: f64,
    pub queries_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerTrial {
    /// The Poisson process' rate, queries per second.
    pub target_rate_per_s: f64,
    /// Queries over the span of their arrivals.
    pub offered_rate_per_s: f64,
    pub latencies: Latencies,
    /// Mean queries per served batch.
    pub mean_batch: f64,
    /// p99 within the bound.
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub latency_bound_s: f64,
    /// Where the bound came from ("--latency-bound" or "5x the single-stream p50").
    pub bound_from: String,
    pub max_batch: usize,
    pub queries_per_trial: usize,
    /// In the order they ran.
    pub trials: Vec<ServerTrial>,
    /// The highest target rate whose p99 met the bound; `None` when none did.
    pub max_rate_per_s: Option<f64>,
}

/// One scenario workload's results for one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub id: String,
    pub variant: String,
    pub info: WorkloadInfo,
    pub single_stream: Latencies,
    pub offline: Offline,
    pub server: Server,
}

/// Arrival times (seconds from the start) of `n` queries of a Poisson process at `rate`.
pub fn poisson_arrivals(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            // Uniform in (0, 1]: 53 random bits, never 0, so the logarithm is finite.
            let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
            t += -u.ln() / rate;
            t
        })
        .collect()
}

/// Time as the server loop sees it: the wall clock in a run, a virtual one in tests.
pub trait Clock {
    /// Seconds since the trial started.
    fn now(&self) -> f64;
    /// Wait until `t` seconds since the start.
    fn sleep_until(&mut self, t: f64);
}

/// The wall clock, from its creation.
pub struct Wall(Instant);

impl Wall {
    pub fn start() -> Self {
        Wall(Instant::now())
    }
}

impl Clock for Wall {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
    fn sleep_until(&mut self, t: f64) {
        let now = self.now();
        if t > now {
            std::thread::sleep(Duration::from_secs_f64(t - now));
        }
    }
}

/// One server trial: queries arrive at `arrivals`; a single worker serves, in arrival order,
/// every query that has arrived when it comes free, up to `max_batch` at once. Returns each
/// query's latency (its result's time less its arrival) and the batch sizes.
pub fn serve_arrivals(svc: &mut dyn Service, v: Variant, arrivals: &[f64], max_batch: usize, clock: &mut dyn Clock, mut tick: impl FnMut()) -> Result<(Vec<f64>, Vec<usize>)> {
    ensure!(max_batch >= 1, "a batch of at least one query");
    let mut lat = Vec::with_capacity(arrivals.len());
    let mut batches = Vec::new();
    let mut next = 0;
    while next < arrivals.len() {
        clock.sleep_until(arrivals[next]);
        let now = clock.now();
        let mut end = next + 1;
        while end < arrivals.len() && end - next < max_batch && arrivals[end] <= now {
            end += 1;
        }
        let ids: Vec<usize> = (next..end).collect();
        svc.serve(&ids, v)?;
        let done = clock.now();
        lat.extend(arrivals[next..end].iter().map(|a| done - a));
        batches.push(end - next);
        for _ in next..end {
            tick();
        }
        next = end;
    }
    Ok((lat, batches))
}

/// Run the three scenarios of `spec` for variant `v`.
pub fn measure(spec: &ScenarioSpec, v: Variant, s: &Settings, bar: &ProgressBar) -> Result<ScenarioResult> {
    bar.set_message(format!("{} {} (building)", spec.id, v.as_str()));
    let mut svc = (spec.build)()?;
    let max_batch = s.max_batch.unwrap_or(spec.max_batch).clamp(1, spec.max_batch);
    // Warm-up: one batch of every size the server may form, as a server warms its shapes
    // before taking traffic. A size first seen under load pays MLX's first-call work (kernel
    // compilation on a GPU, where EnCodec's first batches of 2 to 7 took seconds each).
    bar.set_message(format!("{} {} (warm-up)", spec.id, v.as_str()));
    svc.serve(&[0], v)?;
    for n in 1..=max_batch {
        svc.serve(&(0..n).collect::<Vec<_>>(), v)?;
    }

    bar.set_message(format!("{} {} single-stream", spec.id, v.as_str()));
    let mut single = Vec::with_capacity(s.queries);
    for i in 0..s.queries {
        let t = Instant::now();
        svc.serve(&[i], v)?;
        single.push(t.elapsed().as_secs_f64());
        bar.inc(1);
    }
    let single_stream = Latencies::of(&single)?;

    bar.set_message(format!("{} {} offline (batch {max_batch})", spec.id, v.as_str()));
    let mut times = Vec::with_capacity(s.offline_runs);
    for r in 0..s.offline_runs {
        let ids: Vec<usize> = (r * max_batch..(r + 1) * max_batch).collect();
        let t = Instant::now();
        svc.serve(&ids, v)?;
        times.push(t.elapsed().as_secs_f64());
        bar.inc(1);
    }
    let median_s = crate::stats::median(&times);
    ensure!(median_s.is_finite() && median_s > 0.0, "the offline batch took no measurable time");
    let offline = Offline { batch: max_batch, runs: times.len(), median_s, queries_per_s: max_batch as f64 / median_s };

    let (bound, bound_from) = match s.latency_bound_s {
        Some(b) => (b, "--latency-bound".to_string()),
        None => (DEFAULT_BOUND_FACTOR * single_stream.p50_s, format!("{DEFAULT_BOUND_FACTOR}x the single-stream p50")),
    };
    // Bisection over the rate, as a fraction of what the service can do at best.
    let capacity = offline.queries_per_s.max(1.0 / single_stream.p50_s);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut trials = Vec::new();
    for step in 0..s.server_steps {
        let f = if step == 0 { 0.5 } else { (lo + hi) / 2.0 };
        let rate = f * capacity;
        bar.set_message(format!("{} {} server at {rate:.2} queries/s", spec.id, v.as_str()));
        let arrivals = poisson_arrivals(s.server_queries, rate, 0x5EED + step as u64);
        let (lat, batches) = serve_arrivals(svc.as_mut(), v, &arrivals, max_batch, &mut Wall::start(), || bar.inc(1))?;
        let latencies = Latencies::of(&lat)?;
        let pass = latencies.p99_s <= bound;
        if pass {
            lo = f;
        } else {
            hi = f;
        }
        trials.push(ServerTrial {
            target_rate_per_s: rate,
            offered_rate_per_s: arrivals.len() as f64 / arrivals.last().copied().unwrap_or(f64::INFINITY),
            mean_batch: batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64,
            latencies,
            pass,
        });
    }
    let max_rate_per_s = trials.iter().filter(|t| t.pass).map(|t| t.target_rate_per_s).reduce(f64::max);
    Ok(ScenarioResult {
        id: spec.id.clone(),
        variant: v.as_str().into(),
        info: spec.info.clone(),
        single_stream,
        offline,
        server: Server {
            latency_bound_s: bound,
            bound_from,
            max_batch,
            queries_per_trial: s.server_queries,
            trials,
            max_rate_per_s,
        },
    })
}

/// Runs of the progress bar one scenario takes.
pub fn runs_per_scenario(s: &Settings) -> u64 {
    (s.queries + s.offline_runs + s.server_queries * s.server_steps) as u64
}

// ---- The services ----

/// Distinct inputs a service cycles through (so no two queries in a row are the same array).
const POOL: usize = 4;

/// CLAP's audio embedding of 10 s clips (features and encoder), released size, random weights.
struct ClapAudio {
    model: models::clap::Clap,
    fe: models::clap::features::FeatureExtractor,
    clips: Vec<Vec<f32>>,
}

impl Service for ClapAudio {
    fn serve(&mut self, ids: &[usize], v: Variant) -> Result<()> {
        use models::clap::features::{Crops, Truncation};
        let feats: Vec<Array> = ids
            .iter()
            .map(|&i| self.fe.extract(&self.clips[i % POOL], Truncation::RandTrunc, Crops::default()).map(|(f, _)| f.expand_dims(0)).map_err(anyhow::Error::from)?.map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let features = if feats.len() == 1 { feats[0].clone() } else { ops::concatenate(&feats, 0)? };
        self.model.embed_audio_batch(&features, &vec![false; ids.len()], v)?.eval()?;
        Ok(())
    }
}

/// CLAP's text embedding of one 16-token text per query.
struct ClapText {
    model: models::clap::Clap,
    ids: Array,
}

impl Service for ClapText {
    fn serve(&mut self, ids: &[usize], v: Variant) -> Result<()> {
        let rows: Vec<i32> = ids.iter().map(|&i| (i % POOL) as i32).collect();
        let tokens = self.ids.take_axis(Array::from_slice(&rows, &[rows.len() as i32]), 0)?;
        let mask = ops::ones::<i32>(tokens.shape())?;
        self.model.embed_text(&tokens, &mask, v)?.1.eval()?;
        Ok(())
    }
}

/// Whisper transcription of a 5 s utterance: log-mel of the padded 30 s window, encoder, and
/// a fixed number of greedy tokens (random weights would stop anywhere).
struct WhisperTranscribe {
    model: models::whisper::Whisper,
    mel: models::whisper::audio::LogMel,
    clips: Vec<Array>,
    tokens: usize,
    sot: Vec<i32>,
}

impl Service for WhisperTranscribe {
    fn serve(&mut self, ids: &[usize], v: Variant) -> Result<()> {
        use models::nn::attention::AttentionKernel;
        let mels: Vec<Array> = ids.iter().map(|&i| self.mel.compute(&self.clips[i % POOL]).and_then(|m| Ok(m.expand_dims(0)?))).collect::<std::result::Result<_, _>>()?;
        let mel = if mels.len() == 1 { mels[0].clone() } else { ops::concatenate(&mels, 0)? };
        let enc = self.model.encode(&mel, AttentionKernel::for_variant(v))?;
        let out = self.model.greedy(&enc, &self.sot, self.tokens, None, &models::whisper::DecodeOptions::for_variant(v))?;
        ensure!(out.len() == ids.len() && out.iter().all(|t| t.len() == self.tokens), "decoded the wrong number of tokens");
        Ok(())
    }
}

/// EnCodec 32 kHz decode of 1 s of codes (4 codebooks x 50 frames) per query.
struct CodecDecode {
    model: models::encodec::Encodec,
    codes: Vec<Array>,
}

impl Service for CodecDecode {
    fn serve(&mut self, ids: &[usize], v: Variant) -> Result<()> {
        let c: Vec<Array> = ids.iter().map(|&i| self.codes[i % POOL].clone()).collect();
        let codes = if c.len() == 1 { c[0].clone() } else { ops::concatenate(&c, 0)? };
        self.model.decode(&codes, v)?.eval()?;
        Ok(())
    }
}

pub fn specs() -> Vec<ScenarioSpec> {
    let clap_size = "laion/clap-htsat-unfused size, random weights".to_string();
    vec![
        ScenarioSpec {
            id: "serve/clap-embed-audio".into(),
            info: WorkloadInfo {
                size: clap_size.clone(),
                input: "one 10 s clip of noise at 48 kHz per query (4 distinct clips, cycled)".into(),
                timed: "feature extraction and the audio encoder and projection, batched over the queries served together, evaluated".into(),
                note: None,
            },
            max_batch: 8,
            build: Box::new(|| {
                use models::clap::{features::FeatureExtractor, Clap, ClapConfig, FeatureConfig};
                let fe = FeatureExtractor::new(FeatureConfig::htsat_unfused())?;
                let n = fe.config.max_samples() as i32;
                let clips = (0..POOL).map(|i| noise(&[n], 40 + i as u64, 0.1).map(|a| a.as_slice::<f32>().to_vec())).collect::<Result<_>>()?;
                Ok(Box::new(ClapAudio { model: Clap::random(ClapConfig::htsat_unfused(), 1)?, fe, clips }) as Box<dyn Service>)
            }),
        },
        ScenarioSpec {
            id: "serve/clap-embed-text".into(),
            info: WorkloadInfo {
                size: clap_size,
                input: "one text of 16 tokens (random ids) per query".into(),
                timed: "RoBERTa, pooler and projection over the queries served together, evaluated".into(),
                note: None,
            },
            max_batch: 32,
            build: Box::new(|| {
                use models::clap::{Clap, ClapConfig};
                let cfg = ClapConfig::htsat_unfused();
                let ids = random::randint::<_, i32>(3, cfg.text_config.vocab_size, &[POOL as i32, 16], &random::key(41)?)?;
                ids.eval()?;
                Ok(Box::new(ClapText { model: Clap::random(cfg, 1)?, ids }) as Box<dyn Service>)
            }),
        },
        ScenarioSpec {
            id: "serve/whisper-transcribe-tiny".into(),
            info: WorkloadInfo {
                size: "Whisper tiny (4+4 layers, 384 wide), random weights".into(),
                input: "one 5 s utterance of noise at 16 kHz per query, padded to the 30 s window".into(),
                timed: "log-mel, encoder and 32 greedy tokens (fixed length), batched over the queries served together".into(),
                note: None,
            },
            max_batch: 8,
            build: Box::new(|| {
                use models::whisper::{audio::LogMel, Whisper, WhisperConfig};
                let cfg = WhisperConfig::preset("tiny")?;
                let mel = LogMel::new(cfg.num_mel_bins)?;
                let window = 30 * 16_000;
                let clips = (0..POOL)
                    .map(|i| -> Result<Array> {
                        let speech = noise(&[5 * 16_000], 50 + i as u64, 0.1)?;
                        let a = ops::concatenate(&[speech, ops::zeros::<f32>(&[window - 5 * 16_000])?], 0)?;
                        a.eval()?;
                        Ok(a)
                    })
                    .collect::<Result<_>>()?;
                let sot = vec![cfg.decoder_start_token_id, 50259, 50359, 50363];
                Ok(Box::new(WhisperTranscribe { model: Whisper::random(cfg, 1)?, mel, clips, tokens: 32, sot }) as Box<dyn Service>)
            }),
        },
        ScenarioSpec {
            id: "serve/encodec-decode-1s".into(),
            info: WorkloadInfo {
                size: "EnCodec 32 kHz (MusicGen's codec), random weights".into(),
                input: "1 s of random codes per query (4 codebooks x 50 frames)".into(),
                timed: "RVQ decode and the SEANet decoder to 32000 samples, batched over the queries served together, evaluated".into(),
                note: None,
            },
            max_batch: 8,
            build: Box::new(|| {
                use models::encodec::{Encodec, EncodecConfig};
                let cfg = EncodecConfig::encodec_32khz();
                let codes = (0..POOL)
                    .map(|i| -> Result<Array> {
                        let c = random::randint::<_, i32>(0, cfg.codebook_size, &[1, 4, 50], &random::key(60 + i as u64)?)?;
                        c.eval()?;
                        Ok(c)
                    })
                    .collect::<Result<_>>()?;
                Ok(Box::new(CodecDecode { model: Encodec::random(cfg, 1)?, codes }) as Box<dyn Service>)
            }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let xs: Vec<f64> = (1..=101).map(f64::from).collect();
        let l = Latencies::of(&xs).unwrap();
        assert_eq!((l.n, l.p50_s, l.p90_s, l.p99_s, l.max_s), (101, 51.0, 91.0, 100.0, 101.0));
        assert!((l.mean_s - 51.0).abs() < 1e-12);
    }

    #[test]
    fn latencies_refuse_empty_and_non_finite_sets() {
        assert!(Latencies::of(&[]).is_err());
        assert!(Latencies::of(&[0.1, f64::NAN]).is_err());
        assert!(Latencies::of(&[0.1, f64::INFINITY]).is_err());
        assert!(Latencies::of(&[-0.1]).is_err());
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_are_reproducible() {
        let a = poisson_arrivals(20_000, 50.0, 7);
        assert_eq!(a, poisson_arrivals(20_000, 50.0, 7));
        assert!(a.windows(2).all(|w| w[1] > w[0]) && a[0] > 0.0);
        // Mean gap 1/50 s; over 20000 gaps its standard error is 1/50/sqrt(20000).
        let rate = a.len() as f64 / a[a.len() - 1];
        assert!((rate - 50.0).abs() < 50.0 * 4.0 / (20_000f64).sqrt(), "rate {rate}");
        // Exponential gaps: the coefficient of variation of the gaps is 1.
        let gaps: Vec<f64> = std::iter::once(a[0]).chain(a.windows(2).map(|w| w[1] - w[0])).collect();
        let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / m - 1.0).abs() < 0.05, "cv {}", sd / m);
    }

    use std::cell::Cell;
    use std::rc::Rc;

    /// A virtual clock that only the service moves.
    struct Virtual(Rc<Cell<f64>>);

    impl Clock for Virtual {
        fn now(&self) -> f64 {
            self.0.get()
        }
        fn sleep_until(&mut self, t: f64) {
            if t > self.0.get() {
                self.0.set(t);
            }
        }
    }

    /// A service that takes `base + per_query * n` virtual seconds per batch of n and records
    /// what it was given.
    struct Fixed {
        clock: Rc<Cell<f64>>,
        base: f64,
        per_query: f64,
        seen: Vec<Vec<usize>>,
    }

    impl Service for Fixed {
        fn serve(&mut self, ids: &[usize], _: Variant) -> Result<()> {
            self.clock.set(self.clock.get() + self.base + self.per_query * ids.len() as f64);
            self.seen.push(ids.to_vec());
            Ok(())
        }
    }

    #[test]
    fn the_server_serves_every_query_once_in_order_and_batches_what_waits() {
        let t = Rc::new(Cell::new(0.0));
        let mut svc = Fixed { clock: Rc::clone(&t), base: 0.02, per_query: 0.01, seen: vec![] };
        // One query at 0, nine more at 1 ms, and one long after.
        let mut arrivals = vec![0.0];
        arrivals.extend(std::iter::repeat_n(0.001, 9));
        arrivals.push(1.0);
        let (lat, batches) = serve_arrivals(&mut svc, Variant::Optimized, &arrivals, 4, &mut Virtual(Rc::clone(&t)), || {}).unwrap();
        assert_eq!(svc.seen.concat(), (0..11).collect::<Vec<_>>());
        // The first query is served alone; the nine behind it wait and go four, four and one;
        // the late one finds the worker idle.
        assert_eq!(batches, vec![1, 4, 4, 1, 1]);
        let expect = [0.03, 0.089, 0.089, 0.089, 0.089, 0.149, 0.149, 0.149, 0.149, 0.179, 0.03];
        for (i, (l, e)) in lat.iter().zip(expect).enumerate() {
            assert!((l - e).abs() < 1e-9, "query {i}: latency {l}, expected {e}");
        }
    }

    #[test]
    fn one_query_at_a_time_when_the_batch_is_one() {
        let t = Rc::new(Cell::new(0.0));
        let mut svc = Fixed { clock: Rc::clone(&t), base: 0.0, per_query: 0.1, seen: vec![] };
        let arrivals = [0.0, 0.0, 0.0];
        let (lat, batches) = serve_arrivals(&mut svc, Variant::Optimized, &arrivals, 1, &mut Virtual(Rc::clone(&t)), || {}).unwrap();
        assert_eq!(batches, vec![1, 1, 1]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(lat[0], 0.1) && close(lat[1], 0.2) && close(lat[2], 0.3), "{lat:?}");
        assert!(serve_arrivals(&mut svc, Variant::Optimized, &arrivals, 0, &mut Virtual(t), || {}).is_err());
    }
}
