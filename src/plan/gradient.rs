//! Expands `ai.onnx.preview.training.Gradient` nodes into ordinary nodes before planning.
//!
//! `Gradient(xs, zs, y)` outputs `dY/dX` for each `X` in `xs`, where `Y` (summed over its
//! elements) is computed from `xs` and `zs` by nodes of the same graph. The pass finds those
//! forward nodes and differentiates them in reverse order (reverse-mode autodiff), emitting
//! nodes that read the forward values. Gradients of broadcast operands are summed back to
//! the operand's shape by `infer.SumToShapeOf` (see `ops::gradient`).
//!
//! When the Gradient node's inputs are the tensors `xs` and `zs` name (as in every exported
//! model), the backward nodes read the forward values the graph computes anyway; an input
//! that is another tensor gets the forward nodes that depend on it copied to read it.

use crate::error::{Error, Result};
use crate::ir::{Attr, Attrs, Graph, Node, ValueId, ValueType};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

const DOMAIN: &str = "ai.onnx.preview.training";

/// Replaces every Gradient node of `g` by the nodes that compute its outputs.
pub fn expand_gradients(g: &mut Graph) -> Result<()> {
    let is_gradient = |n: &Node| n.op_type == "Gradient" && n.domain == DOMAIN;
    let (gradients, forward): (Vec<Node>, Vec<Node>) = std::mem::take(&mut g.nodes)
        .into_iter()
        .partition(is_gradient);
    g.nodes = forward;
    for node in gradients {
        expand(g, &node).map_err(|e| e.at_node(&node.name, "Gradient"))?;
    }
    Ok(())
}

fn expand(g: &mut Graph, node: &Node) -> Result<()> {
    let xs = node.attrs.strings("xs")?.unwrap_or_default();
    let zs = node.attrs.strings("zs")?.unwrap_or_default();
    let y = node
        .attrs
        .string("y")?
        .ok_or_else(|| Error::Op("attribute 'y' is required".into()))?;
    let by_name: HashMap<&str, ValueId> = g
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let id = |name: &str| {
        by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::Op(format!("'{name}' is not a value of the graph")))
    };
    let named: Vec<&String> = xs.iter().chain(zs).collect();
    if node.inputs.len() != named.len() {
        return Err(Error::Op(format!(
            "{} inputs, but xs and zs name {}",
            node.inputs.len(),
            named.len()
        )));
    }
    // Where an input is not the tensor it stands for, the forward nodes are evaluated again
    // on the input: `fed` maps each named tensor to the value fed for it.
    let mut fed: HashMap<ValueId, ValueId> = HashMap::new();
    for (i, (input, name)) in node.inputs.iter().zip(&named).enumerate() {
        let input = input.ok_or_else(|| Error::Op(format!("input {i} ('{name}') is omitted")))?;
        fed.insert(id(name)?, input);
    }
    let xs: Vec<ValueId> = xs.iter().map(|x| id(x)).collect::<Result<_>>()?;
    let y = id(y)?;
    let leaves: HashSet<ValueId> = fed.keys().copied().collect();
    let forward = forward_nodes(g, y, &leaves);

    let mut e = Emitter {
        g,
        prefix: node.name.clone(),
        nodes: Vec::new(),
    };
    let forward = e.on_fed_values(&forward, &mut fed);
    let at = |v: ValueId| fed.get(&v).copied().unwrap_or(v);
    let (xs, y): (Vec<ValueId>, ValueId) = (xs.into_iter().map(at).collect(), at(y));
    let mut grads: HashMap<ValueId, ValueId> = HashMap::new();
    let seed = e.filled_like(1.0, y);
    grads.insert(y, seed);
    for n in forward.iter().rev() {
        let Some(dz) = n
            .outputs
            .first()
            .copied()
            .flatten()
            .and_then(|z| grads.get(&z))
        else {
            continue;
        };
        let dz = *dz;
        let inputs: Vec<ValueId> = n.inputs.iter().flatten().copied().collect();
        let contributions = e
            .differentiate(n, &inputs, dz)
            .map_err(|err| Error::Op(format!("differentiating node '{}': {err}", n.name)))?;
        for (v, d) in inputs.into_iter().zip(contributions) {
            let total = match grads.get(&v) {
                Some(&old) => e.node("Add", "", &[old, d], Attrs::default()),
                None => d,
            };
            grads.insert(v, total);
        }
    }
    for (k, &x) in xs.iter().enumerate() {
        let Some(Some(out)) = node.outputs.get(k).copied() else {
            continue;
        };
        // Y does not depend on X: the gradient is zero.
        let d = match grads.get(&x) {
            Some(&d) => d,
            None => e.filled_like(0.0, x),
        };
        e.nodes.push(Node {
            name: format!("{}/d{k}", e.prefix),
            op_type: "Identity".into(),
            domain: String::new(),
            inputs: vec![Some(d)],
            outputs: vec![Some(out)],
            attrs: Attrs::default(),
        });
    }
    let new = e.nodes;
    g.nodes.extend(new);
    Ok(())
}

