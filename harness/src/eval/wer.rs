//! Word error rate: word-level edit distance (substitutions, deletions, insertions) between
//! normalised reference and hypothesis, pooled over a corpus, with bootstrap intervals over
//! utterances.
use crate::stats::{quantile_sorted, Interval, Rng};

/// Edits turning a reference into a hypothesis, and the reference's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    pub reference_words: usize,
}

impl Counts {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    pub fn add(&mut self, o: &Counts) {
        self.substitutions += o.substitutions;
        self.deletions += o.deletions;
        self.insertions += o.insertions;
        self.reference_words += o.reference_words;
    }

    /// Errors per reference word; `None` for an empty reference.
    pub fn wer(&self) -> Option<f64> {
        (self.reference_words > 0).then(|| self.errors() as f64 / self.reference_words as f64)
    }
}

/// The fewest edits from `reference` to `hypothesis`, split by kind (on ties a substitution
/// is preferred, then a deletion, as jiwer counts).
pub fn align(reference: &[&str], hypothesis: &[&str]) -> Counts {
    let (n, m) = (reference.len(), hypothesis.len());
    // Cost, then (substitutions, deletions, insertions) of the best path to each cell.
    let mut prev: Vec<(usize, usize, usize, usize)> = (0..=m).map(|j| (j, 0, 0, j)).collect();
    for i in 1..=n {
        let mut cur = vec![(i, 0, i, 0); m + 1];
        for j in 1..=m {
            let same = reference[i - 1] == hypothesis[j - 1];
            let d = prev[j - 1];
            let diag = (d.0 + usize::from(!same), d.1 + usize::from(!same), d.2, d.3);
            let u = prev[j];
            let del = (u.0 + 1, u.1, u.2 + 1, u.3);
            let l = cur[j - 1];
            let ins = (l.0 + 1, l.1, l.2, l.3 + 1);
            cur[j] = if diag.0 <= del.0 && diag.0 <= ins.0 {
                diag
            } else if del.0 <= ins.0 {
                del
            } else {
                ins
            };
        }
        prev = cur;
    }
    let (_, s, d, ins) = prev[m];
    Counts { substitutions: s, deletions: d, insertions: ins, reference_words: n }
}

/// Counts of one normalised pair (words split on white space).
pub fn count(reference: &str, hypothesis: &str) -> Counts {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    align(&r, &h)
}

/// The pooled WER of the utterances `idx` of `each`.
fn pooled(each: &[Counts], idx: impl Iterator<Item = usize>) -> f64 {
    let (mut e, mut w) = (0usize, 0usize);
    for i in idx {
        e += each[i].errors();
        w += each[i].reference_words;
    }
    if w == 0 {
        0.0
    } else {
        e as f64 / w as f64
    }
}

/// A 95% percentile-bootstrap interval of the pooled WER, utterances resampled with
/// replacement (`rounds` resamples, seeded).
pub fn bootstrap_ci(each: &[Counts], rounds: usize, seed: u64) -> Interval {
    let n = each.len();
    let mut rng = Rng::new(seed);
    let mut w: Vec<f64> = (0..rounds).map(|_| pooled(each, (0..n).map(|_| rng.below(n)))).collect();
    w.sort_by(f64::total_cmp);
    Interval { low: quantile_sorted(&w, 0.025), high: quantile_sorted(&w, 0.975) }
}

/// A 95% paired-bootstrap interval of `current`'s pooled WER minus `base`'s, over the same
/// utterances (resampled together).
pub fn paired_difference_ci(base: &[Counts], current: &[Counts], rounds: usize, seed: u64) -> Interval {
    let n = base.len().min(current.len());
    let mut rng = Rng::new(seed);
    let mut d: Vec<f64> = (0..rounds)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            pooled(current, idx.iter().copied()) - pooled(base, idx.iter().copied())
        })
        .collect();
    d.sort_by(f64::total_cmp);
    Interval { low: quantile_sorted(&d, 0.025), high: quantile_sorted(&d, 0.975) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_counted_by_kind() {
        assert_eq!(count("a b c d", "a b c d"), Counts { reference_words: 4, ..Counts::default() });
        assert_eq!(count("a b c d", "a x c d"), Counts { substitutions: 1, reference_words: 4, ..Counts::default() });
        assert_eq!(count("a b c d", "a c d"), Counts { deletions: 1, reference_words: 4, ..Counts::default() });
        assert_eq!(count("a b c d", "a b y c d"), Counts { insertions: 1, reference_words: 4, ..Counts::default() });
        assert_eq!(count("", "x y"), Counts { insertions: 2, ..Counts::default() });
        assert_eq!(count("a b", ""), Counts { deletions: 2, reference_words: 2, ..Counts::default() });
        // The minimum is found: one substitution and one deletion, not four edits.
        assert_eq!(count("the cat sat down", "the bat sat").errors(), 2);
        assert_eq!(count("", "").wer(), None);
    }

    #[test]
    fn intervals_cover_the_pooled_rate_and_a_shift() {
        let each: Vec<Counts> = (0..40).map(|i| Counts { substitutions: i % 3, reference_words: 10, ..Counts::default() }).collect();
        let ci = bootstrap_ci(&each, 2000, 1);
        let wer = pooled(&each, 0..each.len());
        assert!(ci.low < wer && wer < ci.high, "{ci:?} around {wer}");
        let worse: Vec<Counts> = each.iter().map(|c| Counts { substitutions: c.substitutions + 2, ..*c }).collect();
        let d = paired_difference_ci(&each, &worse, 2000, 1);
        assert!(d.low > 0.15 && d.high < 0.25, "{d:?}");
        let same = paired_difference_ci(&each, &each, 500, 1);
        assert_eq!((same.low, same.high), (0.0, 0.0));
    }
}
