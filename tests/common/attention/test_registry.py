"""The attention registry: errors that name the choices, capability queries, and meta-tests over all names."""

import inspect
import re
from pathlib import Path

import pytest
import torch

from common.attention import MECHANISMS, Capabilities, Mechanism, available, build, capabilities, get_class
from common.errors import ConfigError

TEST_DIR = Path(__file__).resolve().parent
LAYOUTS = {"tokens", "2d", "3d", "any", "multiscale"}
COSTS = {"N^2", "N", "N log N", "N sqrt N", "N k"}
MY_CAUSAL = {"softmax", "linear", "favor", "gla", "lightning", "aaren"}
MY_STATEFUL = {"gla", "lightning", "aaren"}
OWN_HEAD_WIDTH = {"mla"}  # heads of an explicit `head_dim`: `dim` need not be a multiple of num_heads


def test_unknown_name_lists_the_names():
    with pytest.raises(ConfigError) as err:
        build("sofmax", 16, 2)
    message = str(err.value)
    assert "sofmax" in message
    for name in ("softmax", "gla", "aaren", "efficient"):
        assert repr(name) in message


def test_causal_request_for_non_causal_mechanism_names_the_causal_ones():
    with pytest.raises(ConfigError) as err:
        build("efficient", 16, 2, causal=True)
    message = str(err.value)
    assert "efficient" in message and "causal" in message
    for name in MY_CAUSAL:
        assert repr(name) in message
    assert "'channel'" not in message  # only the ones that can


def test_available_filters_by_capability():
    causal = available(causal=True)
    assert set(causal) >= MY_CAUSAL
    assert not {"efficient", "channel"} & set(causal)
    assert set(available(state=True)) >= MY_STATEFUL
    assert "softmax" in available(bias=True)
    assert "efficient" in available(layout="any")
    with pytest.raises(ConfigError, match="bogus"):
        available(bogus=True)


def test_build_passes_options_and_returns_the_class():
    module = build("linear", 16, 2, causal=True, mode="recurrent", feature_map="relu")
    assert type(module) is get_class("linear") and module.causal and module.mode == "recurrent"
    assert capabilities("linear") == module.capabilities
    y = build("gla", 16, 2)(torch.randn(1, 4, 16))
    assert y.shape == (1, 4, 16)


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_every_mechanism_documents_its_paper_and_has_a_test_file(name):
    cls = get_class(name)
    caps = cls.capabilities
    assert isinstance(caps, Capabilities), f"{name}: `capabilities` must be a Capabilities"
    assert caps.paper.strip(), f"{name}: capabilities.paper is empty"
    assert caps.layout in LAYOUTS, f"{name}: layout {caps.layout!r} not one of {sorted(LAYOUTS)}"
    assert caps.cost in COSTS, f"{name}: cost {caps.cost!r} not one of {sorted(COSTS)}"
    doc = cls.__doc__ or ""
    # names its paper: an arXiv id or a venue year, and the paper's title words from `capabilities.paper`
    assert re.search(r"\b\d{4}\.\d{4,5}\b|\b(19|20)\d{2}\b", doc), f"{name}: docstring cites no arXiv id / year"
    title_words = [w for w in re.findall(r"[A-Za-z]{5,}", caps.paper.split("(")[0])][:4]
    assert any(w.lower() in doc.lower() for w in title_words), f"{name}: docstring does not name {caps.paper!r}"
    test_file = TEST_DIR / f"test_{MECHANISMS[name].split(':')[0].split('.')[-1]}.py"
    assert test_file.exists(), f"{name}: missing {test_file.relative_to(TEST_DIR.parents[2])}"


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_every_mechanism_keeps_the_shared_contract(name):
    """A Mechanism with its own capabilities, true to its constructor, and the one heads check."""
    cls = get_class(name)
    assert issubclass(cls, Mechanism) and "capabilities" in vars(cls), f"{name}: not a Mechanism declaring capabilities"
    # build() and TransformerBlock pass `causal` and `qkv_bias` by these declarations alone
    params = inspect.signature(cls).parameters
    assert cls.capabilities.causal == ("causal" in params), f"{name}: capabilities.causal vs constructor"
    assert cls.capabilities.qkv_bias == ("qkv_bias" in params), f"{name}: capabilities.qkv_bias vs constructor"
    assert build(name, 16, 4).num_heads == 4
    for heads in (0, -2):
        with pytest.raises(ConfigError) as err:
            build(name, 16, heads)
        assert err.value.key == "num_heads"
    if name in OWN_HEAD_WIDTH:
        assert build(name, 18, 4).num_heads == 4
        return
    with pytest.raises(ConfigError) as err:
        build(name, 18, 4)  # 18 (and every width derived from it here: 9 for GLA's keys) splits into no 4 heads
    assert (err.value.key, err.value.value) == ("num_heads", 4)
    assert re.fullmatch(r"a divisor of [\w *]+=\d+", err.value.expected), err.value.expected
