//! `ConcatConvs` (domain `infer`): convolutions whose outputs only meet in a channel Concat
//! (SqueezeNet's Fire modules, Inception blocks), each writing its channels straight into the
//! concatenated output instead of into a tensor of its own that the Concat then copies.
//! The Concat cost a pass over every output, and at two threads twice that (its single copy
//! reads the half of each output that the other core wrote).
//!
//! The node, made by `plan::fuse::conv_concat`, takes three inputs per convolution (`X`, `W`,
//! optional `B`), in the Concat's order, and carries each convolution's attributes prefixed
//! with its index (`0:pads`, `1:_activation`, …) and their node names in `_convs`.

use super::conv::Conv;
use super::movement::concat_tensors;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::ir::{Attr, Attrs, Node};
use crate::tensor::{checked_numel, spare, Tensor};
use crate::{ensure, op_err};

/// Inputs per convolution.
pub(crate) const SLOTS: usize = 3;

/// The attribute naming the fused convolutions.
pub(crate) const CONVS_ATTR: &str = "_convs";

/// The key of convolution `i`'s attribute `name`.
pub(crate) fn conv_attr_key(i: usize, name: &str) -> String {
    format!("{i}:{name}")
}

#[derive(Debug)]
pub(super) struct ConcatConvs {
    convs: Vec<Conv>,
    /// The fused nodes' names, for errors.
    names: Vec<String>,
}

impl ConcatConvs {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let names = ctx
            .attrs()
            .strings(CONVS_ATTR)?
            .ok_or_else(|| op_err!("ConcatConvs needs a '{CONVS_ATTR}' attribute"))?;
        ensure!(
            ctx.node.inputs.len() == SLOTS * names.len(),
            "ConcatConvs of {} convolutions takes {} inputs, got {}",
            names.len(),
            SLOTS * names.len(),
            ctx.node.inputs.len()
        );
        let convs = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let prefix = format!("{i}:");
                let attrs = ctx
                    .attrs()
                    .0
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                    .collect::<std::collections::HashMap<String, Attr>>();
                let slots = i * SLOTS..(i + 1) * SLOTS;
                let node = Node {
                    name: name.clone(),
                    op_type: "Conv".into(),
                    domain: String::new(),
                    inputs: ctx.node.inputs[slots.clone()].to_vec(),
                    outputs: ctx.node.outputs.clone(),
                    attrs: Attrs(attrs),
                };
                let conv_ctx = BuildCtx {
                    node: &node,
                    opset: ctx.opset,
                    constants: ctx.constants[slots].to_vec(),
                    options: ctx.options,
                };
                Conv::build(&conv_ctx).map_err(|e| e.at_node(name, "Conv"))
            })
            .collect::<Result<Vec<Conv>>>()?;
        Ok(Box::new(ConcatConvs {
            convs,
            names: names.to_vec(),
        }))
    }
}

impl ConcatConvs {
    /// `f` on each convolution and its inputs, an error naming the convolution's node.
    fn each<T>(
        &self,
        parts: &[&[Option<&Tensor>]],
        f: impl Fn(&Conv, &[Option<&Tensor>]) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.convs
            .iter()
            .zip(parts)
            .zip(&self.names)
            .map(|((conv, part), name)| f(conv, part).map_err(|e| e.at_node(name, "Conv")))
            .collect()
    }
}

impl Kernel for ConcatConvs {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        ensure!(
            inputs.len() == SLOTS * self.convs.len(),
            "expected {} inputs, got {}",
            SLOTS * self.convs.len(),
            inputs.len()
        );
        let parts: Vec<&[Option<&Tensor>]> = inputs.chunks(SLOTS).collect();
        let shapes = self.each(&parts, |conv, part| conv.output_shape(part))?;
        // Straight into the output where each convolution's channels are one contiguous range
        // of it (one image) and every convolution can write f32 planes; else each convolution
        // and then the Concat, as unfused.
        let first = &shapes[0];
        let direct = first[0] == 1
            && shapes
                .iter()
                .all(|s| s.len() == first.len() && s[0] == 1 && s[2..] == first[2..])
            && self.convs.iter().zip(&parts).all(|(c, p)| c.writes_into(p));
        if !direct {
            let outputs = self.each(&parts, |conv, part| Ok(conv.run(part)?.swap_remove(0)))?;
            let refs: Vec<&Tensor> = outputs.iter().collect();
            return Ok(vec![concat_tensors(&refs, 1)?]);
        }
        let mut shape = first.clone();
        shape[1] = shapes.iter().map(|s| s[1]).sum();
        // Every element is written: the convolutions' outputs tile it.
        let mut out = spare::f32_output(checked_numel(&shape)?)?;
        let mut rest: &mut [f32] = &mut out;
        for (((conv, part), s), name) in self.convs.iter().zip(&parts).zip(&shapes).zip(&self.names)
        {
            let (dest, tail) = rest.split_at_mut(checked_numel(s)?);
            conv.run_planes(part, Some(dest))
                .map_err(|e| e.at_node(name, "Conv"))?;
            rest = tail;
        }
        Ok(vec![out.into_tensor(shape)?])
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ops::conv::tests::run_op;

