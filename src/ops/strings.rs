//! Ops on string tensors: StringNormalizer (opset 10), StringConcat, StringSplit and
//! RegexFullMatch (opset 20), and the string case of Equal.
//!
//! Strings are not a compute type (no `with_dtype!`): these kernels read `as_strings` and
//! build outputs with `Tensor::from_strings`. None is on a hot path, so broadcasting walks a
//! per-element index map instead of the row planner of the numeric kernels.

use super::util::{broadcast_all, broadcast_index, input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::op_err;
use crate::tensor::Tensor;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    if !matches!(ctx.node.domain.as_str(), "" | "ai.onnx") {
        return None;
    }
    Some(match op {
        "StringNormalizer" => StringNormalizer::build(ctx).map(boxed),
        "StringConcat" => Ok(boxed(StringConcat)),
        "StringSplit" => StringSplit::build(ctx).map(boxed),
        "RegexFullMatch" => RegexFullMatch::build(ctx).map(boxed),
        _ => return None,
    })
}

fn boxed(k: impl Kernel + 'static) -> Box<dyn Kernel> {
    Box::new(k)
}

/// `Equal` on two string tensors, with numpy broadcasting (the numeric Equal hands strings
/// here).
pub(crate) fn equal(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (xa, xb) = (a.as_strings()?, b.as_strings()?);
    let (shape, [ia, ib]) = broadcast_pairs([a.shape(), b.shape()])?;
    let out = ia.iter().zip(&ib).map(|(&i, &j)| xa[i] == xb[j]).collect();
    Tensor::from_vec(shape, out)
}

/// The broadcast output shape of `N` operands and, for each, the flat index it reads at
/// every output position.
fn broadcast_pairs<const N: usize>(shapes: [&[usize]; N]) -> Result<(Vec<usize>, [Vec<usize>; N])> {
    let out = broadcast_all(shapes)?;
    let index = shapes.map(|s| broadcast_index(&out, s));
    Ok((out, index))
}

/// What StringNormalizer does to letter case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CaseChange {
    Lower,
    Upper,
    None,
}

impl CaseChange {
    fn apply(self, s: &str) -> String {
        match self {
            CaseChange::Lower => s.to_lowercase(),
            CaseChange::Upper => s.to_uppercase(),
            CaseChange::None => s.to_string(),
        }
    }
}

/// Drops the elements of a `[C]` or `[1, C]` string tensor that are stop words, then changes
/// their case. When every element is dropped the output is one empty string (`[1]` or
/// `[1, 1]`).
///
/// Case mapping is Unicode's default (locale-independent) mapping, which is what "en_US"
/// (the default locale) gives; locale-specific rules (Turkish dotted i, ...) are not applied.
#[derive(Debug)]
struct StringNormalizer {
    case: CaseChange,
    case_sensitive: bool,
    /// Lowercased when the comparison ignores case.
    stopwords: Vec<String>,
}

impl StringNormalizer {
    fn build(ctx: &BuildCtx) -> Result<StringNormalizer> {
        let attrs = ctx.attrs();
        let case = match attrs.string_or("case_change_action", "NONE")? {
            "LOWER" => CaseChange::Lower,
            "UPPER" => CaseChange::Upper,
            "NONE" => CaseChange::None,
            other => {
                return Err(op_err!(
                    "case_change_action must be LOWER, UPPER or NONE, got '{other}'"
                ))
            }
        };
        let case_sensitive = attrs.int_or("is_case_sensitive", 0)? != 0;
        let stopwords = match attrs.get("stopwords") {
            None => Vec::new(),
            Some(crate::ir::Attr::Strings(v)) => v
                .iter()
                .map(|w| match case_sensitive {
                    true => w.clone(),
                    false => w.to_lowercase(),
                })
                .collect(),
            Some(_) => return Err(op_err!("attribute 'stopwords' should be a list of strings")),
        };
        Ok(StringNormalizer {
            case,
            case_sensitive,
            stopwords,
        })
    }

    fn is_stopword(&self, s: &str) -> bool {
        match self.case_sensitive {
            true => self.stopwords.iter().any(|w| w == s),
            false => {
                let lower = s.to_lowercase();
                self.stopwords.contains(&lower)
            }
        }
    }
}

