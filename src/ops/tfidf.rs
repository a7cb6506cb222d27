//! TfIdfVectorizer (opset 9) over integer or string tokens: counts the n-grams of a fixed
//! pool in each row, optionally with skips between tokens, and weights the counts. String
//! tokens are numbered by the pool's vocabulary first, so both count the same way.

use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};
use std::collections::HashMap;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    (op == "TfIdfVectorizer")
        .then(|| TfIdfVectorizer::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Raw counts.
    Tf,
    /// The n-gram's weight where it occurs at all.
    Idf,
    /// Counts times weights.
    TfIdf,
}

#[derive(Debug)]
struct TfIdfVectorizer {
    /// Pool n-gram -> (output column, weight).
    pool: HashMap<Vec<i64>, (usize, f32)>,
    min_n: usize,
    max_n: usize,
    max_skip: usize,
    mode: Mode,
    /// Output columns: one past the largest `ngram_indexes` entry.
    width: usize,
    /// With `pool_strings`: each pool string's token id (the pool's n-grams are of ids).
    vocabulary: Option<HashMap<String, i64>>,
}

impl TfIdfVectorizer {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let a = ctx.attrs();
        let count = |name: &str| -> Result<usize> {
            let v = a
                .int(name)?
                .ok_or_else(|| op_err!("missing attribute '{name}'"))?;
            usize::try_from(v).map_err(|_| op_err!("{name} must not be negative, got {v}"))
        };
        let (min_n, max_n, max_skip) = (
            count("min_gram_length")?,
            count("max_gram_length")?,
            count("max_skip_count")?,
        );
        ensure!(
            1 <= min_n && min_n <= max_n,
            "need 1 <= min_gram_length <= max_gram_length"
        );
        let mode = match a.string("mode")? {
            Some("TF") => Mode::Tf,
            Some("IDF") => Mode::Idf,
            Some("TFIDF") => Mode::TfIdf,
            m => return Err(op_err!("unknown mode {m:?}")),
        };
        let (tokens, vocabulary) = match (a.ints("pool_int64s")?, a.strings("pool_strings")?) {
            (Some(ids), None) => (ids.to_vec(), None),
            (None, Some(words)) => {
                let mut vocabulary = HashMap::new();
                let ids = words
                    .iter()
                    .map(|w| {
                        let next = vocabulary.len() as i64;
                        *vocabulary.entry(w.clone()).or_insert(next)
                    })
                    .collect();
                (ids, Some(vocabulary))
            }
            _ => {
                return Err(op_err!(
                    "exactly one of pool_int64s and pool_strings is required"
                ))
            }
        };
        let starts = a.ints("ngram_counts")?.unwrap_or(&[]);
        let indexes = a.ints("ngram_indexes")?.unwrap_or(&[]);
        let weights = a.floats("weights")?;
        // ngram_counts[k] is where the (k+1)-grams start in the pool.
        let mut grams = Vec::new();
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(tokens.len() as i64);
            let (start, end) = (usize::try_from(start), usize::try_from(end));
            let (Ok(start), Ok(end)) = (start, end) else {
                return Err(op_err!("negative ngram_counts"));
            };
            ensure!(
                start <= end && end <= tokens.len(),
                "ngram_counts do not fit the pool"
            );
            ensure!(
                (end - start) % (k + 1) == 0,
                "the {}-grams do not fill whole n-grams",
                k + 1
            );
            grams.extend(tokens[start..end].chunks(k + 1).map(<[i64]>::to_vec));
        }
        ensure!(
            indexes.len() == grams.len(),
            "ngram_indexes has {} entries for {} pool n-grams",
            indexes.len(),
            grams.len()
        );
        if let Some(w) = weights {
            ensure!(
                w.len() == grams.len(),
                "weights has {} entries for {} n-grams",
                w.len(),
                grams.len()
            );
        }
        let mut pool = HashMap::with_capacity(grams.len());
        for (i, gram) in grams.into_iter().enumerate() {
            let col = usize::try_from(indexes[i]).map_err(|_| op_err!("negative ngram index"))?;
            pool.insert(gram, (col, weights.map_or(1.0, |w| w[i])));
        }
        let width = pool.values().map(|&(c, _)| c + 1).max().unwrap_or(0);
        Ok(TfIdfVectorizer {
            pool,
            min_n,
            max_n,
            max_skip,
            mode,
            width,
            vocabulary,
        })
    }

    /// X's tokens as ids: strings by the vocabulary (-1, in no n-gram, for other words).
    fn token_ids(&self, x: &Tensor) -> Result<Vec<i64>> {
        match (&self.vocabulary, x.as_strings()) {
            (Some(vocabulary), Ok(words)) => Ok(words
                .iter()
                .map(|w| vocabulary.get(w).copied().unwrap_or(-1))
                .collect()),
            (None, Err(_)) => x.to_i64_vec(),
            (Some(_), Err(_)) => Err(op_err!("the pool is of strings, X is {}", x.dtype())),
            (None, Ok(_)) => Err(op_err!("the pool is of integers, X is of strings")),
        }
    }

    /// Fills one output row from one row of tokens.
    fn row(&self, tokens: &[i64], out: &mut [f32]) {
        let mut counts = vec![0u32; out.len()];
        let mut gram = Vec::with_capacity(self.max_n);
        for n in self.min_n..=self.max_n {
            // Unigrams have no gaps to skip: count them once.
            let skips = if n == 1 { 0 } else { self.max_skip };
            for skip in 0..=skips {
                let span = (n - 1) * (skip + 1);
                for start in 0..tokens.len().saturating_sub(span) {
                    gram.clear();
                    gram.extend((0..n).map(|j| tokens[start + j * (skip + 1)]));
                    if let Some(&(col, _)) = self.pool.get(&gram) {
                        counts[col] += 1;
                    }
                }
            }
        }
        for &(col, w) in self.pool.values() {
            let c = counts[col] as f32;
            out[col] = match self.mode {
                Mode::Tf => c,
                Mode::Idf => {
                    if c > 0.0 {
                        w
                    } else {
                        0.0
                    }
                }
                Mode::TfIdf => c * w,
            };
        }
    }
}

