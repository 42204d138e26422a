"""`jaxalign grpo`: the GRPO trainer. Host work only: prompts, rollouts, rewards, cadence.

Each step: take the next prompts, roll out G trajectories each through the real sandbox, score
them, keep groups with signal (dynamic sampling, refilled from further prompts), recompute the
policy's own log-probs as `old_logp`, and run `mini_batches` jitted GRPO updates. The sampler then
gets the new weights. Checkpoints hold params, optimizer state and the prompt-order position;
rollout seeds derive from (seed, step), so a resumed run continues exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import jax
import numpy as np
from flax import nnx

from jaxalign import distributed, models, sharding, tokenizer
from jaxalign.config import ConfigError
from jaxalign.data.checks import DataError
from jaxalign.data.tasks import load_task
from jaxalign.eval.evaluate import evaluate
from jaxalign.rewards.verify import get_reward
from jaxalign.rl.advantages import group_advantages
from jaxalign.rl.batch import grpo_batch
from jaxalign.rl.config import GRPOConfig, StageConfig
from jaxalign.rl.placement import Placement
from jaxalign.rl.step import make_grpo_step
from jaxalign.rollout.engine import RolloutEngine
from jaxalign.rollout.prompts import problem_prompt
from jaxalign.sampling.sampler import Sampler, bucket
from jaxalign.tools.backends import BACKENDS as SANDBOX_BACKENDS
from jaxalign.train.logprobs import compile_logprob_pass
from jaxalign.train.loop import run_loop
from jaxalign.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from jaxalign.train.run import compile_step
from jaxalign.train.rundir import RunDir, check_run_dir
from jaxalign.train.state import init_train_state

log = logging.getLogger(__name__)


class GRPOTrainer:
    """Owns the policy, sampler, sandbox, optimizer state and run directory of one GRPO run."""

    def __init__(self, config: GRPOConfig):
        from jaxalign.tools import PythonSandbox

        self.config = c = config
        distributed.initialize(c.run.distributed)  # before any device is touched
        if c.prompts_per_step % jax.process_count():
            raise ConfigError(f"prompts_per_step={c.prompts_per_step} must split over {jax.process_count()} hosts")
        self.prompts_per_host = c.prompts_per_step // jax.process_count()
        # Inputs are checked before anything starts; the run directory is only taken by `run`.
        check_run_dir(c.run.run_dir)
        self.train_problems, self.eval_problems = load_task(c.task)
        if not self.train_problems:
            raise DataError(f"task ({c.task.source}): no training problems (task.num_train={c.task.num_train})")
        source = c.tokenizer or c.model
        self.tok = tokenizer.load(source)
        tokenizer.require_chat_template(self.tok, source)
        model = models.load(c.model, dtype="float32", compute_dtype=c.run.compute_dtype)
        tokenizer.check_vocab(self.tok, model.config.vocab_size, source, c.model)
        model = models.replace_config(model, remat=c.run.remat, attention=c.run.attention)
        self.graphdef, params = nnx.split(model)
        self.stages = c.schedule()
        total = sum(s.steps for s in self.stages) * c.mini_batches
        self.optimizer = make_optimizer(c.optim, total, mask=decay_mask(params))
        self.schedule = learning_rate_schedule(c.optim, total)
        self.placement = Placement(c.run.mesh, c.rollout_mesh, c.reference_mesh)
        log.info("GRPO placement: %s", self.placement.describe())
        self.mesh = self.placement.train_mesh
        self.step_fn, self.state = compile_step(make_grpo_step(self.graphdef, self.optimizer, c.loss, self.schedule),
                                                init_train_state(params, self.optimizer), self.mesh,
                                                sharding.TRAIN_RULES, batch_axis=0 if c.micro_batches == 1 else 1)
        # Old and reference log-probs: compiled under their meshes, at the train step's micro-batch
        # (rows per update call), so their activations follow it rather than the whole batch.
        micro = c.prompts_per_step * c.group_size // (c.mini_batches * c.micro_batches)

        def logprob_pass(mesh):
            shards = sharding.batch_shards(mesh, sharding.TRAIN_RULES)
            return compile_logprob_pass(self.graphdef, params, mesh, sharding.TRAIN_RULES,
                                        micro_batch=micro if micro % shards == 0 else None)

        self.logprob_fn = logprob_pass(self.mesh)
        self.ref_params = self.placement.to_reference(params) if c.loss.kl_coef else None
        self.ref_logprob_fn = logprob_pass(self.placement.reference_mesh)
        # The sampler reads weights in the rollout layout on this host's rollout mesh.
        rollout_model = models.replace_config(nnx.merge(self.graphdef, self.placement.to_rollout(params)),
                                              kv_cache_dtype=c.rollout.kv_cache_dtype)
        self.sampler = Sampler(rollout_model, self.tok,
                               mesh=self.placement.rollout_mesh, rules=sharding.ROLLOUT_RULES)
        # one session (worker) per live trajectory: keep a batch's worth warm between steps
        self.sandbox = PythonSandbox(timeout_s=c.sandbox_timeout_s, workers=c.sandbox_workers,
                                     max_idle_workers=max(2 * c.sandbox_workers, c.prompts_per_step * c.group_size,
                                                          c.eval.batch_size))
        self.reward_fn = get_reward(c.reward)
        self.model_reward = None
        if c.model_reward.kind != "none":
            from jaxalign.rl.model_reward import ModelReward

            self.model_reward = ModelReward(c.model_reward, c.model, self.tok)
        self.pool = list(range(len(self.train_problems)))
        # Which prompts a saved prompt-order position refers to (a problems file can change under its path).
        self.task_digest = hashlib.sha256(json.dumps([[p.id, p.question, p.answer] for p in self.train_problems])
                                          .encode()).hexdigest()
        self.position = {"epoch": 0, "cursor": 0}
        self.solved_all: dict[str, bool] = {}
        self.step = 0

    # ------------------------------------------------------------------ prompts and rollouts
    def _next_problems(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            perm = np.random.default_rng([self.config.run.seed, self.position["epoch"]]).permutation(len(self.pool))
            while len(out) < n and self.position["cursor"] < len(perm):
                out.append(self.pool[perm[self.position["cursor"]]])
                self.position["cursor"] += 1
            if self.position["cursor"] >= len(perm):
                self.position = {"epoch": self.position["epoch"] + 1, "cursor": 0}
        return out

    def _engine(self, stage) -> RolloutEngine:
        rollout = self.config.rollout
        cfg = type(rollout)(**{**rollout.__dict__, "max_response_tokens": stage.max_response_tokens,
                               "max_tool_calls": stage.max_tool_calls})
        return RolloutEngine(self.sampler, self.tok, self.sandbox, cfg)

    def _rollout(self, engine: RolloutEngine, stage_seed: int) -> tuple[list, list, list, list, dict]:
        """Rolls out groups until enough carry signal (dynamic sampling): kept trajectories, advantages,
        rewards, all groups' rewards, counts."""
        c, g = self.config, self.config.group_size
        kept_t, kept_a, kept_r, all_r, seen_t, groups_seen = [], [], [], [], [], 0
        model_sums: list[np.ndarray] = []
        rounds = 1 + (c.max_refill_rounds if c.dynamic_sampling else 0)
        for rnd in range(rounds):
            # Every host draws the same prompts from the shared order and rolls out its own share
            # (its own sampler and sandbox pool), so the order and `solved_all` stay identical.
            needs = [int(n[0]) for n in distributed.gather_lists([max(self.prompts_per_host - len(kept_t) // g, 0)])]
            if sum(needs) == 0:
                break
            drawn = self._next_problems(sum(needs))
            start = sum(needs[:jax.process_index()])
            idx = drawn[start:start + needs[jax.process_index()]]
            prompts = [problem_prompt(self.train_problems[i].question, self.tok, c.system_prompt)
                       for i in idx for _ in range(g)]
            seed = (stage_seed * 1000 + rnd) * jax.process_count() + jax.process_index()
            trajs = engine.run(prompts, seed=seed) if prompts else []
            seen_t += trajs
            rewards = np.array([self.reward_fn(t.final_text or t.text, self.train_problems[i].answer)
                                for t, i in zip(trajs, [i for i in idx for _ in range(g)])], np.float32)
            adv = np.asarray(group_advantages(rewards, g, std=c.advantage_std)) if idx else rewards
            if self.model_reward is not None and idx:  # per-token advantages [n][T_i] from the reward LM
                adv, sums = self.model_reward.advantages(trajs, rewards, g, c.advantage_std, prompts=[
                    self.train_problems[i].question for i in idx for _ in range(g)])
                model_sums.append(sums)
            solved = [float(rewards[k * g:(k + 1) * g].min() == 1.0) for k in range(len(idx))]
            for i, flag in zip(drawn, (f for host in distributed.gather_lists(solved) for f in host)):
                self.solved_all[self.train_problems[i].id] = bool(flag)
            for k in range(len(idx)):
                r = rewards[k * g:(k + 1) * g]
                groups_seen += 1
                all_r.append(r)
                group_adv = adv[k * g:(k + 1) * g]
                if c.dynamic_sampling and not any(np.any(a != 0) for a in group_adv):  # no signal in the group
                    continue
                kept_t += trajs[k * g:(k + 1) * g]
                kept_a += list(group_adv) if self.model_reward is not None else group_adv.tolist()
                kept_r += r.tolist()
        info = {"groups_seen": groups_seen, "groups_kept": len(kept_t) // g}
        if model_sums:
            info["model_reward"] = float(np.concatenate(model_sums).mean())
        if seen_t:  # rollout statistics over every trajectory sampled this step, kept or not
            info.update({
                "tool_calls_per_traj": float(np.mean([t.tool_calls for t in seen_t])),
                "tool_errors_per_traj": float(np.mean([t.tool_errors for t in seen_t])),
                "tool_timeouts_per_traj": float(np.mean([t.tool_timeouts for t in seen_t])),
                "response_tokens": float(np.mean([len(t.tokens) for t in seen_t])),
                "token_budget_frac": float(np.mean([t.finish_reason == "token_budget" for t in seen_t])),
            })
        return kept_t, kept_a, kept_r, all_r, info

    # ------------------------------------------------------------------ one step: rollout, then update
    def rollout_phase(self, stage, engine: RolloutEngine, step: int) -> tuple[tuple, dict]:
        """Step `step`'s rollouts: ((kept trajectories, advantages, rewards), host metrics)."""
        t0 = time.perf_counter()
        engine.timings = dict.fromkeys(engine.timings, 0.0)
        trajs, advs, kept_rewards, all_rewards, info = self._rollout(engine, self.config.run.seed * 100003 + step - 1)
        rewards = np.concatenate(all_rewards) if all_rewards else np.zeros(0)
        # Counts over all hosts (each host saw only its own groups).
        tot = distributed.sum_over_processes({"n": rewards.size, "sum": float(rewards.sum()),
                                              "correct": float((rewards == 1).sum()), "kept": len(trajs),
                                              "groups_seen": info["groups_seen"], "groups_kept": info["groups_kept"]})
        info.update(groups_seen=int(tot["groups_seen"]), groups_kept=int(tot["groups_kept"]))
        metrics = {"reward": tot["sum"] / tot["n"] if tot["n"] else 0.0,
                   "accuracy": tot["correct"] / tot["n"] if tot["n"] else 0.0, **info}
        metrics["updated"] = float(tot["kept"] > 0)
        if not tot["kept"]:  # the step still counts (its prompts and rollout budget are spent), but say so
            log.warning("GRPO step %d: all %d groups had equal rewards (no learning signal) after %d refill rounds: "
                        "no update this step", step, info["groups_seen"],
                        self.config.max_refill_rounds if self.config.dynamic_sampling else 0)
        metrics.update({
            "time_generate_s": engine.timings["generate_s"], "time_tools_s": engine.timings["tool_s"],
            "time_rollout_s": time.perf_counter() - t0,
            "sandbox_failures": float(self.sandbox.stats()["sandbox_failures"]),
            # 0 bubblewrap, 1 namespaces, 2 rlimit-only: a run that lost its isolation shows in the curves
            "sandbox_backend": float(SANDBOX_BACKENDS.index(self.sandbox.backend)),
        })
        self._last_trajs = list(zip(trajs, advs, kept_rewards))
        return (trajs, advs, bool(tot["kept"])), metrics

    def update_phase(self, state, rollout: tuple) -> tuple:
        """The loop's step: old log-probs, the mini-batch updates, new weights to the sampler."""
        t0 = time.perf_counter()
        trajs, advs, any_kept = rollout
        self.state = state
        metrics = {}
        if any_kept:
            metrics = self._update(trajs, advs)
            self.sampler.update(self.placement.to_rollout(self.state.params))
        metrics["time_train_s"] = time.perf_counter() - t0
        return self.state, metrics

    def _update(self, trajs, advs) -> dict:
        c = self.config
        rows = self.prompts_per_host * c.group_size  # this host's rows of the global batch
        # One row length on every host (the global batch is one array).
        t_len = bucket(max((len(t.prompt_tokens) + len(t.tokens) for t in trajs), default=1), minimum=64)
        t_len = int(max(n[0] for n in distributed.gather_lists([t_len])))
        # advs: a float per trajectory (outcome) or one value per response token (model rewards)
        batch, sampler_logp = grpo_batch(trajs, advs, rows=rows, pad_id=self.tok.pad_token_id or 0, min_len=t_len)
        inputs = batch.inputs()
        old_logp = self.placement.logprobs(self.logprob_fn, self.state.params, inputs, self.mesh)
        ref_logp = None
        if self.ref_params is not None:
            ref_logp = self.placement.logprobs(self.ref_logprob_fn, self.ref_params, inputs,
                                               self.placement.reference_mesh)
        mask = batch.target_mask.astype(bool)
        mismatch = float(np.abs(sampler_logp - old_logp)[mask].mean()) if mask.any() else 0.0
        batch = batch.replace(old_logp=old_logp, ref_logp=ref_logp)
        mb = rows // c.mini_batches
        real = int(max(n[0] for n in distributed.gather_lists([len(trajs)])))  # the same decision on every host
        metrics: dict[str, list[float]] = {}
        for m in range(c.mini_batches):
            if m * mb >= real:  # all-padding mini-batch: skip (AdamW momentum would still move weights)
                break
            mini = batch.rows(slice(m * mb, (m + 1) * mb))
            if c.micro_batches > 1:  # [M, b, ...]: accumulated inside the step
                mini = mini.micro_batches(c.micro_batches)
            self.state, out = self.step_fn(self.state, mini)
            for k, v in jax.device_get(out).items():
                metrics.setdefault(k, []).append(float(v))
        result = {k: float(np.mean(v)) for k, v in metrics.items()}
        result["logp_mismatch"] = mismatch
        return result

    # ------------------------------------------------------------------ the run
    def run(self, *, resume: bool = True, allow_config_change: bool = False) -> dict:
        """Trains (or resumes) through every stage, holding the run directory (`RunDir`) meanwhile."""
        c = self.config
        with RunDir(c.run.run_dir, c, resume=resume, allow_config_change=allow_config_change,
                    metadata={"sandbox_backend": self.sandbox.backend}):
            def after_step(step: int, metrics: dict) -> dict:
                self.step = step
                out = {}
                if c.eval_every and step % c.eval_every == 0:
                    out = {f"eval/{k}": v for k, v in self.evaluate(self._stage_of(step)[1]).items()
                           if isinstance(v, float)}
                if c.save_trajectories_every and step % c.save_trajectories_every == 0:
                    self._save_trajectories()
                return out

            result = run_loop(c.run, name="grpo", total=sum(s.steps for s in self.stages), state=self.state,
                              step_fn=self.update_phase, source=_Rollouts(self, allow_config_change), resume=resume,
                              extra={"task_sha256": self.task_digest}, after_step=after_step, read_every_step=True,
                              show=("reward",), tokenizer=self.tok,
                              export=lambda state: nnx.merge(self.graphdef, distributed.to_host(state.params)))
        self.state, self.step = result.state, result.step
        out = {"steps": self.step, "history": result.history}
        if result.hf_dir:
            out["hf_dir"] = result.hf_dir
        return out

    def _stage_of(self, step: int) -> tuple[int, StageConfig]:
        """(index, stage) of the 1-based step `step`."""
        done = 0
        for si, stage in enumerate(self.stages):
            if step <= done + stage.steps:
                return si, stage
            done += stage.steps
        return len(self.stages) - 1, self.stages[-1]

    def evaluate(self, stage=None, problems=None) -> dict:
        """Held-out evaluation with the current weights, sampled at `eval.temperature` (0: greedy; default:
        the rollout temperature of `stage`)."""
        stage = stage or self.stages[-1]
        return evaluate(self._engine(stage), problems or self.eval_problems, self.config.eval,
                        system_prompt=self.config.system_prompt)

    def _save_trajectories(self, limit: int = 32) -> None:
        if not distributed.is_main():  # process 0's own rollouts are the sample
            return
        path = os.path.join(self.config.run.run_dir, "trajectories", f"step_{self.step:06d}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            for t, a, r in self._last_trajs[:limit]:
                row = t.to_dict()
                a = float(np.mean(a)) if isinstance(a, np.ndarray) else a  # token-level: the mean
                row.update(step=self.step, advantage=a, reward=r, prompt=self.tok.decode(t.prompt_tokens),
                           token_text=tokenizer.token_pieces(self.tok, t.tokens))
                f.write(json.dumps(row) + "\n")

    def policy(self):
        """The current policy as a Transformer (host copy)."""
        return nnx.merge(self.graphdef, distributed.to_host(self.state.params))

    def close(self) -> None:
        self.sandbox.close()


class _Rollouts:
    """The loop's batch source of a GRPO run: each step's rollout phase, in a resumable prompt order.

    Its position is the prompt order (epoch, cursor over the prompt pool), the pool itself (stages
    may drop always-solved prompts) and which prompts were solved in every sample.
    """

    def __init__(self, trainer: GRPOTrainer, allow_config_change: bool):
        self.t, self.allow_change = trainer, allow_config_change
        self.stage_index, self.engine = None, None

    def next_batch(self, step: int):
        t = self.t
        si, stage = t._stage_of(step)
        if si != self.stage_index:
            first = step == 1 + sum(s.steps for s in t.stages[:si])
            if stage.drop_solved and si > 0 and first:
                before = len(t.pool)
                t.pool = [i for i in t.pool if not t.solved_all.get(t.train_problems[i].id, False)]
                t.pool = t.pool or list(range(len(t.train_problems)))
                t.position = {"epoch": 0, "cursor": 0}
                log.info("stage %d: dropped %d always-solved prompts", si, before - len(t.pool))
            self.stage_index, self.engine = si, t._engine(stage)
        batch, metrics = t.rollout_phase(stage, self.engine, step)
        metrics["stage"] = si
        return batch, metrics

    def position(self) -> dict:
        return {"position": self.t.position, "solved_all": self.t.solved_all, "pool": self.t.pool}

    def restore(self, saved: dict, step: int) -> None:
        t, c = self.t, self.t.config
        t.step, t.position, t.solved_all, t.pool = step, saved["position"], saved["solved_all"], saved["pool"]
        if saved.get("task_sha256", t.task_digest) != t.task_digest:
            if not self.allow_change:
                raise DataError(f"task ({c.task.source}): the training problems changed since step {step}, "
                                "so resuming would not be exact; pass --allow-config-change to resume anyway "
                                "(the prompt order restarts), or --no-resume to start over")
            log.warning("the training problems changed since step %d: the prompt order restarts", step)
            t.pool, t.position = list(range(len(t.train_problems))), {"epoch": 0, "cursor": 0}
        t.sampler.update(t.placement.to_rollout(t.state.params))
        log.info("resumed GRPO at step %d", step)
