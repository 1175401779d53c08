"""Loop trees: ranges, sizes and tails, dump/parse round trips, stable hashes, pickling."""

import os
import pickle
import random
import subprocess
import sys

import pytest

import looptune


def _to(tree, index):
    while tree.cursor < index:
        tree = tree.down()
    while tree.cursor > index:
        tree = tree.up()
    return tree


def test_base_schedule():
    # plain: n=3 is narrow, so the auto layout would transpose B (block 1: loops m, no, k, ni)
    t = looptune.matmul(67, 131, 3, "plain").default_schedule()
    assert t.depth == 3 and t.cursor == 0
    assert [(lp.var, lp.step, lp.size, lp.tail, lp.unroll, lp.vectorize) for lp in t.loops] == [
        ("m", 1, 67, 0, False, True),
        ("k", 1, 131, 0, False, True),
        ("n", 1, 3, 0, False, True),
    ]


@pytest.mark.parametrize("extent", [1, 3, 17, 67, 131])
def test_range_size_tail_on_odd_sizes(extent):
    comp = looptune.matmul(extent, 5, 2)
    t = comp.default_schedule()
    if extent < 2:
        assert not t.is_legal("split_2")
        return
    factor = 2 if extent < 8 else 8
    t = t.split(factor)  # m: step factor over extent, then step 1 over factor
    outer, inner = t.loops[0], t.loops[1]
    assert (outer.step, outer.range, outer.size, outer.tail) == (
        factor,
        extent,
        extent // factor,
        extent % factor,
    )
    assert (inner.var, inner.step, inner.range, inner.size, inner.tail) == (
        "m",
        1,
        factor,
        factor,
        0,
    )
    if outer.size >= 2:  # split the outer loop again: three loops of m
        t3 = t.split(2)
        assert [lp.step for lp in t3.loops[:3]] == [2 * factor, factor, 1]
        assert t3.loops[1].range == 2 * factor and t3.loops[1].size == 2
        assert t3.loops[0].tail == extent % (2 * factor)


def test_dump_format():
    t = looptune.matmul(67, 32, 16).default_schedule().split(8).down().toggle_unroll()
    t = _to(t, 3).toggle_vectorize()
    assert t.dump() == (
        "# matmul m=67 k=32 n=16\n"
        "for m in 8 r 3\n"
        " for m' in 8 [unroll]\n"
        "  for k in 32\n"
        "   for n in 16 [novec]  <-\n"
        "    C[m,n] += A[m,k] * B[k,n]\n"
    )
    assert str(t) == t.dump()


def test_conv_dump_statement():
    t = looptune.conv2d(1, 8, 10, 10, 4, 3, 3, stride=2, pad=1).default_schedule()
    assert t.dump().splitlines()[-1].strip() == "O[n,k,oh,ow] += I[n,c,oh*2+r,ow*2+s] * W[k,c,r,s]"


def test_dump_parse_round_trip_random(computations, random_walk):
    rng = random.Random(1234)
    seen = set()
    for _ in range(300):
        comp = rng.choice(computations)
        t = random_walk(comp.default_schedule(), rng, rng.randrange(0, 40))
        back = looptune.LoopTree.parse(t.dump())
        assert back == t and back.dump() == t.dump()
        assert back.hash() == t.hash() and back.state_hash() == t.state_hash()
        seen.add(t.hash())
    assert len(seen) > 100  # the walks really reach many different schedules


@pytest.mark.parametrize(
    "text",
    [
        "",
        "matmul m=4 k=4 n=4\nfor m in 4  <-\n",  # no '# '
        "# matmul m=4 k=4 n=4\nfor m in 4\n for k in 4\n  for n in 4\n",  # no cursor
        "# matmul m=4 k=4 n=4\nfor m in 4  <-\n for k in 4\n",  # n has no loop
        "# matmul m=4 k=4 n=4\nfor m in 3  <-\n for k in 4\n  for n in 4\n",  # 3 does not tile 4
        "# matmul m=4 k=4 n=4\nfor m in 2  <-\n for k in 4\n  for n in 4\n",  # m's inner step != 1
        "# matmul m=4 k=4 n=4\nfor q in 4  <-\n for k in 4\n  for n in 4\n",  # unknown var
        "# matmul m=4 k=4 n=4\nfor m in 4  <-\nfor k in 4\n  for n in 4\n",  # bad indent
        "# matmul m=4 k=4 n=4\nfor m' in 4  <-\n for k in 4\n  for n in 4\n",  # bad prime
        "# matmul m=4 k=4 n=4\nfor m in 4 [fast] <-\n for k in 4\n  for n in 4\n",
        "# matmul m=4 k=4 n=4\nfor m in 4  <-\n for k in 4 <-\n  for n in 4\n",
        "# matmul m=4 k=4 n=4\nfor m in x  <-\n for k in 4\n  for n in 4\n",
        "# matmul m=4 k=4 n=4\nfor m in 1 r 5  <-\n for k in 4\n  for n in 4\n",
    ],
)
def test_parse_rejects_inconsistent_text(text):
    with pytest.raises(ValueError):
        looptune.LoopTree.parse(text)


