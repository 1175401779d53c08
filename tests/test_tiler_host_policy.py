"""The tiling policy is chosen by ISA and, where one is shipped, by the host's microarchitecture."""

from __future__ import annotations

import re

import pytest

import looptune
from looptune.agent.tiler_policy import DATA_DIR, default_tiler_path, load_tiler, signature_tag

ZEN1 = "AuthenticAMD family 23 model 1"


def test_cpu_signature_names_vendor_family_and_model() -> None:
    sig = looptune.cpu_signature()
    assert re.fullmatch(r"\w+ family \d+ model \d+", sig), sig
    assert re.fullmatch(r"[a-z]+-f\d+-m\d+", signature_tag(sig))


@pytest.mark.parametrize(
    "sig,tag",
    [(ZEN1, "amd-f23-m1"), ("GenuineIntel family 6 model 207", "intel-f6-m207"),
     ("HygonGenuine family 24 model 0", "hygongenuine-f24-m0")],
)
def test_signature_tag(sig: str, tag: str) -> None:
    assert signature_tag(sig) == tag


def test_a_policy_trained_on_the_microarchitecture_is_preferred() -> None:
    tuned = default_tiler_path("avx2", ZEN1)
    assert tuned == DATA_DIR / "policy_tiler_avx2_amd-f23-m1.safetensors"
    pol = load_tiler(tuned)
    assert pol.isa == "avx2" and pol.meta["cpu_signature"] == ZEN1


def test_other_cpus_get_the_isa_policy() -> None:
    other = "GenuineIntel family 6 model 207"
    assert default_tiler_path("avx2", other) == DATA_DIR / "policy_tiler_avx2.safetensors"
    assert default_tiler_path("avx512", ZEN1) == DATA_DIR / "policy_tiler_avx512.safetensors"
    with pytest.raises(ValueError, match="unknown ISA"):
        default_tiler_path("sse2", ZEN1)
