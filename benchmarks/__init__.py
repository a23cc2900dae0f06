"""The benchmark harness (issue 7): loraswap against vLLM's own LoRA server and naive
transformers+peft serving, all started here on the same base model and adapters.

Not shipped in the wheel; run from a checkout: `python -m benchmarks.run --quick`.
"""
