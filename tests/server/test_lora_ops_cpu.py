"""loraswap's CPU LoRA kernels against vLLM's torch ops and against a per-token reference.

The end-to-end proof is elsewhere (tests/server/test_parity.py: vLLM with these kernels
and transformers+peft produce the same tokens); these pin the arithmetic, including the
cases a full engine rarely hits: tokens without an adapter (-1), slices, add vs overwrite.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torch_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from server import lora_ops_cpu  # noqa: E402

SLOTS, RANK = 5, 8


def _close(a, b) -> None:
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("tokens", [1, 7, 64])
@pytest.mark.parametrize("hidden,out", [(48, 96), (96, 48)])
def test_bgmv_matches_vllm_for_adapter_tokens(tokens: int, hidden: int, out: int) -> None:
    g = torch.Generator().manual_seed(tokens * 1000 + hidden)
    x = torch.randn(tokens, hidden, generator=g)
    a = torch.randn(SLOTS, 1, RANK, hidden, generator=g)
    b = torch.randn(SLOTS, 1, out, RANK, generator=g)
    idx = torch.randint(0, SLOTS, (tokens,), generator=g)

    want, got = torch.zeros(tokens, RANK), torch.zeros(tokens, RANK)
    torch_ops.bgmv_shrink(x, a, want, idx, 0.25)
    lora_ops_cpu.bgmv_shrink(x, a, got, idx, 0.25)
    _close(got, want)

    mid = torch.randn(tokens, RANK, generator=g)
    base = torch.randn(tokens, out + 10, generator=g)
    for add in (True, False):
        want, got = base.clone(), base.clone()
        torch_ops.bgmv_expand_slice(mid, b, want, idx, 10, out, add)
        lora_ops_cpu.bgmv_expand_slice(mid, b, got, idx, 10, out, add)
        _close(got, want)
        want, got = base.clone(), base.clone()
        torch_ops.bgmv_expand(mid, b, want, idx, add)
        lora_ops_cpu.bgmv_expand(mid, b, got, idx, add)
        _close(got, want)


def test_sgmv_matches_vllm_for_sequences() -> None:
    g = torch.Generator().manual_seed(3)
    lens = torch.tensor([3, 1, 4])
    seq_idx = torch.tensor([2, 0, 4])
    tokens = int(lens.sum())
    x = torch.randn(tokens, 32, generator=g)
    a = torch.randn(SLOTS, 1, RANK, 32, generator=g)
    b = torch.randn(SLOTS, 1, 40, RANK, generator=g)
    starts = torch.tensor([0, 3, 4])
    meta = (starts, lens, seq_idx, 3, 4, tokens)
    want, got = torch.zeros(tokens, RANK), torch.zeros(tokens, RANK)
    torch_ops.sgmv_shrink(x, a, want, *meta, 0.5)
    lora_ops_cpu.sgmv_shrink(x, a, got, *meta, 0.5)
    _close(got, want)
    y0 = torch.randn(tokens, 40, generator=g)
    want, got = y0.clone(), y0.clone()
    torch_ops.sgmv_expand(want[:, :RANK].clone(), b, want, *meta, True)
    lora_ops_cpu.sgmv_expand(y0[:, :RANK].clone(), b, got, *meta, True)
    _close(got, want)


def test_token_without_adapter_gets_no_delta() -> None:
    """vLLM's torch ops read index -1 as the last slot (the bug the CPU guard avoids)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 32, generator=g)
    a = torch.randn(SLOTS, 1, RANK, 32, generator=g)
    idx = torch.tensor([1, -1, 3, -1])
    got = torch.full((4, RANK), 7.0)
    lora_ops_cpu.bgmv_shrink(x, a, got, idx, 1.0)
    assert torch.equal(got[1], torch.zeros(RANK)) and torch.equal(got[3], torch.zeros(RANK))
    stock = torch.zeros(4, RANK)
    torch_ops.bgmv_shrink(x, a, stock, idx, 1.0)
    assert not torch.equal(stock[1], torch.zeros(RANK))  # the stock behaviour this fixes
    _close(got[[0, 2]], stock[[0, 2]])


class _Wrapper:
    """The attributes of vLLM's PunicaWrapperCPU that the fused methods use."""

    def __init__(self, indices: torch.Tensor) -> None:
        self.token_lora_indices = indices
        self.stock_calls = 0

    def stock_update(self, *args, **kwargs) -> None:
        pass

    def stock_linear(self, *args, **kwargs) -> None:
        self.stock_calls += 1