    /// Test values in [-1, 1), different for each seed.
    pub(in crate::ops) fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 105.0 - 1.0)
            .collect()
    }

    /// A `ConcatConvs` of two convolutions named `a` and `b`, with their prefixed `attrs`.
    fn two_convs(
        mut attrs: std::collections::HashMap<String, Attr>,
        constants: &[Option<&Tensor>],
    ) -> Box<dyn Kernel> {
        attrs.insert(
            CONVS_ATTR.into(),
            Attr::Strings(vec!["a".into(), "b".into()]),
        );
        let node = Node {
            name: "fire".into(),
            op_type: "ConcatConvs".into(),
            domain: "infer".into(),
            inputs: vec![None; 2 * SLOTS],
            outputs: vec![],
            attrs: Attrs(attrs),
        };
        let ctx = BuildCtx {
            node: &node,
            opset: 17,
            constants: constants.to_vec(),
            options: Default::default(),
        };
        ConcatConvs::build(&ctx).unwrap()
    }

    /// A 1×1 convolution with bias and Relu, and a padded 3×3 one (the Winograd path with
    /// constant weights), fused and one by one.
    fn check(batch: usize, constant: bool) {
        let (c, h, w) = (32, 9, 11);
        let x = Tensor::from_vec(vec![batch, c, h, w], values(batch * c * h * w, 1)).unwrap();
        let w1 = Tensor::from_vec(vec![16, c, 1, 1], values(16 * c, 2)).unwrap();
        let b1 = Tensor::from_vec(vec![16], values(16, 3)).unwrap();
        let w3 = Tensor::from_vec(vec![32, c, 3, 3], values(32 * c * 9, 4)).unwrap();
        let relu = ("_activation", Attr::String("Relu".into()));
        let pads = ("pads", Attr::Ints(vec![1; 4]));
        let y1 = run_op(
            "Conv",
            std::slice::from_ref(&relu),
            &[Some(&x), Some(&w1), Some(&b1)],
            constant,
        );
        let y3 = run_op(
            "Conv",
            std::slice::from_ref(&pads),
            &[Some(&x), Some(&w3)],
            constant,
        );
        let want = concat_tensors(&[&y1.unwrap(), &y3.unwrap()], 1).unwrap();

        let attrs: std::collections::HashMap<String, Attr> = [
            (conv_attr_key(0, relu.0), relu.1),
            (conv_attr_key(1, pads.0), pads.1),
        ]
        .into();
        let inputs = [Some(&x), Some(&w1), Some(&b1), Some(&x), Some(&w3), None];
        let constants: Vec<Option<&Tensor>> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| t.filter(|_| constant && i % SLOTS == 1))
            .collect();
        let got = two_convs(attrs, &constants).run(&inputs).unwrap().remove(0);
        assert_tensors_close(&got, &want, &format!("batch {batch}"));
    }

    /// `got` has `want`'s shape and f32 values within 1e-5 (relative past 1).
    pub(in crate::ops) fn assert_tensors_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.shape(), want.shape(), "{what}");
        let (g, w) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what} [{i}]: {a} vs {b}"
            );
        }
    }

    #[test]
    fn fused_convolutions_write_what_conv_and_concat_give() {
        for batch in [1, 2] {
            for constant in [true, false] {
                check(batch, constant);
            }
        }
    }

    #[test]
    fn mismatched_maps_are_errors() {
        let x = Tensor::from_vec(vec![1, 2, 4, 4], vec![0.0f32; 32]).unwrap();
        let y = Tensor::from_vec(vec![1, 2, 5, 5], vec![0.0f32; 50]).unwrap();
        let w = Tensor::from_vec(vec![3, 2, 1, 1], vec![0.0f32; 6]).unwrap();
        let inputs = [Some(&x), Some(&w), None, Some(&y), Some(&w), None];
        let kernel = two_convs(Default::default(), &[None; 6]);
        assert!(kernel.run(&inputs).is_err());
    }
}
