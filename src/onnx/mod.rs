//! ONNX loader: a memory-mapped `ModelProto` → the IR `Graph`.

#[allow(clippy::all, missing_docs)]
pub mod proto;
mod tensor;

pub use tensor::{tensor_from_proto, ExternalData};

use crate::error::{Error, Result};
use crate::ir::{Attr, Attrs, Dim, Graph, Node, ValueId, ValueType};
use crate::mapped::MappedFile;
use crate::tensor::DType;
use prost::Message;
use proto::{attribute_proto::AttributeType, type_proto, GraphProto, ModelProto, ValueInfoProto};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

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
    let mut g = convert_graph(graph, &mut ext)?;
    g.opsets = opsets;
    g.mapped_files.extend(ext.into_mapped_files());
    Ok(g)
}

fn value_type(vi: &ValueInfoProto) -> ValueType {
    let mut ty = ValueType::default();
    if let Some(type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
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

fn convert_graph(gp: &GraphProto, ext: &mut ExternalData) -> Result<Graph> {
    let mut g = Graph::default();
    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    let declared: HashMap<&str, &ValueInfoProto> = gp
        .value_info
        .iter()
        .chain(gp.output.iter())
        .chain(gp.input.iter())
        .map(|vi| (vi.name(), vi))
        .collect();

    let mut define = |g: &mut Graph, name: &str, what: &str| -> Result<ValueId> {
        if by_name.contains_key(name) {
            return Err(Error::Graph(format!(
                "value '{name}' is defined twice (again as {what})"
            )));
        }
        let ty = declared
            .get(name)
            .map(|vi| value_type(vi))
            .unwrap_or_default();
        let id = g.add_value(name, ty);
        by_name.insert(name.to_string(), id);
        Ok(id)
    };

    for init in &gp.initializer {
        let id = define(&mut g, init.name(), "an initializer")?;
        let t = tensor_from_proto(init, ext)?;
        g.initializers.insert(id, t);
    }
    for vi in &gp.input {
        // Old exporters list initializers among the inputs too; those stay constants.
        if g.values.iter().any(|v| v.name == vi.name()) {
            continue;
        }
        let id = define(&mut g, vi.name(), "a graph input")?;
        g.inputs.push(id);
    }
    for (i, np) in gp.node.iter().enumerate() {
        let node_name = if np.name().is_empty() {
            format!("{}_{i}", np.op_type())
        } else {
            np.name().to_string()
        };
        let mut outputs = Vec::with_capacity(np.output.len());
        for o in &np.output {
            outputs.push(if o.is_empty() {
                None
            } else {
                Some(define(&mut g, o, &format!("output of node '{node_name}'"))?)
            });
        }
        let attrs = convert_attrs(np, &node_name, ext)?;
        g.nodes.push(Node {
            name: node_name,
            op_type: np.op_type().to_string(),
            domain: np.domain().to_string(),
            inputs: Vec::new(),
            outputs,
            attrs,
        });
    }
    // Inputs are resolved after every output is known: node order need not be topological.
    let by_name = by_name;
    for (node, np) in g.nodes.iter_mut().zip(&gp.node) {
        node.inputs = np
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                by_name.get(name).copied().map(Some).ok_or_else(|| {
                    Error::Graph(format!(
                        "node '{}' ({}) reads '{name}', which nothing defines",
                        node.name, node.op_type
                    ))
                })
            })
            .collect::<Result<_>>()?;
    }
    for o in &gp.output {
        let id = by_name.get(o.name()).copied().ok_or_else(|| {
            Error::Graph(format!("graph output '{}' is never computed", o.name()))
        })?;
        g.outputs.push(id);
    }
    Ok(g)
}

fn convert_attrs(np: &proto::NodeProto, node_name: &str, ext: &mut ExternalData) -> Result<Attrs> {
    let mut attrs = Attrs::default();
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
    Ok(attrs)
}

fn bad_attr(np: &proto::NodeProto, node: &str, attr: &str, reason: &str) -> Error {
    Error::Node {
        node: node.to_string(),
        op_type: np.op_type().to_string(),
        reason: format!("attribute '{attr}': {reason}"),
    }
}
