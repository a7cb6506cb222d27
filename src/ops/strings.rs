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
use crate::tensor::{DType, Tensor};

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

/// Which inputs of an element-moving op hold the elements it moves (the others are
/// indices, shapes, repeats or conditions).
#[derive(Debug, Clone, Copy)]
enum DataInputs {
    First,
    /// Where: the condition, then the two choices.
    AllButFirst,
    /// Concat.
    All,
}

impl DataInputs {
    /// The data inputs of `op`, if it is one whose every output element is a copy of an
    /// element of its data inputs, chosen by the other inputs and attributes alone: on
    /// strings such an op runs as `ByIndex`.
    fn of(op: &str) -> Option<DataInputs> {
        Some(match op {
            "Concat" => DataInputs::All,
            "Where" => DataInputs::AllButFirst,
            "Compress" | "DepthToSpace" | "Expand" | "Gather" | "GatherElements" | "GatherND"
            | "ReverseSequence" | "Slice" | "SpaceToDepth" | "Split" | "Tile" | "Transpose" => {
                DataInputs::First
            }
            _ => return None,
        })
    }

    fn contains(self, i: usize) -> bool {
        match self {
            DataInputs::First => i == 0,
            DataInputs::AllButFirst => i > 0,
            DataInputs::All => true,
        }
    }
}

/// Lets the kernel of an element-moving op (see `DataInputs::of`) take string tensors too;
/// other kernels are returned as they are.
pub(crate) fn moving_strings(op: &str, kernel: Box<dyn Kernel>) -> Box<dyn Kernel> {
    match DataInputs::of(op) {
        Some(data) if !kernel.takes_values() => Box::new(ByIndex {
            inner: kernel,
            data,
        }),
        _ => kernel,
    }
}

/// Runs an element-moving kernel on strings through indices: each string data input
/// becomes an int64 tensor of positions in the list of all data inputs' elements, the
/// numeric kernel moves those, and each output maps its positions back to strings. The
/// other inputs pass through; without string data the kernel runs directly.
#[derive(Debug)]
struct ByIndex {
    inner: Box<dyn Kernel>,
    data: DataInputs,
}

impl Kernel for ByIndex {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let data = || {
            inputs
                .iter()
                .enumerate()
                .filter(|&(i, _)| self.data.contains(i))
                .filter_map(|(_, t)| *t)
        };
        if !data().any(|t| t.dtype() == DType::String) {
            return self.inner.run(inputs);
        }
        if let Some(t) = data().find(|t| t.dtype() != DType::String) {
            return Err(op_err!("cannot mix string and {} data", t.dtype()));
        }
        let mut positions = Positions::default();
        let moved = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Some(t) if self.data.contains(i) => positions.of(t).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<Option<Tensor>>>>()?;
        let inner_inputs: Vec<Option<&Tensor>> = inputs
            .iter()
            .zip(&moved)
            .map(|(t, p)| p.as_ref().or(*t))
            .collect();
        self.inner
            .run(&inner_inputs)?
            .iter()
            .map(|out| positions.strings(out))
            .collect()
    }
}

/// Stands string tensors in for int64 tensors of their elements' positions in one list, so
/// that numeric code that only moves elements can move strings: `of` before, `strings`
/// after.
#[derive(Default)]
pub(crate) struct Positions<'a> {
    pool: Vec<&'a String>,
}

impl<'a> Positions<'a> {
    /// The positions of the elements of string tensor `t` (appended to the list).
    pub(crate) fn of(&mut self, t: &'a Tensor) -> Result<Tensor> {
        let start = self.pool.len() as i64;
        self.pool.extend(t.as_strings()?);
        let at = (start..self.pool.len() as i64).collect();
        Tensor::from_vec(t.shape().to_vec(), at)
    }