def _reference_linear(y, x, a_slices, b_slices, scale, widths, idx):
    out = y.clone()
    offset = 0
    for a, b, width in zip(a_slices, b_slices, widths, strict=True):
        for t, slot in enumerate(idx.tolist()):
            if slot >= 0:
                out[t, offset:offset + width] += (b[slot, 0] @ (a[slot, 0] @ x[t])) * scale
        offset += width
    return out


@pytest.mark.parametrize("widths", [(40,), (32, 16, 16), (24, 24)])
def test_fused_add_lora_linear_matches_per_token_reference(widths: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(widths))
    tokens, hidden = 9, 32
    idx = torch.tensor([0, 4, -1, 2, 2, 0, -1, 3, 1])
    x = torch.randn(tokens, hidden, generator=g)
    a_slices = tuple(torch.randn(SLOTS, 1, RANK, hidden, generator=g) for _ in widths)
    b_slices = tuple(torch.randn(SLOTS, 1, w, RANK, generator=g) for w in widths)
    y = torch.randn(tokens, sum(widths), generator=g)
    want = _reference_linear(y, x, a_slices, b_slices, 0.5, widths, idx)

    wrapper = _Wrapper(idx)
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    methods["add_lora_linear"](wrapper, y, x, a_slices, b_slices, 0.5, widths)
    assert wrapper.stock_calls == 1  # before the first mapping: vLLM's own path
    methods["update_metadata"](wrapper, None, [], SLOTS, 0)
    got = y.clone()
    methods["add_lora_linear"](wrapper, got, x, a_slices, b_slices, 0.5, widths)
    _close(got, want)
    assert wrapper.stock_calls == 1

    # a new adapter written into a slot in place: the cached stacked weights must follow
    with torch.no_grad():
        a_slices[0][2].normal_(generator=g)
        b_slices[-1][2].normal_(generator=g)
    want = _reference_linear(y, x, a_slices, b_slices, 0.5, widths, idx)
    got = y.clone()
    methods["add_lora_linear"](wrapper, got, x, a_slices, b_slices, 0.5, widths)
    _close(got, want)


def test_fused_batch_without_any_adapter_is_untouched() -> None:
    wrapper = _Wrapper(torch.tensor([-1, -1, -1]))
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    methods["update_metadata"](wrapper, None, [], SLOTS, 0)
    y = torch.randn(3, 16)
    got = y.clone()
    methods["add_lora_linear"](wrapper, got, torch.randn(3, 8),
                               (torch.randn(SLOTS, 1, RANK, 8),),
                               (torch.randn(SLOTS, 1, 16, RANK),), 1.0, (16,))
    assert torch.equal(got, y)


def test_plugin_reaches_vllm_engine_processes(monkeypatch) -> None:
    """The kernels get into the engine's processes only through the installed entry point."""
    from server import engine

    assert engine._plugin_reaches_workers() is None
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver")
    assert "does not include loraswap_cpu_lora_ops" in engine._plugin_reaches_workers()
    monkeypatch.setenv("VLLM_PLUGINS", "lora_filesystem_resolver,loraswap_cpu_lora_ops")
    assert engine._plugin_reaches_workers() is None


def test_fused_path_computes_only_the_slots_a_batch_uses() -> None:
    """Sixteen slots, batches using a few: segments of every size (one token, many), slots
    no token uses, tokens without an adapter, a batch using every slot, and slots rewritten
    in place between batches; every result equal to the per-token reference."""
    g = torch.Generator().manual_seed(17)
    slots, hidden, widths = 16, 24, (16, 8, 8)
    a_slices = tuple(torch.randn(slots, 1, RANK, hidden, generator=g) for _ in widths)
    b_slices = tuple(torch.randn(slots, 1, w, RANK, generator=g) for w in widths)
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    batches = [
        [5, 5, 5, 5, 5, 5, -1, 9, 12, 12],       # sizes 6, 1, 2; 13 slots unused
        [0, -1, -1, 15],                          # the first and last slot
        list(range(slots)) + [3, 3, -1],          # every slot in use
        [9, 9, 5],                                # back to earlier slots, another order
    ]
    for n, batch in enumerate(batches):
        if n == 3:  # adapters loaded into used and unused slots since the last batch
            with torch.no_grad():
                a_slices[1][9].normal_(generator=g)
                b_slices[0][5].normal_(generator=g)
                a_slices[0][7].normal_(generator=g)
        idx = torch.tensor(batch)
        wrapper = _Wrapper(idx)
        methods["update_metadata"](wrapper, None, [], slots, 0)
        x = torch.randn(len(batch), hidden, generator=g)
        y = torch.randn(len(batch), sum(widths), generator=g)
        want = _reference_linear(y, x, a_slices, b_slices, 0.25, widths, idx)
        got = y.clone()
        methods["add_lora_linear"](wrapper, got, x, a_slices, b_slices, 0.25, widths)
        _close(got, want)
        assert wrapper._loraswap_plan.key == tuple(sorted({i for i in batch if i >= 0}))


