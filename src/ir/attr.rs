//! Node attributes with typed, error-reporting getters.

use super::{Graph, ValueType};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f32),
    String(String),
    Tensor(Tensor),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    /// A subgraph (If branches, Loop and Scan bodies).
    Graph(Arc<Graph>),
    /// A type (the `type` of Optional).
    Type(ValueType),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Ints(_) => "ints",
            Attr::Floats(_) => "floats",
            Attr::Strings(_) => "strings",
            Attr::Graph(_) => "graph",
            Attr::Type(_) => "type",
        }
    }
}

/// A node's attributes by name.
#[derive(Clone, Debug, Default)]
pub struct Attrs(pub HashMap<String, Attr>);

fn wrong(name: &str, want: &str, got: &Attr) -> Error {
    Error::Op(format!(
        "attribute '{name}' should be {want}, found {}",
        got.kind()
    ))
}

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(wrong(name, "an int", other)),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        match self.0.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(other) => Err(wrong(name, "a float", other)),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<&str>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(name, "a string", other)),
        }
    }

    pub fn string_or<'a>(&'a self, name: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.string(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<&[i64]>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(other) => Err(wrong(name, "a list of ints", other)),
        }
    }

    pub fn floats(&self, name: &str) -> Result<Option<&[f32]>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(other) => Err(wrong(name, "a list of floats", other)),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<&[String]>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(v)),
            Some(other) => Err(wrong(name, "a list of strings", other)),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(other) => Err(wrong(name, "a tensor", other)),
        }
    }

    pub fn graph(&self, name: &str) -> Result<Option<&Arc<Graph>>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Attr::Graph(g)) => Ok(Some(g)),
            Some(other) => Err(wrong(name, "a graph", other)),
        }
    }

    /// The subgraphs among the attributes.
    pub fn graphs(&self) -> impl Iterator<Item = &Arc<Graph>> {
        self.0.values().filter_map(|a| match a {
            Attr::Graph(g) => Some(g),
            _ => None,
        })
    }
}
