"""`jaxalign view` on a folder of runs (the demo's layout): one page per run and an index page linking them."""

import html.parser
import os
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from jaxalign.cli.main import main
from jaxalign.runlog import MetricsLogger
from jaxalign.viewer import find_runs, write_index
from tests.viewer.test_page import console_errors

ODD = "<b>x&y"
"""A run directory name that is HTML: the index must show it as text."""


def make_run(path, **series) -> None:
    """A run directory whose metrics.jsonl is written by the real logger: {"loss": [...], ...} per step."""
    steps = len(next(iter(series.values())))
    with MetricsLogger(path, tensorboard=False) as log:
        for step in range(steps):
            log.log(step + 1, {name: values[step] for name, values in series.items()})


@pytest.fixture
def demo(tmp_path):
    """runs/demo as `jaxalign demo` lays it out (data/, tokenizer/, sft-*/ and grpo-*/ runs), plus a sweep."""
    root = tmp_path / "demo"
    make_run(root / "sft-dense", loss=[2.0, 1.0, 0.5])
    make_run(root / "grpo-dense", reward=[0.25, 0.75], accuracy=[0.0, 0.5])
    with MetricsLogger(root / "grpo-dense", tensorboard=False) as log:
        log.log(2, {"avg@4": 0.625}, prefix="eval")
    make_run(root / "sweep" / "lr-1e-3", loss=[3.0])  # two levels down
    make_run(root / ODD, loss=[1.0, 0.9])
    (root / "data").mkdir()
    (root / "data" / "dense.jsonl").write_text("{}\n")
    make_run(root / "sft-dense" / "hf", loss=[9.0])  # inside a run: part of it, not a run of its own
    make_run(root / "a" / "b" / "deep", loss=[1.0])  # three levels down: not searched
    make_run(root / ".hidden", loss=[1.0])
    return root


def test_find_runs_searches_two_levels_and_not_inside_runs(demo):
    found = [os.path.relpath(p, demo) for p in find_runs(demo)]
    assert found == [ODD, "grpo-dense", "sft-dense", os.path.join("sweep", "lr-1e-3")]


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])

    def handle_data(self, data):
        self.text.append(data)


def test_view_on_a_folder_writes_each_run_page_and_an_index(demo, capsys):
    assert main(["view", str(demo)]) == 0
    printed = capsys.readouterr().out.split()
    index = demo / "index.html"
    runs = [ODD, "grpo-dense", "sft-dense", "sweep/lr-1e-3"]
    assert printed == [str(demo / r / "report.html") for r in runs] + [str(index)]
    for page in printed:
        assert open(page, encoding="utf-8").read().startswith("<!DOCTYPE html>")
    text = index.read_text(encoding="utf-8")
    links = Links()
    links.feed(text)
    assert [os.path.normpath(demo / urllib.parse.unquote(h)) for h in links.hrefs] == printed[:-1]
    assert ODD not in text and "&lt;b&gt;x&amp;y" in text  # the name is text, never markup
    body = " ".join(links.text)
    assert "2 \u2192 0.5" in body and "0.25 \u2192 0.75" in body and "0.625" in body  # loss, reward, eval/avg@4
    assert "eval/avg@4" in body and "4 runs" in body


def test_index_elsewhere_links_back_to_the_runs(demo, tmp_path, capsys):
    out = tmp_path / "site" / "runs.html"
    assert main(["view", str(demo), "-o", str(out)]) == 0
    links = Links()
    links.feed(out.read_text(encoding="utf-8"))
    assert {os.path.normpath(out.parent / urllib.parse.unquote(h)) for h in links.hrefs} == set(
        capsys.readouterr().out.split()[:-1])


def test_a_broken_run_is_listed_and_the_others_are_written(demo, capsys):
    with open(demo / "sft-dense" / "metrics.jsonl", "a") as f:
        f.write("not json\n")
    assert main(["view", str(demo)]) == 0
    out, err = capsys.readouterr()
    assert str(demo / "sft-dense" / "report.html") not in out and str(demo / "grpo-dense" / "report.html") in out
    assert err.count("\n") == 1 and "skipped sft-dense" in err and "metrics.jsonl:4: not a JSON record" in err
    assert "cannot show this run" in (demo / "index.html").read_text(encoding="utf-8")


def test_a_folder_without_runs_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text("{}\n")
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxalign view: error: {tmp_path}: not a run")
    assert "no run in its sub-directories (2 levels searched)" in err
    assert not (tmp_path / "index.html").exists()


def test_index_opens_in_a_browser_and_its_links_load(browser, demo):
    index, rows = write_index(demo)
    open_page_plain(browser, index)
    assert console_errors(browser) == []  # the stylesheet passes the page's CSP (a blocked one is logged)
    assert browser.execute_script("return getComputedStyle(document.querySelector('header')).display") == "flex"
    links = browser.find_elements("css selector", "#runs a")
    assert [a.text for a in links] == [r["run"] for r in rows]
    for href in [a.get_attribute("href") for a in links]:
        browser.get(href)
        assert browser.execute_script("return document.body.dataset.ready") == "1"  # the run page rendered
        assert console_errors(browser) == []


def open_page_plain(driver, path: str) -> None:
    """Opens a page without a script of its own (the index); `open_page` waits for the run page's ready flag."""
    driver.get_log("browser")
    driver.get("file://" + os.path.abspath(path))


def test_serve_answers_with_the_index_and_its_run_pages_only(demo):
    from jaxalign.cli.view import make_server

    index, rows = write_index(demo)
    pages = [r["page"] for r in rows]
    with make_server(index, port=0, also=pages) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.read() == open(index, "rb").read()
            links = Links()
            links.feed(open(index, encoding="utf-8").read())
            for href, page in zip(links.hrefs, pages):
                with urllib.request.urlopen(urllib.parse.urljoin(url, href), timeout=10) as r:
                    assert r.read() == open(page, "rb").read()
            for bad in ("sft-dense/metrics.jsonl", "../demo/index.html.tmp", "data/dense.jsonl"):
                with pytest.raises(urllib.error.HTTPError, match="404"):
                    urllib.request.urlopen(url + bad, timeout=10)
        finally:
            server.shutdown()
            thread.join(timeout=10)
