"""Hyper-parameter draws: reproducible, per-name streams, within the protocol's ranges."""
import mat  # noqa: F401  (registers MAT, as a user's import does)
from XRM.runs.hparams import default_hparams, random_hparams


def test_draws_are_reproducible_and_differ_between_combinations():
    assert random_hparams("features", "ERM", 3) == random_hparams("features", "ERM", 3)
    assert random_hparams("features", "ERM", 3)["lr"] != random_hparams("features", "ERM", 4)["lr"]


def test_adding_a_hyper_parameter_leaves_the_others_unchanged():
    erm = random_hparams("features", "ERM", 5)
    group_dro = random_hparams("features", "GroupDRO", 5)  # ERM's space plus eta
    assert set(group_dro) - set(erm) == {"eta"}
    assert {k: group_dro[k] for k in erm} == erm


def test_draws_stay_in_the_reference_ranges():
    for comb in range(50):
        image = random_hparams("features", "MAT", comb)
        assert 1e-5 <= image["lr"] <= 1e-3
        assert 32 <= image["batch_size"] <= 128
        assert 1e-6 <= image["weight_decay"] <= 1e-3
        assert image["tau"] in (0.001, 0.01, 0.1)
        text = random_hparams("text", "GroupDRO", comb)
        assert 1e-6 <= text["lr"] <= 1e-4 and 16 <= text["batch_size"] <= 64
        assert 1e-3 <= text["eta"] <= 1e-1
    assert default_hparams("features", "MAT")["tau"] == 0.1
