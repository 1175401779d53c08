"""Computations: variables, tensor shapes and strides, names, headers, flops, bad sizes."""

import pytest

import looptune
from looptune import _core


def test_matmul_vars_tensors_and_names():
    c = looptune.matmul(128, 64, 256)
    assert c.kind == "matmul" and c.spec == "mk,kn->mn"
    assert [(v.name, v.extent, v.reduction) for v in c.vars] == [
        ("m", 128, False),
        ("k", 64, True),
        ("n", 256, False),
    ]
    a, b = c.inputs
    assert (a.name, a.shape, b.name, b.shape) == ("A", (128, 64), "B", (64, 256))
    assert a.strides == {"m": 64, "k": 1, "n": 0}
    assert b.strides == {"m": 0, "k": 256, "n": 1}
    assert c.output.name == "C" and c.output.shape == (128, 256)
    assert c.output.strides == {"m": 256, "k": 0, "n": 1}
    assert c.name == "mm128_64_256"
    assert c.header() == "matmul m=128 k=64 n=256"
    assert c.flops == 2 * 128 * 64 * 256


def test_batch_matmul():
    c = looptune.batch_matmul(4, 8, 16, 32)
    assert [v.name for v in c.vars] == ["b", "m", "k", "n"]
    assert c.inputs[0].shape == (4, 8, 16) and c.inputs[1].shape == (4, 16, 32)
    assert c.output.shape == (4, 8, 32)
    assert c.inputs[1].strides == {"b": 16 * 32, "m": 0, "k": 32, "n": 1}
    assert c.name == "bmm4_8_16_32"
    assert c.header() == "batch_matmul b=4 m=8 k=16 n=32"
    assert c.flops == 2 * 4 * 8 * 16 * 32


def test_conv2d_padded_strided():
    c = looptune.conv2d(2, 3, 9, 7, 4, 3, 2, stride=2, pad=1)
    oh, ow = (9 + 2 - 3) // 2 + 1, (7 + 2 - 2) // 2 + 1
    assert [v.name for v in c.vars] == ["n", "k", "oh", "c", "r", "s", "ow"]
    assert [v.reduction for v in c.vars] == [False, False, False, True, True, True, False]
    i, w = c.inputs
    assert i.shape == (2, 3, 9, 7) and i.alloc_shape == (2, 3, 11, 9) and i.pad == (0, 0, 1, 1)
    assert i.strides == {"n": 3 * 11 * 9, "k": 0, "oh": 2 * 9, "c": 11 * 9, "r": 9, "s": 1, "ow": 2}
    assert w.shape == (4, 3, 3, 2)
    assert w.strides == {"n": 0, "k": 18, "oh": 0, "c": 6, "r": 2, "s": 1, "ow": 0}
    assert c.output.shape == (2, 4, oh, ow)
    assert c.name == "conv2_3_9_7_4_3_2_s2_p1"
    assert (c.conv_stride, c.conv_pad) == (2, 1)
    assert c.header() == "conv2d n=2 c=3 h=9 w=7 k=4 r=3 s=2 stride=2 pad=1"
    assert c.flops == 2 * 2 * 4 * oh * ow * 3 * 3 * 2


def test_contraction_order_and_repeated_letter():
    c = looptune.contraction("mk,kn->mn", m=128, k=64, n=256)
    assert [v.name for v in c.vars] == ["m", "k", "n"]
    assert c.name == "ein_mk_kn_mn_m128_k64_n256"
    assert c.header() == "contraction mk,kn->mn k=64 m=128 n=256"
    c = looptune.contraction("acb,bd->adc", a=2, b=3, c=4, d=5)
    assert [v.name for v in c.vars] == ["a", "d", "b", "c"]
    # a letter repeated in one input adds its strides (a diagonal)
    diag = looptune.contraction("ii,ij->j", i=4, j=3)
    assert diag.inputs[0].strides["i"] == 5 and diag.inputs[0].shape == (4, 4)


@pytest.mark.parametrize(
    "comp",
    [
        looptune.matmul(1, 3, 17),
        looptune.batch_matmul(1, 2, 3, 4),
        looptune.conv2d(1, 64, 56, 56, 64, 3, 3, 1, 1),
        looptune.contraction("abc,cd->abd", a=2, b=5, c=7, d=9),
    ],
)
def test_header_round_trip(comp):
    back = looptune.parse_computation(comp.header())
    assert back == comp and back.name == comp.name and hash(back) == hash(comp)


@pytest.mark.parametrize(
    "make",
    [
        lambda: looptune.matmul(0, 4, 4),
        lambda: looptune.matmul(4, -1, 4),
        lambda: looptune.matmul(4, 4, (1 << 24) + 1),
        lambda: looptune.matmul(1 << 16, 1 << 16, 1),  # A too large
        lambda: looptune.batch_matmul(0, 1, 1, 1),
        lambda: looptune.conv2d(1, 1, 2, 2, 1, 3, 3),  # filter larger than input
        lambda: looptune.conv2d(1, 1, 4, 4, 1, 3, 3, stride=0),
        lambda: looptune.conv2d(1, 1, 4, 4, 1, 3, 3, pad=-1),
        lambda: looptune.contraction("mk,kn", m=1, k=1, n=1),
        lambda: looptune.contraction("mk,kn,nq->mq", m=1, k=1, n=1, q=1),
        lambda: looptune.contraction("mK,Kn->mn", m=1, K=1, n=1),
        lambda: looptune.contraction("mk,kn->mm", m=1, k=1, n=1),
        lambda: looptune.contraction("mk,kn->mz", m=1, k=1, n=1, z=1),
        lambda: looptune.contraction("mk,kn->mn", m=1, k=1),
        lambda: looptune.contraction("mk,kn->mn", m=1, k=1, n=1, q=2),
        lambda: looptune.contraction("mk,kn->mn", m=0, k=1, n=1),
    ],
)
def test_bad_sizes_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_variable_and_iteration_limits():
    letters = "abcdefghijklm"  # 13 variables > MAX_VARS
    with pytest.raises(ValueError, match="at most 12"):
        looptune.contraction(f"{letters[:7]},{letters[6:]}->a", dict.fromkeys(letters, 1))
    with pytest.raises(ValueError, match="iteration space"):
        looptune.contraction("abc,def->a", dict.fromkeys("abcdef", 1 << 10))
    assert _core.MAX_VARS == 12 and _core.MAX_LOOPS == 16 and _core.MAX_UNROLL == 64


def test_error_messages_name_the_bad_value():
    with pytest.raises(ValueError, match="m must be in 1..16777216, got 0"):
        looptune.matmul(0, 4, 4)
    with pytest.raises(ValueError, match="no size given for letter 'n'"):
        looptune.contraction("mk,kn->mn", m=1, k=1)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "matmul",
        "matmul m=1 k=2",
        "matmul m=1 k=2 n=3 q=4",
        "matmul m=1 k=2 n=x",
        "matmul m=1 m=1 k=2 n=3",
        "gemm m=1 k=2 n=3",
        "conv2d n=1",
        "contraction",
        "matmul m=-1 k=2 n=3",
    ],
)
def test_parse_computation_rejects_junk(header):
    with pytest.raises(ValueError):
        looptune.parse_computation(header)


def test_non_integer_sizes_are_type_errors():
    with pytest.raises(TypeError):
        _core.matmul(1.5, 2, 3)
