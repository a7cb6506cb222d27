//! ONNX loader: a memory-mapped `ModelProto` → the IR `Graph`.

// Loaders read bytes from strangers: a malformed file must be an error, never a panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[allow(clippy::all, missing_docs)]
pub mod proto;
mod tensor;

pub use tensor::{tensor_from_proto, ExternalData};

use crate::error::{Error, Result};
use crate::ir::{Attr, Attrs, Dim, Graph, Node, ValueId, ValueKind, ValueType};
use crate::mapped::MappedFile;
use crate::tensor::DType;
use prost::Message;
use proto::{attribute_proto::AttributeType, type_proto, GraphProto, ModelProto, ValueInfoProto};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Loads an ONNX model file. Initializer bytes stay in the mapped file (zero-copy).
pub fn load_file(path: &Path) -> Result<Graph> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::Format {
            path: path.into(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(Error::Format {
            path: path.into(),
            reason: "the file is empty".into(),
        });
    }
    let (mapped, bytes) = MappedFile::map(&file, path)?;
    let mut graph = load_bytes(bytes, Some(path)).map_err(|e| match e {
        Error::Graph(reason) | Error::Op(reason) => Error::Format {
            path: path.into(),
            reason,
        },
        other => other,
    })?;
    graph.mapped_files.push(mapped);
    Ok(graph)
}

/// Loads an ONNX model from bytes. `path` (when known) resolves external data.
pub fn load_bytes(bytes: bytes::Bytes, path: Option<&Path>) -> Result<Graph> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::Graph(format!("not a valid ONNX model (protobuf: {e})")))?;
    let mut opsets = HashMap::new();
    for o in &model.opset_import {
        opsets.insert(o.domain().to_string(), o.version());
    }
    if opsets.is_empty() {
        // IR v2 models without opset_import mean opset 1.
        opsets.insert(String::new(), 1);
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Graph("the model has no graph".into()))?;
    let mut ext = ExternalData::new(path);
    let mut g = convert_graph(graph, &mut ext, &opsets, &|_| false)?;
    g.mapped_files.extend(ext.into_mapped_files());
    Ok(g)
}

fn value_type(vi: &ValueInfoProto) -> ValueType {
    type_from_proto(vi.r#type.as_ref())
}

fn type_from_proto(declared: Option<&proto::TypeProto>) -> ValueType {
    use type_proto::Value as T;
    fn tensor_of(t: Option<&proto::TypeProto>) -> Option<&type_proto::Tensor> {
        match t.and_then(|t| t.value.as_ref()) {
            Some(T::TensorType(t)) => Some(t),
            _ => None,
        }
    }
    let (kind, tensor) = match declared.and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => (ValueKind::Tensor, Some(t)),
        Some(T::SequenceType(s)) => (ValueKind::Sequence, tensor_of(s.elem_type.as_deref())),
        Some(T::OptionalType(o)) => match o.elem_type.as_deref().and_then(|t| t.value.as_ref()) {
            Some(T::SequenceType(s)) => (
                ValueKind::OptionalSequence,
                tensor_of(s.elem_type.as_deref()),
            ),
            _ => (ValueKind::Optional, tensor_of(o.elem_type.as_deref())),
        },
        _ => (ValueKind::Tensor, None),
    };
    let mut ty = ValueType {
        kind,
        ..ValueType::default()
    };
    if let Some(t) = tensor {
        ty.dtype = DType::from_onnx(t.elem_type());
        ty.shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| {
                    use proto::tensor_shape_proto::dimension::Value;
                    match &d.value {
                        Some(Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                        Some(Value::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                        _ => Dim::Any,
                    }
                })
                .collect()
        });
    }
    ty
}

/// Whether a name is defined by an enclosing graph (always false at the top level).
type OuterScope<'a> = &'a dyn Fn(&str) -> bool;

/// A graph being converted, with its names.
struct Scope<'a> {
    g: Graph,
    by_name: HashMap<String, ValueId>,
    declared: HashMap<&'a str, &'a ValueInfoProto>,
}

impl Scope<'_> {
    fn define(&mut self, name: &str, what: &str) -> Result<ValueId> {
        if self.by_name.contains_key(name) {
            return Err(Error::Graph(format!(
                "value '{name}' is defined twice (again as {what})"
            )));
        }
        let ty = self
            .declared
            .get(name)
            .map(|vi| value_type(vi))
            .unwrap_or_default();
        let id = self.g.add_value(name, ty);
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// The value `name` refers to; a name only an enclosing graph defines becomes a capture.
    fn resolve(&mut self, name: &str, outer: OuterScope) -> Option<ValueId> {
        if let Some(&id) = self.by_name.get(name) {
            return Some(id);
        }
        if !outer(name) {
            return None;
        }
        let id = self.g.add_value(name, ValueType::default());
        self.by_name.insert(name.to_string(), id);
        self.g.captures.push(id);
        Some(id)
    }
}

