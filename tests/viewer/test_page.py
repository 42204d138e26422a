"""The page in headless Chromium: loads without console errors, table rows, turns, screenshot, escaping."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from jaxalign.viewer import write_report, write_reward_maps
from tests.viewer.conftest import GROUP, PROMPTS, STEPS

PWN = "<script>window.__pwned=1</script>"
IMG = "<img src=x onerror=\"window.__pwned2=1\">"


def open_page(driver, path: str) -> None:
    driver.get_log("browser")  # drop entries of earlier pages
    driver.get("file://" + os.path.abspath(path))
    assert driver.execute_script("return document.body.dataset.ready") == "1"


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def rows(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#traj-table tbody tr")


@pytest.fixture(scope="module")
def page(grpo_run, tmp_path_factory) -> str:
    return write_report(grpo_run, tmp_path_factory.mktemp("page") / "report.html")


def test_console_errors_are_seen(browser, page):
    """The console check below can fail: an error logged by the page is reported."""
    open_page(browser, page)
    browser.execute_script("console.error('probe')")
    assert any("probe" in e["message"] for e in console_errors(browser))


def test_page_loads_and_shows_the_run(browser, page, tmp_path):
    open_page(browser, page)
    assert console_errors(browser) == []
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".metric-chart h3")]
    for want in ("Reward and accuracy", "Tool calls per trajectory", "Tool errors and timeouts per trajectory",
                 "Response length (tokens)", "Clip fraction", "KL", "Time per step (s): generation, tools, training"):
        assert want in titles
    assert len(browser.find_elements(By.CSS_SELECTOR, ".metric-chart polyline")) >= len(titles)
    png = browser.get_screenshot_as_png()
    (tmp_path / "metrics.png").write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    assert pixels.std() > 20, "blank screenshot"
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50  # text, curves, colours: not one flat fill


def test_table_rows_filters_sorting_and_turns(browser, page, grpo_run):
    saved = [json.loads(line) for f in sorted(os.listdir(os.path.join(grpo_run, "trajectories")))
             for line in open(os.path.join(grpo_run, "trajectories", f))]
    open_page(browser, page)
    browser.find_element(By.ID, "tab-trajectories").click()
    assert len(rows(browser)) == STEPS * PROMPTS * GROUP == len(saved)

    browser.find_element(By.ID, "f-rmin").send_keys("1")
    rewarded = sum(r["reward"] >= 1 for r in saved)
    assert 0 < rewarded < len(saved) and len(rows(browser)) == rewarded
    browser.find_element(By.ID, "f-rmin").clear()
    Select(browser.find_element(By.ID, "f-step")).select_by_value("2")
    assert len(rows(browser)) == sum(r["step"] == 2 for r in saved)
    Select(browser.find_element(By.ID, "f-step")).select_by_value("")
    Select(browser.find_element(By.ID, "f-error")).select_by_value("failed")
    assert len(rows(browser)) == sum(r["tool_errors"] + r["tool_timeouts"] > 0 for r in saved)
    Select(browser.find_element(By.ID, "f-error")).select_by_value("any")
    browser.find_element(By.ID, "f-cmin").send_keys("1")
    assert len(rows(browser)) == sum(r["tool_calls"] >= 1 for r in saved)
    browser.find_element(By.ID, "f-cmin").clear()
    assert len(rows(browser)) == len(saved)

    tokens_th = browser.find_element(By.CSS_SELECTOR, "th[data-key=num_tokens]")
    tokens_th.click()
    tokens_th.click()  # descending
    shown = [int(r.find_elements(By.TAG_NAME, "td")[8].text) for r in rows(browser)]
    assert shown == sorted((len(r["tokens"]) for r in saved), reverse=True)

    row = rows(browser)[0]
    want = saved[int(row.get_attribute("data-idx"))]
    row.click()
    assert "selected" in row.get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#turns .turn")) == len(want["turns"])
    assert browser.find_element(By.CSS_SELECTOR, "#turns .turn .head").text.startswith("Assistant")
    toks = browser.find_elements(By.CSS_SELECTOR, "#token-view .tok")
    assert len(toks) == len(want["tokens"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#token-view .tok.m1")) == sum(want["loss_mask"])
    assert console_errors(browser) == []


def evil_run(grpo_run, root) -> str:
    """The real run plus one trajectory (derived from a saved one) full of markup, and a reward map."""
    run = shutil.copytree(grpo_run, root / "evil_run", ignore=shutil.ignore_patterns("checkpoints", "tb", "hf"))
    first = os.path.join(run, "trajectories", "step_000001.jsonl")
    row = json.loads(open(first).readline())
    policy = f"Let me check {PWN}.\n```python\nprint('{IMG}')\n```"
    turns = [{"kind": "policy", "text": policy, "tokens": 3},
             {"kind": "tool", "code": f"print('{IMG}')", "output": IMG, "ok": False, "timed_out": False,
              "error": f"NameError {PWN}", "tokens": 2},
             {"kind": "tool", "code": "while True: pass", "output": "", "ok": False, "timed_out": True,
              "error": "timeout", "tokens": 1},
             {"kind": "policy", "text": f"</script>{PWN}{IMG}", "tokens": 2}]
    row.update(step=99, prompt=PWN + IMG, text=policy, turns=turns, tokens=list(range(8)),
               loss_mask=[1, 1, 1, 0, 0, 0, 1, 1], logprobs=[-0.5] * 8,
               token_text=[PWN, IMG, "</script>", "a", "b", "c", "<b>", "&amp;"],
               tool_calls=2, tool_errors=1, tool_timeouts=1)
    with open(os.path.join(run, "trajectories", "step_000099.jsonl"), "w") as f:
        f.write(json.dumps(row) + "\n")
    write_reward_maps(os.path.join(run, "reward_maps", "pairs.jsonl"), [{
        "id": PWN, "prompt": IMG,
        "chosen": {"sentences": [f"Good {PWN} ", "fine."], "sentence_rewards": [0.9, 0.2],
                   "tokens": [IMG, " ok", "."], "token_rewards": [0.5, -0.5, None]},
        "rejected": {"text": "Bad. Worse.", "sentences": ["Bad.", "Worse."], "sentence_rewards": [-0.3, -0.9]}}])
    return run


def test_trajectory_text_cannot_run_script(browser, grpo_run, tmp_path):
    run = evil_run(grpo_run, tmp_path)
    path = write_report(run)
    html = open(path).read()
    assert PWN not in html and "<img" not in html and "</script><script>window" not in html
    open_page(browser, path)
    browser.find_element(By.ID, "tab-trajectories").click()
    assert len(rows(browser)) == STEPS * PROMPTS * GROUP + 1
    Select(browser.find_element(By.ID, "f-error")).select_by_value("failed")
    assert len(rows(browser)) == 1
    rows(browser)[0].click()
    tools = browser.find_elements(By.CSS_SELECTOR, "#turns .turn.tool")
    assert [t.get_attribute("class").split()[-1] for t in tools] == ["error", "timeout"]
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#turns .badge")] == ["error", "timeout"]
    detail = browser.find_element(By.ID, "traj-detail")
    assert PWN in detail.get_attribute("textContent") and IMG in detail.get_attribute("textContent")
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#turns pre.code")][:1] == [f"print('{IMG}')"]
    assert browser.find_elements(By.CSS_SELECTOR, "#token-view .tok")[0].text == PWN

    browser.find_element(By.ID, "tab-rewardmaps").click()
    sides = browser.find_elements(By.CSS_SELECTOR, ".rm-side")
    assert len(sides) == 2
    segs = sides[0].find_elements(By.CSS_SELECTOR, ".seg")
    assert [s.get_attribute("textContent") for s in segs[:3]] == [f"Good {PWN} ", "fine.", IMG]
    colours = [s.value_of_css_property("background-color") for s in segs]
    assert colours[0] != colours[1] and "20, 150, 40" in colours[2] and "200, 30, 30" in colours[3]
    assert colours[4] == "rgba(0, 0, 0, 0)"  # a null token reward stays uncoloured
    assert len(sides[1].find_elements(By.CSS_SELECTOR, ".seg")) == 2

    assert browser.execute_script("return [window.__pwned, window.__pwned2]") == [None, None]
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 2
    assert console_errors(browser) == []  # no blocked inline script or handler either (CSP would log it)


def test_metrics_only_run(browser, tmp_path):
    """An SFT-style run (metrics from the real logger, no trajectories or reward maps) still renders."""
    from jaxalign.runlog import MetricsLogger

    with MetricsLogger(tmp_path / "sft", tensorboard=False) as log:
        for step in range(1, 6):
            log.log(step, {"loss": 2.0 / step, "grad_norm": 1.0, "tokens_per_s": 100.0 * step, "lr": float("nan")})
    open_page(browser, write_report(tmp_path / "sft"))
    assert console_errors(browser) == []
    charts = browser.find_elements(By.CSS_SELECTOR, "#panel-metrics > .grid h3")
    assert [h.text for h in charts] == ["Loss", "Gradient norm"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#panel-metrics details .metric-chart")) == 1  # tokens_per_s
    browser.find_element(By.ID, "tab-trajectories").click()
    assert "No trajectories" in browser.find_element(By.ID, "panel-trajectories").text