impl Kernel for StringNormalizer {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let row = match x.shape() {
            [_] => false,
            [1, _] => true,
            s => return Err(op_err!("X must have shape [C] or [1, C], got {s:?}")),
        };
        let mut out: Vec<String> = x
            .as_strings()?
            .iter()
            .filter(|s| !self.is_stopword(s))
            .map(|s| self.case.apply(s))
            .collect();
        if out.is_empty() {
            out.push(String::new());
        }
        let shape = match row {
            true => vec![1, out.len()],
            false => vec![out.len()],
        };
        Ok(vec![Tensor::from_strings(shape, out)?])
    }
}

/// `Y = X + Y` as string concatenation, with numpy broadcasting.
#[derive(Debug)]
struct StringConcat;

impl Kernel for StringConcat {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (xa, xb) = (a.as_strings()?, b.as_strings()?);
        let (shape, [ia, ib]) = broadcast_pairs([a.shape(), b.shape()])?;
        let out = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| [xa[i].as_str(), &xb[j]].concat())
            .collect();
        Ok(vec![Tensor::from_strings(shape, out)?])
    }
}

/// Splits each string of X, like Python's `str.split(delimiter, maxsplit)`: by a delimiter
/// (consecutive delimiters give empty parts), or with no or an empty delimiter by runs of
/// whitespace (ignoring leading and trailing whitespace). Y is X's shape plus one axis as
/// long as the most parts, padded with empty strings; Z holds each element's part count.
#[derive(Debug)]
struct StringSplit {
    delimiter: Option<String>,
    /// At most this many splits per string (`maxsplit + 1` parts); unlimited when absent.
    maxsplit: Option<usize>,
}

impl StringSplit {
    fn build(ctx: &BuildCtx) -> Result<StringSplit> {
        let attrs = ctx.attrs();
        let delimiter = attrs
            .string("delimiter")?
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        let maxsplit = attrs
            .int("maxsplit")?
            .map(|m| {
                usize::try_from(m).map_err(|_| op_err!("maxsplit must not be negative, got {m}"))
            })
            .transpose()?;
        Ok(StringSplit {
            delimiter,
            maxsplit,
        })
    }

    fn split<'a>(&self, s: &'a str) -> Vec<&'a str> {
        let limit = self.maxsplit.map_or(usize::MAX, |m| m.saturating_add(1));
        match &self.delimiter {
            Some(d) => s.splitn(limit, d.as_str()).collect(),
            None => split_whitespace_n(s, limit),
        }
    }
}

/// Python's `s.split(None, limit - 1)`: at most `limit` parts separated by whitespace runs;
/// the last part keeps its inner and trailing whitespace.
fn split_whitespace_n(s: &str, limit: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if parts.len() + 1 == limit {
            parts.push(rest);
            break;
        }
        match rest.find(char::is_whitespace) {
            Some(end) => {
                parts.push(&rest[..end]);
                rest = rest[end..].trim_start();
            }
            None => {
                parts.push(rest);
                break;
            }
        }
    }
    parts
}

impl Kernel for StringSplit {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let parts: Vec<Vec<&str>> = x.as_strings()?.iter().map(|s| self.split(s)).collect();
        let width = parts.iter().map(Vec::len).max().unwrap_or(0);
        let mut y = Vec::with_capacity(parts.len() * width);
        for p in &parts {
            y.extend(p.iter().map(|s| s.to_string()));
            y.resize(y.len() + width - p.len(), String::new());
        }
        let counts: Vec<i64> = parts.iter().map(|p| p.len() as i64).collect();
        let mut y_shape = x.shape().to_vec();
        y_shape.push(width);
        Ok(vec![
            Tensor::from_strings(y_shape, y)?,
            Tensor::from_vec(x.shape().to_vec(), counts)?,
        ])
    }
}

/// Whether each string matches `pattern` as a whole. The pattern is RE2 syntax, which the
/// `regex` crate implements closely (both guarantee linear-time matching and lack
/// backreferences and lookaround).
#[derive(Debug)]
struct RegexFullMatch {
    regex: regex::Regex,
}

impl RegexFullMatch {
    fn build(ctx: &BuildCtx) -> Result<RegexFullMatch> {
        let pattern = ctx
            .attrs()
            .string("pattern")?
            .ok_or_else(|| op_err!("attribute 'pattern' is required"))?;
        // Anchored at both ends of the text (not of lines) for a full match.
        let regex = regex::Regex::new(&format!(r"\A(?:{pattern})\z"))
            .map_err(|e| op_err!("invalid pattern '{pattern}': {e}"))?;
        Ok(RegexFullMatch { regex })
    }
}

impl Kernel for RegexFullMatch {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let out = x
            .as_strings()?
            .iter()
            .map(|s| self.regex.is_match(s))
            .collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?])
    }
}
