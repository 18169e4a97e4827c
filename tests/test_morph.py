"""Auto-Keras's space and search (issue 14): function-preserving morphisms, the edit distance, the kernel and the
GP, the search's strategies, its run directory and its resume; the networks' one-row form for sequences (mnist1d)."""
import json
import math
import os

import numpy as np
import pytest
import torch

from snas_fast.engine.seeds import make_generator
from snas_fast.search.bayes import (BourgainEmbedding, GaussianProcess, Observation, acquisition_search, kernel)
from snas_fast.search.morph import MorphConfig, MorphError, MorphSearch, propose
from snas_fast.spaces.morph import MorphNet, Morphism, MorphSpecError, Spec, edit_distance
from snas_fast.spaces.morph.distance import layers_distance, skips_distance


def _randomised(net: MorphNet, seed: int = 0) -> MorphNet:
    """Weights and BatchNorm statistics away from their initial values, so that an identity cannot pass by luck."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g) * 0.3
                if "running_var" in name:
                    t.copy_(t * (1 + noise.abs()))
                else:  # of the tensor's own scale, so that outputs stay near 1 however often this is done
                    t.add_(noise * (float(t.std()) if t.numel() > 1 and float(t.std()) > 0 else 1.0))
    return net.eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to 1e-5 of the output's scale."""
    return bool(((a - b).abs().max() <= 1e-5 * max(1.0, float(b.abs().max()))))


def _x(spec: Spec, n: int = 6) -> torch.Tensor:
    """Inputs ``[n, C, S, S]``, or ``[n, C, 1, S]`` for a one-row network."""
    return torch.randn(n, *spec.input_shape, generator=torch.Generator().manual_seed(1))


#: (image_size, one_row) of the two forms: 8x8 images (digits'), and sequences of 40 as one-row images (mnist1d's)
FORMS = {"square": (8, False), "one_row": (40, True)}


@pytest.fixture(scope="module", params=list(FORMS))
def grown(request):
    """A network with every kind of layer and skip (convs, pools, dense, an add-skip and a concat-skip), in either
    form (sides 8, 4, 2 or lengths 40, 20, 10: the same layers)."""
    size, one_row = FORMS[request.param]
    spec = Spec.initial(1, 10, width=8, image_size=size, one_row=one_row)
    for m in (Morphism("add_skip", 5, source=1, pools=2), Morphism("concat_skip", 3, source=1, pools=1),
              Morphism("deeper", 7)):
        spec = spec.apply(m)
    return _randomised(MorphNet(spec))


MORPHISMS = {
    "deeper_conv": Morphism("deeper", 3, kernel=3),
    "deeper_after_pool": Morphism("deeper", 2, kernel=5),
    "deeper_dense": Morphism("deeper", 7),
    "wider_conv_skip_target": Morphism("wider", 5, add=5),  # through the add-skip landing on it
    "wider_conv_skip_source": Morphism("wider", 1, add=3),  # feeds a conv, the add-skip and the concat-skip
    "wider_conv_concat_target": Morphism("wider", 3, add=4),
    "wider_dense": Morphism("wider", 7, add=6),
    "add_skip": Morphism("add_skip", 5, source=3, pools=1),
    "concat_skip": Morphism("concat_skip", 5, source=1, pools=2),
}


@pytest.mark.parametrize("name", list(MORPHISMS))
def test_each_morphism_preserves_the_function(grown, name):
    child = grown.morph(MORPHISMS[name], torch.Generator().manual_seed(0)).eval()
    x = _x(grown.spec)
    with torch.no_grad():
        assert _close(child(x), grown(x))
    assert child.spec != grown.spec and grown.spec.apply(MORPHISMS[name]) == child.spec


@pytest.mark.parametrize("form", list(FORMS))
def test_ten_random_morphisms_in_a_row_preserve_the_function(form):
    size, one_row = FORMS[form]
    kinds = set()
    for seed in range(3):
        net = _randomised(MorphNet.initial(1, 10, width=6, image_size=size, one_row=one_row), seed)
        x = _x(net.spec)
        with torch.no_grad():
            before = net(x)
        g = torch.Generator().manual_seed(seed)
        trained = net
        for step in range(10):
            m = net.spec.draw(g, max_width=48)
            kinds.add(m.kind)
            net = net.morph(m, g).eval()
            # and the same morphism on weights moved away from the identities the earlier morphisms set up
            child = trained.morph(m, g).eval()
            with torch.no_grad():
                assert _close(child(x), trained(x)), (seed, step, str(m))
            trained = _randomised(child, seed + step)
        with torch.no_grad():
            assert _close(net(x), before)
    assert kinds == {"deeper", "wider", "add_skip", "concat_skip"}


