"""PuMer settings and the token-count schedule."""

from __future__ import annotations

import json

import pytest

from pumer_export.config import PumerConfig, get_pumer_config, parse_layers, set_pumer_config
from pumer_export.errors import ConfigError
from pumer_export.schedule import encoder_flops, image_tokens_for, layer_counts, token_schedule

B32 = PumerConfig(reduce_layers=(2, 5, 8), prune_ratio=0.1, image_merge_ratio=0.3, text_merge_ratio=0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prune_ratio": 1.0}, "prune_ratio must be in [0, 1)"),
        ({"image_merge_ratio": -0.1}, "image_merge_ratio must be in [0, 1)"),
        ({"text_merge_ratio": float("nan")}, "text_merge_ratio must be a number"),
        ({"reduce_layers": (2, 2)}, "more than once"),
        ({"reduce_layers": (-1,)}, "non-negative integers"),
        ({"reduce_layers": "2,5"}, "list of layer indices"),
        ({"score": "max"}, "score must be one of"),
        ({"attention_masking": "none"}, "attention_masking must be one of"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        PumerConfig(**kwargs)


def test_layers_must_exist_in_the_model():
    with pytest.raises(ConfigError, match=r"reduce_layers \[12\] are outside the model's 12 layers"):
        B32.replace(reduce_layers=(2, 12)).check_depth(12)


def test_round_trip_through_config_json(tmp_path):
    from transformers import ViltConfig

    config = ViltConfig(num_hidden_layers=12)
    pumer = PumerConfig((8, 2, 5), 0.1, 0.3, 0.2, score="first_head", attention_masking="official")
    set_pumer_config(config, pumer)
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())["pumer"]
    assert stored["reduce_layers"] == [2, 5, 8]
    assert get_pumer_config(ViltConfig.from_pretrained(tmp_path)) == pumer


def test_unknown_or_future_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown PuMer setting"):
        PumerConfig.from_dict({"reduce_layers": [1], "keep_rate": 0.5})
    with pytest.raises(ConfigError, match="format_version 2"):
        PumerConfig.from_dict({"format_version": 2})


def test_official_settings():
    official = {"reduce_layers": [1, 3], "prune_r": 0.1, "merge_r": 0.3, "merge_text": 0.2, "sim_method": "fh"}
    pumer = PumerConfig.from_official(official)
    assert pumer == PumerConfig((1, 3), 0.1, 0.3, 0.2, score="first_head", attention_masking="official")
    assert PumerConfig.from_official({**official, "sim_method": "mh"}).score == "mean"
    with pytest.raises(ConfigError, match="merge_style 'tip'"):
        PumerConfig.from_official({**official, "merge_style": "tip"})


def test_parse_layers():
    assert parse_layers("2,5,8") == (2, 5, 8)
    for empty in ("", " "):  # `apply --layers ''` would write a checkpoint that reduces nothing
        with pytest.raises(ConfigError, match="--layers is empty"):
            parse_layers(empty)
    with pytest.raises(ConfigError, match="comma-separated integers"):
        parse_layers("2;5")


def test_vilt_b32_schedule_matches_the_paper_setting():
    # Counts worked out by hand from the official rules for 384x384 (145 image tokens) and text 32.
    schedule = token_schedule(B32, num_layers=12, text_tokens=32, image_tokens=image_tokens_for((384, 384), 32))
    image = [(c.image_in, c.keep, c.image_out) for c in schedule.layers]
    text = [(c.text_in, c.text_out) for c in schedule.layers]
    assert image == [(145, 131, 87), (87, 78, 52), (52, 47, 31)]
    assert text == [(32, 26), (26, 21), (21, 17)]


def test_fixture_schedule_matches_the_official_run():
    # Counts recorded from the official code for the shared fixture (5x10 patches, text 32).
    pumer = PumerConfig((1, 3, 4), 0.1, 0.3, 0.2)
    schedule = token_schedule(pumer, num_layers=6, text_tokens=32, image_tokens=51)
    assert [(c.image_in, c.keep, c.image_out, c.text_out) for c in schedule.layers] == [
        (51, 46, 31, 26), (31, 28, 19, 21), (19, 17, 11, 17)
    ]


def test_rounding_is_pythons_half_to_even():
    # 0.1 * 145 == 14.5 rounds to 14 (even), 0.3 * 145 == 43.5 rounds to 44 (even).
    counts = layer_counts(B32, 2, 40, 145)
    assert (counts.prune, counts.image_merge) == (14, 44)


def test_prune_count_zero_turns_the_layer_off():
    counts = layer_counts(PumerConfig((0,), 0.01, 0.5, 0.5), 0, 10, 20)  # round(0.2) == 0
    assert not counts.active
    assert (counts.keep, counts.image_out, counts.text_out, counts.image_merge, counts.text_merge) == (20, 20, 10, 0, 0)


def test_merge_is_capped_and_keep_is_at_least_one():
    counts = layer_counts(PumerConfig((0,), 0.9, 0.9, 0.9), 0, 7, 10)
    assert counts.keep == 1 and counts.image_merge == 0  # nothing left to merge
    assert counts.text_merge == 3  # (7 - 1) // 2
    counts = layer_counts(PumerConfig((0,), 0.5, 0.9, 0.0), 0, 4, 20)
    assert counts.keep == 10 and counts.image_merge == 4  # (10 - 1) // 2


def test_flops_by_hand():
    # One layer, hidden 2, MLP 4, 3 tokens: 2*3*2*6 + 4*9*2 + 2*3*2*2 + 4*3*2*4 = 72+72+24+96
    schedule = token_schedule(PumerConfig(), num_layers=1, text_tokens=1, image_tokens=2)
    assert encoder_flops(schedule, 2, 4) == 264
    base = token_schedule(PumerConfig(), num_layers=12, text_tokens=32, image_tokens=145)
    pumer = token_schedule(B32, num_layers=12, text_tokens=32, image_tokens=145)
    ratio = encoder_flops(base, 768, 3072) / encoder_flops(pumer, 768, 3072)
    assert 1.5 < ratio < 2.5
