"""agame_jax.compare: the runs it makes, the table's statistics, the plot."""
import json

import numpy as np
import pytest

from agame_jax import compare


def test_runs_every_entry_and_seed_and_summarizes(tmp_path):
    made = []

    def fake_train(config, workdir):
        made.append((config.model.appearance, config.model.unimodal_appearance, config.seed,
                     config.train.num_steps, workdir.relative_to(tmp_path).as_posix()))
        jf = 0.3 + 0.1 * config.seed + (0.05 if config.model.appearance == "ridge" else 0)
        (workdir / "best").mkdir(parents=True)
        (workdir / "best" / "best.json").write_text(json.dumps(
            {"step": 5, "J": jf - 0.01, "F": jf + 0.01, "JF": jf}))

    rows = compare.run(["ridge", "ablation:unimodal_appearance"], [0, 1], tmp_path,
                       ["train.num_steps=7"], train=fake_train, log=lambda *a: None)
    assert made == [("ridge", False, 0, 7, "ridge/seed_0"), ("ridge", False, 1, 7, "ridge/seed_1"),
                    ("agame", True, 0, 7, "unimodal_appearance/seed_0"),
                    ("agame", True, 1, 7, "unimodal_appearance/seed_1")]
    ridge = rows[0]
    assert ridge["name"] == "ridge" and ridge["runs"] == 2
    np.testing.assert_allclose([ridge["JF"], ridge["JF_std"]],
                               [np.mean([0.35, 0.45]), np.std([0.35, 0.45], ddof=1)])
    assert "| ridge | 2 | 0.400 ± 0.071 |" in (tmp_path / "compare.md").read_text()
    assert json.loads((tmp_path / "compare.json").read_text())[1]["name"] == "unimodal_appearance"
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # Finished runs are not trained again.
    compare.run(["ridge"], [0], tmp_path, [], train=fake_train, log=lambda *a: None)
    assert len(made) == 4


def test_unknown_names_and_bad_overrides_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown appearance model 'nope'"):
        compare.config_for("nope", 0, [])
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        compare.config_for("agame", 0, ["train.num_steps"])
    config = compare.config_for("agame-em", 3,
                                ["data.height=64", "model.appearance_options={'k': 3}"])
    assert (config.seed, config.data.height, config.model.appearance_options["k"]) == (3, 64, 3)
