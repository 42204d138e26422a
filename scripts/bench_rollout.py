"""Multi-turn rollout: 64 tool-using trajectories from SmolLM2-135M-Instruct with real sandboxed code.

A few-shot markdown prompt makes the model write ```python blocks that run in the sandbox. The same
batch runs twice in one process: with tool calls overlapping other rows' generation (ours) and
with generation paused until every pending call returns (baseline). Reports wall time, time in
generation, time inside tool calls, and how much generation ran while tools were busy.
Ends with one line: RESULT {json}.
"""

from __future__ import annotations

import argparse
import json
import time

SHOTS = ("Answer with Python. Example:\nQuestion: What is 12*13?\n```python\nprint(12*13)\n```\n"
         "```output\n156\n```\nThe answer is \\boxed{156}.\n\nQuestion: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--max-response-tokens", type=int, default=160)
    args = parser.parse_args()

    from jaxalign import models, tokenizer
    from jaxalign.rollout import RolloutConfig, RolloutEngine
    from jaxalign.sampling import Sampler, SamplingConfig
    from jaxalign.tools import PythonSandbox

    path = models.resolve("smollm2-135m-instruct")
    model, tok = models.load(path), tokenizer.load(path)
    sampler = Sampler(model, tok)
    prompts = []
    for i in range(args.trajectories):
        a, b = 37 + 13 * i, 11 + 7 * i
        q = f"What is {a}*{b} + {i}?"
        prompts.append(tok.apply_chat_template([{"role": "user", "content": SHOTS + q}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False))
    rows = {}
    with PythonSandbox(timeout_s=5.0, workers=4) as sandbox:
        for label, overlap in (("warmup", True), ("overlap", True), ("sequential", False)):
            cfg = RolloutConfig(max_response_tokens=args.max_response_tokens, max_tool_calls=3, steps_per_call=16,
                                overlap_tools=overlap, tool_workers=8, sampling=SamplingConfig(temperature=0.8))
            engine = RolloutEngine(sampler, tok, sandbox, cfg)
            t0 = time.perf_counter()
            trajs = engine.run(prompts, seed=1)
            wall = time.perf_counter() - t0
            calls = sum(t.tool_calls for t in trajs)
            tokens = sum(len(t.tokens) for t in trajs)
            rows[label] = dict(wall_s=wall, calls=calls, tokens=tokens, **engine.timings)
            if label != "warmup":
                tm = engine.timings
                print(f"{label:10s} wall {wall:6.1f}s  generation {tm['generate_s']:6.1f}s  tool time "
                      f"{tm['tool_s']:5.1f}s (in sandbox, summed over calls)  "
                      f"waiting for tools {tm['tool_wall_s']:5.1f}s"
                      f"  generation overlapping tools {tm['overlap_s']:5.1f}s  | {calls} tool calls, "
                      f"{sum(t.tool_errors for t in trajs)} errors, {tokens} tokens")
    ours, base = rows["overlap"], rows["sequential"]
    result = {"name": f"rollout_{args.trajectories}_trajectories_wall", "ours": round(ours["wall_s"], 2),
              "baseline": round(base["wall_s"], 2), "unit": "s", "ratio": round(base["wall_s"] / ours["wall_s"], 3),
              "generate_s": round(ours["generate_s"], 2), "tool_s": round(ours["tool_s"], 2),
              "overlap_s": round(ours["overlap_s"], 2), "tool_wait_s": round(ours["tool_wall_s"], 2),
              "tool_calls": ours["calls"], "baseline_tool_calls": base["calls"]}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
