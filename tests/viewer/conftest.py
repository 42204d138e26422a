"""A small real GRPO run directory (tiny random policy, real sandbox, real trainer) and a headless Chromium."""

import shutil

import pytest

from jaxalign import data, models, sharding, tokenizer
from jaxalign.data.tasks import TaskConfig
from jaxalign.models import ModelConfig
from jaxalign.rewards import register_reward
from jaxalign.rl.config import GRPOConfig
from jaxalign.rl.trainer import GRPOTrainer
from jaxalign.rollout import RolloutConfig
from jaxalign.sampling import SamplingConfig
from jaxalign.train import OptimConfig
from tests.configs import build

STEPS, PROMPTS, GROUP = 2, 2, 4
"""Every trajectory of every step is saved (no dynamic sampling): STEPS * PROMPTS * GROUP rows."""
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

# A toy reward that splits a random policy's samples into 0 and 1 (the table's reward filter needs both).
register_reward("viewer_even_length", lambda text, answer: float(len(text) % 2 == 0))


@pytest.fixture(scope="session")
def grpo_run(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("viewer_run")
    texts = [f"Say {i}. {i} {i + 1} ok yes no" for i in range(10)] * 20
    tok = tokenizer.train_sentencepiece(texts, str(d / "tok"), vocab_size=300)
    model = models.init_model(ModelConfig.tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_layers=2, num_heads=2, num_kv_heads=1), seed=0)
    models.save_hf(model, d / "policy", tokenizer=tok)
    problems = [data.MathProblem(id=f"p{i}", question=f"Say {i}.", answer="7", source="toy") for i in range(12)]
    data.write_jsonl(d / "problems.jsonl", problems)
    config = build(
        GRPOConfig,
        model=str(d / "policy"), task=TaskConfig(source="jsonl", path=str(d / "problems.jsonl"), num_train=8,
                                                 num_eval=4, holdout_fraction=0.25),
        prompts_per_step=PROMPTS, group_size=GROUP, mini_batches=1, steps=STEPS, reward="viewer_even_length",
        system_prompt="",
        rollout=RolloutConfig(max_response_tokens=8, max_tool_calls=0, steps_per_call=8,
                              sampling=SamplingConfig(temperature=1.0)),
        optim=OptimConfig(learning_rate=1e-3, warmup_fraction=0.0, schedule="constant", weight_decay=0.0),
        run_dir=str(d / "run"), save_every=1000, save_trajectories_every=1, dynamic_sampling=False,
        max_refill_rounds=0, sandbox_workers=1, mesh=sharding.MeshConfig(data=1, fsdp=1, tensor=1))
    trainer = GRPOTrainer(config)
    try:
        trainer.run(resume=False)
    finally:
        trainer.close()
    return config.run.run_dir


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by selenium (Debian's chromium + chromium-driver, installed by `make venv`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium or chromedriver missing: apt-get install chromium chromium-driver (make venv, as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