def test_wider_copies_filters_and_zeroes_their_readers(grown):
    child = grown.morph(Morphism("wider", 3, add=4), torch.Generator().manual_seed(0))
    old, new = grown.state_dict(), child.state_dict()
    w_old, w_new = old["layer_modules.L3.0.weight"], new["layer_modules.L3.0.weight"]
    assert torch.equal(w_new[:8], w_old)
    for row in w_new[8:]:  # each new filter is a copy of an existing one (Net2Net)
        assert any(torch.equal(row, r) for r in w_old)
    bn = {k: new[f"layer_modules.L3.1.{k}"][8:] for k in ("weight", "bias", "running_mean", "running_var")}
    assert (bn["weight"] == 1).all() and (bn["bias"] == 0).all() and (bn["running_mean"] == 0).all()
    assert torch.allclose(bn["running_var"], torch.full((4,), 1 - 1e-5))  # the identity in eval mode
    readers = [k for k in new if k.endswith("weight") and new[k].dim() > 1 and new[k].shape != old[k].shape
               and k != "layer_modules.L3.0.weight"]
    assert readers  # the concat-skip landing on layer 3 reads the new channels
    for k in readers:
        extra = new[k].shape[1] - old[k].shape[1]
        assert extra == 4 and (new[k] != 0).sum() == (old[k] != 0).sum()  # the new columns are zero


def test_noise_moves_only_the_new_weights_a_little(grown):
    g = torch.Generator().manual_seed(0)
    child = grown.morph(Morphism("wider", 3, add=4), g, noise=1e-4).eval()
    exact = grown.morph(Morphism("wider", 3, add=4), torch.Generator().manual_seed(0)).eval()
    moved = {k for k, v in child.state_dict().items() if not torch.equal(v, exact.state_dict()[k])}
    assert moved and all(k.split(".")[1] in ("L3", "L4", "L5", "L10") for k in moved)  # the layer and its readers
    with torch.no_grad():
        diff = (child(_x(grown.spec)) - exact(_x(grown.spec))).abs().max()
    assert 0 < diff < 1e-2


def test_parameter_counts_grow_as_stated():
    spec = Spec.initial(3, 10, width=8, image_size=8)  # conv1 8 <- 3, conv3 8 <- 8, conv5 8 <- 8, dense 8, out 10
    net = MorphNet(spec)
    p = net.num_params()
    assert p == spec.num_params() == (27 * 8 + 16) + 2 * (72 * 8 + 16) + (8 + 1) * 8 + (8 + 1) * 10
    n = 5
    stated = {  # the formulas of issue 14
        Morphism("deeper", 3, kernel=5): 25 * 8 * 8 + 2 * 8,            # k*k*C*C conv + BatchNorm scale, shift
        Morphism("deeper", 7): 8 * 8 + 8,                               # an F x F dense layer with bias
        Morphism("wider", 3, add=n): n * (9 * 8 + 2) + n * 9 * 8,       # n filters + the next conv's inputs
        Morphism("wider", 5, add=n): n * (9 * 8 + 2) + n * 8,           # n filters + the dense layer's inputs
        Morphism("wider", 7, add=n): n * (8 + 1) + n * 10,              # n units + the output's inputs
        Morphism("add_skip", 5, source=1, pools=2): 8 * 8 + 8,           # a 1x1 conv Cu -> Cv with bias
        Morphism("concat_skip", 5, source=1, pools=2): (8 + 8) * 8 + 8,  # a 1x1 conv Cv + Cu -> Cv with bias
    }
    for m, grows in stated.items():
        child = net.morph(m)
        assert child.num_params() - p == grows, str(m)
        assert child.spec.num_params() == child.num_params()


