//! When each value dies, and which buffer each value lives in.
//!
//! A value is *live* from the step that produces it (graph inputs: from before the first node)
//! to the last step that reads it; graph outputs live to the end. Two values may share a buffer
//! ("slot") only if their live ranges do not overlap. [`BufferPlan::new`] assigns slots greedily
//! in node order:
//!
//! 1. the node's output takes the free slot with the smallest sufficient size (best fit); if no
//!    free slot is large enough, the largest free slot grows to fit; if none is free, a new slot;
//! 2. only then are the slots of the values whose last reader was this node freed, so an output
//!    never shares a buffer with one of its own inputs (no kernel has to work in place).
//!
//! Sizes are in elements, so the same plan serves f32 (calibration) and u8 (int8) tensors.

use super::{Graph, ValueId};

/// The live ranges of a graph's values and the buffer each one uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferPlan {
    /// For each value, the index of the last node that reads it; `None` for values no node reads
    /// (graph outputs, unused inputs) and for graph outputs, which live to the end.
    pub last_use: Vec<Option<usize>>,
    /// For each value, its slot.
    pub slot: Vec<usize>,
    /// Each slot's size in elements (the largest value it holds).
    pub slot_len: Vec<usize>,
}

impl BufferPlan {
    /// Plans the buffers of `graph` (see the [module docs](self)).
    pub fn new(graph: &Graph) -> Self {
        let n_values = graph.values().len();
        let mut last_use = vec![None; n_values];
        for (i, node) in graph.nodes().iter().enumerate() {
            for v in &node.inputs {
                last_use[v.0] = Some(i);
            }
        }
        for o in graph.outputs() {
            last_use[o.0] = None;
        }
        let numel = |v: ValueId| graph.value(v).dims.iter().product::<usize>();
        let is_output = |v: ValueId| graph.outputs().contains(&v);

        let mut slot = vec![usize::MAX; n_values];
        let mut slot_len: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let take = |len: usize, slot_len: &mut Vec<usize>, free: &mut Vec<usize>| -> usize {
            let best_fit = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_len[s] >= len)
                .min_by_key(|(_, &s)| (slot_len[s], s))
                .map(|(i, _)| i);
            let largest = || {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, &s)| (slot_len[s], std::cmp::Reverse(s)))
                    .map(|(i, _)| i)
            };
            match best_fit.or_else(largest) {
                Some(i) => {
                    let s = free.swap_remove(i);
                    slot_len[s] = slot_len[s].max(len);
                    s
                }
                None => {
                    slot_len.push(len);
                    slot_len.len() - 1
                }
            }
        };
        for &v in graph.inputs() {
            slot[v.0] = take(numel(v), &mut slot_len, &mut free);
        }
        // Inputs nothing reads and that are not outputs are dead from the start.
        for &v in graph.inputs() {
            if last_use[v.0].is_none() && !is_output(v) {
                free.push(slot[v.0]);
            }
        }
        for (i, node) in graph.nodes().iter().enumerate() {
            let out = node.output;
            slot[out.0] = take(numel(out), &mut slot_len, &mut free);
            let mut dying: Vec<ValueId> = node
                .inputs
                .iter()
                .copied()
                .filter(|v| last_use[v.0] == Some(i))
                .collect();
            if last_use[out.0].is_none() && !is_output(out) {
                dying.push(out);
            }
            dying.sort();
            dying.dedup();
            free.extend(dying.iter().map(|v| slot[v.0]));
        }
        BufferPlan {
            last_use,
            slot,
            slot_len,
        }
    }

    /// Total elements of all slots: the peak the plan needs at once.
    pub fn total_len(&self) -> usize {
        self.slot_len.iter().sum()
    }
}