/// The nodes that compute `y` from `leaves` (and from constants and inputs), producers first.
fn forward_nodes(g: &Graph, y: ValueId, leaves: &HashSet<ValueId>) -> Vec<usize> {
    let producer: HashMap<ValueId, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().flatten().map(move |&v| (v, i)))
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, whether its inputs were pushed).
    let mut stack: Vec<(usize, bool)> = producer
        .get(&y)
        .filter(|_| !leaves.contains(&y))
        .map(|&i| vec![(i, false)])
        .unwrap_or_default();
    while let Some((i, expanded)) = stack.pop() {
        if expanded {
            order.push(i);
            continue;
        }
        if !seen.insert(i) {
            continue;
        }
        stack.push((i, true));
        for v in g.nodes[i].inputs.iter().flatten() {
            if let Some(&p) = producer.get(v).filter(|_| !leaves.contains(v)) {
                if !seen.contains(&p) {
                    stack.push((p, false));
                }
            }
        }
    }
    order
}

/// Adds the backward nodes (and their values) to the graph.
struct Emitter<'g> {
    g: &'g mut Graph,
    /// The Gradient node's name, prefixing the names of what it emits.
    prefix: String,
    nodes: Vec<Node>,
}

impl Emitter<'_> {
    /// The nodes `forward` (indices into the graph, producers first) as they compute on the
    /// values `fed` maps the tensors they read to: a node reading a fed value (directly or
    /// through another node) is copied to read it, writing new values that `fed` then maps
    /// its outputs to; the others are kept.
    fn on_fed_values(
        &mut self,
        forward: &[usize],
        fed: &mut HashMap<ValueId, ValueId>,
    ) -> Vec<Node> {
        let mut nodes = Vec::with_capacity(forward.len());
        for &i in forward {
            let mut n = self.g.nodes[i].clone();
            let reads_fed = n
                .inputs
                .iter()
                .flatten()
                .any(|v| fed.get(v).is_some_and(|f| f != v));
            if reads_fed {
                for v in n.inputs.iter_mut().flatten() {
                    *v = fed.get(v).copied().unwrap_or(*v);
                }
                for v in n.outputs.iter_mut().flatten() {
                    let new = self.value();
                    fed.insert(*v, new);
                    *v = new;
                }
                n.name = format!("{}/{}", self.prefix, n.name);
                self.nodes.push(n.clone());
            }
            nodes.push(n);
        }
        nodes
    }

    fn value(&mut self) -> ValueId {
        let name = format!("{}/v{}", self.prefix, self.g.values.len());
        self.g.add_value(name, ValueType::default())
    }

    /// A one-output node; returns its output.
    fn node(&mut self, op: &str, domain: &str, inputs: &[ValueId], attrs: Attrs) -> ValueId {
        let out = self.value();
        self.nodes.push(Node {
            name: format!("{}/n{}", self.prefix, self.nodes.len()),
            op_type: op.into(),
            domain: domain.into(),
            inputs: inputs.iter().map(|&v| Some(v)).collect(),
            outputs: vec![Some(out)],
            attrs,
        });
        out
    }

    fn op(&mut self, op: &str, inputs: &[ValueId]) -> ValueId {
        self.node(op, "", inputs, Attrs::default())
    }

    /// The scalar `v` in the element type of `like`.
    fn scalar_like(&mut self, v: f32, like: ValueId) -> ValueId {
        let c = self.value();
        self.g.initializers.insert(c, Tensor::scalar(v));
        self.op("CastLike", &[c, like])
    }

    /// A tensor of `v` with the shape and element type of `like`.
    fn filled_like(&mut self, v: f32, like: ValueId) -> ValueId {
        let c = self.scalar_like(v, like);
        let shape = self.op("Shape", &[like]);
        self.op("Expand", &[c, shape])
    }

    /// `grad` summed over the dims along which `like` was broadcast to it.
    fn sum_to(&mut self, grad: ValueId, like: ValueId) -> ValueId {
        self.node("SumToShapeOf", "infer", &[grad, like], Attrs::default())
    }

    fn einsum(&mut self, equation: &str, a: ValueId, b: ValueId) -> ValueId {
        let attrs = Attrs([("equation".to_string(), Attr::String(equation.into()))].into());
        self.node("Einsum", "", &[a, b], attrs)
    }

    /// The gradient contribution to each input of `n`, given `dz`, the gradient of its
    /// (first) output.
    fn differentiate(&mut self, n: &Node, inputs: &[ValueId], dz: ValueId) -> Result<Vec<ValueId>> {
        let z = n.outputs.first().copied().flatten();
        let (a, b) = (inputs.first().copied(), inputs.get(1).copied());
        let arity = match n.op_type.as_str() {
            "Add" | "Sub" | "Mul" | "Div" | "MatMul" => 2,
            _ => 1,
        };
        let (Some(a), Some(z)) = (a, z) else {
            return Err(Error::Op("a node without input or output".into()));
        };
        if inputs.len() != arity || n.outputs.len() != 1 || !n.domain.is_empty() {
            return Err(Error::Op(format!(
                "cannot differentiate {} with {} inputs and {} outputs",
                n.op_type,
                inputs.len(),
                n.outputs.len()
            )));
        }
        let b = b.unwrap_or(a);
        Ok(match n.op_type.as_str() {
            "Add" => vec![self.sum_to(dz, a), self.sum_to(dz, b)],
            "Sub" => {
                let neg = self.op("Neg", &[dz]);
                vec![self.sum_to(dz, a), self.sum_to(neg, b)]
            }
            "Mul" => {
                let (da, db) = (self.op("Mul", &[dz, b]), self.op("Mul", &[dz, a]));
                vec![self.sum_to(da, a), self.sum_to(db, b)]
            }
            // d(a/b)/db = -a/b² = -z/b.
            "Div" => {
                let da = self.op("Div", &[dz, b]);
                let z_b = self.op("Div", &[z, b]);
                let dz_z_b = self.op("Mul", &[dz, z_b]);
                let db = self.op("Neg", &[dz_z_b]);
                vec![self.sum_to(da, a), self.sum_to(db, b)]
            }
            // Z = A·B over the last two dims: dA = dZ·Bᵀ, dB = Aᵀ·dZ, batch dims summed back
            // where they were broadcast. (1-D operands are not supported.)
            "MatMul" => {
                let da = self.einsum("...ij,...kj->...ik", dz, b);
                let db = self.einsum("...ik,...ij->...kj", a, dz);
                vec![self.sum_to(da, a), self.sum_to(db, b)]
            }
            "Identity" => vec![dz],
            "Neg" => vec![self.op("Neg", &[dz])],
            "Exp" => vec![self.op("Mul", &[dz, z])],
            "Log" => vec![self.op("Div", &[dz, a])],
            // d√a = 1 / (2√a).
            "Sqrt" => {
                let two_z = self.op("Add", &[z, z]);
                vec![self.op("Div", &[dz, two_z])]
            }
            // d tanh = 1 - tanh².
            "Tanh" => {
                let one = self.scalar_like(1.0, z);
                let zz = self.op("Mul", &[z, z]);
                let d = self.op("Sub", &[one, zz]);
                vec![self.op("Mul", &[dz, d])]
            }
            // dσ = σ(1 - σ).
            "Sigmoid" => {
                let one = self.scalar_like(1.0, z);
                let one_z = self.op("Sub", &[one, z]);
                let d = self.op("Mul", &[z, one_z]);
                vec![self.op("Mul", &[dz, d])]
            }
            "Relu" => {
                let zero = self.scalar_like(0.0, a);
                let positive = self.op("Greater", &[a, zero]);
                let mask = self.op("CastLike", &[positive, dz]);
                vec![self.op("Mul", &[dz, mask])]
            }
            "Sin" => {
                let cos = self.op("Cos", &[a]);
                vec![self.op("Mul", &[dz, cos])]
            }
            "Cos" => {
                let sin = self.op("Sin", &[a]);
                let d = self.op("Mul", &[dz, sin]);
                vec![self.op("Neg", &[d])]
            }
            // d(1/a) = -1/a² = -z².
            "Reciprocal" => {
                let zz = self.op("Mul", &[z, z]);
                let d = self.op("Mul", &[dz, zz]);
                vec![self.op("Neg", &[d])]
            }
            "Abs" => {
                let sign = self.op("Sign", &[a]);
                vec![self.op("Mul", &[dz, sign])]
            }
            other => {
                return Err(Error::Op(format!(
                    "Gradient cannot differentiate {other} (supported: Add, Sub, Mul, Div, \
                     MatMul, Identity, Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Sin, Cos, \
                     Reciprocal, Abs)"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attr, Attrs, Graph, Node, ValueId, ValueType};
    use crate::plan::fuse::test_util::Builder;
    use crate::tensor::Tensor;
    use crate::Session;

    fn f64s(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    /// Appends `Gradient(xs; y)` with one graph output per x, and runs the graph on `feeds`
    /// (one per graph input), returning the gradients.
    fn gradients(
        b: Builder,
        xs: &[ValueId],
        y: ValueId,
        feeds: Vec<Tensor>,
    ) -> crate::error::Result<Vec<Tensor>> {
        gradients_on(b, xs, xs, y, feeds)
    }

    /// `gradients`, with the Gradient node fed `inputs` for `xs`.
    fn gradients_on(
        mut b: Builder,
        xs: &[ValueId],
        inputs: &[ValueId],
        y: ValueId,
        feeds: Vec<Tensor>,
    ) -> crate::error::Result<Vec<Tensor>> {
        let name = |g: &Graph, v: ValueId| g.values[v].name.clone();
        let outs: Vec<ValueId> = (0..xs.len())
            .map(|k| b.g.add_value(format!("d{k}"), ValueType::default()))
            .collect();
        let attrs = Attrs(
            [
                (
                    "xs".to_string(),
                    Attr::Strings(xs.iter().map(|&x| name(&b.g, x)).collect()),
                ),
                ("y".to_string(), Attr::String(name(&b.g, y))),
            ]
            .into(),
        );
        b.g.nodes.push(Node {
            name: "grad".into(),
            op_type: "Gradient".into(),
            domain: super::DOMAIN.into(),
            inputs: inputs.iter().map(|&x| Some(x)).collect(),
            outputs: outs.iter().map(|&v| Some(v)).collect(),
            attrs,
        });
        b.g.outputs = outs;
        let session = Session::builder().threads(1).build_from_graph(b.g)?;
        Ok(session
            .run_positional(feeds)?
            .values()
            .iter()
            .map(|v| v.as_tensor().unwrap().clone())
            .collect())
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.as_slice::<f64>().unwrap().to_vec()
    }

    #[test]
    fn product_of_a_sum_follows_the_chain_rule() {
        // d = (a + b)·a: dd/da = 2a + b, dd/db = a.
        let mut b = Builder::new();
        let (x, y) = (b.input("a"), b.input("b"));
        let c = b.node("Add", &[x, y], Attrs::default());
        let d = b.node("Mul", &[c, x], Attrs::default());
        let g = gradients(
            b,
            &[x, y],
            d,
            vec![f64s(&[2], &[1., 2.]), f64s(&[2], &[3., 4.])],
        )
        .unwrap();
        assert_eq!(values(&g[0]), [5., 8.]);
        assert_eq!(values(&g[1]), [1., 2.]);
    }

    #[test]
    fn broadcast_operands_get_summed_gradients() {
        // y = x[2,3] · w[3] - bias[1]: dy/dw = column sums of x, dy/dbias = -6 (six uses).
        let mut b = Builder::new();
        let (x, w, bias) = (b.input("x"), b.input("w"), b.input("bias"));
        let xw = b.node("Mul", &[x, w], Attrs::default());
        let y = b.node("Sub", &[xw, bias], Attrs::default());
        let feeds = vec![
            f64s(&[2, 3], &[1., 2., 3., 4., 5., 6.]),
            f64s(&[3], &[1., 10., 100.]),
            f64s(&[1], &[0.]),
        ];
        let g = gradients(b, &[x, w, bias], y, feeds).unwrap();
        assert_eq!(g[0].shape(), &[2, 3]);
        assert_eq!(values(&g[0]), [1., 10., 100., 1., 10., 100.]);
        assert_eq!(values(&g[1]), [5., 7., 9.]);
        assert_eq!((g[2].shape(), values(&g[2])), (&[1][..], vec![-6.]));
    }

    #[test]
    fn matmul_gradients_are_products_with_the_transposes() {
        // y = A[2,3]·B[3,2], seeded with ones: dA[i,k] = Σ_j B[k,j], dB[k,j] = Σ_i A[i,k].
        let mut b = Builder::new();
        let (a, m) = (b.input("A"), b.input("B"));
        let y = b.node("MatMul", &[a, m], Attrs::default());
        let feeds = vec![
            f64s(&[2, 3], &[1., 2., 3., 4., 5., 6.]),
            f64s(&[3, 2], &[1., 2., 3., 4., 5., 6.]),
        ];
        let g = gradients(b, &[a, m], y, feeds).unwrap();
        assert_eq!(values(&g[0]), [3., 7., 11., 3., 7., 11.]);
        assert_eq!(values(&g[1]), [5., 5., 7., 7., 9., 9.]);
    }

    #[test]
    fn unary_gradients_match_finite_differences() {
        let x0 = [0.3, 0.7, 1.9];
        for op in [
            "Exp",
            "Log",
            "Sqrt",
            "Tanh",
            "Sigmoid",
            "Relu",
            "Sin",
            "Cos",
            "Reciprocal",
            "Abs",
            "Neg",
            "Identity",
        ] {
            // y = op(x) / (x + 2), so that each also goes through Div and Add.
            let mut b = Builder::new();
            let x = b.input("x");
            let two = b.constant("two", Tensor::scalar(2f64));
            let u = b.node(op, &[x], Attrs::default());
            let v = b.node("Add", &[x, two], Attrs::default());
            let y = b.node("Div", &[u, v], Attrs::default());
            let g = gradients(b, &[x], y, vec![f64s(&[3], &x0)]).unwrap();
            let f = |x: f64| {
                let u = match op {
                    "Exp" => x.exp(),
                    "Log" => x.ln(),
                    "Sqrt" => x.sqrt(),
                    "Tanh" => x.tanh(),
                    "Sigmoid" => 1. / (1. + (-x).exp()),
                    "Relu" => x.max(0.),
                    "Sin" => x.sin(),
                    "Cos" => x.cos(),
                    "Reciprocal" => 1. / x,
                    "Abs" => x.abs(),
                    "Neg" => -x,
                    _ => x,
                };
                u / (x + 2.)
            };
            let h = 1e-6;
            for (got, &x) in values(&g[0]).iter().zip(&x0) {
                let want = (f(x + h) - f(x - h)) / (2. * h);
                assert!((got - want).abs() < 1e-6, "{op} at {x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn an_input_y_does_not_depend_on_has_a_zero_gradient() {
        let mut b = Builder::new();
        let (x, unused) = (b.input("x"), b.input("unused"));
        let y = b.node("Neg", &[x], Attrs::default());
        let g = gradients(
            b,
            &[x, unused],
            y,
            vec![f64s(&[1], &[2.]), f64s(&[2], &[1., 1.])],
        )
        .unwrap();
        assert_eq!(values(&g[0]), [-1.]);
        assert_eq!(values(&g[1]), [0., 0.]);
    }

    #[test]
    fn other_inputs_evaluate_the_forward_nodes_again() {
        // y = (a·a)·b, differentiated at a = p (another input) with b as the graph has it:
        // dy/da = 2·p·b.
        let mut b = Builder::new();
        let (a, w, p) = (b.input("a"), b.input("b"), b.input("p"));
        let aa = b.node("Mul", &[a, a], Attrs::default());
        let y = b.node("Mul", &[aa, w], Attrs::default());
        let feeds = vec![f64s(&[1], &[100.]), f64s(&[1], &[3.]), f64s(&[1], &[2.])];
        let g = gradients_on(b, &[a], &[p], y, feeds).unwrap();
        assert_eq!(values(&g[0]), [12.]);
    }

    #[test]
    fn ops_without_a_rule_are_named_in_the_error() {
        let mut b = Builder::new();
        let x = b.input("x");
        let y = b.node("Softmax", &[x], Attrs::default());
        let err = gradients(b, &[x], y, vec![f64s(&[1], &[2.])])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot differentiate Softmax"), "{err}");
    }
}
