"""Text datasets: tokens cached once beside the data, BERT fine-tuning, class-balanced batches, offline errors."""
import backbone_fixtures as fx
import download_fixtures as dfx
import torch

from XRM.common.sampling import build_sampler
from XRM.data.metadata_table import table_from_rows, write_metadata_csv

SHORT = '{"num_steps": 3, "eval_every": 2, "batch_size": 4}'


def test_civilcomments_tokenised_once_then_reused(tmp_path):
    from transformers import AutoTokenizer

    bert = fx.write_tiny_bert(tmp_path / "tiny-bert")
    texts = fx.write_civilcomments(tmp_path / "data")
    common = ["--phase", "2", "--datasets", "CivilComments", "--data_path", str(tmp_path / "data"),
              "--text_model", str(bert), "--hparams", SHORT]
    assert fx.run_main(fx.main_args(*common, "--algorithms", "ERM", "--out_dir", str(tmp_path / "out"))) == 0
    cache = tmp_path / "data" / "civilcomments" / "tokens_tiny-bert_220.pt"
    tokens = torch.load(cache)["tokens"]
    assert tokens.shape == (12, 220, 3) and tokens.dtype == torch.int32
    expected = AutoTokenizer.from_pretrained(str(bert))(texts[5], padding="max_length", max_length=220)
    assert tokens[5, :, 0].tolist() == expected["input_ids"] and tokens[5, :, 1].tolist() == expected["attention_mask"]
    header, rows = fx.records(tmp_path / "out" / "ERM" / "CivilComments" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert header["hparams"]["optimizer"] == "adamw" and header["backbone_used"] == str(bert)
    assert [r["step"] for r in rows] == [0, 2] and 0.0 <= rows[-1]["te_wga"] <= 1.0

    written = cache.stat().st_mtime_ns
    assert fx.run_main(fx.main_args(*common, "--algorithms", "GroupDRO", "--out_dir", str(tmp_path / "out2"))) == 0
    assert cache.stat().st_mtime_ns == written  # reused, not rewritten
    assert [p.name for p in cache.parent.iterdir() if p.name.startswith("tokens")] == [cache.name]


def test_class_balanced_batches_draw_each_class_equally():
    y = torch.tensor([0] * 90 + [1] * 10)
    balanced = build_sampler("uniform", y, 50, seed=0, classes=y)
    drawn = balanced.batches(0, 40).flatten()
    assert abs(y[drawn].float().mean().item() - 0.5) < 0.05
    uniform = build_sampler("uniform", y, 50, seed=0)
    assert y[uniform.batches(0, 40).flatten()].sum().item() == 200  # 20 epochs x 10


def test_multinli_cached_features_train_without_utils_glue(tmp_path):
    bert = fx.write_tiny_bert(tmp_path / "tiny-bert", uncased_ids=True)
    folder = tmp_path / "data" / "multinli"
    rows = []
    for number, (name, file_rows) in enumerate(dfx.MULTINLI_FILES.items()):
        dfx.save_cached_features(folder / "glue_data" / "MNLI" / name, [r[0] for r in file_rows],
                                 legacy_format=number == 1)
        rows += file_rows
    positions = list(range(len(rows)))
    write_metadata_csv(table_from_rows(positions, positions, [r[2] for r in rows], [r[0] for r in rows],
                                       [r[1] for r in rows]), folder / "metadata_multinli.csv")
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", "MultiNLI", "--data_path", str(tmp_path / "data"),
                                    "--algorithms", "ERM", "--text_model", str(bert), "--out_dir", str(out),
                                    "--hparams", SHORT)) == 0
    tokens = torch.load(folder / "tokens_cached_features_128.pt")["tokens"]
    assert tokens.shape == (7, 128, 3) and tokens[:, 0, 0].tolist() == [101, 102, 103, 104, 101, 102, 101]
    _, records = fx.records(out / "ERM" / "MultiNLI" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert [r["step"] for r in records] == [0, 2]
    assert records[-1]["va_avg_acc"] in (0.0, 1.0)  # one validation example


def _user_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_missing_text_model_offline_says_how_to_provide_it(tmp_path, script, monkeypatch):
    fx.write_civilcomments(tmp_path / "data")
    monkeypatch.delenv("XRM_TEXT_MODEL", raising=False)
    common = ["main.py", "--phase", "2", "--datasets", "CivilComments", "--data_path", str(tmp_path / "data"),
              "--out_dir", str(tmp_path / "out"), "--device", "cpu"]
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "1"}
    message = _user_error(script(*common, env=env))
    assert "could not load text model 'bert-base-uncased'" in message
    assert "--text_model DIR" in message and "XRM_TEXT_MODEL=DIR" in message and "HF_HOME" in message
    message = _user_error(script(*common, "--text_model", str(tmp_path / "no" / "bert"), env=env))
    assert f"text model folder {tmp_path / 'no' / 'bert'} does not exist" in message
    assert not (tmp_path / "out").exists() and not list((tmp_path / "data" / "civilcomments").glob("tokens*"))


def test_multinli_refuses_text_models_with_other_token_ids(tmp_path, monkeypatch):
    import pytest

    from XRM.common.errors import UserError
    from XRM.data.catalog import get_dataset
    from XRM.data.text_datasets import require_bert_uncased_ids

    require_bert_uncased_ids("bert-base-uncased")  # the hub name needs no download to be accepted
    require_bert_uncased_ids(str(fx.write_tiny_bert(tmp_path / "uncased", uncased_ids=True)))
    other = fx.write_tiny_bert(tmp_path / "other")
    with pytest.raises(UserError) as caught:
        require_bert_uncased_ids(str(other))
    assert str(caught.value) == (
        f"MultiNLI's cached inputs are bert-base-uncased token ids, which text model {str(other)!r} cannot read "
        "(its tokenizer has vocab_size 140, pad_token_id 0, cls_token_id 2, sep_token_id 3): drop --text_model "
        "and unset XRM_TEXT_MODEL, or pass a folder holding bert-base-uncased")
    # $XRM_TEXT_MODEL is the default text model: a hub name other than bert-base-uncased is refused
    # before any file is read.
    monkeypatch.setenv("XRM_TEXT_MODEL", "roberta-base")
    with pytest.raises(UserError, match="text model 'roberta-base' cannot read \\(only bert-base-uncased or a local"):
        get_dataset("MultiNLI").load_splits(str(tmp_path / "no-data"))


