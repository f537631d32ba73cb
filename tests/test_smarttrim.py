"""SmartTrim-style trimming on METER (pumer-export design): the reference's invariants and the method seam."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import one_line_error
from pumer_export import methods
from pumer_export.errors import ConfigError
from pumer_export.methods.smarttrim.config import SmartTrimConfig
from pumer_export.methods.smarttrim.reference import TokenTrimmer, compact, masked_mean
from pumer_export.models.meter.presets import random_inputs, tiny_meter_model
from pumer_export.models.meter.smarttrim import SmartTrimMeterForQuestionAnswering, attach

EVERYWHERE = dict(cross_layers=(0, 1, 2, 3), vit_layers=(1,), head_layers=(0, 1, 2, 3))


@pytest.fixture(scope="module")
def base():
    model = tiny_meter_model(seed=0)
    model.set_pumer_config(model.pumer_config.without_reduction())
    return model


def _trained_like(model: SmartTrimMeterForQuestionAnswering, seed: int = 0) -> SmartTrimMeterForQuestionAnswering:
    """Random trimmer weights (as a trained trimmer: decisions that differ per token, head and sample)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.smarttrim.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


def _median_taus(model, inputs) -> dict[str, float]:
    """tau and head_tau that keep about half of the tokens at the first trimmer and half of the heads of the first
    text cross-attention (so that the decisions differ per sample)."""
    with torch.no_grad():
        records = model(**inputs, output_trim_records=True).trim_records
    margins = [m for sample in records[0]["image_margins"] for m in sample.values()]
    heads = next(r for r in records if "head_margins" in r)["head_margins"]["text_cross"]
    return {"tau": float(torch.tensor(margins).median()), "head_tau": float(heads.median())}


@pytest.fixture(scope="module")
def trimmed(base):
    model = _trained_like(attach(base, SmartTrimConfig(**EVERYWHERE)))
    inputs = random_inputs(base.config, 6, seed=2)
    model.set_smarttrim_config(model.smarttrim_config.replace(**_median_taus(model, inputs)))
    return model, inputs


def _one(inputs, i):
    return {k: v[i:i + 1] for k, v in inputs.items()}


def test_keep_all_equals_the_untrimmed_model(base):
    """Untrained trimmers keep everything (keep bias) and so do tau = -inf trimmers: the logits are the untrimmed
    METER's exactly, padded text included."""
    inputs = random_inputs(base.config, 4, seed=1)
    assert inputs["attention_mask"].sum(1).min() < inputs["attention_mask"].shape[1]  # some padding
    with torch.no_grad():
        reference = base(**inputs).logits
        fresh = attach(base, SmartTrimConfig(**EVERYWHERE))
        assert torch.equal(fresh(**inputs).logits, reference)
        forced = _trained_like(attach(base, SmartTrimConfig(**EVERYWHERE, tau=-math.inf, head_tau=-math.inf)))
        assert torch.equal(forced(**inputs).logits, reference)


def test_batched_equals_per_sample_runs(trimmed):
    """Each sample of a padded batch gives its batch-1 result (removal) and keeps the same tokens and heads."""
    model, inputs = trimmed
    with torch.no_grad():
        batch = model(**inputs, output_trim_records=True)
        counts = set()
        for i in range(inputs["input_ids"].shape[0]):
            one = model(**_one(inputs, i), output_trim_records=True)
            torch.testing.assert_close(one.logits, batch.logits[i:i + 1], atol=2e-6, rtol=1e-5)
            for a, b in zip(one.trim_records, batch.trim_records):
                for stream in ("text", "image"):
                    if stream in a:
                        assert torch.equal(a[stream][0], b[stream][i])
                for name, mask in a.get("heads", {}).items():
                    assert torch.equal(mask[0], b["heads"][name][i])
            counts.add(tuple(len(r["image"][0]) for r in one.trim_records))
    assert len(counts) > 1, "the samples should keep different numbers of tokens"