def test_neighbours_are_distinct_children_with_inherited_weights(grown):
    children = grown.neighbours(6, torch.Generator().manual_seed(3))
    assert 1 <= len(children) <= 6
    descriptors = {c.spec.descriptor() for _, c in children}
    assert len(descriptors) == len(children) and grown.spec.descriptor() not in descriptors
    x = _x(grown.spec)
    for description, child in children:
        assert description["kind"] in ("deeper", "wider", "add_skip", "concat_skip")
        with torch.no_grad():
            assert _close(child.eval()(x), grown(x))
    with pytest.raises(ValueError, match="n: expected an integer >= 0"):
        grown.neighbours(-1)


def test_json_round_trip_and_malformed_descriptions(grown):
    text = grown.to_json()
    assert Spec.from_json(text) == grown.spec and MorphNet.from_json(text).spec == grown.spec
    d = json.loads(text)
    bad = {
        "not json {": "not JSON",
        json.dumps([1, 2]): "expected a JSON object",
        json.dumps(dict(d, format="keras")): "format",
        json.dumps({k: v for k, v in d.items() if k != "layers"}): "missing layers",
        json.dumps(dict(d, layers=[dict(d["layers"][0], kind="lstm")] + d["layers"][1:])): "kind",
        json.dumps(dict(d, layers=[dict(d["layers"][0], inputs=[7])] + d["layers"][1:])): "inputs",
        json.dumps(dict(d, layers=[dict(d["layers"][0], kernel=4)] + d["layers"][1:])): "kernel: expected an odd",
        json.dumps(dict(d, layers=[dict(d["layers"][0], filters=0)] + d["layers"][1:])): "filters",
        json.dumps(dict(d, layers=d["layers"][:-1])): "the last layer must be the output",
        json.dumps(dict(d, layers=[dict(d["layers"][0], colour=1)] + d["layers"][1:])): "unknown colour",
        json.dumps(dict(d, num_classes=True)): "num_classes",
    }
    for text, says in bad.items():
        with pytest.raises(MorphSpecError, match=says) as info:
            MorphNet.from_json(text)
        assert "\n" not in str(info.value)
    with pytest.raises(MorphSpecError, match="skip goes from a conv layer to a later conv"):
        grown.spec.apply(Morphism("add_skip", 1, source=5))


# ---------------------------------------------------------------------------------------------------------------
# The one-row form: sequences [B, C, 1, L] (mnist1d), 1 x k convs and 1 x 2 pools


def test_one_row_convs_are_1_by_k_and_pools_keep_the_row(grown):
    net = grown.morph(Morphism("deeper", 3, kernel=5))
    one_row = net.spec.one_row
    for layer in net.spec.layers:
        if layer.kind in ("conv", "add", "concat"):
            w = net.state_dict()[f"layer_modules.L{layer.id}.{'0.' if layer.kind == 'conv' else ''}weight"]
            k = layer.kernel if layer.kind == "conv" else 1
            assert list(w.shape[2:]) == ([1, k] if one_row else [k, k]), (layer, list(w.shape))
    w = net.state_dict()[f"layer_modules.L{net.spec.next_id() - 1}.0.weight"]  # the deeper conv: the identity
    tap = (0, 2) if one_row else (2, 2)
    assert torch.equal(w[:, :, tap[0], tap[1]], torch.eye(8)) and int((w != 0).sum()) == 8
    seen = {}
    hooks = [net.layer_modules[f"L{n}"].register_forward_hook(lambda m, x, out, n=n: seen.update({n: out.shape}))
             for n in (1, 3, 5)]
    with torch.no_grad():
        net.eval()(_x(net.spec, 2))
    for h in hooks:
        h.remove()
    for node, shape in seen.items():  # (C, S) of the description: [B, C, 1, S] or [B, C, S, S]
        c, side = net.spec.shape(node)
        assert list(shape) == [2, c, 1 if one_row else side, side], (node, list(shape))
    assert [net.spec.shape(n)[1] for n in (1, 3, 5)] == ([40, 20, 10] if one_row else [8, 4, 2])