impl Kernel for TfIdfVectorizer {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let tokens = self.token_ids(x)?;
        let (rows, shape) = match x.shape() {
            [_] => (1, vec![self.width]),
            [n, _] => (*n, vec![*n, self.width]),
            s => return Err(op_err!("X must be [C] or [N, C], got {s:?}")),
        };
        let cols = x.shape().last().copied().unwrap_or(0);
        let mut out = vec![0f32; rows * self.width];
        if self.width > 0 {
            for (r, o) in out.chunks_mut(self.width).enumerate() {
                self.row(&tokens[r * cols..(r + 1) * cols], o);
            }
        }
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectorizer(min_n: usize, max_skip: usize, mode: Mode) -> TfIdfVectorizer {
        // Pool: unigram [3] -> column 0, bigram [5, 6] -> column 1 (weight 2).
        let pool = HashMap::from([(vec![3], (0, 1.0)), (vec![5, 6], (1, 2.0))]);
        TfIdfVectorizer {
            pool,
            min_n,
            max_n: 2,
            max_skip,
            mode,
            width: 2,
            vocabulary: None,
        }
    }

    #[test]
    fn counts_with_and_without_skips() {
        let x = Tensor::from_vec(vec![6], vec![3i64, 5, 6, 3, 5, 1]).unwrap();
        // Unigram 3 occurs twice, bigram "5 6" once.
        let y = vectorizer(1, 0, Mode::Tf)
            .run(&[Some(&x)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[2.0, 1.0]);
        // "5 _ 6" is a bigram only with a skip of one; TFIDF weighs its count by 2.
        let x = Tensor::from_vec(vec![1, 4], vec![5i64, 9, 6, 3]).unwrap();
        let y = vectorizer(2, 1, Mode::TfIdf)
            .run(&[Some(&x)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 2.0]);
    }

    #[test]
    fn string_pools_count_words() {
        use crate::ir::Attr;
        use crate::ops::movement::testing::run1;
        let words = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Pool: unigram "a" -> column 0; bigram "b c" -> column 1.
        let attrs = [
            ("min_gram_length", Attr::Int(1)),
            ("max_gram_length", Attr::Int(2)),
            ("max_skip_count", Attr::Int(0)),
            ("mode", Attr::String("TF".into())),
            ("pool_strings", Attr::Strings(words(&["a", "b", "c"]))),
            ("ngram_counts", Attr::Ints(vec![0, 1])),
            ("ngram_indexes", Attr::Ints(vec![0, 1])),
        ];
        let x = Tensor::from_strings(vec![2, 3], words(&["a", "b", "c", "b", "x", "a"])).unwrap();
        let y = run1("TfIdfVectorizer", 9, &attrs, &[&x]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.0, 1.0, 0.0]);
        // Integer tokens do not match a string pool.
        let ids = Tensor::from_vec(vec![2], vec![0i64, 1]).unwrap();
        assert!(run1("TfIdfVectorizer", 9, &attrs, &[&ids]).is_err());
    }
}