def test_alive_sets_shrink_and_keep_token_zero(trimmed):
    model, inputs = trimmed
    with torch.no_grad():
        records = model(**inputs, output_trim_records=True).trim_records
    lengths = inputs["attention_mask"].sum(1)
    for i in range(inputs["input_ids"].shape[0]):
        previous = {"text": set(range(int(lengths[i]))), "image": None}
        for record in records:
            for stream in ("text", "image"):
                if stream not in record:
                    continue
                alive = set(record[stream][i].tolist())
                assert 0 in alive
                if previous[stream] is not None:
                    assert alive <= previous[stream]  # a dropped token never returns; pads are never alive
                previous[stream] = alive


def test_forced_drops_keep_only_token_zero(base):
    """tau = +inf drops every droppable token: one token per stream survives, and the model still answers."""
    model = _trained_like(attach(base, SmartTrimConfig(cross_layers=(0,), vit_layers=(0,), tau=math.inf)))
    inputs = random_inputs(base.config, 3, seed=4)
    with torch.no_grad():
        out = model(**inputs, output_trim_records=True)
    assert torch.isfinite(out.logits).all()
    for record in out.trim_records:
        for stream in ("text", "image"):
            if stream in record:
                assert [r.tolist() for r in record[stream]] == [[0]] * 3


def test_head_masks_apply_per_sample(trimmed):
    """Head decisions differ between samples of one batch, and a dropped head changes the result (the masks are
    applied, per sample)."""
    model, inputs = trimmed
    with torch.no_grad():
        records = model(**inputs, output_trim_records=True).trim_records
        masks = torch.stack([r["heads"]["text_cross"] for r in records if "heads" in r])  # [blocks, B, H]
        assert not all(torch.equal(masks[:, 0], masks[:, i]) for i in range(1, masks.shape[1]))
        assert (masks == 0).any()
        everything = model.smarttrim_config.replace(head_tau=-math.inf)
        kept = model.smarttrim_config
        model.set_smarttrim_config(everything)
        all_heads = model(**inputs).logits
        model.set_smarttrim_config(kept)
        assert not torch.allclose(all_heads, model(**inputs).logits)


def test_token_trimmer_reads_each_token_and_both_global_features():
    """The trimmer's head computes MLP([u, g, g']) (the design's formula) on every token: its split first layer
    equals the concatenated input written out here, and each of the three parts moves the logits."""
    torch.manual_seed(0)
    trimmer = TokenTrimmer(hidden=12, width=6)
    h, alive = torch.randn(3, 5, 12), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    other = torch.randn(3, 6)
    with torch.no_grad():
        u = trimmer.proj(h)
        own = masked_mean(u, alive)
        assert torch.allclose(own[2], u[2, 0]) and torch.allclose(own[0], u[0, :3].mean(0))
        features = torch.cat([u, own[:, None].expand(-1, 5, -1), other[:, None].expand(-1, 5, -1)], dim=-1)
        logits = trimmer(u, own, other)
        torch.testing.assert_close(logits, trimmer.head(features), atol=1e-6, rtol=1e-5)
        for changed in (trimmer(u + 1, own, other), trimmer(u, own + 1, other), trimmer(u, own, other + 1)):
            assert not torch.allclose(changed, logits)


def test_compaction_is_stable_and_pads():
    keep = torch.tensor([[True, False, True, True], [True, False, False, False]])
    values = torch.arange(8.0).view(2, 4, 1)
    alive, (out,) = compact(keep, values)
    assert alive.tolist() == [[True, True, True], [True, False, False]]
    assert out[0, :, 0].tolist() == [0.0, 2.0, 3.0] and out[1, 0, 0] == 4.0


