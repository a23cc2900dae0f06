"""The CLI and the real registry: pinning refs, the delete guard across processes' objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters import AdapterInUse, Registry
from loraswap.cli import cli
from router import FeedbackIn, RequestRecord, Router


@pytest.fixture(scope="module")
def peft_adapter(tiny_llama_factory: Callable[..., Path], tmp_path_factory) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_llama_factory()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    out = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return base, out


@pytest.mark.slow
def test_cli_with_the_real_registry(peft_adapter, tmp_path, monkeypatch):
    base, adapter = peft_adapter
    monkeypatch.setenv("LORASWAP_HOME", str(tmp_path))
    monkeypatch.setenv("LORASWAP_BASE_MODEL", str(base))
    reg = Registry(tmp_path / "loraswap.db", tmp_path / "store", base)
    reg.add(adapter, "support")
    reg.add(adapter, "support")
    run = CliRunner().invoke
    res = run(cli, ["experiments", "create", "bot", "--variant", "support@1=50",
                    "--variant", "support=50", "--retention", "--start"])
    assert res.exit_code == 0, res.output
    assert "support@2  weight 50 (50%)" in res.output and "running" in res.output
    res = run(cli, ["experiments", "create", "support", "--variant", "support@1=1",
                    "--variant", "base=1"])
    assert res.exit_code == 1 and "already an adapter name" in res.output
    res = run(cli, ["experiments", "create", "x", "--variant", "support@7=1",
                    "--variant", "base=1"])
    assert res.exit_code == 1 and "support@7" in res.output

    # a server-side Router wired to the registry refuses deleting a variant's adapter
    router = Router(tmp_path / "loraswap.db", reg)
    try:
        with pytest.raises(AdapterInUse, match="variant of experiment bot"):
            reg.delete("support@1")
        # archiving would stop serving it too, and that arm's users would get 404s
        with pytest.raises(AdapterInUse, match="cannot archive support@1: it is a variant"):
            reg.archive("support@1")
        assert reg.get("support@1").status == "active"
        for i in range(40):
            route = router.route("bot", f"u{i}")
            router.log_request(RequestRecord(
                request_id=f"r{i}", model="bot", served=route.target, route=route, user=f"u{i}",
                prompt=[{"role": "user", "content": "upper: a"}], output="A",
                latency_ms=12.0, prompt_tokens=3, completion_tokens=1, finish_reason="stop"))
            router.record_feedback(FeedbackIn(request_id=f"r{i}", thumb="up" if i % 3 else "down"))
    finally:
        router.close()
    res = run(cli, ["experiments", "results", "bot", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert sum(v["requests"] for v in data["variants"]) == 40
    assert sum(v["thumbs"]["n"] for v in data["variants"]) == 40
    html = tmp_path / "page.html"
    res = run(cli, ["experiments", "results", "bot", "--html", str(html)])
    assert res.exit_code == 0 and "SRM: ok" in res.output and "support@1 (control)" in res.output
    decision = data["decisions"]["support@2"]
    assert f"decision support@2: {decision} (per user: " in res.output
    assert "<svg" in html.read_text()
    res = run(cli, ["experiments", "weights", "bot", "--variant", "support@1=9",
                    "--variant", "support@2=1"])
    assert res.exit_code == 0 and "(90%)" in res.output
    assert run(cli, ["experiments", "pause", "bot"]).output.strip() == "bot: paused"
    assert run(cli, ["experiments", "stop", "bot"]).output.strip() == "bot: stopped"
    res = run(cli, ["experiments", "list"])
    assert "bot" in res.output and "stopped" in res.output
    # the alias outlives the experiment: its pointer, rules, promotion and history
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"name": "vip", "when": {"users": ["vip"]},
                                  "target": "support"}]))
    res = run(cli, ["aliases", "rules", "bot", str(rules)])
    assert res.exit_code == 0 and 'rule vip: {"users": ["vip"]} -> support@2' in res.output
    res = run(cli, ["aliases", "set", "bot", "support@7"])
    assert res.exit_code == 1 and "support@7" in res.output
    res = run(cli, ["experiments", "create", "bot", "--name", "bot-prompt", "--variant",
                    "support@1=1", "--prompt-variant", "polite", "base", "1", "Be polite.",
                    "--auto-promote", "--start"])
    assert res.exit_code == 0, res.output
    assert "polite  weight 1 (50%)  (base with a system prompt)" in res.output
    res = run(cli, ["experiments", "promote", "bot-prompt"])
    assert res.exit_code == 1 and "has not decided" in res.output
    res = run(cli, ["experiments", "promote", "bot-prompt", "--variant", "polite"])
    assert res.output.strip() == "bot-prompt: stopped; alias bot -> base+prompt"
    res = run(cli, ["aliases", "rollback", "bot"])
    assert res.exit_code == 0 and res.output.startswith("bot -> support@1  (revision 4)")
    assert "rule vip" in res.output  # revision 2 had the rule
    rules.write_text("[]")
    assert run(cli, ["aliases", "rules", "bot", str(rules)]).exit_code == 0
    res = run(cli, ["aliases", "history", "bot"])
    kinds = [line.split()[3] for line in res.output.splitlines()[1:]]
    assert kinds == ["set", "experiment-start", "experiment-stop", "rules", "experiment-start",
                     "promote", "rollback", "rules"], res.output
    out = tmp_path / "kto.jsonl"
    res = run(cli, ["feedback", "export", "--adapter", "support", "--format", "kto",
                    "--out", str(out)])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 40
    reg.delete("support@2")  # no experiment, pointer or rule holds it any more
    with pytest.raises(AdapterInUse, match="alias bot serves it"):
        reg.delete("support@1")  # the control: the alias's pointer since the start
    reg.close()