def test_text_lr_factor_hand_values():
    from XRM.engine.optimizers import text_lr_factor

    # N = 10: W = 10 // 3 + 1 = 4; steps 0..3 fall by 1/4, step 4 restarts at 1, then -1/10 a step
    assert [text_lr_factor(s, 10) for s in (0, 1, 3, 4, 5, 10)] == [1.0, 0.75, 0.25, 1.0, 0.9, 0.4]
    # the reference's 60001 steps: W = 20001
    n = 60001
    assert text_lr_factor(0, n) == 1.0
    assert text_lr_factor(n // 3, n) == 1 - 20000 / 20001  # floor(N/3) = 20000: the last step of the first decay
    assert text_lr_factor(20001, n) == 1.0
    assert text_lr_factor(n, n) == 20001 / 60001  # about 1/3
    assert abs(sum(text_lr_factor(s, n) for s in range(n)) / n - 0.6111) < 1e-4


def _tiny_text_stack(tmp_path, num_steps: int, **overrides):
    from XRM.engine.model_stacks import ModuleStack
    from XRM.networks.backbones import BackboneSpec
    from XRM.networks.classifiers import build_network
    from XRM.runs.hparams import default_hparams

    bert = tmp_path / "tiny-bert"
    if not bert.exists():
        fx.write_tiny_bert(bert)
    hparams = {**default_hparams("text", "ERM"), "num_steps": num_steps, "lr": 1e-3, **overrides}
    torch.manual_seed(0)
    network = build_network("text", (8, 3), 2, hparams, BackboneSpec(str(bert)))
    return ModuleStack(network, hparams, torch.device("cpu"), 0)


def _text_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    ids = torch.randint(5, 140, (4, 8), generator=generator)
    x = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=-1).int()
    return x, torch.tensor([0, 1, 0, 1])


def _train(stack, steps: range) -> None:
    import torch.nn.functional as F

    for step in steps:
        torch.manual_seed(100 + step)  # the same dropout masks in an unbroken and a resumed run
        x, y = _text_batch(step)
        stack.step(F.cross_entropy(stack.forward(x)[0], y))


def test_text_runs_follow_the_reference_schedule_and_dropout(tmp_path):
    from XRM.engine.optimizers import text_lr_factor

    stack = _tiny_text_stack(tmp_path, num_steps=10)
    assert stack.network.dropout.p == 0.1  # BERT's hidden_dropout_prob, not a drawn value
    assert [g["lr"] for g in stack.optimizer.param_groups] == [1e-3, 1e-3]  # factor(0) = 1
    _train(stack, range(3))
    assert all(abs(g["lr"] - 1e-3 * 0.25) < 1e-15 for g in stack.optimizer.param_groups)  # factor(3) = 1 - 3/4
    _train(stack, range(3, 6))
    assert all(abs(g["lr"] - 1e-3 * text_lr_factor(6, 10)) < 1e-15 for g in stack.optimizer.param_groups)
    assert abs(text_lr_factor(6, 10) - 0.8) < 1e-12  # 1 - (6 - 4) / 10
    # another dropout, or no schedule, only when asked for
    other = _tiny_text_stack(tmp_path, num_steps=10, last_layer_dropout=0.5, lr_schedule="constant")
    _train(other, range(3))
    assert other.network.dropout.p == 0.5 and other.optimizer.param_groups[0]["lr"] == 1e-3


def test_text_resume_continues_the_schedule_exactly(tmp_path):
    unbroken = _tiny_text_stack(tmp_path, num_steps=9)
    _train(unbroken, range(6))

    first = _tiny_text_stack(tmp_path, num_steps=9)
    _train(first, range(4))  # stops inside the first decay (W = 4)
    saved = torch.load(_save(tmp_path, first), weights_only=False)
    assert saved["optimizer"]["lr_scheduler"]["last_epoch"] == 4
    resumed = _tiny_text_stack(tmp_path, num_steps=9)
    resumed.load_member(0, saved["model"], saved["optimizer"], None)
    assert resumed.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"] == 1e-3  # factor(4)
    _train(resumed, range(4, 6))
    assert resumed.optimizer.param_groups[0]["lr"] == unbroken.optimizer.param_groups[0]["lr"]
    for name, value in unbroken.model_state(0).items():
        assert torch.equal(resumed.model_state(0)[name], value), name


def _save(tmp_path, stack):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": stack.model_state(0), "optimizer": stack.optimizer_state(0)}, path)
    return path


def test_hparams_check_names_the_schedules():
    import pytest

    from XRM.common.errors import UserError
    from XRM.runs.hparams import check_hparams, default_hparams, random_hparams

    assert default_hparams("text", "ERM")["lr_schedule"] == "text"
    assert {random_hparams("text", "ERM", comb)["last_layer_dropout"] for comb in range(20)} == {0.1}
    with pytest.raises(UserError, match="lr_schedule = 'cosine': it must be one of constant, text"):
        check_hparams({"lr_schedule": "cosine"})
    with pytest.raises(UserError, match="last_layer_dropout = 1.0: it must be below 1"):
        check_hparams({"last_layer_dropout": 1.0})
