"""The count of changes the networks' state checks rely on (fastnet._changes):
every change to what they check counts, a training step counts none, and
copies keep the containers watched.  tests/test_tampering.py checks that the
changes it counts are then refused."""

import copy
import pickle

import numpy as np
import pytest

import fastnet as fn
from fastnet._changes import COUNT, WatchedDict, WatchedList

LIST_CHANGES = {
    "setitem": lambda a: a.__setitem__(0, 9),
    "setslice": lambda a: a.__setitem__(slice(0, 1), [9]),
    "delitem": lambda a: a.__delitem__(0),
    "iadd": lambda a: a.__iadd__([9]),
    "imul": lambda a: a.__imul__(2),
    "append": lambda a: a.append(9),
    "extend": lambda a: a.extend([9]),
    "insert": lambda a: a.insert(0, 9),
    "pop": lambda a: a.pop(),
    "remove": lambda a: a.remove(1),
    "clear": lambda a: a.clear(),
    "sort": lambda a: a.sort(),
    "reverse": lambda a: a.reverse(),
}
DICT_CHANGES = {
    "setitem": lambda d: d.__setitem__("m", 9),
    "delitem": lambda d: d.__delitem__("m"),
    "update": lambda d: d.update(m=9),
    "ior": lambda d: d.__ior__({"m": 9}),
    "setdefault": lambda d: d.setdefault("new", 9),
    "pop": lambda d: d.pop("m"),
    "popitem": lambda d: d.popitem(),
    "clear": lambda d: d.clear(),
}


def _counts(change, container):
    before = COUNT.n
    change(container)
    return COUNT.n - before


@pytest.mark.parametrize("name", LIST_CHANGES)
def test_every_change_to_a_watched_list_counts(name):
    assert _counts(LIST_CHANGES[name], WatchedList([2, 1, 3])) >= 1


@pytest.mark.parametrize("name", DICT_CHANGES)
def test_every_change_to_a_watched_dict_counts(name):
    assert _counts(DICT_CHANGES[name], WatchedDict({"m": [1], "t": 0})) >= 1


def test_reading_counts_nothing_and_lists_in_a_dict_are_watched():
    d = WatchedDict({"m": [1, 2], "t": 0})
    assert type(d["m"]) is WatchedList
    d.update(v=[3])
    assert type(d["v"]) is WatchedList
    before = COUNT.n
    _ = d["m"][0], len(d), list(d.items()), d["m"] + [1]
    assert COUNT.n == before
    assert _counts(lambda m: m.append(3), d["m"]) == 1


def _net(optimizer):
    layers = [fn.DenseLayer("tanh", 4, neurons_num=5, rng=0), fn.DenseLayer("identity", neurons_num=3, rng=1)]
    return fn.NeuralNetwork(layers, "softmax_xent", optimizer, backend="numpy")


@pytest.mark.parametrize(("owner", "name", "value"), [
    (lambda n: n.layers[0], "w", lambda n: n.layers[0].w.copy()),
    (lambda n: n.layers[0], "b", lambda n: n.layers[0].b.copy()),
    (lambda n: n.layers[0], "neurons_num", lambda n: 5),
    (lambda n: n.layers[0], "n_inputs", lambda n: 4),
    (lambda n: n.layers[0], "dtype", lambda n: np.dtype(np.float32)),
    (lambda n: n.layers[0], "activation", lambda n: "tanh"),
    (lambda n: n.layers[0], "backend", lambda n: "numpy"),
    (lambda n: n, "layers", lambda n: list(n.layers)),
    (lambda n: n, "loss", lambda n: "softmax_xent"),
    (lambda n: n, "backend", lambda n: "numpy"),
    (lambda n: n.optimizer, "lr", lambda n: 0.1),
    (lambda n: n.optimizer, "momentum", lambda n: 0.9),
    (lambda n: n.optimizer, "state", lambda n: list(n.optimizer.state)),
])
def test_assignments_count_even_of_the_same_value(owner, name, value):
    net = _net(fn.SGD(0.05, momentum=0.5))
    net.train_step(np.ones((3, 4), np.float32), np.arange(3))
    obj, val = owner(net), value(net)
    assert _counts(lambda o: setattr(o, name, val), obj) >= 1


def test_assigned_lists_and_dicts_are_kept_as_watched_copies():
    net = _net(fn.Adam(1e-3))
    x, y = np.ones((3, 4), np.float32), np.arange(3)
    net.train_step(x, y)
    mine = list(net.layers)
    net.layers = mine
    assert type(net.layers) is WatchedList and net.layers is not mine
    mine.clear()  # the user's list: not the network's any more
    st = net.optimizer.state
    plain = {"t": st["t"], "m": list(st["m"]), "v": list(st["v"])}
    net.optimizer.state = plain
    st = net.optimizer.state
    assert type(st) is WatchedDict and type(st["m"]) is WatchedList and type(st["v"]) is WatchedList
    plain["m"][0] = np.zeros((1, 1), np.float32)
    net.train_step(x, y)  # trains on the network's own, valid copies
    assert st["t"] == 2


@pytest.mark.parametrize("backend", fn.available_backends())
@pytest.mark.parametrize("optimizer", [lambda: fn.SGD(0.05), lambda: fn.SGD(0.05, momentum=0.9),
                                       lambda: fn.Adam(1e-3)])
@pytest.mark.parametrize("batch", [3, 40])
def test_training_counts_no_change(backend, optimizer, batch):
    """Steps (fused, layered, keep_grads) and fit change nothing the checks look at:
    otherwise every step would check the whole state again."""
    net = _net(optimizer())
    net.backend = backend
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(batch, 4)).astype(np.float32), rng.integers(0, 3, batch)
    net.train_step(x, y)  # the first step makes the optimizer's state: a change
    net.train_step(x, y)
    before = COUNT.n
    for _ in range(3):
        net.train_step(x, y)
        net.train_step(x, y, keep_grads=True)
    net.fit(x, y, epochs=2, batch_size=max(1, batch // 2), progress=False)
    net.fit(x, y, epochs=1, batch_size=batch, mode="gd", progress=False)
    net.predict(x)
    net.evaluate(x, y)
    assert COUNT.n == before


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("optimizer", [lambda: fn.SGD(0.05, momentum=0.9), lambda: fn.Adam(1e-3)])
def test_copies_keep_the_containers_watched(how, optimizer):
    net = _net(optimizer())
    x, y = np.ones((3, 4), np.float32), np.arange(3)
    net.train_step(x, y)
    other = copy.deepcopy(net) if how == "deepcopy" else pickle.loads(pickle.dumps(net))
    assert type(other.layers) is WatchedList
    st = other.optimizer.state
    lists = [st] if isinstance(st, list) else [st["m"], st["v"]]
    assert type(st) in (WatchedList, WatchedDict) and all(type(a) is WatchedList for a in lists)
    other.train_step(x, y)  # its check is up to date
    lists[0][0] = np.zeros((1, 1), np.float32)
    with pytest.raises(ValueError, match=r"optimizer.state(\['m'\])?\[0\] must be"):
        other.train_step(x, y)
