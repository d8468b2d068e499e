"""Every benchmark figure that README.md and docs/performance.md quote is in latest.json.

The committed ``benchmarks/results/latest.json`` (written by ``benchmarks/run.py``) is
the source of the figures; a doc that quotes a number the JSON does not hold (a stale
claim) fails here. Server-memory figures are quoted as ``N clients **X.XX GB**`` (GB =
1e9 bytes, two decimals), the ratio as ``16/2 = **R.RR**``, the wire size as
``(B B)`` with B the exact byte count, the LoRA wire sizes as ``rank R ffa **B bytes**``
and their ratio to the full expert as ``**N× less than the full expert**``.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "benchmarks" / "results" / "latest.json"
DOCS = [ROOT / "README.md", ROOT / "docs" / "performance.md"]
MEMORY = re.compile(r"(\d+) clients \*\*(\d+\.\d+) GB\*\*")
RATIO = re.compile(r"(\d+)/(\d+) = \*\*(\d+\.\d+)\*\*")
WIRE = re.compile(r"\(([\d,]{9,}) B\)")
STALE = re.compile(r"GB for \d+ clients|\d+ clients: \d+\.\d+ GB")  # unchecked forms


@pytest.fixture(scope="module")
def latest():
    return json.loads(LATEST.read_text(encoding="utf-8"))


def test_server_memory_section_has_every_count(latest):
    by = latest["server_memory"]["by_clients"]
    assert set(by) >= {"2", "4", "8", "16"}
    assert all(int(r["peak_rss_bytes"]) > 0 for r in by.values())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_figures_match_latest_json(doc, latest):
    text = doc.read_text(encoding="utf-8")
    by = latest["server_memory"]["by_clients"]
    quoted = MEMORY.findall(text)
    assert quoted, f"{doc.name} quotes no server-memory figure"
    for n, gb in quoted:
        assert n in by, f"{doc.name} quotes {n} clients, latest.json has {sorted(by)}"
        assert gb == f"{by[n]['peak_rss_bytes'] / 1e9:.2f}", (n, gb)
    for hi, lo, ratio in RATIO.findall(text):
        want = by[hi]["peak_rss_bytes"] / by[lo]["peak_rss_bytes"]
        assert ratio == f"{want:.2f}", (hi, lo, ratio)
    for nbytes in WIRE.findall(text):
        assert int(nbytes.replace(",", "")) == latest["wire"]["bytes_trainable_bf16"]
    assert not STALE.findall(text), f"{doc.name}: figures in an unchecked form"


def test_performance_page_quotes_all_four_counts(latest):
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert {n for n, _ in MEMORY.findall(text)} >= {"2", "4", "8", "16"}


DEPLOY = re.compile(r"\(g\) deployment round overhead.{0,300}?warm \*\*(\d+\.\d+) s\*\*"
                    r".{0,300}?cold \*\*(\d+\.\d+) s\*\*", re.S)


def test_deployment_round_overhead_is_quoted_from_latest_json(latest):
    """(g): docs/performance.md quotes the warm (after) and cold (before) medians."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    d = latest["deploy_overhead"]
    assert d["rounds"] == 5 and d["supernodes"] == 2
    warm, cold = d["warm"], d["cold"]
    assert warm["warm_clientapp"] is True and cold["warm_clientapp"] is False
    assert len(warm["per_round"]) == len(cold["per_round"]) == 5
    quoted = DEPLOY.findall(text)
    assert quoted, "docs/performance.md quotes no (g) figure as 'warm **X s** ... cold **Y s**'"
    for w, c in quoted:
        assert w == f"{warm['overhead_seconds_median']:.2f}", (w, warm)
        assert c == f"{cold['overhead_seconds_median']:.2f}", (c, cold)


LORA = re.compile(r"rank (\d+) (ffa|naive) \*\*([\d,]+) bytes\*\*")
LORA_RATIO = re.compile(r"\*\*(\d+)× less than the full expert\*\*")


def test_lora_wire_figures_are_quoted_from_latest_json(latest):
    """(a'): docs/performance.md quotes every rank and aggregation of latest.json, and
    every LoRA figure in the README and there is exactly latest.json's."""
    lora = latest["wire"]["lora"]
    want = {(r, agg): v["bytes_bf16"] for r, by in lora["by_rank"].items()
            for agg, v in by.items()}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for r, agg, b in LORA.findall(text):
            assert int(b.replace(",", "")) == want[(r, agg)], (doc.name, r, agg, b)
        for ratio in LORA_RATIO.findall(text):
            assert ratio == f"{lora['reduction_vs_full_expert']:.0f}", (doc.name, ratio)
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert {(r, agg) for r, agg, _ in LORA.findall(text)} == set(want)
    assert set(lora["by_rank"]) == {"8", "16", "64"}
    assert lora["by_rank"]["16"]["ffa"]["bytes_bf16"] <= 0.02e9  # the goal
    assert LORA_RATIO.findall(text)


def test_lora_results_table_is_the_committed_experiment():
    """docs/results.md's LoRA table: every number from docs/results/lora.json."""
    import statistics

    data = json.loads((ROOT / "docs" / "results" / "lora.json").read_text(encoding="utf-8"))
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = text.split("\n## LoRA\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "±" in line]
    assert len(rows) == len(data["arms"]) == 5 and len(data["seeds"]) >= 3

    def ms(values):
        return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"

    for row, arm in zip(rows, data["arms"].values(), strict=True):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        seeds = arm["seeds"].values()
        assert cells[1] == f"{arm['parameters_per_client_round']:,}", row
        assert cells[2] == ms([e["scores"]["heldout_mean"] for e in seeds]), row
        assert cells[3] == ms([e["scores"]["unseen_mean"] for e in seeds]), row
        assert cells[4] == f"{statistics.fmean(e['seconds'] for e in seeds):.0f}", row