@pytest.mark.parametrize("slots,tokens", [(1, 5), (4, 33), (64, 32), (64, 300), (256, 40)])
def test_segmented_path_matches_reference_for_random_batches(slots: int, tokens: int) -> None:
    """Random segment sizes (one token, most of the batch), tokens without an adapter,
    tokens of one adapter scattered through the batch, from 1 to 256 slots."""
    g = torch.Generator().manual_seed(slots * 7 + tokens)
    hidden, widths = 40, (24, 8, 8)
    a_slices = tuple(torch.randn(slots, 1, RANK, hidden, generator=g) for _ in widths)
    b_slices = tuple(torch.randn(slots, 1, w, RANK, generator=g) for w in widths)
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    for trial in range(4):
        heavy = torch.randint(0, slots, (1,), generator=g)
        idx = torch.randint(-1, slots, (tokens,), generator=g)
        idx[torch.rand(tokens, generator=g) < 0.4 * trial / 3] = heavy  # a big segment
        wrapper = _Wrapper(idx)
        methods["update_metadata"](wrapper, None, [], slots, 0)
        x = torch.randn(tokens, hidden, generator=g)
        y = torch.randn(tokens, sum(widths), generator=g)
        want = _reference_linear(y, x, a_slices, b_slices, 0.5, widths, idx)
        got = y.clone()
        methods["add_lora_linear"](wrapper, got, x, a_slices, b_slices, 0.5, widths)
        _close(got, want)


def test_work_follows_tokens_not_slots() -> None:
    """The sparse rows hold each token's own block only: as many entries for 256 slots as
    for 2, and none for tokens without an adapter (speed itself is measured in
    benchmarks/lora_ops.py and the many-adapters benchmark, not here)."""
    idx = torch.tensor([1, -1, 0, 1, 1, -1, 0])
    for slots in (2, 256):
        plan = lora_ops_cpu._Plan(idx)
        crow, col = plan.index(RANK)
        assert col.numel() == 5 * RANK
        assert torch.equal(crow.diff(), torch.tensor([RANK, 0, RANK, RANK, RANK, 0, RANK]))
        assert int(col.max()) < 2 * RANK <= slots * RANK


def test_a_slot_past_the_stacked_weights_is_refused() -> None:
    """The sparse product skips torch's index checks for speed, so the mapping is checked
    against the weights instead: a bad slot raises, it never reads past the tensor."""
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    wrapper = _Wrapper(torch.tensor([0, SLOTS]))
    methods["update_metadata"](wrapper, None, [], SLOTS, 0)
    y = torch.randn(2, 16)
    got = y.clone()
    with pytest.raises(IndexError, match=f"slot {SLOTS}"):
        methods["add_lora_linear"](wrapper, got, torch.randn(2, 8),
                                   (torch.randn(SLOTS, 1, RANK, 8),),
                                   (torch.randn(SLOTS, 1, 16, RANK),), 1.0, (16,))
    assert torch.equal(got, y)


def test_bfloat16_outputs_get_the_delta() -> None:
    g = torch.Generator().manual_seed(11)
    idx = torch.tensor([2, -1, 0, 2])
    x = torch.randn(4, 16, generator=g)
    a_slices = (torch.randn(SLOTS, 1, RANK, 16, generator=g),)
    b_slices = (torch.randn(SLOTS, 1, 12, RANK, generator=g),)
    y = torch.randn(4, 12, generator=g)
    want = _reference_linear(y, x, a_slices, b_slices, 0.5, (12,), idx)
    methods = lora_ops_cpu.fused_wrapper_methods(_Wrapper.stock_update, _Wrapper.stock_linear)
    wrapper = _Wrapper(idx)
    methods["update_metadata"](wrapper, None, [], SLOTS, 0)
    got = y.to(torch.bfloat16)
    methods["add_lora_linear"](wrapper, got, x.to(torch.bfloat16), a_slices, b_slices, 0.5, (12,))
    assert torch.allclose(got.float(), want, atol=0.1 * float(want.abs().max()), rtol=0.05)