def test_one_row_counts_live_weights_only():
    from snas_fast.spaces import count_module

    spec = Spec.initial(1, 10, width=8, image_size=40, one_row=True)  # conv1 8 <- 1, conv3, conv5 8 <- 8; 1x3
    net = MorphNet(spec)
    assert net.num_params() == spec.num_params() == (3 * 8 + 16) + 2 * (24 * 8 + 16) + (8 + 1) * 8 + (8 + 1) * 10
    for m in (Morphism("deeper", 3, kernel=5), Morphism("wider", 3, add=5), Morphism("add_skip", 5, source=1,
                                                                                     pools=2)):
        child = net.morph(m)
        assert child.spec.num_params() == child.num_params(), str(m)
    assert net.morph(Morphism("deeper", 3, kernel=5)).num_params() - net.num_params() == 5 * 8 * 8 + 2 * 8
    # multiply-adds: each conv's outputs C x 1 x L times its C_in x 1 x 3 weights; then the dense and output layers
    flops = 8 * 40 * 3 + 8 * 20 * 24 + 8 * 10 * 24 + 8 * 8 + 8 * 10
    assert count_module(net, spec.input_shape).flops == flops


def test_one_row_json_round_trip_and_the_square_form_by_default(grown):
    spec = grown.spec
    d = json.loads(spec.to_json())
    assert ("one_row" in d) == spec.one_row and (d.get("one_row") is True) == spec.one_row  # written only when true
    assert Spec.from_json(spec.to_json()) == spec and Spec.from_dict(d).one_row == spec.one_row
    square = {k: v for k, v in d.items() if k != "one_row"}  # a description from before the field: square
    assert Spec.from_dict(square).one_row is False and Spec.from_dict(dict(square, one_row=True)).one_row is True
    assert Spec.from_dict(square) != Spec.from_dict(dict(square, one_row=True))  # the form is part of the network
    for bad in ("yes", 1, None):
        with pytest.raises(MorphSpecError, match=rf"network: one_row: expected true or false, got {bad!r}") as info:
            Spec.from_dict(dict(d, one_row=bad))
        assert "\n" not in str(info.value)


def test_one_row_forward_refuses_a_square_input():
    net = MorphNet.initial(1, 10, width=4, image_size=40, one_row=True)
    with pytest.raises(ValueError, match=r"x: expected \[B, 1, 1, W\], got \[2, 1, 40, 40\]"):
        net(torch.zeros(2, 1, 40, 40))


def test_the_space_builds_one_row_networks_for_sequences():
    from types import SimpleNamespace

    from snas_fast import data as datasets
    from snas_fast.spaces import get_space

    first, _, info = datasets.load("mnist1d", limit=8)
    space = get_space("morph").configure(SimpleNamespace(width=4), info)
    spec = space.initial()
    assert (spec.one_row, spec.image_size, spec.in_channels) == (True, 40, 1)
    arch = space.sample(torch.Generator().manual_seed(0))
    assert arch.one_row and space.from_dict(json.loads(json.dumps(space.to_dict(arch)))) == arch
    x = first.tensors[0]
    assert list(x.shape[1:]) == list(arch.input_shape) == [1, 1, 40]
    with torch.no_grad():
        assert space.child(arch).eval()(x).shape == (len(x), 10)
    square = Spec.initial(1, 10, width=4, image_size=40)
    with pytest.raises(ValueError, match=r"one_row\) \(1, 10, 40, False\), the data has \(1, 10, 40, True\)"):
        space.child(square)
    digits = get_space("morph").configure(SimpleNamespace(width=4), datasets.load("digits", limit=8)[2]).initial()
    assert (digits.one_row, digits.image_size) == (False, 8)


def test_morph_random_runs_on_mnist1d(tmp_path):
    from snas_fast.search.registry import get_strategy

    strategy = get_strategy("morph-random")
    config = _config(tmp_path, dataset="mnist1d", models=2, epochs=1, width=4, data_limit=64)
    result = strategy.run(config, strategy.load_data(config), progress=False)
    assert len(result.history) == 2 and result.genotype.one_row and result.genotype.image_size == 40
    assert 0 <= result.test_acc <= 1
    best = json.load(open(tmp_path / "best.json"))["spec"]
    assert best["one_row"] is True and Spec.from_dict(best) == result.genotype


def _specs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    specs = [Spec.initial(1, 10, width=8, image_size=8)]
    while len(specs) < n:
        s = specs[int(torch.randint(len(specs), (1,), generator=g))]
        specs.append(s.apply(s.draw(g, 64)))
    return specs


