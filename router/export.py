"""Feedback to training data, in TRL's conversational formats (what `loraswap train` reads):

- sft: {"messages": [...prompt..., {"role": "assistant", "content": accepted}]}: responses
  with a thumb up or a high score, and corrections (the corrected answer);
- dpo: {"prompt": [...], "chosen": [assistant], "rejected": [assistant]}: pairs on the same
  prompt: explicit preferences, correction vs the original answer, and positive vs
  negative responses to an identical prompt;
- kto: {"prompt": [...], "completion": [assistant], "label": true|false}: each judged
  response (and each correction as true, its original as false).

Conversational rather than plain strings so TRL applies the same chat template the server
uses, and in the shared chat schema (common/chat.py) so training accepts every row. Only
chat requests logged with retention on carry the prompt and output needed.
"Accepted" scores are in the top quarter of the declared range, "rejected" in the bottom
quarter (1..5: >= 4 and <= 2); the latest thumb or score on a request decides.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import cycle

from pydantic import ValidationError
from sqlite_utils import Database

from common.chat import ChatMessage

__all__ = ["FORMATS", "ExportResult", "export_feedback"]

FORMATS = ("sft", "dpo", "kto")


@dataclass
class ExportResult:
    format: str
    rows: list[dict] = field(default_factory=list)
    feedback: int = 0  # feedback records in scope
    without_retention: int = 0  # judged requests whose prompt/output were not kept
    skipped: dict[str, int] = field(default_factory=dict)

    def explain_empty(self) -> str:
        if self.feedback == 0:
            return "nothing to export: no feedback on the selected requests"
        if self.without_retention:
            return (f"nothing to export: {self.feedback} feedback records, but "
                    f"{self.without_retention} of their requests were logged without retention "
                    "(prompts and outputs not kept); turn retention on for the experiment")
        reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none usable"
        return (f"nothing to export in {self.format} format from {self.feedback} feedback "
                f"records ({reasons})")


def _messages(prompt_json: str) -> list[dict] | None:
    """The logged prompt as training turns (the shared chat schema, so training accepts
    them); None for a text-completion prompt or one the schema refuses: not conversational."""
    prompt = json.loads(prompt_json)
    if not isinstance(prompt, list):
        return None
    try:
        return [ChatMessage.model_validate(m).turn() for m in prompt]
    except ValidationError:
        return None


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def export_feedback(
    db: Database, fmt: str, *, experiment_id: int | None = None, adapter: str | None = None,
    default_score_range: tuple[float, float] = (1.0, 5.0),
) -> ExportResult:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    where, params = "1", []
    if experiment_id is not None:
        where, params = "r.experiment_id = ?", [experiment_id]
    elif adapter is not None:
        if "@" in adapter:
            where, params = "r.model_served = ?", [adapter]
        else:
            where, params = "(r.model_served = ? OR r.model_served LIKE ?)", [adapter, adapter + "@%"]
    rows = db.execute(
        "SELECT f.id, f.kind, f.value, f.correction, f.other_request_id, r.id, r.prompt, "
        "r.output, e.score_min, e.score_max FROM feedback f JOIN requests r ON r.id = f.request_id "
        f"LEFT JOIN experiments e ON e.id = r.experiment_id WHERE {where} ORDER BY f.id",
        params,
    ).fetchall()
    result = ExportResult(fmt, feedback=len(rows))
    skipped: dict[str, int] = defaultdict(int)
    judged: dict[str, bool] = {}  # request id -> positive?; latest thumb/score wins
    corrections: dict[str, str] = {}
    preferences: list[tuple[str, str]] = []
    prompts: dict[str, tuple[list[dict], str]] = {}
    no_retention: set[str] = set()
    for _fid, kind, value, correction, other, rid, prompt, output, smin, smax in rows:
        if prompt is None or output is None:
            no_retention.add(rid)
            continue
        messages = _messages(prompt)
        if messages is None:
            skipped["non-chat prompts"] += 1
            continue
        prompts[rid] = (messages, output)
        if kind == "thumb":
            judged[rid] = value >= 0.5
        elif kind == "score":
            low, high = (smin, smax) if smin is not None else default_score_range
            quarter = (high - low) / 4
            if value >= high - quarter:
                judged[rid] = True
            elif value <= low + quarter:
                judged[rid] = False
            else:
                judged.pop(rid, None)
                skipped["middling scores"] += 1
        elif kind == "correction":
            corrections[rid] = correction
        elif kind == "preference":
            preferences.append((rid, other))
        else:
            skipped[f"{kind} feedback"] += 1
    result.without_retention = len(no_retention)
    if fmt == "sft":
        _sft(result, prompts, judged, corrections)
    elif fmt == "kto":
        _kto(result, prompts, judged, corrections)
    else:
        _dpo(result, db, prompts, judged, corrections, preferences, skipped)
    result.skipped = dict(skipped)
    return result


def _sft(result: ExportResult, prompts, judged, corrections) -> None:
    seen: set[str] = set()
    for rid, (messages, output) in prompts.items():
        texts = [output] if judged.get(rid) else []
        if rid in corrections:
            texts.append(corrections[rid])
        for text in texts:
            row = {"messages": messages + _assistant(text)}
            key = json.dumps(row, sort_keys=True)
            if key not in seen:
                seen.add(key)
                result.rows.append(row)


def _kto(result: ExportResult, prompts, judged, corrections) -> None:
    for rid, (messages, output) in prompts.items():
        if rid in judged:
            result.rows.append({"prompt": messages, "completion": _assistant(output),
                                "label": judged[rid]})
        if rid in corrections:
            if rid not in judged and corrections[rid] != output:
                result.rows.append({"prompt": messages, "completion": _assistant(output),
                                    "label": False})
            result.rows.append({"prompt": messages, "completion": _assistant(corrections[rid]),
                                "label": True})


def _dpo(result, db, prompts, judged, corrections, preferences, skipped) -> None:
    seen: set[str] = set()

    def add(messages: list[dict], chosen: str, rejected: str) -> None:
        if chosen == rejected:
            skipped["identical chosen and rejected"] += 1
            return
        row = {"prompt": messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            result.rows.append(row)

    for chosen_id, rejected_id in preferences:
        other = db.execute("SELECT prompt, output FROM requests WHERE id = ?",
                           [rejected_id]).fetchone()
        if other is None or other[0] is None or other[1] is None:
            skipped["preferences without retention"] += 1
            continue
        messages, chosen = prompts[chosen_id]
        if _messages(other[0]) != messages:
            skipped["preferences on different prompts"] += 1
            continue
        add(messages, chosen, other[1])
    for rid, text in corrections.items():
        messages, output = prompts[rid]
        if not judged.get(rid):
            add(messages, text, output)
    by_prompt: dict[str, dict[bool, list[str]]] = defaultdict(lambda: {True: [], False: []})
    for rid, positive in judged.items():
        messages, output = prompts[rid]
        by_prompt[json.dumps(messages, sort_keys=True)][positive].append(output)
    for key, groups in by_prompt.items():
        if groups[True] and groups[False]:
            for chosen, rejected in zip(cycle(groups[True]), groups[False], strict=False):
                add(json.loads(key), chosen, rejected)