    /// The strings at the positions `t` holds.
    pub(crate) fn strings(&self, t: &Tensor) -> Result<Tensor> {
        let strings = t
            .as_slice::<i64>()?
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.pool.get(i))
                    .map(|s| s.to_string())
                    .ok_or_else(|| op_err!("position {i} is not a string"))
            })
            .collect::<Result<_>>()?;
        Tensor::from_strings(t.shape().to_vec(), strings)
    }
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
        let stopwords = attrs
            .strings("stopwords")?
            .unwrap_or_default()
            .iter()
            .map(|w| match case_sensitive {
                true => w.clone(),
                false => w.to_lowercase(),
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Attrs, Node};
    use crate::ops::movement::testing::{i64s, run1, run_node, t, vals};
    use crate::tensor::{DType, Tensor};

    fn s(shape: &[usize], v: &[&str]) -> Tensor {
        Tensor::from_strings(shape.to_vec(), v.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn strs(x: &Tensor) -> Vec<&str> {
        x.as_strings().unwrap().iter().map(String::as_str).collect()
    }

    fn text(v: &str) -> Attr {
        Attr::String(v.into())
    }

    fn normalize(attrs: &[(&str, Attr)], x: &Tensor) -> Tensor {
        run1("StringNormalizer", 10, attrs, &[x]).unwrap()
    }

    #[test]
    fn string_normalizer_drops_stopwords_then_changes_case() {
        // The ONNX doc example: case-sensitive stop words, then upper case.
        let x = s(&[4], &["monday", "tuesday", "wednesday", "thursday"]);
        let stop = || Attr::Strings(vec!["monday".into()]);
        let y = normalize(
            &[
                ("case_change_action", text("UPPER")),
                ("is_case_sensitive", Attr::Int(1)),
                ("stopwords", stop()),
            ],
            &x,
        );
        assert_eq!(y.shape(), &[3]);
        assert_eq!(strs(&y), ["TUESDAY", "WEDNESDAY", "THURSDAY"]);
        // Case-insensitive: "MONDAY" is a stop word too; [1, C] stays two-dimensional.
        let x = s(&[1, 3], &["Monday", "MONDAY", "Friday"]);
        let y = normalize(
            &[("case_change_action", text("LOWER")), ("stopwords", stop())],
            &x,
        );
        assert_eq!(y.shape(), &[1, 1]);
        assert_eq!(strs(&y), ["friday"]);
        // Unicode case mapping: ß upper-cases to SS.
        let y = normalize(
            &[("case_change_action", text("UPPER"))],
            &s(&[1], &["straße"]),
        );
        assert_eq!(strs(&y), ["STRASSE"]);
    }

    #[test]
    fn string_normalizer_keeps_one_empty_string_when_all_are_dropped() {
        let stop = Attr::Strings(vec!["a".into(), "b".into()]);
        let y = normalize(&[("stopwords", stop.clone())], &s(&[2], &["a", "b"]));
        assert_eq!((y.shape(), strs(&y)), (&[1][..], vec![""]));
        let y = normalize(&[("stopwords", stop)], &s(&[1, 2], &["a", "b"]));
        assert_eq!((y.shape(), strs(&y)), (&[1, 1][..], vec![""]));
    }

    #[test]
    fn string_normalizer_rejects_other_shapes_and_actions() {
        assert!(run1("StringNormalizer", 10, &[], &[&s(&[2, 2], &["a"; 4])]).is_err());
        assert!(run1("StringNormalizer", 10, &[], &[&t(&[1], vec![1f32])]).is_err());
        let bad = [("case_change_action", text("TITLE"))];
        assert!(run1("StringNormalizer", 10, &bad, &[&s(&[1], &["a"])]).is_err());
    }

    #[test]
    fn string_concat_broadcasts() {
        let a = s(&[2, 1], &["a", "b"]);
        let b = s(&[3], &["1", "", "é"]);
        let y = run1("StringConcat", 20, &[], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(strs(&y), ["a1", "a", "aé", "b1", "b", "bé"]);
        assert!(run1("StringConcat", 20, &[], &[&a, &s(&[3, 1], &["x"; 3])]).is_err());
    }

    fn split(attrs: &[(&str, Attr)], x: &Tensor) -> (Tensor, Vec<i64>) {
        let node = Node {
            name: "split".into(),
            op_type: "StringSplit".into(),
            domain: String::new(),
            inputs: vec![Some(0)],
            outputs: vec![Some(1), Some(2)],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        let mut out = run_node(&node, 20, &[Some(x)]).unwrap();
        let z = vals::<i64>(&out[1]);
        (out.remove(0), z)
    }

    #[test]
    fn string_split_follows_python_str_split() {
        // Python: " a,,b,".split(",") == [" a", "", "b", ""]; "x".split(",") == ["x"].
        let x = s(&[2], &[" a,,b,", "x"]);
        let (y, z) = split(&[("delimiter", text(","))], &x);
        assert_eq!(y.shape(), &[2, 4]);
        assert_eq!(strs(&y), [" a", "", "b", "", "x", "", "", ""]);
        assert_eq!(z, [4, 1]);
        // "a-b-c-d".split("-", 2) == ["a", "b", "c-d"].
        let (y, z) = split(
            &[("delimiter", text("-")), ("maxsplit", Attr::Int(2))],
            &s(&[1], &["a-b-c-d"]),
        );
        assert_eq!((strs(&y), z), (vec!["a", "b", "c-d"], vec![3]));
    }

    #[test]
    fn string_split_without_delimiter_splits_whitespace_runs() {
        // "  a b  c ".split(None, 1) == ["a", "b  c "]; "   ".split() == [].
        let x = s(&[2], &["  a b  c ", "   "]);
        let (y, z) = split(&[("maxsplit", Attr::Int(1))], &x);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(strs(&y), ["a", "b  c ", "", ""]);
        assert_eq!(z, [2, 0]);
        // An empty delimiter means the same; an empty input gives a trailing axis of 0.
        let (y, z) = split(&[("delimiter", text(""))], &s(&[0, 2], &[]));
        assert_eq!((y.shape(), z.len()), (&[0, 2, 0][..], 0));
        let bad = [("maxsplit", Attr::Int(-1))];
        assert!(run1("StringSplit", 20, &bad, &[&x]).is_err());
    }

    #[test]
    fn regex_full_match_anchors_the_whole_string() {
        let x = s(&[3], &["foo@bar.com", "foo@bar.com.au", "xfoo@bar.com"]);
        let pattern = [("pattern", text(r"\w+@\w+\.com"))];
        let y = run1("RegexFullMatch", 20, &pattern, &[&x]).unwrap();
        assert_eq!(
            (y.dtype(), vals::<bool>(&y)),
            (DType::Bool, vec![true, false, true])
        );
        // Alternation binds inside the anchors: "ab" matches neither "a" nor "b" wholly.
        let y = run1(
            "RegexFullMatch",
            20,
            &[("pattern", text("a|b"))],
            &[&s(&[2], &["ab", "b"])],
        );
        assert_eq!(vals::<bool>(&y.unwrap()), [false, true]);
        assert!(run1(
            "RegexFullMatch",
            20,
            &[("pattern", text("(unclosed"))],
            &[&x]
        )
        .is_err());
        assert!(run1("RegexFullMatch", 20, &[], &[&x]).is_err());
    }

    #[test]
    fn equal_compares_strings_with_broadcasting() {
        let a = s(&[2, 2], &["a", "b", "c", "d"]);
        let y = run1("Equal", 19, &[], &[&a, &s(&[2], &["a", "d"])]).unwrap();
        assert_eq!(vals::<bool>(&y), [true, false, false, true]);
        assert!(run1("Equal", 19, &[], &[&a, &t(&[1], vec![1f32])]).is_err());
    }

    #[test]
    fn element_moving_ops_move_strings() {
        let x = s(&[2, 3], &["a", "b", "c", "d", "e", "f"]);
        let run = |op: &str, attrs: &[(&str, Attr)], inputs: &[&Tensor]| {
            run1(op, 18, attrs, inputs).unwrap_or_else(|e| panic!("{op}: {e}"))
        };
        let y = run("Transpose", &[], &[&x]);
        assert_eq!(
            (y.shape(), strs(&y)),
            (&[3, 2][..], vec!["a", "d", "b", "e", "c", "f"])
        );
        let y = run(
            "Concat",
            &[("axis", Attr::Int(0))],
            &[&x, &s(&[1, 3], &["g", "h", "i"])],
        );
        assert_eq!(strs(&y), ["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        let y = run("Gather", &[("axis", Attr::Int(1))], &[&x, &i64s(&[2, 0])]);
        assert_eq!(strs(&y), ["c", "a", "f", "d"]);
        let y = run("Slice", &[], &[&x, &i64s(&[1]), &i64s(&[3]), &i64s(&[1])]);
        assert_eq!(strs(&y), ["b", "c", "e", "f"]);
        let y = run("Expand", &[], &[&s(&[1], &["z"]), &i64s(&[2, 2])]);
        assert_eq!((y.shape(), strs(&y)), (&[2, 2][..], vec!["z"; 4]));
        let y = run("Tile", &[], &[&s(&[2], &["p", "q"]), &i64s(&[2])]);
        assert_eq!(strs(&y), ["p", "q", "p", "q"]);
        let cond = t(&[3], vec![true, false, true]);
        let y = run(
            "Where",
            &[],
            &[&cond, &s(&[3], &["1", "2", "3"]), &s(&[1], &["-"])],
        );
        assert_eq!(strs(&y), ["1", "-", "3"]);
        let parts = crate::ops::movement::testing::run_node(
            &Node {
                name: "split".into(),
                op_type: "Split".into(),
                domain: String::new(),
                inputs: vec![Some(0)],
                outputs: vec![Some(1), Some(2), Some(3)],
                attrs: Attrs([("axis".to_string(), Attr::Int(1))].into()),
            },
            18,
            &[Some(&x)],
        )
        .unwrap();
        assert_eq!(
            parts.iter().map(strs).collect::<Vec<_>>(),
            [["a", "d"], ["b", "e"], ["c", "f"]]
        );
    }

    #[test]
    fn shape_ops_pass_strings_through() {
        let x = s(&[2, 1, 2], &["a", "b", "c", "d"]);
        let run = |op: &str, attrs: &[(&str, Attr)], inputs: &[&Tensor]| {
            run1(op, 18, attrs, inputs).unwrap_or_else(|e| panic!("{op}: {e}"))
        };
        for y in [
            run("Identity", &[], &[&x]),
            run("Reshape", &[], &[&x, &i64s(&[4])]),
            run("Squeeze", &[], &[&x, &i64s(&[1])]),
            run("Unsqueeze", &[], &[&x, &i64s(&[0])]),
            run("Flatten", &[], &[&x]),
        ] {
            assert_eq!(strs(&y), ["a", "b", "c", "d"]);
        }
        assert_eq!(vals::<i64>(&run("Shape", &[], &[&x])), [2, 1, 2]);
        assert_eq!(vals::<i64>(&run("Size", &[], &[&x])), [4]);
    }

    #[test]
    fn string_and_numeric_data_do_not_mix() {
        let cond = t(&[1], vec![true]);
        let y = run1(
            "Where",
            18,
            &[],
            &[&cond, &s(&[1], &["a"]), &t(&[1], vec![0i64])],
        );
        assert!(y.is_err());
        // Arithmetic refuses strings with an error, not a panic.
        let x = s(&[1], &["a"]);
        assert!(run1("Add", 18, &[], &[&x, &x]).is_err());
        assert!(run1("Pad", 18, &[], &[&x, &i64s(&[1, 1])]).is_err());
    }

    #[test]
    fn numeric_inputs_are_errors() {
        let x = t(&[1], vec![1f32]);
        assert!(run1("StringConcat", 20, &[], &[&x, &x]).is_err());
        assert!(run1("RegexFullMatch", 20, &[("pattern", text("a"))], &[&x]).is_err());
    }
}