def test_edit_distance_is_zero_on_itself_symmetric_and_equals_the_plain_programme():
    specs = _specs(24)
    base = Spec.initial(1, 10, width=8, image_size=8)
    assert edit_distance(base, base.apply(Morphism("deeper", 3, kernel=3))) == 1.0  # one insertion
    assert edit_distance(base, base.apply(Morphism("wider", 3, add=8))) == pytest.approx(0.5 / 3)  # 8 -> 16
    assert edit_distance(base, base.apply(Morphism("add_skip", 5, source=1, pools=2))) == 1.0  # one more skip
    for a in specs:
        assert edit_distance(a, a) == 0.0
        for b in specs[::5]:
            d = edit_distance(a, b)
            assert d == edit_distance(b, a)
            da, db = a.descriptor(), b.descriptor()
            assert d == pytest.approx(layers_distance(da[0], db[0]) + skips_distance(da[1], db[1]), abs=1e-12)


def test_kernel_matrix_is_positive_semidefinite():
    specs = _specs(30, seed=1)
    embedding = BourgainEmbedding(specs)
    e = embedding.embed(specs)
    K = kernel(e, e)
    assert np.allclose(K, K.T) and np.allclose(np.diag(K), 1.0)
    assert np.linalg.eigvalsh(K).min() > -1e-10


@pytest.mark.parametrize("normalize", [False, True])
def test_gp_posterior_on_a_1d_toy_is_the_closed_form(normalize):
    x = np.array([-2.0, -0.5, 0.3, 1.7, 2.5])
    y = np.sin(x) + 0.5
    xs = np.linspace(-3, 3, 7)
    k = lambda a, b: np.exp(-(a[:, None] - b[None, :]) ** 2)  # noqa: E731
    gp = GaussianProcess(normalize).fit(k(x, x), y)
    mean, std = gp.predict(k(xs, x), np.ones(len(xs)))
    mu, s = (y.mean(), y.std()) if normalize else (0.0, 1.0)
    K = k(x, x) + 1e-10 * np.eye(len(x))
    want_mean = mu + k(xs, x) @ np.linalg.solve(K, y - mu)
    want_var = s ** 2 * (1 - np.einsum("ij,ji->i", k(xs, x), np.linalg.solve(K, k(x, xs))))
    assert np.allclose(mean, want_mean, atol=1e-8)
    assert np.allclose(std, np.sqrt(np.maximum(want_var, 0)), atol=1e-6)
    assert np.allclose(gp.predict(k(x, x), np.ones(len(x)))[0], y, atol=1e-6)  # through the observations


def _evaluations_to_reach(strategy: str, seed: int, target: Spec, reach: float, budget: int) -> int:
    """Evaluations of ``-edit_distance(x, target)`` a strategy needs before one reaches ``reach`` (budget + 1 if
    none does)."""
    first = Spec.initial(1, 10, width=16, image_size=8)
    observations = [Observation(1, first, -edit_distance(first, target))]
    for step in range(1, budget):
        if observations[-1].metric >= reach:
            return step
        p = propose(strategy, observations, make_generator(seed, step), 8, max_width=64, seed=seed)
        observations.append(Observation(step + 1, p.spec, -edit_distance(p.spec, target)))
    return budget if observations[-1].metric >= reach else budget + 1


def test_bo_reaches_a_synthetic_target_in_fewer_evaluations_than_random():
    target = Spec.initial(1, 10, width=16, image_size=8)
    for m in (Morphism("deeper", 3, kernel=3), Morphism("wider", 5, add=16),
              Morphism("add_skip", 5, source=1, pools=2), Morphism("deeper", 7)):
        target = target.apply(m)  # four morphisms from the first network: -edit_distance starts at -3.17
    seeds, budget, reach = range(4), 20, -1.5
    bo = [_evaluations_to_reach("bo", s, target, reach, budget) for s in seeds]
    rnd = [_evaluations_to_reach("random", s, target, reach, budget) for s in seeds]
    print(f"evaluations to reach {reach} (budget {budget}): bo {bo}, random {rnd}")
    assert sum(bo) < sum(rnd), (bo, rnd)