def test_parse_tail_recovers_step():
    text = (
        "# matmul m=17 k=4 n=4\nfor m in 5 r 2\n for k in 4  <-\n  for m' in 3\n"
        "   for n in 4\n    C[m,n] += A[m,k] * B[k,n]\n"
    )
    t = looptune.LoopTree.parse(text)
    assert [lp.step for lp in t.loops] == [3, 1, 1, 1] and t.cursor == 1


def test_hash_equality_and_cursor():
    comp = looptune.matmul(64, 64, 64)
    a = comp.default_schedule().split(4)
    b = looptune.matmul(64, 64, 64).default_schedule().split(4)
    assert a == b and a.hash() == b.hash() and hash(a) == hash(b)
    assert a.down().hash() == a.hash() and a.down().state_hash() != a.state_hash()
    assert a.down() != a
    others = [
        comp.default_schedule(),
        a.toggle_unroll(),
        comp.default_schedule().split(8),
        looptune.matmul(64, 64, 32).default_schedule().split(4),
    ]
    assert len({a.hash(), *(o.hash() for o in others)}) == 5


def test_hash_is_stable_across_processes():
    t = looptune.conv2d(1, 8, 10, 10, 4, 3, 3, 2, 1).default_schedule().down().split(2).down()
    code = (
        "import looptune; t = looptune.LoopTree.parse(open(0).read()); "
        "print(t.hash(), t.state_hash())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=t.dump(),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert out.stdout.split() == [str(t.hash()), str(t.state_hash())]


def test_known_hash_value():
    # FNV-1a over the header and loops: pinned so caches stay valid across versions.
    t = looptune.matmul(128, 64, 256).default_schedule()
    assert t.hash() == 6769630696296762194


def test_pickle_and_repr():
    t = looptune.batch_matmul(2, 17, 3, 9).default_schedule().down().split(4).toggle_unroll()
    back = pickle.loads(pickle.dumps(t))
    assert back == t and back.cursor == t.cursor
    assert repr(t).startswith("<LoopTree bmm2_17_3_9 depth=5 cursor=1 hash=")
    assert repr(t.loops[1]) == (
        "Loop(var='m', step=4, size=4, tail=1, unroll=True, vectorize=True)"
    )
    comp = pickle.loads(pickle.dumps(t.computation))
    assert comp == t.computation and repr(comp) == "Computation('batch_matmul b=2 m=17 k=3 n=9')"
    assert {t, back} == {t}


def test_split_by_full_size_gives_a_size_one_loop():
    t = looptune.matmul(64, 8, 8).default_schedule().split(16).down().split(16)
    assert [(lp.step, lp.size, lp.range) for lp in t.loops[:3]] == [
        (16, 4, 64),
        (16, 1, 16),
        (1, 16, 16),
    ]
    assert looptune.LoopTree.parse(t.dump()) == t


def test_parse_of_corrupted_dumps_never_crashes(computations, random_walk):
    rng = random.Random(99)
    alphabet = "0123456789 mnkr'<-[]#\nabcxyz=,"
    accepted = 0
    for _ in range(500):
        text = random_walk(rng.choice(computations).default_schedule(), rng, 15).dump()
        chars = list(text)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[pos] = rng.choice(alphabet)
            elif op == 1:
                del chars[pos]
            else:
                chars.insert(pos, rng.choice(alphabet))
        try:
            tree = looptune.LoopTree.parse("".join(chars))
        except ValueError:
            continue
        accepted += 1
        assert looptune.LoopTree.parse(tree.dump()) == tree  # anything accepted is consistent
    assert accepted < 500