# ----------------------------------------------------------------------------- the seam and the checkpoint
def test_checkpoint_describes_its_method(base, tmp_path):
    from pumer_export.checkpoints import load_pumer_model

    model = _trained_like(attach(base, SmartTrimConfig(cross_layers=(1, 2), head_layers=(3,), tau=0.5)))
    model.save_pretrained(tmp_path / "st")
    data = json.loads((tmp_path / "st" / "config.json").read_text())
    assert data["smarttrim"]["cross_layers"] == [1, 2] and data["pumer"]["reduce_layers"] == []
    loaded = load_pumer_model(tmp_path / "st")
    assert isinstance(loaded, SmartTrimMeterForQuestionAnswering)
    assert methods.for_model(loaded).NAME == "smarttrim" and methods.for_model(base).NAME == "pumer"
    inputs = random_inputs(base.config, 2, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_apply_sets_the_deployment_thresholds(base, tmp_path, cli):
    """apply --tau / --head-tau writes a SmartTrim checkpoint with other decision thresholds and the same weights
    (inf survives config.json, where transformers writes it as {"__float__": "Infinity"}); tau = inf keeps token 0
    of each stream only. PuMer checkpoints and PuMer flags are refused in one line, nothing written."""
    from pumer_export.checkpoints import load_pumer_model

    model = _trained_like(attach(base, SmartTrimConfig(cross_layers=(0,), vit_layers=(0,), head_layers=(0,))))
    model.save_pretrained(tmp_path / "st")
    code, _, err = cli("apply", tmp_path / "st", tmp_path / "inf", "--tau", "inf", "--head-tau", "-1.5")
    assert code == 0, err
    assert json.loads((tmp_path / "inf" / "config.json").read_text())["smarttrim"]["tau"] == {"__float__": "Infinity"}
    loaded = load_pumer_model(tmp_path / "inf")
    assert loaded.smarttrim_config == model.smarttrim_config.replace(tau=math.inf, head_tau=-1.5)
    inputs = random_inputs(base.config, 3, seed=4)
    with torch.no_grad():
        records = loaded(**inputs, output_trim_records=True).trim_records
        assert all([r.tolist() for r in record[stream]] == [[0]] * 3
                   for record in records for stream in ("text", "image") if stream in record)
        loaded.set_smarttrim_config(model.smarttrim_config)
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    base.save_pretrained(tmp_path / "plain")
    for argv, message in (((tmp_path / "plain", "--tau", "1"), "is a PuMer checkpoint"),
                          ((tmp_path / "st", "--tau", "1", "--layers", "1"), "take no --layers"),
                          ((tmp_path / "st", "--tau", "nan"), "expected a number")):
        code, _, err = cli("apply", argv[0], tmp_path / "out", *argv[1:])
        one_line_error(code, err, message)
        assert not (tmp_path / "out").exists()


def test_registry_declares_every_method():
    for name in methods.names():
        method = methods.get(name)
        assert all(hasattr(method, attr) for attr in methods.INTERFACE), name
    assert methods.get("smarttrim").FAMILIES == ("meter",)
    with pytest.raises(Exception, match="unknown method"):
        methods.get("tome")
    from pumer_export.models.vilt.presets import tiny_vilt_model

    with pytest.raises(Exception, match="implemented for meter, not ViLT"):
        methods.get("smarttrim").attach(tiny_vilt_model(seed=0), SmartTrimConfig(cross_layers=(0,)))


def test_bad_settings_are_one_line(base, tmp_path, cli):
    with pytest.raises(ConfigError, match="outside the model's 4 layers"):
        attach(base, SmartTrimConfig(cross_layers=(7,)))
    with pytest.raises(ConfigError, match="unknown smarttrim setting"):
        SmartTrimConfig.from_dict({"cross_layer": [0]})
    model = attach(base, SmartTrimConfig(cross_layers=(0,)))
    model.save_pretrained(tmp_path / "st")
    code, _, err = cli("finetune", tmp_path / "st", tmp_path / "out", "--target-keep", "0.5", "--dataset", "easy-vqa")
    one_line_error(code, err, "--target-keep", "--method smarttrim")
    code, _, err = cli("finetune", tmp_path / "st", tmp_path / "out", "--method", "smarttrim", "--vit-layers", "0",
                       "--jsonl", tmp_path / "none.jsonl")
    one_line_error(code, err, "none.jsonl")
    assert not (tmp_path / "out").exists()
    from pumer_export.errors import PumerExportError
    from pumer_export.sweep import SweepOptions, run_sweep

    with pytest.raises(PumerExportError, match="tau on the trained trimmers"):
        run_sweep(tmp_path / "st", [], SweepOptions(report_dir=tmp_path / "s", progress=False, finetune_steps=5))
    base.save_pretrained(tmp_path / "plain")
    with pytest.raises(PumerExportError, match="--tau is SmartTrim's knob"):
        run_sweep(tmp_path / "plain", [], SweepOptions(report_dir=tmp_path / "s", progress=False, tau=(0.0,)))


def test_info_names_the_method(base, tmp_path, cli):
    attach(base, SmartTrimConfig(cross_layers=(0, 3), vit_layers=(1,))).save_pretrained(tmp_path / "st")
    code, out, err = cli("info", tmp_path / "st", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["method"]["name"] == "smarttrim" and data["method"]["settings"]["vit_layers"] == [1]
    assert "pumer-export design" in data["method"]["title"]
    code, out, _ = cli("info", tmp_path / "st")
    assert "depend on the input" in out


def test_realised_flops_count_as_the_family_counts(base, trimmed):
    """With every token kept the realised FLOPs are the family's analytic FLOPs of the untrimmed model (two
    independent countings); trimmed, the per-sample counts cost no more than the padded batch's, and both less than
    the untrimmed model."""
    from pumer_export.models import meter
    from pumer_export.models.meter.smarttrim import realised_flops, trim_statistics

    full_text = random_inputs(base.config, 3, seed=6, min_text_length=40)
    text_tokens = full_text["input_ids"].shape[1]
    keep_all = attach(base, SmartTrimConfig(**EVERYWHERE))
    with torch.no_grad():
        counts = keep_all(**full_text, output_trim_records=True).trim_counts
    untrimmed = meter.encoder_flops(base.config, base.token_schedule(text_tokens))
    assert realised_flops(base.config, counts, text_tokens) == untrimmed
    assert all(realised_flops(base.config, counts, text_tokens, i) == untrimmed for i in range(3))
    model, inputs = trimmed
    stats = trim_statistics(model, [inputs])
    assert stats["flops"]["untrimmed"] == meter.encoder_flops(base.config, base.token_schedule(
        inputs["input_ids"].shape[1]))
    assert stats["flops"]["per_sample"] <= stats["flops"]["padded"] < stats["flops"]["untrimmed"]
    assert stats["flop_ideal"]["per_sample"] >= stats["flop_ideal"]["padded"] > 1
    shares = stats["kept_share"]["cross0.image"]
    assert 0 < shares["mean"] < 1 and shares["std"] > 0


# ----------------------------------------------------------------------------- the training surrogate
def test_relaxed_forward_without_noise_is_the_reference(trimmed):
    """The training surrogate (dropped tokens kept in place, keys weighed by the policy) with the reference's
    decisions computes what removal computes, per sample at its own counts: logits and FLOPs."""
    from pumer_export.methods.smarttrim.training import Relaxation
    from pumer_export.models.meter.smarttrim import realised_flops

    model, inputs = trimmed
    settings = model.smarttrim_config  # tau sits on a margin there: off the tie, so rounding cannot flip it
    model.set_smarttrim_config(settings.replace(tau=settings.tau + 1e-3, head_tau=settings.head_tau + 1e-3))
    try:
        with torch.no_grad():
            relaxed = model.relaxed_forward(**inputs, relaxation=Relaxation(noise=False))
            reference = model(**inputs, output_trim_records=True)
    finally:
        model.set_smarttrim_config(settings)
    torch.testing.assert_close(relaxed.logits, reference.logits, atol=2e-5, rtol=1e-4)
    text_tokens = inputs["input_ids"].shape[1]
    untrimmed = model._untrimmed_flops(text_tokens)
    expected = [realised_flops(model.config, reference.trim_counts, text_tokens, i) / untrimmed
                for i in range(inputs["input_ids"].shape[0])]
    torch.testing.assert_close(relaxed.flops_share, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    assert relaxed.flops_share.max() < 1


def test_decisions_carry_a_gradient_and_the_cost_lowers_the_share(base):
    """The straight-through decisions pass the cost term's gradient to every token and head trimmer, and a few
    steps on the cost alone lower the realised share of FLOPs (a trimmer that learns nothing would not)."""
    from pumer_export.methods.smarttrim.training import Relaxation, cost_loss

    model = attach(base, SmartTrimConfig(cross_layers=(0, 2), vit_layers=(1,), head_layers=(1,)))
    inputs = random_inputs(base.config, 4, seed=7, min_text_length=40)  # no pads: an untrimmed share of 1
    relaxation = Relaxation(noise=True, generator=torch.Generator().manual_seed(0))
    out = model.relaxed_forward(**inputs, relaxation=relaxation)
    (cost_loss(out.flops_share, 0.3) + cost_loss(out.head_share, 0.3)).backward()
    for name, module in [("vit", model.smarttrim.vit["1"]), ("cross text", model.smarttrim.cross["0"]["text"]),
                         ("cross image", model.smarttrim.cross["2"]["image"]),
                         ("heads", model.smarttrim.heads["1"]["image_cross"])]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    with torch.no_grad():
        before = float(model.relaxed_forward(**inputs, relaxation=Relaxation(noise=False)).flops_share.mean())
    optimizer = torch.optim.Adam(model.smarttrim.parameters(), lr=0.05)
    for _ in range(15):
        optimizer.zero_grad()
        cost_loss(model.relaxed_forward(**inputs, relaxation=relaxation).flops_share, 0.3).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model.relaxed_forward(**inputs, relaxation=Relaxation(noise=False)).flops_share.mean())
    assert before == pytest.approx(1.0) and after < 0.8


def test_curriculum_and_teacher():
    """The target falls linearly from 1 to target_keep over the curriculum's share of the steps; the teacher is the
    untrimmed model (every trimmer keeping everything)."""
    from pumer_export.methods.smarttrim.training import TrainOptions, target_at

    options = TrainOptions(target_keep=0.4, curriculum=0.5)
    assert [target_at(s, 100, options) for s in (0, 25, 50, 90)] == pytest.approx([1.0, 0.7, 0.4, 0.4])
    assert target_at(0, 100, TrainOptions(target_keep=0.4, curriculum=0.0)) == pytest.approx(0.4)


def test_teacher_is_the_untrimmed_model(base, trimmed):
    model, inputs = trimmed
    with torch.no_grad():
        torch.testing.assert_close(model.untrimmed_logits(**inputs), base(**inputs).logits, atol=1e-6, rtol=1e-6)


def test_bench_reports_realised_counts(trimmed, tmp_path, cli):
    """bench on a SmartTrim checkpoint: the FLOP-ideal speedup comes from the counts each batch realises (padded and
    per sample, the first never above the second), with the kept share per trimmer location, and a warning that
    random inputs say little about a method whose counts depend on them."""
    model, _ = trimmed
    model.save_pretrained(tmp_path / "st")
    code, out, err = cli("bench", tmp_path / "st", "--backends", "torch", "--batch-sizes", "1,4", "--iters", "1",
                         "--warmup", "0", "--memory", "off", "--report", tmp_path / "b", "--no-progress")
    assert code == 0, err
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["settings"]["method"]["name"] == "smarttrim"
    per_batch = bench["flops"]["per_batch"]
    assert set(per_batch) == {"1", "4"}
    for realised in per_batch.values():
        assert 1 < realised["flop_ideal"] <= realised["flop_ideal_per_sample"] + 1e-9
        assert "cross0.image" in realised["kept_share"]
    assert {s["flop_ideal"] for s in bench["speedups"]} == {v["flop_ideal"] for v in per_batch.values()}
    assert "random inputs" in err and "SmartTrim" in out
    assert "Kept share per trimmer location" in (tmp_path / "b" / "bench.md").read_text()