def test_acquisition_search_proposes_something_new_within_its_chain():
    observations = [Observation(i, s, float(i)) for i, s in enumerate(_specs(5, seed=2), 1)]
    p = acquisition_search(observations, torch.Generator().manual_seed(0), max_width=64)
    assert p is not None and len(p.morphisms) == 1 and math.isfinite(p.acquisition)
    father = next(o for o in observations if o.id == p.father)
    assert father.spec.apply(p.morphisms[0]) == p.spec
    assert p.spec.descriptor() not in {o.spec.descriptor() for o in observations}


# ---------------------------------------------------------------------------------------------------------------
# The search: run directory, strategies, resume


def _config(out, **kw) -> MorphConfig:
    settings = dict(out=str(out), models=4, epochs=2, patience=1, width=8, data_limit=120, batch_size=32,
                    budget=5.0, seed=3)
    settings.update(kw)
    return MorphConfig(**settings)


class _Interrupt(Exception):
    pass


def test_search_writes_its_run_directory_and_resumes_exactly(tmp_path):
    strategy = MorphSearch()
    config = _config(tmp_path / "full")
    full = strategy.run(config, strategy.load_data(config), progress=False)
    for name in ("history.csv", "best.json", "best.pt", "genotype.json", "summary.json", "models/1.pt",
                 "models/2/metrics.jsonl"):
        assert os.path.exists(tmp_path / "full" / name), name
    assert [r["model_id"] for r in full.history] == [1, 2, 3, 4] and full.history[0]["morphisms"] == "initial"
    assert all(r["parent"] is not None and math.isfinite(r["acquisition"]) for r in full.history[1:])
    assert full.genotype == Spec.from_dict(json.load(open(tmp_path / "full" / "best.json"))["spec"])
    assert 0 < full.test_acc <= 1 and full.choose_seconds < full.seconds

    def stop_after_two(out, rows):
        if len(rows) == 2:
            raise _Interrupt

    config = _config(tmp_path / "cut")
    with pytest.raises(_Interrupt):
        strategy.run(config, strategy.load_data(config), progress=False, callbacks=[stop_after_two])
    resumed = strategy.run(config, strategy.load_data(config), resume=True, progress=False)
    keys = ("model_id", "parent", "morphisms", "params", "val_acc", "epochs")
    assert [[r[k] for k in keys] for r in resumed.history] == [[r[k] for k in keys] for r in full.history]
    with pytest.raises(MorphError, match="holds a search already"):
        strategy.run(config, strategy.load_data(config), progress=False)


@pytest.mark.parametrize("name", ["morph-random", "morph-bfs"])
def test_ablations_run_under_their_own_names(tmp_path, name):
    from snas_fast.search.registry import get_strategy

    strategy = get_strategy(name)
    config = _config(tmp_path, models=3, epochs=1)
    result = strategy.run(config, strategy.load_data(config), progress=False)
    saved = json.load(open(tmp_path / "config.json"))
    assert len(result.history) == 3 and (saved["strategy"], saved["proposer"]) == (name, name[6:])
    assert all(math.isnan(r["acquisition"]) for r in result.history)


def test_cli_morph_and_train_on_its_result(tmp_path, capsys):
    from snas_fast.cli import main

    out = tmp_path / "m"
    assert main(["morph", "--out", str(out), "--models", "2", "--epochs", "1", "--width", "8", "--data-limit",
                 "120", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "morph search done" in said and "test acc" in said
    assert os.path.exists(out / "search_tree.png")
    assert main(["train", "--genotype", str(out), "--epochs", "1", "--data-limit", "120", "--out",
                 str(tmp_path / "t"), "--quiet"]) == 0
    assert json.load(open(tmp_path / "t" / "genotype.json"))["genotype"]["format"] == "snas_fast.morph/1"
    assert main(["morph", "--out", str(tmp_path / "x"), "--budget", "0"]) == 2
    assert "budget: expected minutes > 0, got 0" in capsys.readouterr().err


def test_a_config_from_before_the_proposer_had_its_name_reads_back():
    from snas_fast.search.morph import MorphConfig

    old = {k: v for k, v in MorphConfig().to_dict().items() if k != "proposer"}
    config = MorphConfig.from_dict(dict(old, strategy="random"))
    assert (config.proposer, config.strategy) == ("random", "morph-random")
