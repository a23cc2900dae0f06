"""`loraswap serve` refuses engine settings it cannot pass before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli


@pytest.mark.parametrize(("args", "said"), [
    (["--engine-arg", "kv_cache_dtyp=fp8"], "kv_cache_dtyp: not a vLLM engine argument"),
    (["--engine-arg", "max_loras=9"], "max_loras: set by loraswap; use its setting"),
    (["--engine-arg", "novalue"], "expected KEY=VALUE"),
    (["--engine-args", "[1]"], "engine_args must be a JSON object"),
    (["--tool-call-parser", "nosuch"], "unknown tool_call_parser 'nosuch'"),
])
def test_bad_engine_flags_fail_before_the_engine_starts(tmp_path: Path, args, said) -> None:
    out = CliRunner().invoke(cli, ["--home", str(tmp_path), "serve", "--no-demo", *args])
    assert out.exit_code != 0 and said in out.output, out.output
    assert not (tmp_path / "loraswap.db").exists()  # nothing was opened
