"""`synth rounds`: self-improvement rounds (generate -> filter -> SFT (-> label -> PRM) -> held-out eval), resumable."""

from __future__ import annotations

import json
from pathlib import Path

from synth.train.rounds import RoundsConfig, run_rounds

Config = RoundsConfig


def main(cfg: RoundsConfig) -> int:
    rows = run_rounds(cfg)
    print("\n" + (Path(cfg.output_dir) / "report.md").read_text())
    print(json.dumps({"rounds": len(rows) - 1, "report": str(Path(cfg.output_dir) / "report.md")}))
    return 0