fn convert_graph(
    gp: &GraphProto,
    ext: &mut ExternalData,
    opsets: &HashMap<String, i64>,
    outer: OuterScope,
) -> Result<Graph> {
    let mut s = Scope {
        g: Graph {
            opsets: opsets.clone(),
            ..Graph::default()
        },
        by_name: HashMap::new(),
        declared: gp
            .value_info
            .iter()
            .chain(gp.output.iter())
            .chain(gp.input.iter())
            .map(|vi| (vi.name(), vi))
            .collect(),
    };

    for init in &gp.initializer {
        let id = s.define(init.name(), "an initializer")?;
        let t = tensor_from_proto(init, ext)?;
        s.g.initializers.insert(id, t);
    }
    for vi in &gp.input {
        // Old exporters list initializers among the inputs too; those stay constants.
        if s.by_name.contains_key(vi.name()) {
            continue;
        }
        let id = s.define(vi.name(), "a graph input")?;
        s.g.inputs.push(id);
    }
    // Every output is defined before any input is resolved: node order need not be
    // topological, and a subgraph may read a value its node's successors compute.
    let mut names = Vec::with_capacity(gp.node.len());
    let mut outputs = Vec::with_capacity(gp.node.len());
    for (i, np) in gp.node.iter().enumerate() {
        let node_name = if np.name().is_empty() {
            format!("{}_{i}", np.op_type())
        } else {
            np.name().to_string()
        };
        let mut outs = Vec::with_capacity(np.output.len());
        for o in &np.output {
            outs.push(if o.is_empty() {
                None
            } else {
                Some(s.define(o, &format!("output of node '{node_name}'"))?)
            });
        }
        names.push(node_name);
        outputs.push(outs);
    }
    for ((np, name), outputs) in gp.node.iter().zip(names).zip(outputs) {
        let (mut attrs, subgraphs) = {
            let by_name = &s.by_name;
            let visible = |n: &str| by_name.contains_key(n) || outer(n);
            convert_attrs(np, &name, ext, opsets, &visible)?
        };
        let mut inputs = np
            .input
            .iter()
            .map(|input| {
                if input.is_empty() {
                    return Ok(None);
                }
                s.resolve(input, outer).map(Some).ok_or_else(|| {
                    Error::Graph(format!(
                        "node '{name}' ({}) reads '{input}', which nothing defines",
                        np.op_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The outer values the subgraphs read become extra inputs of the node (so ordering
        // and lifetimes see them); every subgraph captures the same list, in the same order.
        let mut captured: Vec<String> = Vec::new();
        for (_, sg) in &subgraphs {
            for &c in &sg.captures {
                let n = sg.value_name(c);
                if !captured.iter().any(|x| x == n) {
                    captured.push(n.to_string());
                }
            }
        }
        for (attr, mut sg) in subgraphs {
            align_captures(&mut sg, &captured);
            attrs.0.insert(attr, Attr::Graph(Arc::new(sg)));
        }
        for n in &captured {
            // `visible` said an enclosing scope defines it, so this resolves.
            inputs.push(s.resolve(n, outer));
        }
        s.g.nodes.push(Node {
            name,
            op_type: np.op_type().to_string(),
            domain: np.domain().to_string(),
            inputs,
            outputs,
            attrs,
        });
    }
    for o in &gp.output {
        let id = s.resolve(o.name(), outer).ok_or_else(|| {
            Error::Graph(format!("graph output '{}' is never computed", o.name()))
        })?;
        s.g.outputs.push(id);
    }
    Ok(s.g)
}

/// Makes `sg` capture exactly `names`, in that order (values it never reads stay unused).
fn align_captures(sg: &mut Graph, names: &[String]) {
    let own = std::mem::take(&mut sg.captures);
    sg.captures = names
        .iter()
        .map(|n| {
            own.iter()
                .copied()
                .find(|&c| sg.value_name(c) == n)
                .unwrap_or_else(|| sg.add_value(n.as_str(), ValueType::default()))
        })
        .collect();
}

/// A node's attributes, with its subgraph attributes apart (by name, in attribute order).
fn convert_attrs(
    np: &proto::NodeProto,
    node_name: &str,
    ext: &mut ExternalData,
    opsets: &HashMap<String, i64>,
    visible: OuterScope,
) -> Result<(Attrs, Vec<(String, Graph)>)> {
    let mut attrs = Attrs::default();
    let mut subgraphs = Vec::new();
    for a in &np.attribute {
        let ty = AttributeType::try_from(a.r#type.unwrap_or(0)).unwrap_or(AttributeType::Undefined);
        let value = match ty {
            AttributeType::Float => Attr::Float(a.f()),
            AttributeType::Int => Attr::Int(a.i()),
            AttributeType::String => Attr::String(String::from_utf8_lossy(a.s()).into_owned()),
            AttributeType::Tensor => match &a.t {
                Some(t) => Attr::Tensor(tensor_from_proto(t, ext)?),
                None => {
                    return Err(bad_attr(
                        np,
                        node_name,
                        a.name(),
                        "tensor attribute without a value",
                    ))
                }
            },
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            AttributeType::TypeProto => Attr::Type(type_from_proto(a.tp.as_ref())),
            AttributeType::Graph => match &a.g {
                Some(g) => {
                    let sg = convert_graph(g, ext, opsets, visible).map_err(|e| match e {
                        Error::Graph(reason) => bad_attr(np, node_name, a.name(), &reason),
                        other => other,
                    })?;
                    subgraphs.push((a.name().to_string(), sg));
                    continue;
                }
                None => {
                    return Err(bad_attr(
                        np,
                        node_name,
                        a.name(),
                        "graph attribute without a value",
                    ))
                }
            },
            other => {
                return Err(bad_attr(
                    np,
                    node_name,
                    a.name(),
                    &format!("attributes of type {other:?} are not supported yet"),
                ))
            }
        };
        attrs.0.insert(a.name().to_string(), value);
    }
    Ok((attrs, subgraphs))
}

fn bad_attr(np: &proto::NodeProto, node: &str, attr: &str, reason: &str) -> Error {
    Error::Node {
        node: node.to_string(),
        op_type: np.op_type().to_string(),
        reason: format!("attribute '{attr}': {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    };
    use super::*;
    use crate::{Session, Tensor};

    fn node(
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        graphs: Vec<(&str, GraphProto)>,
    ) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: graphs
                .into_iter()
                .map(|(name, g)| AttributeProto {
                    name: Some(name.into()),
                    r#type: Some(AttributeType::Graph as i32),
                    g: Some(g),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn graph(inputs: &[&str], nodes: Vec<NodeProto>, outputs: &[&str]) -> GraphProto {
        let info = |names: &[&str]| {
            names
                .iter()
                .map(|n| ValueInfoProto {
                    name: Some(n.to_string()),
                    ..Default::default()
                })
                .collect()
        };
        GraphProto {
            input: info(inputs),
            node: nodes,
            output: info(outputs),
            ..Default::default()
        }
    }

    /// `Loop` (2 trips) whose body holds an `If` that reads the body's `v` and the top-level
    /// `x` and `c`: names two scopes out become captures at every level in between.
    #[test]
    fn nested_subgraphs_capture_outer_values_through_every_level() {
        let then_branch = graph(&[], vec![node("Add", &["v", "x"], &["t"], vec![])], &["t"]);
        let else_branch = graph(&[], vec![], &["v"]);
        let body = graph(
            &["i", "cond_in", "v"],
            vec![node(
                "If",
                &["c"],
                &["y"],
                vec![("then_branch", then_branch), ("else_branch", else_branch)],
            )],
            &["cond_in", "y"],
        );
        let mut top = graph(
            &["x", "c"],
            vec![node(
                "Loop",
                &["m", "", "x"],
                &["out"],
                vec![("body", body)],
            )],
            &["out"],
        );
        top.initializer.push(TensorProto {
            name: Some("m".into()),
            data_type: Some(7),
            int64_data: vec![2],
            ..Default::default()
        });
        let model = ModelProto {
            graph: Some(top),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            ..Default::default()
        };

        let g = load_bytes(model.encode_to_vec().into(), None).unwrap();
        // The Loop reads M, cond, x, then its captures: c (for the If) and x again.
        let lp = &g.nodes[0];
        let names: Vec<&str> = lp
            .inputs
            .iter()
            .map(|v| v.map_or("", |v| g.value_name(v)))
            .collect();
        assert_eq!(names, ["m", "", "x", "c", "x"]);

        let s = Session::builder().threads(1).build_from_graph(g).unwrap();
        let x = || Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
        let out = s.run_positional(vec![x(), Tensor::scalar(true)]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), [3.0]);
        let out = s.run_positional(vec![x(), Tensor::scalar(false)]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), [1.0]);
    }
}
