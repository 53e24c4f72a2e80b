"""``python -m bench.ablation``: every variant runs, and each one takes its layer out.

A few saves per variant (the figures are the benchmark's business); what is checked is that
each switch reaches the layer it names, so the tool cannot keep printing figures after the
library's code moved under it, and that everything is put back afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ablation
from bench.stores import SQLiteTarget

import agents_persistence._layout as layout_module
from agents_persistence import AgentStateSnapshot, open_checkpointer
from agents_persistence.repositories import _sql_ops, sql


def test_every_variant_runs() -> None:
    ratios = ablation.run(rounds=1, saves=3)
    assert list(ratios) == list(ablation.VARIANTS)
    assert all(len(values) == 1 and values[0] > 0 for values in ratios.values())


@pytest.mark.parametrize("variant", [name for name in ablation.VARIANTS if name != "as shipped"])
def test_each_switch_takes_its_layer_out_and_puts_it_back(variant: str) -> None:
    target = SQLiteTarget()
    cp: Any = open_checkpointer(target.url, auto_migrate=True)
    before = (layout_module._check, sql.lean, _sql_ops._alone, cp._admission)
    pooled = cp.engine.raw_connection
    switches = ablation._switches(cp)
    try:
        switch = switches[variant]
        switch(True)
        after = (layout_module._check, sql.lean, _sql_ops._alone, cp._admission)
        changed = [a is not b for a, b in zip(before, after, strict=True)]
        first, second = cp.engine.raw_connection(), cp.engine.raw_connection()
        held = first is second
        first.close()
        second.close()
        assert changed.count(True) + held == 1  # exactly the layer the variant names
        cp.save_state("t", AgentStateSnapshot(scratchpad={"variant": variant}))
        assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"variant": variant})
        switch(False)
        assert (layout_module._check, sql.lean, _sql_ops._alone, cp._admission) == before
        assert cp.engine.raw_connection == pooled
    finally:
        for each in switches.values():
            each(False)
        cp.close()
        target.stop()
