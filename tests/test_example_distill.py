"""examples/distill_char_lm.py (fused-linear KD of a char-LM) runs end to end in a tiny setting: every
number is finite, the teacher learns (val CE below log 96 = uniform), and the KD student ends closer to the
teacher (smaller KD term) than the CE-only student trained on the same batches from the same start."""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distill_char_lm_smoke():
    spec = importlib.util.spec_from_file_location("distill_char_lm", os.path.join(ROOT, "examples",
                                                                                  "distill_char_lm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--steps", "25", "--teacher_steps", "40", "--teacher_width", "64", "--student_width", "16",
                    "--batch", "128", "--max_chars", "30000", "--alpha", "0.9"])
    assert all(np.isfinite(v) for v in res.values())
    assert res["teacher_val_ce"] < math.log(96) - 0.5
    assert res["student_kd_kd_term"] < res["student_ce_kd_term"]
    assert res["student_kd_kd_term"] < res["kd_term_init"]
